//! The building blocks of the networks, in eval mode, for 1D (N,C,L) and 2D (N,C,H,W)
//! activations. BatchNorm is folded into the preceding convolution at load time.

use super::fastconv::Act;
use candle_core::{Tensor, D};

use crate::error::{Error, Result};
use crate::model::weights::Weights;

/// Spatial rank of a layer: 1 for signals, 2 for images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dims {
    One,
    Two,
}

impl Dims {
    pub fn rank(self) -> usize {
        match self {
            Dims::One => 1,
            Dims::Two => 2,
        }
    }
}

/// Per-channel `y = x * scale + shift` view of an eval-mode BatchNorm.
#[derive(Clone, Debug)]
pub struct ChannelAffine {
    pub scale: Tensor,
    pub shift: Tensor,
}

impl ChannelAffine {
    /// Reads `{prefix}.weight/bias/running_mean/running_var` for `channels` channels.
    pub fn load_bn(w: &Weights, prefix: &str, channels: usize, eps: f64) -> Result<Self> {
        let s = [Some(channels)];
        let gamma = w.get(&format!("{prefix}.weight"), &s)?;
        let beta = w.get(&format!("{prefix}.bias"), &s)?;
        let mean = w.get(&format!("{prefix}.running_mean"), &s)?;
        let var = w.get(&format!("{prefix}.running_var"), &s)?;
        let scale = gamma.broadcast_div(&(var + eps)?.sqrt()?)?;
        let shift = (beta - mean.mul(&scale)?)?;
        Ok(Self { scale, shift })
    }

    pub fn channels(&self) -> usize {
        self.scale.dims1().unwrap_or(0)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let shape = channel_shape(x.rank(), self.channels());
        x.broadcast_mul(&self.scale.reshape(shape.clone())?)?
            .broadcast_add(&self.shift.reshape(shape)?)
    }
}

fn channel_shape(rank: usize, c: usize) -> Vec<usize> {
    let mut s = vec![1; rank];
    s[1] = c;
    s
}

#[derive(Clone, Debug)]
pub struct Conv {
    pub dims: Dims,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
    /// TensorFlow "SAME" padding, computed from the input size at each call: out =
    /// ceil(in/stride), the odd pixel of padding goes after (bottom/right). Replaces
    /// `padding`.
    pub tf_same: bool,
    /// The weights packed for the CPU convolution, made at first use.
    pub packed: std::sync::OnceLock<std::sync::Arc<super::fastconv::Packed>>,
    /// A grouped (not depthwise) convolution's groups as dense ones, made at first use
    /// (see `Conv::grouped`).
    pub groups_dense: std::sync::OnceLock<Vec<Conv>>,
}

/// A convolution's weights and bias with the eval-mode BatchNorm after it folded in
/// (any rank of kernel: the scale is per output channel).
pub(crate) fn fold_bn(
    weight: &Tensor,
    bias: Option<&Tensor>,
    bn: &ChannelAffine,
) -> Result<(Tensor, Option<Tensor>)> {
    let mut wshape = vec![weight.dim(0)?];
    wshape.extend(std::iter::repeat_n(1, weight.rank() - 1));
    let weight = weight.broadcast_mul(&bn.scale.reshape(wshape)?)?;
    let bias = match bias {
        Some(b) => (b.mul(&bn.scale)? + &bn.shift)?,
        None => bn.shift.clone(),
    };
    Ok((weight, Some(bias)))
}

/// (before, after) zero padding of TensorFlow "SAME" for one spatial dim.
pub fn tf_same_pads(input: usize, kernel: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let span = (kernel - 1) * dilation + 1;
    let total = ((out.saturating_sub(1)) * stride + span).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// Depthwise 2D convolution (groups == channels, one filter per channel) as a sum of
/// shifted, strided views times per-channel weights. candle runs a grouped conv as one
/// small conv per group (1152 calls for an EfficientNet block); this is k*k tensor ops,
/// and autograd goes through them. `x` is already padded.
fn depthwise2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    dilation: usize,
) -> candle_core::Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (kh, kw) = (w.dim(2)?, w.dim(3)?);
    let (sh, sw) = ((kh - 1) * dilation + 1, (kw - 1) * dilation + 1);
    if h < sh || wd < sw {
        candle_core::bail!("depthwise conv: input {h}x{wd} smaller than kernel {sh}x{sw}");
    }
    let (ho, wo) = ((h - sh) / stride + 1, (wd - sw) / stride + 1);
    // Phases: x[:, :, p::s, q::s] for every (p, q), so each tap is a plain narrow.
    let s = stride;
    let (hp, wp) = (h.div_ceil(s) * s, wd.div_ceil(s) * s);
    let xp = if (hp, wp) != (h, wd) {
        x.pad_with_zeros(2, 0, hp - h)?
            .pad_with_zeros(3, 0, wp - wd)?
    } else {
        x.clone()
    };
    let mut phases = Vec::with_capacity(s * s);
    if s == 1 {
        phases.push(xp);
    } else {
        let r = xp.reshape((n, c, hp / s, s, wp / s, s))?;
        for p in 0..s {
            for q in 0..s {
                phases.push(
                    r.narrow(3, p, 1)?
                        .narrow(5, q, 1)?
                        .reshape((n, c, hp / s, wp / s))?,
                );
            }
        }
    }
    let mut acc: Option<Tensor> = None;
    for i in 0..kh {
        for j in 0..kw {
            let (di, dj) = (i * dilation, j * dilation);
            let ph = &phases[(di % s) * s + dj % s];
            let tap = ph.narrow(2, di / s, ho)?.narrow(3, dj / s, wo)?;
            let wij = w.narrow(2, i, 1)?.narrow(3, j, 1)?.reshape((1, c, 1, 1))?;
            let t = tap.broadcast_mul(&wij)?;
            acc = Some(match acc {
                None => t,
                Some(a) => (a + t)?,
            });
        }
    }
    acc.ok_or_else(|| candle_core::Error::Msg("empty kernel".into()))
}

