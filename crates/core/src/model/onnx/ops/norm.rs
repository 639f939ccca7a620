//! Normalisations in inference form: BatchNormalization with running statistics (the
//! standalone ones the exporter cannot fold, as in DenseNet), LayerNormalization over
//! the trailing axes (ConvNeXt's, over a permuted NHWC tensor).

use super::{axis, one, unsupported, Ctx, OpFn, OpResult};
use candle_core::D;

pub(super) const OPS: &[(&str, OpFn)] = &[
    ("BatchNormalization", batch_norm),
    ("LayerNormalization", layer_norm),
];

/// y = (x - mean) / sqrt(var + eps) · scale + bias, per channel (dim 1), as one
/// multiply-add with precomputed per-channel factors.
fn batch_norm(c: &Ctx) -> OpResult {
    if c.int("training_mode").unwrap_or(0) != 0 {
        return Err(unsupported("BatchNormalization in training mode"));
    }
    let x = c.input(0)?;
    let (scale, bias, mean, var) = (c.input(1)?, c.input(2)?, c.input(3)?, c.input(4)?);
    let eps = c.float("epsilon").unwrap_or(1e-5) as f64;
    // Per-channel factors in f32, as torch's CPU inference kernel computes them.
    let s = scale.broadcast_div(&(var + eps)?.sqrt()?)?;
    let shift = (bias - mean.mul(&s)?)?;
    let mut shape = vec![1; x.rank()];
    shape[1] = s.dim(0)?;
    let s = s.reshape(shape.clone())?;
    let shift = shift.reshape(shape)?;
    one(x.broadcast_mul(&s)?.broadcast_add(&shift)?)
}

/// Normalises over the axes from `axis` to the last, in f32 like torch.
fn layer_norm(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let first = axis(c.int("axis").unwrap_or(-1), x.rank())?;
    let eps = c.float("epsilon").unwrap_or(1e-5) as f64;
    let shape = x.dims().to_vec();
    let inner: usize = shape[first..].iter().product();
    let rows = x.elem_count() / inner.max(1);
    let flat = x.contiguous()?.reshape((rows, inner))?;
    let mean = flat.mean_keepdim(D::Minus1)?;
    let centred = flat.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape(shape)?;
    let mut y = normed.broadcast_mul(&c.input(1)?)?;
    if let Some(b) = c.opt(2) {
        y = y.broadcast_add(&b)?;
    }
    one(y)
}
