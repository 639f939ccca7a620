//! LayerNorm over trailing axes on the CPU where no gradient flows, one pass per row on
//! every thread. As candle ops it was a copy, two means, a square and four broadcasts:
//! seven passes over ConvNeXt's activations, each a fresh tensor.

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, filled};

/// Values below which the candle ops run.
const PARALLEL_FROM: usize = 64 * 1024;
/// Values per task, at least: whole rows.
const PIECE: usize = 16 * 1024;

/// (x - mean) / sqrt(var + eps) · scale + bias over rows of `inner` values (the trailing
/// axes), for an f32 CPU `x` that no gradient flows from, with constant `scale` and
/// `bias` of `inner` values; `None` otherwise (or when small), and the caller runs the
/// candle ops, which record their backward.
pub fn layer_norm(
    x: &Tensor,
    inner: usize,
    scale: &Tensor,
    bias: Option<&Tensor>,
    eps: f32,
) -> candle_core::Result<Option<Tensor>> {
    let f32_cpu =
        |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && !t.track_op();
    let factor = |t: &Tensor| f32_cpu(t) && t.elem_count() == inner;
    if inner == 0
        || !f32_cpu(x)
        || !factor(scale)
        || !bias.is_none_or(factor)
        || x.elem_count() < PARALLEL_FROM
        || !x.elem_count().is_multiple_of(inner)
    {
        return Ok(None);
    }
    let scale = scale.flatten_all()?.to_vec1::<f32>()?;
    let bias = match bias {
        Some(b) => b.flatten_all()?.to_vec1::<f32>()?,
        None => vec![0.0; inner],
    };
    // Only a norm over the channels alone reads the view directly.
    if let Some(dims) = nchw_view(x).filter(|&(_, c, plane)| c == inner && plane > 0) {
        return nchw(x, dims, &scale, &bias, eps).map(Some);
    }
    let x = x.contiguous()?;
    let (s, l) = x.storage_and_layout();
    let Storage::Cpu(c) = &*s else {
        return Ok(None);
    };
    let src = contiguous_f32(c, l)?;
    let piece = PIECE.div_ceil(inner) * inner;
    let out = filled(src.len(), |dst| {
        src.par_chunks(piece).enumerate().for_each(|(k, rows)| {
            // SAFETY: piece k writes output values k * piece .. k * piece + rows.len(),
            // which no other piece writes, inside the output of src.len() values.
            unsafe { norm_rows(rows, inner, &scale, &bias, eps, dst.get().add(k * piece)) }
        })
    });
    Ok(Some(Tensor::from_vec(out, x.dims(), x.device())?))
}

/// (images, channels, H·W) when `x` (N, H, W, C) is a contiguous NCHW tensor seen
/// through permute(0, 2, 3, 1), as ConvNeXt normalises it.
fn nchw_view(x: &Tensor) -> Option<(usize, usize, usize)> {
    let l = x.layout();
    let (&[n, h, w, c], &[sn, sh, sw, sc]) = (x.dims(), l.stride()) else {
        return None;
    };
    (sc == h * w && sw == 1 && sh == w && sn == c * h * w).then_some((n, c, h * w))
}

/// The NCHW view normalised without a transposing copy first: each tile of positions
/// is gathered into rows (from cache) and normalised straight into the NHWC output.
fn nchw(
    x: &Tensor,
    (images, c, plane): (usize, usize, usize),
    scale: &[f32],
    bias: &[f32],
    eps: f32,
) -> candle_core::Result<Tensor> {
    let (s, l) = x.storage_and_layout();
    let Storage::Cpu(candle_core::CpuStorage::F32(v)) = &*s else {
        candle_core::bail!("layer_norm: f32 CPU input");
    };
    let src = &v[l.start_offset()..l.start_offset() + images * c * plane];
    // Positions per job (whole tiles), and positions gathered at a time.
    const TILE: usize = 16;
    let chunk = (PIECE / c).max(TILE).div_ceil(TILE) * TILE;
    let per_image = plane.div_ceil(chunk);
    let out = filled(src.len(), |dst| {
        (0..images * per_image).into_par_iter().for_each(|j| {
            let (i, p_start) = (j / per_image, j % per_image * chunk);
            let image = &src[i * c * plane..(i + 1) * c * plane];
            let mut rows = vec![0f32; TILE * c];
            for p0 in (p_start..(p_start + chunk).min(plane)).step_by(TILE) {
                let t = TILE.min(plane - p0);
                for (ch, values) in image.chunks_exact(plane).enumerate() {
                    for (k, &v) in values[p0..p0 + t].iter().enumerate() {
                        rows[k * c + ch] = v;
                    }
                }
                // SAFETY: positions p0..p0+t of image i are output rows that only this
                // job writes, t * c values from (i * plane + p0) * c, inside the output.
                unsafe {
                    let d = dst.get().add((i * plane + p0) * c);
                    norm_rows(&rows[..t * c], c, scale, bias, eps, d)
                }
            }
        })
    });
    Tensor::from_vec(out, x.dims(), x.device())
}