impl Conv {
    /// Loads `{prefix}.weight` (and `.bias` if `bias`), checking the input channels and,
    /// when known, the output channels and kernel size.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &Weights,
        prefix: &str,
        dims: Dims,
        in_channels: usize,
        out_channels: Option<usize>,
        kernel: Option<usize>,
        groups: usize,
        bias: bool,
    ) -> Result<Self> {
        if groups == 0 || !in_channels.is_multiple_of(groups) {
            return Err(Error::Weights {
                file: w.file().to_path_buf(),
                msg: format!(
                    "{prefix}: groups={groups} does not divide {in_channels} input channels"
                ),
            });
        }
        let mut spec = vec![out_channels, Some(in_channels / groups)];
        spec.extend(std::iter::repeat_n(kernel, dims.rank()));
        let weight = w.get(&format!("{prefix}.weight"), &spec)?;
        let out = weight.dim(0)?;
        let bias = if bias {
            Some(w.get(&format!("{prefix}.bias"), &[Some(out)])?)
        } else {
            w.get_opt(&format!("{prefix}.bias"), &[Some(out)])?
        };
        Ok(Self {
            dims,
            weight,
            bias,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups,
            tf_same: false,
            packed: Default::default(),
            groups_dense: Default::default(),
        })
    }

    /// A TF-style 2D conv (no bias, "SAME" padding) with its BatchNorm folded in, as
    /// EfficientNet and YAMNet are built.
    #[allow(clippy::too_many_arguments)]
    pub fn tf_bn(
        w: &Weights,
        conv: &str,
        bn: &str,
        in_ch: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        let mut c = Conv::load(w, conv, Dims::Two, in_ch, None, Some(kernel), groups, false)?
            .with(stride, 0, 1)
            .same();
        c.fold(&ChannelAffine::load_bn(w, bn, c.out_channels(), eps)?)?;
        Ok(c)
    }

    /// TensorFlow "SAME" padding instead of a fixed one.
    pub fn same(mut self) -> Self {
        self.tf_same = true;
        self.padding = 0;
        self
    }

    pub fn with(mut self, stride: usize, padding: usize, dilation: usize) -> Self {
        self.stride = stride;
        self.padding = padding;
        self.dilation = dilation;
        self
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Folds an eval-mode BatchNorm that follows this convolution into its weights.
    pub fn fold(&mut self, bn: &ChannelAffine) -> Result<()> {
        (self.weight, self.bias) = fold_bn(&self.weight, self.bias.as_ref(), bn)?;
        self.packed = Default::default();
        Ok(())
    }

    /// A regular (non-depthwise) convolution, shaped so that candle 0.11's backward is
    /// right: its conv1d input gradient is wrong for every batch item after the first
    /// when padding is 0 (the col2im transposed conv), and its conv2d backward takes the
    /// output padding of the height for the width too. So 1D convs run as 1-high 2D
    /// convs, and when the two dims would need different output paddings the input is
    /// padded explicitly and its unused trailing rows/columns cut off.
    pub(crate) fn dense(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (s, d, p) = (self.stride, self.dilation, self.padding);
        let span = |k: usize| (k - 1) * d + 1;
        let (x, w) = match self.dims {
            Dims::One => (x.unsqueeze(2)?, self.weight.unsqueeze(2)?),
            Dims::Two => (x.clone(), self.weight.clone()),
        };
        let rem = |dim: usize| -> candle_core::Result<usize> {
            let len = x.dim(dim)?
                + if dim == 2 && self.dims == Dims::One {
                    0
                } else {
                    2 * p
                };
            Ok(len.saturating_sub(span(w.dim(dim)?)) % s)
        };
        let y = if self.dims == Dims::Two && rem(2)? == rem(3)? {
            x.conv2d(&w, p, s, d, self.groups)?
        } else {
            let mut xp = x;
            for dim in 2..4 {
                let pad = if dim == 2 && self.dims == Dims::One {
                    0
                } else {
                    p
                };
                if pad > 0 {
                    xp = xp.pad_with_zeros(dim, pad, pad)?;
                }
                let (len, sp) = (xp.dim(dim)?, span(w.dim(dim)?));
                if len >= sp {
                    let keep = (len - sp) / s * s + sp;
                    if keep < len {
                        xp = xp.narrow(dim, 0, keep)?;
                    }
                }
            }
            xp.conv2d(&w, 0, s, d, self.groups)?
        };
        match self.dims {
            Dims::One => y.squeeze(2),
            Dims::Two => Ok(y),
        }
    }

    /// The CPU path: packed weights, bias inside the op (see `fastconv`).
    /// The weights packed for the CPU ops, once (depthwise filters too: c_in = 1).
    fn packed(&self) -> candle_core::Result<std::sync::Arc<super::fastconv::Packed>> {
        use super::fastconv::{Geometry, Packed};
        Ok(match self.packed.get() {
            Some(p) => p.clone(),
            None => {
                let w = &self.weight;
                let geo = match self.dims {
                    Dims::One => Geometry {
                        c_in: w.dim(1)?,
                        c_out: w.dim(0)?,
                        kh: 1,
                        kw: w.dim(2)?,
                        sh: 1,
                        sw: self.stride,
                        ph: 0,
                        pw: self.padding,
                        dh: 1,
                        dw: self.dilation,
                    },
                    Dims::Two => Geometry {
                        c_in: w.dim(1)?,
                        c_out: w.dim(0)?,
                        kh: w.dim(2)?,
                        kw: w.dim(3)?,
                        sh: self.stride,
                        sw: self.stride,
                        ph: self.padding,
                        pw: self.padding,
                        dh: self.dilation,
                        dw: self.dilation,
                    },
                };
                let p = std::sync::Arc::new(if self.groups > 1 {
                    Packed::grouped(geo, w, self.bias.as_ref())?
                } else {
                    Packed::new(geo, w, self.bias.as_ref())?
                });
                self.packed.get_or_init(|| p).clone()
            }
        })
    }

    /// The packed CPU op on `x` (1D convolutions as 1-high 2D ones).
    fn run_packed(
        &self,
        x: &Tensor,
        act: Act,
        gate: Option<Vec<f32>>,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let op = super::fastconv::ConvOp {
            packed: self.packed()?,
            act,
            gate,
        };
        let one = self.dims == Dims::One;
        let x = if one { x.unsqueeze(2)? } else { x.clone() }.contiguous()?;
        let y = match residual {
            Some(r) => {
                let r = if one { r.unsqueeze(2)? } else { r.clone() }.contiguous()?;
                x.apply_op2(&r, op)?
            }
            None => x.apply_op1(op)?,
        };
        if one {
            y.squeeze(2)
        } else {
            Ok(y)
        }
    }

    /// A grouped convolution (ResNeXt, RegNet): where no gradient flows, one op over
    /// all groups (`fastconv::GroupedConvOp`); else one packed dense convolution per
    /// group on that group's input channels, joined along the channels (candle runs
    /// each group through its own slower conv2d). The epilogue is per channel, so each
    /// group applies its slice of the bias and the residual.
    fn grouped(
        &self,
        x: &Tensor,
        act: Act,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        if !x.track_op() && residual.is_none_or(|r| !r.track_op()) {
            let op = super::fastconv::GroupedConvOp {
                packed: self.packed()?,
                groups: self.groups,
                act,
            };
            let x = x.contiguous()?;
            return match residual {
                Some(r) => x.apply_op2(&r.contiguous()?, op),
                None => x.apply_op1(op),
            };
        }
        let (c_in, c_out) = (x.dim(1)? / self.groups, self.weight.dim(0)? / self.groups);
        let convs = match self.groups_dense.get() {
            Some(c) => c,
            None => {
                let part = |i: usize| -> candle_core::Result<Conv> {
                    Ok(Conv {
                        weight: self.weight.narrow(0, i * c_out, c_out)?.contiguous()?,
                        bias: self
                            .bias
                            .as_ref()
                            .map(|b| b.narrow(0, i * c_out, c_out))
                            .transpose()?,
                        groups: 1,
                        tf_same: false,
                        packed: Default::default(),
                        groups_dense: Default::default(),
                        ..*self
                    })
                };
                let convs = (0..self.groups)
                    .map(part)
                    .collect::<candle_core::Result<_>>()?;
                self.groups_dense.get_or_init(|| convs)
            }
        };
        let ys = convs
            .iter()
            .enumerate()
            .map(|(i, conv)| {
                let r = residual
                    .map(|r| r.narrow(1, i * c_out, c_out))
                    .transpose()?;
                conv.run_packed(&x.narrow(1, i * c_in, c_in)?, act, None, r.as_ref())
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&ys, 1)
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(x, Act::Identity, None)
    }

    /// act(conv(x * gate) + bias + residual), `gate` (N, C, 1, 1) scaling each sample's
    /// input channels (squeeze-and-excitation). Where no gradient flows, a dense 2D
    /// convolution on the CPU scales its input as it reads it, so the gated copy of `x`
    /// is never made; elsewhere the product, then [`Self::forward_with`].
    pub fn forward_gated(
        &self,
        x: &Tensor,
        gate: &Tensor,
        act: Act,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32;
        let direct = self.groups == 1
            && self.dims == Dims::Two
            && !self.tf_same
            && x.rank() == 4
            && gate.dims() == [x.dim(0)?, x.dim(1)?, 1, 1]
            && f32_cpu(x)
            && f32_cpu(gate)
            && f32_cpu(&self.weight)
            && !x.track_op()
            && !gate.track_op()
            && residual.is_none_or(|r| !r.track_op());
        if !direct {
            return self.forward_with(&x.broadcast_mul(gate)?, act, residual);
        }
        let scales = gate.flatten_all()?.to_vec1()?;
        self.run_packed(x, act, Some(scales), residual)
    }

    /// act(conv(x) + bias + residual): on the CPU one pass (the epilogue of
    /// `fastconv`), elsewhere candle ops.
    pub fn forward_with(
        &self,
        x: &Tensor,
        act: Act,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        // TF SAME pads (asymmetric with a stride), else the conv's own on every side.
        let pads: Vec<(usize, usize)> = if self.tf_same {
            let rank = self.weight.rank();
            (2..x.rank())
                .map(|d| {
                    let k = self.weight.dim(rank - x.rank() + d)?;
                    Ok(tf_same_pads(x.dim(d)?, k, self.stride, self.dilation))
                })
                .collect::<candle_core::Result<_>>()?
        } else {
            vec![(self.padding, self.padding); x.rank() - 2]
        };
        let depthwise = self.groups > 1
            && self.dims == Dims::Two
            && self.weight.dim(1)? == 1
            && self.weight.dim(0)? == self.groups;
        let cpu = x.device().is_cpu() && x.dtype() == candle_core::DType::F32;
        if depthwise && cpu && residual.is_none() {
            // Padding, bias and activation are the op's own.
            return x.contiguous()?.apply_op1(super::fastconv::DepthwiseOp {
                packed: self.packed()?,
                act,
                pads: [pads[0], pads[1]],
            });
        }
        let padded;
        let x = if self.tf_same {
            let mut t = x.clone();
            for (d, &(a, b)) in pads.iter().enumerate() {
                if a + b > 0 {
                    t = t.pad_with_zeros(d + 2, a, b)?;
                }
            }
            padded = t;
            &padded
        } else {
            x
        };
        let fast = cpu && self.weight.dtype() == candle_core::DType::F32;
        if self.groups == 1 && fast {
            return self.run_packed(x, act, None, residual);
        }
        if !depthwise && fast && self.dims == Dims::Two {
            return self.grouped(x, act, residual);
        }
        let y = if depthwise {
            let xp = if self.padding > 0 {
                x.pad_with_zeros(2, self.padding, self.padding)?
                    .pad_with_zeros(3, self.padding, self.padding)?
            } else {
                x.clone()
            };
            depthwise2d(&xp, &self.weight, self.stride, self.dilation)?
        } else {
            self.dense(x)?
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape(channel_shape(y.rank(), b.dims1()?))?)?,
            None => y,
        };
        let y = match residual {
            Some(r) => (y + r)?,
            None => y,
        };
        act.tensor(&y)
    }
}

