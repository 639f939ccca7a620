//! GELU (the erf form) and erf on the CPU, vectorised and on every thread. candle's
//! `gelu_erf` and `erf` call libm's scalar `erff` once per value: a tenth of a
//! ConvNeXt-Tiny forward as dynamo exports it (Gelu), a sixth as TorchScript does (Erf).

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

use super::{act, contiguous_f32, filled, untracked_cpu_f32};

/// Values below which candle's op runs (spreading it costs more than it saves).
const PARALLEL_FROM: usize = 64 * 1024;
/// Values per task.
const PIECE: usize = 16 * 1024;

/// x · Φ(x) = x/2 · (1 + erf(x/√2)) for a contiguous f32 CPU tensor that no gradient
/// flows from; `None` otherwise (or when it is small), and the caller runs candle's,
/// which records its backward.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    map(x, Func::Gelu)
}

/// erf(x), where [`gelu_erf`] runs.
pub fn erf(x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    map(x, Func::Erf)
}

#[derive(Clone, Copy)]
enum Func {
    Gelu,
    Erf,
}

/// `f` over `x` in pieces on every thread, for the tensors [`gelu_erf`] takes.
fn map(x: &Tensor, f: Func) -> candle_core::Result<Option<Tensor>> {
    if !untracked_cpu_f32(x) || x.elem_count() < PARALLEL_FROM {
        return Ok(None);
    }
    let (s, l) = x.storage_and_layout();
    let Storage::Cpu(c) = &*s else {
        return Ok(None);
    };
    let src = contiguous_f32(c, l)?;
    let out = filled(src.len(), |dst| {
        src.par_chunks(PIECE).enumerate().for_each(|(k, piece)| {
            // SAFETY: piece k writes output values k * PIECE .. k * PIECE + piece.len(),
            // which no other piece writes, inside the output of src.len() values.
            unsafe { run(piece, dst.get().add(k * PIECE), f) }
        })
    });
    Ok(Some(Tensor::from_vec(out, x.dims(), x.device())?))
}

/// # Safety
/// `dst` must hold `src.len()` values.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
    "x86_64+avx2+fma"
))]
unsafe fn run(src: &[f32], dst: *mut f32, f: Func) {
    // SAFETY: the caller's contract.
    let dst = unsafe { std::slice::from_raw_parts_mut(dst, src.len()) };
    // One loop per function, each vectorised with its function inlined.
    match f {
        Func::Gelu => dst
            .iter_mut()
            .zip(src)
            .for_each(|(d, &x)| *d = act::gelu(x)),
        Func::Erf => dst.iter_mut().zip(src).for_each(|(d, &x)| *d = act::erf(x)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The ops against candle's libm GELU and erf, every value, on a tensor with both
    /// tails; and candle's own run where a gradient flows or the tensor is small.
    #[test]
    fn gelu_and_erf_equal_candles_within_float_rounding() -> candle_core::Result<()> {
        let m = PARALLEL_FROM + 7;
        let v: Vec<f32> = (0..3 * m)
            .map(|i| (i as f32 * 0.618_034).fract() * 24.0 - 12.0)
            .collect();
        let x = Tensor::from_vec(v, (3, m), &Device::Cpu)?;
        let got = gelu_erf(&x)?.expect("large, untracked, contiguous");
        let want = x.gelu_erf()?;
        let (g, w) = (
            got.flatten_all()?.to_vec1::<f32>()?,
            want.flatten_all()?.to_vec1::<f32>()?,
        );
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        for ((g, w), x) in g.iter().zip(&w).zip(&xs) {
            // x/2 times erf's 6e-7, plus rounding: two ulps at x = 2.24.
            let tol = 4e-7 * x.abs().max(1.0);
            assert!((g - w).abs() <= tol, "gelu({x}): {g} against {w}");
        }
        // erf itself: within Abramowitz and Stegun's 1.5e-7 of libm's, plus rounding.
        let got = erf(&x)?.expect("large, untracked, contiguous");
        let want = x.erf()?;
        let diff = (got - want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff <= 6e-7, "erf: largest difference {diff}");
        let tracked = Var::from_tensor(&x)?;
        assert!(gelu_erf(tracked.as_tensor())?.is_none());
        assert!(erf(tracked.as_tensor())?.is_none());
        assert!(gelu_erf(&x.narrow(0, 0, 1)?.narrow(1, 0, 100)?)?.is_none());
        Ok(())
    }
}