/// # Safety
/// `dst` must hold `src.len()` values; `src.len()` is a multiple of `inner`, the length
/// of `scale` and `bias`.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
    "x86_64+avx2+fma"
))]
unsafe fn norm_rows(
    src: &[f32],
    inner: usize,
    scale: &[f32],
    bias: &[f32],
    eps: f32,
    dst: *mut f32,
) {
    // SAFETY: the caller's contract.
    let dst = unsafe { std::slice::from_raw_parts_mut(dst, src.len()) };
    let n = inner as f32;
    for (row, out) in src.chunks_exact(inner).zip(dst.chunks_exact_mut(inner)) {
        let mean = lane_sum(row, |v| v) / n;
        let var = lane_sum(row, |v| (v - mean) * (v - mean)) / n;
        let rstd = 1.0 / (var + eps).sqrt();
        for (((o, &v), &s), &b) in out.iter_mut().zip(row).zip(scale).zip(bias) {
            *o = (v - mean) * rstd * s + b;
        }
    }
}

/// The sum of `f` over `row`, kept in 8 lanes so that it vectorises (one accumulator
/// is a serial chain the compiler may not reorder).
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut lanes = row.chunks_exact(8);
    for c in &mut lanes {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail: f32 = lanes.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    /// The op against the candle ops it replaces, on ConvNeXt's transposed view (whose
    /// plane is no whole number of tiles) and on a contiguous tensor, with an offset
    /// mean; and the candle ops where a gradient flows or the tensor is small.
    #[test]
    fn fused_layer_norm_equals_the_candle_ops() -> candle_core::Result<()> {
        let (b, c, h, w) = (2, 96, 19, 23);
        let v: Vec<f32> = (0..b * c * h * w)
            .map(|i| 3.0 + (i as f32 * 0.618_034).fract() * 4.0)
            .collect();
        let nchw = Tensor::from_vec(v, (b, c, h, w), &Device::Cpu)?;
        let x = nchw.permute((0, 2, 3, 1))?;
        let scale = Tensor::arange(0f32, c as f32, &Device::Cpu)?.affine(0.01, 0.5)?;
        let bias = Tensor::arange(0f32, c as f32, &Device::Cpu)?.affine(-0.02, 0.1)?;
        assert!(nchw_view(&x).is_some() && nchw_view(&x.contiguous()?).is_none());
        let got = layer_norm(&x, c, &scale, Some(&bias), 1e-6)?.expect("large, untracked");
        let contiguous = layer_norm(&x.contiguous()?, c, &scale, Some(&bias), 1e-6)?;
        let flat = x.contiguous()?;
        let mean = flat.mean_keepdim(D::Minus1)?;
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let want = centred
            .broadcast_div(&(var + 1e-6)?.sqrt()?)?
            .broadcast_mul(&scale)?
            .broadcast_add(&bias)?;
        assert_eq!(got.dims(), &[b, h, w, c]);
        let diff = (&got - want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 2e-6, "largest difference {diff}");
        let same = (got - contiguous.expect("large, untracked"))?.abs()?;
        assert_eq!(same.flatten_all()?.max(0)?.to_scalar::<f32>()?, 0.0);
        let tracked = Var::from_tensor(&x.contiguous()?)?;
        assert!(layer_norm(tracked.as_tensor(), c, &scale, None, 1e-6)?.is_none());
        assert!(layer_norm(&x.narrow(0, 0, 1)?.narrow(1, 0, 2)?, c, &scale, None, 1e-6)?.is_none());
        assert!(layer_norm(&x, c, &scale.narrow(0, 0, 10)?, None, 1e-6)?.is_none());
        // Over the last three axes of the same view: rows of h·w·c, not the channels.
        let inner = h * w * c;
        let wide = Tensor::arange(0f32, inner as f32, &Device::Cpu)?.affine(1e-4, 0.5)?;
        let got = layer_norm(&x, inner, &wide, None, 1e-6)?.expect("large, untracked");
        let flat = x.contiguous()?.reshape((b, inner))?;
        let centred = flat.broadcast_sub(&flat.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let want = centred
            .broadcast_div(&(var + 1e-6)?.sqrt()?)?
            .broadcast_mul(&wide)?;
        let diff = (got.reshape((b, inner))? - want)?
            .abs()?
            .flatten_all()?
            .max(0)?;
        assert!(diff.to_scalar::<f32>()? < 1e-5, "three axes: {diff}");
        Ok(())
    }
}