#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(w: &Weights, prefix: &str, in_features: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[None, Some(in_features)])?;
        let out = weight.dim(0)?;
        let bias = if bias {
            Some(w.get(&format!("{prefix}.bias"), &[Some(out)])?)
        } else {
            w.get_opt(&format!("{prefix}.bias"), &[Some(out)])?
        };
        Ok(Self { weight, bias })
    }

    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

#[derive(Clone, Debug)]
pub struct Pool {
    pub kind: PoolKind,
    pub dims: Dims,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// Pads dim `d` of `x` with `before` and `after` copies of a constant.
pub(crate) fn pad_sides(
    x: &Tensor,
    d: usize,
    before: usize,
    after: usize,
    value: f32,
) -> candle_core::Result<Tensor> {
    if before + after == 0 {
        return Ok(x.clone());
    }
    let side = |n: usize| -> candle_core::Result<Tensor> {
        let mut shape = x.dims().to_vec();
        shape[d] = n;
        Tensor::full(value, shape, x.device())?.to_dtype(x.dtype())
    };
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(side(before)?);
    }
    parts.push(x.clone());
    if after > 0 {
        parts.push(side(after)?);
    }
    Tensor::cat(&parts, d)
}

/// Pads the spatial dims (2, 3, ...) of `x` with a constant, `(before, after)` per dim.
pub(crate) fn pad_spatial(
    x: &Tensor,
    sides: &[(usize, usize)],
    value: f32,
) -> candle_core::Result<Tensor> {
    let mut y = x.clone();
    for (d, &(a, b)) in sides.iter().enumerate() {
        y = pad_sides(&y, 2 + d, a, b, value)?;
    }
    Ok(y)
}

