//! Layers over volumes (N, C, T, H, W): the 3D convolution and pooling of video models.
//! Kernels, strides and paddings are per axis, (time, height, width), because video
//! networks mix them: (1,3,3) spatial and (3,1,1) temporal convolutions, (1,2,2) strides.

use std::sync::{Arc, OnceLock};

use candle_core::Tensor;

use super::fastconv::conv3d::{Conv3dOp, Geometry3, Packed3};
use super::fastconv::Act;
use super::layers::{fold_bn, pad_spatial, window_index, ChannelAffine, Conv, Dims, PoolKind};
use super::weights::Weights;
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct Conv3d {
    /// (c_out, c_in, kt, kh, kw), PyTorch's layout.
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    pub dilation: [usize; 3],
    /// The weights packed for the CPU convolution, made at first use.
    pub packed: OnceLock<Arc<Packed3>>,
}

impl Conv3d {
    /// Reads `{prefix}.weight` (and `.bias` if present), checking the input channels and,
    /// when known, the output channels and kernel.
    pub fn load(
        w: &Weights,
        prefix: &str,
        in_channels: usize,
        out_channels: Option<usize>,
        kernel: [Option<usize>; 3],
    ) -> Result<Self> {
        let mut spec = vec![out_channels, Some(in_channels)];
        spec.extend(kernel);
        let weight = w.get(&format!("{prefix}.weight"), &spec)?;
        let bias = w.get_opt(&format!("{prefix}.bias"), &[Some(weight.dim(0)?)])?;
        Ok(Self::new(weight, bias))
    }

    /// Stride 1, no padding, no dilation.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            stride: [1; 3],
            padding: [0; 3],
            dilation: [1; 3],
            packed: OnceLock::new(),
        }
    }

    pub fn with(mut self, stride: [usize; 3], padding: [usize; 3]) -> Self {
        self.stride = stride;
        self.padding = padding;
        self
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Folds an eval-mode BatchNorm3d that follows this convolution into its weights.
    pub fn fold(&mut self, bn: &ChannelAffine) -> Result<()> {
        (self.weight, self.bias) = fold_bn(&self.weight, self.bias.as_ref(), bn)?;
        self.packed = OnceLock::new();
        Ok(())
    }

    fn geometry(&self) -> candle_core::Result<Geometry3> {
        let d = self.weight.dims();
        if d.len() != 5 {
            candle_core::bail!("conv3d: weight of shape {d:?}, expected 5 dims");
        }
        Ok(Geometry3 {
            c_in: d[1],
            c_out: d[0],
            kernel: [d[2], d[3], d[4]],
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
        })
    }

    fn packed(&self) -> candle_core::Result<Arc<Packed3>> {
        if let Some(p) = self.packed.get() {
            return Ok(p.clone());
        }
        let p = Arc::new(Packed3::new(
            self.geometry()?,
            &self.weight,
            self.bias.as_ref(),
        )?);
        Ok(self.packed.get_or_init(|| p).clone())
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(x, Act::Identity, None)
    }

    /// act(conv(x) + bias + residual): on the CPU the packed op with its epilogue,
    /// elsewhere [`Conv3d::by_taps`].
    pub fn forward_with(
        &self,
        x: &Tensor,
        act: Act,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
            let op = Conv3dOp {
                packed: self.packed()?,
                act,
            };
            let x = x.contiguous()?;
            return match residual {
                Some(r) => x.apply_op2(&r.contiguous()?, op),
                None => x.apply_op1(op),
            };
        }
        let y = self.by_taps(x)?;
        let y = match residual {
            Some(r) => (y + r)?,
            None => y,
        };
        act.tensor(&y)
    }

    /// The convolution as candle ops, for devices without the packed op (candle has no
    /// conv3d): for each temporal tap, the frames it reads go through a 2D convolution
    /// as one batch of images, and the taps are summed. Bias included.
    pub fn by_taps(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let g = self.geometry()?;
        let (n, _, t, _, _) = x.dims5()?;
        if g.stride[1] != g.stride[2]
            || g.padding[1] != g.padding[2]
            || g.dilation[1] != g.dilation[2]
        {
            candle_core::bail!(
                "conv3d: unequal height and width strides, paddings or dilations need the CPU"
            );
        }
        let [ot, _, _] = g.out([t, 1, 1]);
        let x = x.pad_with_zeros(2, g.padding[0], g.padding[0])?;
        let mut acc: Option<Tensor> = None;
        for a in 0..g.kernel[0] {
            let frames: Vec<u32> = (0..ot)
                .map(|o| (o * g.stride[0] + a * g.dilation[0]) as u32)
                .collect();
            let idx = Tensor::new(frames, x.device())?;
            let (_, c, _, h, w) = x.dims5()?;
            let xs = x
                .index_select(&idx, 2)?
                .permute((0, 2, 1, 3, 4))?
                .reshape((n * ot, c, h, w))?;
            // A 2D layer's dense path, which works around candle's conv2d backward.
            let k = Conv {
                dims: Dims::Two,
                weight: self.weight.narrow(2, a, 1)?.squeeze(2)?,
                bias: None,
                stride: g.stride[1],
                padding: g.padding[1],
                dilation: g.dilation[1],
                groups: 1,
                tf_same: false,
                packed: Default::default(),
                groups_dense: Default::default(),
            };
            let y = k.dense(&xs)?;
            acc = Some(match acc {
                None => y,
                Some(s) => (s + y)?,
            });
        }
        let y = acc.ok_or_else(|| candle_core::Error::Msg("conv3d: empty kernel".into()))?;
        let (_, co, oh, ow) = y.dims4()?;
        let y = y.reshape((n, ot, co, oh, ow))?.permute((0, 2, 1, 3, 4))?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, co, 1, 1, 1))?),
            None => Ok(y),
        }
    }
}

