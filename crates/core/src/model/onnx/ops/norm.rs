//! Normalisations in inference form: BatchNormalization with running statistics (the
//! standalone ones the exporter cannot fold, as in DenseNet), LayerNormalization over
//! the trailing axes (ConvNeXt's, over a permuted NHWC tensor).

use super::{axis, one, unsupported, Ctx, OpError, OpFn, OpResult};
use crate::model::layers::{Conv, Dims};
use candle_core::{DType, Tensor, D};

pub(super) const OPS: &[(&str, OpFn)] = &[
    ("BatchNormalization", batch_norm),
    ("LayerNormalization", layer_norm),
];

/// y = (x - mean) / sqrt(var + eps) · scale + bias, per channel (dim 1), as one
/// multiply-add with precomputed per-channel factors. On the CPU a 4D input with constant
/// statistics runs as a depthwise 1x1 convolution (built once), which also takes a fused
/// activation (DenseNet's norm, ReLU before each conv, see `fuse`): one pass over the
/// tensor instead of a broadcast multiply, a broadcast add and the ReLU.
fn batch_norm(c: &Ctx) -> OpResult {
    if c.int("training_mode").unwrap_or(0) != 0 {
        return Err(unsupported("BatchNormalization in training mode"));
    }
    let x = c.input(0)?;
    let factors = || -> Result<(Tensor, Tensor), OpError> {
        let (scale, bias, mean, var) = (c.input(1)?, c.input(2)?, c.input(3)?, c.input(4)?);
        let eps = c.float("epsilon").unwrap_or(1e-5) as f64;
        // Per-channel factors in f32, as torch's CPU inference kernel computes them.
        let s = scale.broadcast_div(&(var + eps)?.sqrt()?)?;
        let shift = (bias - mean.mul(&s)?)?;
        Ok((s, shift))
    };
    let per_channel = x.rank() == 4
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && (1..5).all(|i| c.is_const(i));
    if per_channel {
        let conv = match c.node.conv.get() {
            Some(conv) => conv,
            None => {
                let (s, shift) = factors()?;
                let channels = x.dim(1)?;
                if s.elem_count() != channels || shift.elem_count() != channels {
                    return Err(unsupported(format!(
                        "BatchNormalization of {} channels on input {:?}",
                        s.elem_count(),
                        x.dims()
                    )));
                }
                let built = Conv {
                    dims: Dims::Two,
                    weight: s.reshape((channels, 1, 1, 1))?,
                    bias: Some(shift.reshape(channels)?),
                    stride: 1,
                    padding: 0,
                    dilation: 1,
                    groups: channels,
                    tf_same: false,
                    packed: Default::default(),
                    groups_dense: Default::default(),
                };
                c.node.conv.get_or_init(|| built)
            }
        };
        return one(conv.forward_with(&x, c.act, None)?);
    }
    let (s, shift) = factors()?;
    let mut shape = vec![1; x.rank()];
    shape[1] = s.dim(0)?;
    let s = s.reshape(shape.clone())?;
    let shift = shift.reshape(shape)?;
    one(c.act.tensor(&x.broadcast_mul(&s)?.broadcast_add(&shift)?)?)
}

/// Normalises over the axes from `axis` to the last, in f32 like torch.
fn layer_norm(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let first = axis(c.int("axis").unwrap_or(-1), x.rank())?;
    let eps = c.float("epsilon").unwrap_or(1e-5) as f64;
    let shape = x.dims().to_vec();
    let inner: usize = shape[first..].iter().product();
    let scale = c.input(1)?;
    let bias = c.opt(2);
    if let Some(y) =
        crate::model::fastconv::layernorm::layer_norm(&x, inner, &scale, bias.as_ref(), eps as f32)?
    {
        return one(y);
    }
    let rows = x.elem_count() / inner.max(1);
    let flat = x.contiguous()?.reshape((rows, inner))?;
    let mean = flat.mean_keepdim(D::Minus1)?;
    let centred = flat.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape(shape)?;
    let mut y = normed.broadcast_mul(&scale)?;
    if let Some(b) = bias {
        y = y.broadcast_add(&b)?;
    }
    one(y)
}