/// Padding ceil mode adds at the end of a dim: PyTorch's output length rounds up, but
/// the last window must start inside the input or its begin padding.
pub(crate) fn ceil_extra(len: usize, (begin, end): (usize, usize), k: usize, s: usize) -> usize {
    let span = len + begin + end;
    if span < k {
        return 0;
    }
    let mut out = (span - k).div_ceil(s) + 1;
    if (out - 1) * s >= len + begin {
        out -= 1;
    }
    ((out - 1) * s + k).saturating_sub(span)
}

/// Positions `o·s + j` (window `o`, offset `j`) along one axis: each window's
/// elements laid out one after another.
pub(crate) fn window_index(
    windows: usize,
    k: usize,
    s: usize,
    dev: &candle_core::Device,
) -> candle_core::Result<Tensor> {
    let ids: Vec<u32> = (0..windows)
        .flat_map(|o| (0..k).map(move |j| (o * s + j) as u32))
        .collect();
    Tensor::from_vec(ids, windows * k, dev)
}

/// The pooling windows of `x` laid out on a new last axis: a reshape when they tile the
/// input, a gather when they overlap (its backward is a scatter-add, so any stride has a
/// gradient; candle's average-pool backward needs kernel = stride).
fn windows(x: &Tensor, dims: Dims, k: usize, s: usize) -> candle_core::Result<Tensor> {
    let spread = |x: &Tensor, axis: usize, out: usize| -> candle_core::Result<Tensor> {
        if k == s {
            x.narrow(axis, 0, out * k)
        } else {
            x.index_select(&window_index(out, k, s, x.device())?, axis)
        }
    };
    match dims {
        Dims::One => {
            let (n, c, l) = x.dims3()?;
            let lo = (l - k) / s + 1;
            spread(x, 2, lo)?.reshape((n, c, lo, k))
        }
        Dims::Two => {
            let (n, c, h, w) = x.dims4()?;
            let (ho, wo) = ((h - k) / s + 1, (w - k) / s + 1);
            spread(&spread(x, 2, ho)?, 3, wo)?
                .reshape((n, c, ho, k, wo, k))?
                .permute((0, 1, 2, 4, 3, 5))?
                .contiguous()?
                .reshape((n, c, ho, wo, k * k))
        }
    }
}

impl Pool {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let cpu = x.device().is_cpu() && x.dtype() == candle_core::DType::F32;
        if cpu && self.kind == PoolKind::Max && self.dims == Dims::Two && !x.track_op() {
            return x
                .contiguous()?
                .apply_op1_no_bwd(&super::fastconv::pool::MaxPoolOp {
                    kernel: self.kernel,
                    stride: self.stride,
                    padding: self.padding,
                });
        }
        let x = if self.padding > 0 {
            // torch pads max-pool with -inf and average-pool with zeros (count_include_pad).
            let v = match self.kind {
                PoolKind::Max => f32::NEG_INFINITY,
                PoolKind::Avg => 0.0,
            };
            pad_spatial(x, &vec![(self.padding, self.padding); self.dims.rank()], v)?
        } else {
            x.clone()
        };
        let (k, s) = (self.kernel, self.stride);
        match self.kind {
            // No gradient will flow (the part of a network before its cut): candle's
            // kernel, whose forward values are the same and which is several times faster.
            PoolKind::Max if !x.track_op() => match self.dims {
                Dims::One => x
                    .unsqueeze(2)?
                    .max_pool2d_with_stride((1, k), (1, s))?
                    .squeeze(2),
                Dims::Two => x.max_pool2d_with_stride(k, s),
            },
            // The gradient goes to the *first* maximum of each window (row-major), as
            // PyTorch's does. candle's own max-pool backward splits it among ties, and ties
            // are everywhere after a ReLU (all-zero windows), which skews Grad-CAM below a
            // pool. `argmax` + `gather` (backward: scatter).
            PoolKind::Max => {
                let w = windows(&x, self.dims, k, s)?;
                let idx = w.detach().argmax_keepdim(D::Minus1)?;
                w.gather(&idx, D::Minus1)?.squeeze(D::Minus1)
            }
            PoolKind::Avg if k != s => windows(&x, self.dims, k, s)?.mean(D::Minus1),
            // 1D pooling runs as 2D pooling over a (1, L) image.
            PoolKind::Avg => match self.dims {
                Dims::One => x
                    .unsqueeze(2)?
                    .avg_pool2d_with_stride((1, k), (1, s))?
                    .squeeze(2),
                Dims::Two => x.avg_pool2d_with_stride(k, s),
            },
        }
    }
}

/// One step of a network. Residual blocks are single ops so a block's output (what
/// PyTorch hooks on `layer4[-1]` see) is a place the network can be cut.
#[derive(Clone, Debug)]
pub enum Op {
    Conv(Conv),
    Affine(ChannelAffine),
    Relu,
    Relu6,
    LeakyRelu(f64),
    Sigmoid,
    Pool(Pool),
    GlobalAvgPool,
    Flatten,
    Linear(Linear),
    Identity,
    Residual(Box<ResidualBlock>),
    /// A 3D convolution (video models: (N, C, T, H, W)).
    Conv3d(super::volume::Conv3d),
    Pool3d(super::volume::Pool3d),
    Residual3d(Box<ResidualBlock<super::volume::Conv3d>>),
    /// Several ops as one unit (a block whose output is a target), with an optional
    /// identity shortcut added at the end (MobileNet-style linear bottleneck).
    Chain(Box<Chain>),
}

#[derive(Clone, Debug)]
pub struct Chain {
    pub ops: Vec<Op>,
    pub residual: bool,
}