/// MaxPool3d / AvgPool3d with per-axis kernel, stride and (before, after) padding
/// (ceil mode is extra padding at the end, added by the caller).
#[derive(Clone, Debug)]
pub struct Pool3d {
    pub kind: PoolKind,
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [(usize, usize); 3],
}

impl Pool3d {
    /// A box's maximum (or mean, every window being full) is the maximum (mean) over one
    /// axis of those over the next: the volume is pooled one axis at a time. For max
    /// pooling the gradient reaches the box's first maximum in (t, h, w) order, as
    /// PyTorch's does: the first frame holding the maximum, its first such row, that
    /// row's first such column.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let fill = match self.kind {
            PoolKind::Max => f32::NEG_INFINITY,
            PoolKind::Avg => 0.0,
        };
        let mut y = pad_spatial(x, &self.padding, fill)?;
        for axis in 0..3 {
            y = pool_axis(
                &y,
                2 + axis,
                self.kernel[axis],
                self.stride[axis],
                self.kind,
            )?;
        }
        Ok(y)
    }
}

/// Windows of `k` values every `s` along `axis`, each reduced to its maximum or mean.
fn pool_axis(
    x: &Tensor,
    axis: usize,
    k: usize,
    s: usize,
    kind: PoolKind,
) -> candle_core::Result<Tensor> {
    if k == 1 && s == 1 {
        return Ok(x.clone());
    }
    let len = x.dim(axis)?;
    if len < k {
        candle_core::bail!("pooling: {len} values along an axis, fewer than the kernel's {k}");
    }
    let out = (len - k) / s + 1;
    let mut shape = x.dims().to_vec();
    shape[axis] = out;
    shape.insert(axis + 1, k);
    let w = x
        .index_select(&window_index(out, k, s, x.device())?, axis)?
        .reshape(shape)?;
    match kind {
        PoolKind::Max => {
            let idx = w.detach().argmax_keepdim(axis + 1)?;
            w.gather(&idx, axis + 1)?.squeeze(axis + 1)
        }
        PoolKind::Avg => w.mean(axis + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::random::test_tensor as rand;

    /// The convolution by its definition, one output value at a time.
    fn direct(conv: &Conv3d, x: &Tensor) -> Vec<f32> {
        let g = conv.geometry().unwrap();
        let (n, c, t, h, w) = x.dims5().unwrap();
        let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let wv: Vec<f32> = conv.weight.flatten_all().unwrap().to_vec1().unwrap();
        let bv: Option<Vec<f32>> = conv.bias.as_ref().map(|b| b.to_vec1().unwrap());
        let [ot, oh, ow] = g.out([t, h, w]);
        let [kt, kh, kw] = g.kernel;
        let at = |o: usize, k: usize, a: usize, len: usize| {
            let v = (o * g.stride[a] + k * g.dilation[a]) as isize - g.padding[a] as isize;
            (v >= 0 && (v as usize) < len).then_some(v as usize)
        };
        let mut out = Vec::new();
        for b in 0..n {
            for co in 0..g.c_out {
                for (zt, zy, zx) in
                    (0..ot).flat_map(|a| (0..oh).flat_map(move |y| (0..ow).map(move |z| (a, y, z))))
                {
                    let mut s = bv.as_ref().map_or(0.0, |b| b[co]) as f64;
                    for ci in 0..c {
                        for a in 0..kt {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let (Some(it), Some(iy), Some(ix)) =
                                        (at(zt, a, 0, t), at(zy, i, 1, h), at(zx, j, 2, w))
                                    else {
                                        continue;
                                    };
                                    let xi = (((b * c + ci) * t + it) * h + iy) * w + ix;
                                    let wi = (((co * c + ci) * kt + a) * kh + i) * kw + j;
                                    s += (xv[xi] * wv[wi]) as f64;
                                }
                            }
                        }
                    }
                    out.push(s as f32);
                }
            }
        }
        out
    }

    fn max_gap(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Anisotropic kernels, strides, paddings and a dilation, a batch of 2, and 1x1x1.
    fn cases() -> Vec<(Conv3d, Vec<usize>)> {
        let c = |co: usize, ci: usize, k: [usize; 3], seed| {
            Conv3d::new(
                rand(&[co, ci, k[0], k[1], k[2]], seed),
                Some(rand(&[co], seed + 1)),
            )
        };
        let mut dil = c(5, 3, [2, 3, 2], 7).with([1, 2, 1], [1, 1, 0]);
        dil.dilation = [2, 1, 2];
        vec![
            (
                c(4, 3, [3, 3, 3], 1).with([1, 1, 1], [1, 1, 1]),
                vec![2, 3, 5, 6, 7],
            ),
            (
                c(6, 3, [3, 7, 7], 3).with([1, 2, 2], [1, 3, 3]),
                vec![1, 3, 4, 11, 9],
            ),
            (
                c(4, 2, [3, 1, 1], 5).with([2, 1, 1], [1, 0, 0]),
                vec![2, 2, 5, 4, 3],
            ),
            (c(3, 4, [1, 1, 1], 9), vec![2, 4, 3, 4, 5]),
            (
                c(3, 4, [1, 1, 1], 11).with([2, 2, 2], [0, 0, 0]),
                vec![1, 4, 5, 4, 5],
            ),
            (dil, vec![1, 3, 6, 5, 7]),
        ]
    }

    #[test]
    fn packed_conv3d_is_the_convolution() {
        for (conv, shape) in cases() {
            let x = rand(&shape, 42);
            let ours: Vec<f32> = conv
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let want = direct(&conv, &x);
            assert!(
                max_gap(&ours, &want) < 1e-5,
                "{:?} {shape:?}",
                conv.geometry().unwrap()
            );
        }
    }

    #[test]
    fn taps_fallback_is_the_convolution() {
        for (conv, shape) in cases() {
            if conv.stride[1] != conv.stride[2] || conv.padding[1] != conv.padding[2] {
                continue;
            }
            let x = rand(&shape, 43);
            let y: Vec<f32> = conv
                .by_taps(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(max_gap(&y, &direct(&conv, &x)) < 1e-5);
        }
    }

    /// The input gradient is the adjoint of the convolution: <conv(x), g> = <x, conv'(g)>
    /// for the bias-free convolution, so every scattered tap must land where it was read.
    #[test]
    fn input_gradient_is_the_adjoint() {
        for (mut conv, shape) in cases() {
            conv.bias = None;
            let x = Var::from_tensor(&rand(&shape, 44)).unwrap();
            let y = conv.forward(x.as_tensor()).unwrap();
            let g = rand(y.dims(), 45);
            let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = grads.get(&x).unwrap();
            let lhs: f32 = y.mul(&g).unwrap().sum_all().unwrap().to_scalar().unwrap();
            let rhs: f32 = x
                .as_tensor()
                .mul(gx)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(
                (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
                "{lhs} vs {rhs}"
            );
            // And it is the gradient of the taps version (candle's own conv2d backward).
            if conv.stride[1] == conv.stride[2] && conv.padding[1] == conv.padding[2] {
                let y2 = conv.by_taps(x.as_tensor()).unwrap();
                let g2 = y2.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
                let a: Vec<f32> = gx.flatten_all().unwrap().to_vec1().unwrap();
                let b: Vec<f32> = g2
                    .get(&x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert!(max_gap(&a, &b) < 1e-4, "{:?}", conv.geometry().unwrap());
            }
        }
    }

    #[test]
    fn residual_and_relu_join_the_epilogue() {
        let (conv, shape) = cases().remove(0);
        let x = rand(&shape, 46);
        let plain = conv.forward(&x).unwrap();
        let r = rand(plain.dims(), 47);
        let fused = conv.forward_with(&x, Act::Relu, Some(&r)).unwrap();
        let want = (plain + &r).unwrap().relu().unwrap();
        let gap = (fused - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(gap.to_scalar::<f32>().unwrap() < 1e-6);
    }

    #[test]
    fn max_pool_takes_the_box_maximum_and_its_first_position() {
        // 1x1x(2x3x4) volume, pooled over (2,2,2) windows with stride (1,1,2), padding
        // (0,1,0): every output is the maximum of its box, computed directly here.
        let x = rand(&[1, 1, 2, 3, 4], 48);
        let pool = Pool3d {
            kind: PoolKind::Max,
            kernel: [2, 2, 2],
            stride: [1, 1, 2],
            padding: [(0, 0), (1, 1), (0, 0)],
        };
        let y: Vec<f32> = pool
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let mut want = Vec::new();
        for oy in 0..4usize {
            for ox in 0..2usize {
                let mut m = f32::NEG_INFINITY;
                for a in 0..2 {
                    for i in 0..2 {
                        let iy = (oy + i) as isize - 1;
                        if !(0..3).contains(&iy) {
                            continue;
                        }
                        for j in 0..2 {
                            m = m.max(v[(a * 3 + iy as usize) * 4 + 2 * ox + j]);
                        }
                    }
                }
                want.push(m);
            }
        }
        assert_eq!(y, want);
        // Ties (all zero): the gradient goes to the box's first element only.
        let z = Var::from_tensor(
            &Tensor::zeros((1, 1, 2, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let all = Pool3d {
            kind: PoolKind::Max,
            kernel: [2, 2, 2],
            stride: [2, 2, 2],
            padding: [(0, 0); 3],
        };
        let g = all
            .forward(z.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gz: Vec<f32> = g.get(&z).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(gz, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn avg_pool_is_the_box_mean() {
        let x = rand(&[2, 3, 4, 4, 6], 49);
        let pool = Pool3d {
            kind: PoolKind::Avg,
            kernel: [2, 2, 3],
            stride: [2, 2, 3],
            padding: [(0, 0); 3],
        };
        let y = pool.forward(&x).unwrap();
        assert_eq!(y.dims(), [2, 3, 2, 2, 2]);
        let first: f32 = x
            .narrow(0, 0, 1)
            .unwrap()
            .narrow(1, 0, 1)
            .unwrap()
            .narrow(2, 0, 2)
            .unwrap()
            .narrow(3, 0, 2)
            .unwrap()
            .narrow(4, 0, 3)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        let got: f32 = y
            .flatten_all()
            .unwrap()
            .get(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!((first - got).abs() < 1e-6);
    }
}