impl Op {
    /// The op as a convolution that can take its activation (and a residual) into its
    /// epilogue.
    pub fn fused_conv(&self) -> Option<&dyn FusedConv> {
        match self {
            Op::Conv(c) => Some(c),
            Op::Conv3d(c) => Some(c),
            _ => None,
        }
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Op::Conv(c) => c.forward(x),
            Op::Affine(a) => a.forward(x),
            Op::Relu => Act::Relu.tensor(x),
            Op::Relu6 => Act::Relu6.tensor(x),
            Op::LeakyRelu(slope) => {
                let neg = (x.minimum(0f32)? * *slope)?;
                x.relu()? + neg
            }
            Op::Sigmoid => candle_nn::ops::sigmoid(x),
            Op::Pool(p) => p.forward(x),
            Op::GlobalAvgPool => {
                if x.rank() <= 2 {
                    Ok(x.clone())
                } else {
                    x.flatten_from(2)?.mean(D::Minus1)
                }
            }
            Op::Flatten => x.flatten_from(1),
            Op::Linear(l) => l.forward(x),
            Op::Identity => Ok(x.clone()),
            Op::Residual(b) => b.forward(x),
            Op::Conv3d(c) => c.forward(x),
            Op::Pool3d(p) => p.forward(x),
            Op::Residual3d(b) => b.forward(x),
            Op::Chain(c) => {
                let mut y = x.clone();
                let mut ops = c.ops.iter().peekable();
                while let Some(op) = ops.next() {
                    // A conv and the activation after it run as one op.
                    let act = match (op.fused_conv(), ops.peek()) {
                        (Some(_), Some(Op::Relu)) => Act::Relu,
                        (Some(_), Some(Op::Relu6)) => Act::Relu6,
                        _ => Act::Identity,
                    };
                    y = match op.fused_conv() {
                        Some(conv) => conv.forward_with(&y, act, None)?,
                        None => op.forward(&y)?,
                    };
                    if act != Act::Identity {
                        ops.next();
                    }
                }
                if c.residual {
                    y + x
                } else {
                    Ok(y)
                }
            }
        }
    }
}

/// A convolution that runs with its activation and a residual in one op.
pub trait FusedConv {
    /// act(conv(x) + bias + residual).
    fn forward_with(
        &self,
        x: &Tensor,
        act: Act,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor>;

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(x, Act::Identity, None)
    }
}

impl FusedConv for Conv {
    fn forward_with(
        &self,
        x: &Tensor,
        act: Act,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        Conv::forward_with(self, x, act, residual)
    }
}

impl FusedConv for super::volume::Conv3d {
    fn forward_with(
        &self,
        x: &Tensor,
        act: Act,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        super::volume::Conv3d::forward_with(self, x, act, residual)
    }
}

/// torchvision's BasicBlock (two 3x3 convs) or Bottleneck (1x1, 3x3, 1x1), BN folded;
/// with 3D convolutions, its video models' blocks (R(2+1)D's has four: each 3x3 a
/// spatial and a temporal one). Every conv but the last is followed by a ReLU.
#[derive(Clone, Debug)]
pub struct ResidualBlock<C = Conv> {
    pub convs: Vec<C>,
    pub downsample: Option<C>,
}

impl<C: FusedConv> ResidualBlock<C> {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let identity = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        let (last, inner) = self
            .convs
            .split_last()
            .ok_or_else(|| candle_core::Error::Msg("residual block without convs".into()))?;
        let mut y = x.clone();
        for c in inner {
            y = c.forward_with(&y, Act::Relu, None)?;
        }
        // The shortcut's add and the block's ReLU are the last conv's epilogue.
        last.forward_with(&y, Act::Relu, Some(&identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    use crate::random::test_tensor as rand;

    /// A 2D conv of random weights (`seed`) and bias (`seed + 1`) shaped `w`.
    fn conv2d(w: &[usize], seed: u64, stride: usize, padding: usize, groups: usize) -> Conv {
        Conv {
            dims: Dims::Two,
            weight: rand(w, seed),
            bias: Some(rand(&w[..1], seed + 1)),
            stride,
            padding,
            dilation: 1,
            groups,
            tf_same: false,
            packed: Default::default(),
            groups_dense: Default::default(),
        }
    }

    /// The largest difference between the gradients of sum(ours * g) and sum(theirs * g)
    /// with respect to each of `vars` (g random): two computations of one function.
    fn grad_gap(ours: &Tensor, theirs: &Tensor, vars: &[&candle_core::Var], seed: u64) -> f32 {
        let g = rand(ours.dims(), seed);
        let grads = |y: &Tensor| y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (grads(ours), grads(theirs));
        vars.iter()
            .map(|v| {
                let d = (ga.get(v).unwrap() - gb.get(v).unwrap()).unwrap();
                d.abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn folded_batchnorm_equals_conv_then_batchnorm() {
        for (dims, wshape, xshape) in [
            (Dims::Two, vec![6, 3, 3, 3], vec![2, 3, 9, 7]),
            (Dims::One, vec![5, 2, 7], vec![3, 2, 40]),
        ] {
            let c = wshape[0];
            let conv = Conv {
                dims,
                weight: rand(&wshape, 1),
                bias: Some(rand(&[c], 2)),
                stride: 2,
                padding: 1,
                dilation: 1,
                groups: 1,
                tf_same: false,
                packed: Default::default(),
                groups_dense: Default::default(),
            };
            let var = (rand(&[c], 3).abs().unwrap() + 0.5).unwrap();
            let bn = ChannelAffine {
                scale: (rand(&[c], 4) + 1.0)
                    .unwrap()
                    .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
                    .unwrap(),
                shift: rand(&[c], 5),
            };
            let x = rand(&xshape, 6);
            let unfolded = bn.forward(&conv.forward(&x).unwrap()).unwrap();
            let mut folded = conv.clone();
            folded.fold(&bn).unwrap();
            let diff = (folded.forward(&x).unwrap() - unfolded)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "{dims:?}: {diff}");
        }
    }

    #[test]
    fn max_pool_sends_gradient_to_the_first_maximum_only() {
        // torch.nn.functional.max_pool2d(x, 2) on an all-zero window: the gradient goes to
        // index 0 of the window (PyTorch), not 1/4 to each (candle's built-in backward).
        let x = candle_core::Var::from_tensor(
            &Tensor::zeros((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let pool = Pool {
            kind: PoolKind::Max,
            dims: Dims::Two,
            kernel: 2,
            stride: 2,
            padding: 0,
        };
        let y = pool.forward(x.as_tensor()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(g, vec![1.0, 0.0, 0.0, 0.0]);
        // 1D, odd length: the tail beyond the last full window is dropped (floor mode).
        let x = Tensor::new(&[[[1f32, 3., 2., 2., 5.]]], &Device::Cpu).unwrap();
        let pool = Pool {
            dims: Dims::One,
            ..pool
        };
        let y: Vec<f32> = pool
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y, vec![3.0, 2.0]);
    }

    #[test]
    fn tf_same_pads_match_the_efficientnet_note() {
        assert_eq!(tf_same_pads(112, 3, 2, 1), (0, 1));
        assert_eq!(tf_same_pads(56, 5, 2, 1), (1, 2));
        assert_eq!(tf_same_pads(112, 3, 1, 1), (1, 1));
        assert_eq!(tf_same_pads(28, 5, 1, 1), (2, 2));
        assert_eq!(tf_same_pads(7, 1, 1, 1), (0, 0));
    }

    /// TF SAME depthwise convs (EfficientNet-Lite: asymmetric pads with a stride) pad
    /// inside the op: against candle's grouped conv on an explicitly padded input,
    /// forward and input gradient.
    #[test]
    fn tf_same_depthwise_pads_inside_the_op() {
        use candle_core::Var;
        for (stride, k, h, w) in [(2, 3, 10, 9), (2, 5, 11, 12), (1, 5, 7, 40)] {
            let c = 4;
            let conv = Conv {
                dims: Dims::Two,
                weight: rand(&[c, 1, k, k], 61),
                bias: Some(rand(&[c], 62)),
                stride,
                padding: 0,
                dilation: 1,
                groups: c,
                tf_same: true,
                packed: Default::default(),
                groups_dense: Default::default(),
            };
            let x = Var::from_tensor(&rand(&[2, c, h, w], 63)).unwrap();
            let ours = conv.forward_with(x.as_tensor(), Act::Relu6, None).unwrap();
            let (t, b) = tf_same_pads(h, k, stride, 1);
            let (l, r) = tf_same_pads(w, k, stride, 1);
            let xp = x.as_tensor().pad_with_zeros(2, t, b).unwrap();
            let xp = xp.pad_with_zeros(3, l, r).unwrap();
            let theirs = xp
                .conv2d(&conv.weight, 0, stride, 1, c)
                .unwrap()
                .broadcast_add(&conv.bias.clone().unwrap().reshape((1, c, 1, 1)).unwrap())
                .unwrap()
                .clamp(0f32, 6f32)
                .unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "k{k} s{stride} {h}x{w}");
            let d = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert!(
                d.to_scalar::<f32>().unwrap() < 1e-5,
                "k{k} s{stride} {h}x{w}"
            );
            let gap = grad_gap(&ours, &theirs, &[&x], 64);
            assert!(gap < 1e-5, "grad k{k} s{stride} {h}x{w}");
        }
    }

    /// Grouped, not depthwise (ResNeXt's 32 groups of 4 channels, RegNet's wider ones):
    /// one packed conv per group against candle's grouped conv2d, with the bias, a
    /// residual and ReLU of the fused epilogue; forward and input gradients, and the
    /// forward of the one op that runs all groups where no gradient flows. Strided
    /// sizes cover the input exactly: candle's conv2d backward (a transposed conv without
    /// output padding) drops an uncovered last column.
    /// SE's gate read by the conv equals the gated copy convolved: 1x1 and 3x3 convs on
    /// the banded and the batched paths, 3x3 stride 1 on a map Winograd would take, with
    /// a residual and an activation; a tracked input takes the product and its gradient.
    #[test]
    fn gated_conv_equals_the_product_then_the_conv() {
        use candle_core::Var;
        for (n, c_in, c_out, k, stride, hw, res) in [
            (1, 24, 40, 1, 1, 20, false),
            (3, 16, 24, 1, 1, 16, true),
            (2, 12, 20, 3, 2, 33, true),
            (2, 8, 16, 3, 2, 15, false),
            (1, 8, 8, 3, 1, 40, true),
        ] {
            let conv = conv2d(&[c_out, c_in, k, k], 81, stride, k / 2, 1);
            let x = rand(&[n, c_in, hw, hw], 83);
            let gate = rand(&[n, c_in, 1, 1], 84).abs().unwrap();
            let product = x.broadcast_mul(&gate).unwrap();
            let out_dims = conv.forward(&product).unwrap().dims().to_vec();
            let r = res.then(|| rand(&out_dims, 85));
            let theirs = conv.forward_with(&product, Act::Silu, r.as_ref()).unwrap();
            let ours = conv
                .forward_gated(&x, &gate, Act::Silu, r.as_ref())
                .unwrap();
            let case = format!("n{n} {c_in}->{c_out} k{k} s{stride} {hw}x{hw}");
            let d = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-4, "{case}");
            // A gradient to x: the product and the conv, candle's and the conv's backward.
            let xv = Var::from_tensor(&x).unwrap();
            let ours = conv
                .forward_gated(xv.as_tensor(), &gate, Act::Relu, None)
                .unwrap();
            let plain = xv.as_tensor().broadcast_mul(&gate).unwrap();
            let theirs = conv.forward_with(&plain, Act::Relu, None).unwrap();
            assert!(grad_gap(&ours, &theirs, &[&xv], 86) < 1e-5, "grad {case}");
        }
    }

    #[test]
    fn grouped_conv_equals_candles_forward_and_backward() {
        use candle_core::Var;
        for (groups, c_in, c_out, k, stride, pad, h, w) in [
            (4, 16, 16, 3, 1, 1, 9, 7),
            (2, 6, 10, 3, 2, 1, 11, 9),
            (8, 32, 32, 1, 1, 0, 5, 5),
            (3, 48, 48, 3, 1, 1, 16, 16),
        ] {
            let conv = conv2d(&[c_out, c_in / groups, k, k], 71, stride, pad, groups);
            let x = Var::from_tensor(&rand(&[2, c_in, h, w], 73)).unwrap();
            let plain = x
                .as_tensor()
                .conv2d(&conv.weight, pad, stride, 1, groups)
                .unwrap();
            let r = Var::from_tensor(&rand(plain.dims(), 74)).unwrap();
            let ours = conv
                .forward_with(x.as_tensor(), Act::Relu, Some(r.as_tensor()))
                .unwrap();
            let bias = conv
                .bias
                .clone()
                .unwrap()
                .reshape((1, c_out, 1, 1))
                .unwrap();
            let theirs = (plain.broadcast_add(&bias).unwrap() + r.as_tensor())
                .unwrap()
                .relu()
                .unwrap();
            let case = format!("g{groups} {c_in}->{c_out} k{k} s{stride}");
            assert_eq!(
                conv.groups_dense.get().map(Vec::len),
                Some(groups),
                "{case}"
            );
            let d = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-4, "{case}");
            let gap = grad_gap(&ours, &theirs, &[&x, &r], 75);
            assert!(gap < 1e-4, "grad {case}");
            // Where no gradient flows: all groups in one op (its packing, not the
            // per-group convs').
            let fresh = Conv {
                packed: Default::default(),
                groups_dense: Default::default(),
                weight: conv.weight.clone(),
                bias: conv.bias.clone(),
                ..conv
            };
            let (x, r) = (x.as_tensor().detach(), r.as_tensor().detach());
            let ours = fresh.forward_with(&x, Act::Relu, Some(&r)).unwrap();
            assert!(fresh.groups_dense.get().is_none() && fresh.packed.get().is_some());
            let d = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-4, "no grad {case}");
        }
    }

    #[test]
    fn depthwise_equals_grouped_conv_forward_and_backward() {
        use candle_core::Var;
        // Wider than the op's 32 lanes (a full run and a partial one), and at stride 1
        // planes so narrow that one run spans several rows (7x7 with k5, 3x3, 1 wide).
        for (stride, pad, k, h, w) in [
            (1, 1, 3, 9, 7),
            (2, 0, 3, 10, 8),
            (2, 2, 5, 11, 9),
            (1, 1, 3, 5, 70),
            (2, 1, 3, 6, 74),
            (1, 2, 5, 7, 7),
            (1, 1, 3, 3, 3),
            (1, 1, 3, 40, 1),
            (1, 0, 3, 12, 35),
        ] {
            let c = 6;
            let conv = Conv {
                dims: Dims::Two,
                weight: rand(&[c, 1, k, k], 11),
                bias: Some(rand(&[c], 12)),
                stride,
                padding: pad,
                dilation: 1,
                groups: c,
                tf_same: false,
                packed: Default::default(),
                groups_dense: Default::default(),
            };
            let x = Var::from_tensor(&rand(&[2, c, h, w], 13)).unwrap();
            let ours = conv.forward(x.as_tensor()).unwrap();
            // candle's grouped conv (one conv per group) as the reference.
            let theirs = x
                .as_tensor()
                .conv2d(&conv.weight, pad, stride, 1, c)
                .unwrap()
                .broadcast_add(&conv.bias.clone().unwrap().reshape((1, c, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let d = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
            // The tensor-op formulation (used off the CPU) agrees too.
            let xp = x
                .as_tensor()
                .pad_with_zeros(2, pad, pad)
                .unwrap()
                .pad_with_zeros(3, pad, pad)
                .unwrap();
            let taps = depthwise2d(&xp, &conv.weight, stride, 1)
                .unwrap()
                .broadcast_add(&conv.bias.clone().unwrap().reshape((1, c, 1, 1)).unwrap())
                .unwrap();
            let d = (&taps - &theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
            let gap = grad_gap(&ours, &theirs, &[&x], 14);
            assert!(gap < 1e-5, "stride {stride}");
        }
    }

    /// Input gradients of 1D and 2D convs against central differences, every batch item.
    #[test]
    fn conv_input_gradients_match_finite_differences() {
        use candle_core::Var;
        for (dims, xs, ws, pad, stride) in [
            (Dims::One, vec![3, 4, 24], vec![5, 4, 5], 0, 1),
            (Dims::One, vec![3, 4, 24], vec![5, 4, 3], 0, 2),
            (Dims::One, vec![3, 4, 20], vec![5, 4, 5], 2, 1),
            (Dims::Two, vec![3, 2, 9, 8], vec![4, 2, 3, 3], 0, 1),
            (Dims::Two, vec![2, 2, 9, 8], vec![4, 2, 3, 3], 1, 2),
        ] {
            let conv = Conv {
                dims,
                weight: rand(&ws, 21),
                bias: None,
                stride,
                padding: pad,
                dilation: 1,
                groups: 1,
                tf_same: false,
                packed: Default::default(),
                groups_dense: Default::default(),
            };
            let x = Var::from_tensor(&rand(&xs, 22)).unwrap();
            let y = conv.forward(x.as_tensor()).unwrap();
            let g = rand(y.dims(), 23);
            let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
            let an: Vec<f32> = grads
                .get(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let n: usize = xs.iter().product();
            let f = |t: &Tensor| {
                conv.forward(t)
                    .unwrap()
                    .mul(&g)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64
            };
            for idx in [1, n / 2 + 3, n - 2] {
                let e = 1e-2f32;
                let mut d = vec![0f32; n];
                d[idx] = e;
                let dx = Tensor::from_vec(d, xs.as_slice(), &Device::Cpu).unwrap();
                let num = (f(&(x.as_tensor() + &dx).unwrap()) - f(&(x.as_tensor() - &dx).unwrap()))
                    / (2.0 * e as f64);
                assert!(
                    (num - an[idx] as f64).abs() < 2e-3 * (1.0 + num.abs()),
                    "{dims:?} pad {pad} stride {stride} at {idx}: numeric {num}, analytic {}",
                    an[idx]
                );
            }
        }
    }

    /// The parallel CPU max pool (no gradient) against candle's kernel on a -inf padded
    /// copy, as ResNet's stem and VGG-style nets use it, odd sizes included.
    #[test]
    fn cpu_max_pool_equals_candles() {
        for (k, s, p, h, w) in [
            (3, 2, 1, 112, 112),
            (3, 2, 1, 9, 12),
            (2, 2, 0, 7, 9),
            (3, 1, 1, 5, 6),
            (5, 3, 2, 11, 8),
        ] {
            let x = rand(&[2, 3, h, w], 51);
            let pool = Pool {
                kind: PoolKind::Max,
                dims: Dims::Two,
                kernel: k,
                stride: s,
                padding: p,
            };
            let ours = pool.forward(&x).unwrap();
            let padded = pad_spatial(&x, &[(p, p), (p, p)], f32::NEG_INFINITY).unwrap();
            let theirs = padded.max_pool2d_with_stride(k, s).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "k{k} s{s} p{p} {h}x{w}");
            let d = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "k{k} s{s} p{p} {h}x{w}");
        }
    }

    /// The packed CPU conv against candle's own conv2d (forward), over the shapes
    /// networks use: pointwise, strided pointwise, 3x3 and 7x7 with padding, odd sizes;
    /// at batch 1 with many channels on a small map, the output channels are split
    /// across jobs (100 = 34 + 34 + 32).
    #[test]
    fn packed_conv_equals_candles_conv2d() {
        for (n, cin, cout, k, s, p, h, w) in [
            (3, 8, 12, 1, 1, 0, 9, 7),
            (3, 8, 12, 1, 2, 0, 9, 7),
            (3, 5, 6, 3, 1, 1, 11, 13),
            (3, 5, 6, 3, 2, 1, 11, 13),
            (3, 3, 4, 7, 2, 3, 20, 17),
            (3, 4, 4, 3, 1, 0, 40, 3),
            (1, 16, 100, 3, 1, 1, 7, 7),
            (1, 16, 100, 1, 1, 0, 5, 6),
            (2, 8, 64, 3, 2, 1, 9, 9),
            // Planes over 256 pixels: one product per image and band, not per batch.
            (2, 3, 8, 3, 1, 1, 20, 20),
            // Strided im2col by phases (bands of one image): ResNet's stem, odd sizes.
            (1, 3, 8, 7, 2, 3, 40, 38),
            (2, 4, 8, 3, 2, 1, 35, 37),
            (1, 4, 8, 3, 3, 0, 50, 49),
            // Winograd F(2x2, 3x3) (3x3 stride 1, >= 16 channels): odd sizes (cut edge
            // tiles), no padding and padding 2, one job over a batch of small maps, and
            // bands of tile rows over a wide map.
            (2, 16, 24, 3, 1, 1, 9, 11),
            (1, 32, 16, 3, 1, 0, 8, 8),
            (3, 16, 16, 3, 1, 2, 5, 6),
            (4, 16, 20, 3, 1, 1, 7, 7),
            (1, 16, 16, 3, 1, 1, 40, 70),
        ] {
            let conv = Conv {
                dims: Dims::Two,
                weight: rand(&[cout, cin, k, k], 31),
                bias: Some(rand(&[cout], 32)),
                stride: s,
                padding: p,
                dilation: 1,
                groups: 1,
                tf_same: false,
                packed: Default::default(),
                groups_dense: Default::default(),
            };
            let x = rand(&[n, cin, h, w], 33);
            let ours = conv.forward(&x).unwrap();
            let theirs = x
                .conv2d(&conv.weight, p, s, 1, 1)
                .unwrap()
                .broadcast_add(&conv.bias.clone().unwrap().reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let d = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert!(
                d.to_scalar::<f32>().unwrap() < 1e-5,
                "n{n} {cin}->{cout} k{k} s{s} p{p}"
            );
        }
    }

    /// act(conv(x) + bias + residual) fused on the CPU equals candle's ops one by one,
    /// and so do the gradients to the input and to the residual (for the activations
    /// whose gradient the fused op computes).
    #[test]
    fn fused_epilogue_equals_separate_ops_forward_and_backward() {
        use candle_core::Var;
        let cases = [
            (Dims::Two, vec![6, 5, 3, 3], vec![2, 5, 9, 7], 1, 2, 1),
            // Winograd.
            (Dims::Two, vec![16, 16, 3, 3], vec![2, 16, 9, 7], 1, 1, 1),
            (Dims::Two, vec![8, 8, 1, 1], vec![1, 8, 6, 5], 1, 1, 1),
            (Dims::One, vec![4, 3, 5], vec![2, 3, 30], 1, 2, 1),
            (Dims::Two, vec![6, 1, 3, 3], vec![2, 6, 11, 9], 6, 2, 1),
            (Dims::Two, vec![6, 1, 3, 3], vec![1, 6, 12, 10], 6, 1, 2),
        ];
        for (dims, wshape, xshape, groups, stride, dilation) in cases {
            let c = wshape[0];
            let conv = Conv {
                dims,
                weight: rand(&wshape, 41),
                bias: Some(rand(&[c], 42)),
                stride,
                padding: 1,
                dilation,
                groups,
                tf_same: false,
                packed: Default::default(),
                groups_dense: Default::default(),
            };
            // Scaled so that ReLU6 clips on both sides.
            let x = Var::from_tensor(&(rand(&xshape, 43) * 20.0).unwrap()).unwrap();
            let plain = conv.forward(x.as_tensor()).unwrap();
            let r = Var::from_tensor(&(rand(plain.dims(), 44) * 8.0).unwrap()).unwrap();
            let acts = [
                Act::Identity,
                Act::Relu,
                Act::Relu6,
                Act::Sigmoid,
                Act::Silu,
                Act::HardSwish,
            ];
            for act in acts {
                // Depthwise convs fuse no residual (their blocks add none after them).
                let res = (groups == 1).then_some(r.as_tensor());
                let ours = conv.forward_with(x.as_tensor(), act, res).unwrap();
                let sum = match res {
                    Some(r) => (conv.forward(x.as_tensor()).unwrap() + r).unwrap(),
                    None => conv.forward(x.as_tensor()).unwrap(),
                };
                // The activations written out as PyTorch defines them.
                let theirs = match act {
                    Act::Identity => sum,
                    Act::Relu => sum.relu().unwrap(),
                    Act::Relu6 => sum.clamp(0f32, 6f32).unwrap(),
                    Act::Sigmoid => {
                        ((sum.neg().unwrap().exp().unwrap() + 1.0).unwrap().recip()).unwrap()
                    }
                    Act::Silu => {
                        (&sum / (sum.neg().unwrap().exp().unwrap() + 1.0).unwrap()).unwrap()
                    }
                    Act::HardSwish => (&sum
                        * ((&sum + 3.0).unwrap().clamp(0f32, 6f32).unwrap() / 6.0).unwrap())
                    .unwrap(),
                };
                let d = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap();
                assert!(d.to_scalar::<f32>().unwrap() < 1e-4, "{act:?} {wshape:?}");
                if !act.invertible() {
                    // Fused only where no gradient flows.
                    continue;
                }
                let mut vars = vec![&x];
                if res.is_some() {
                    vars.push(&r);
                }
                let gap = grad_gap(&ours, &theirs, &vars, 45);
                assert!(gap < 1e-4, "grad {act:?} {wshape:?}");
            }
        }
    }
}
