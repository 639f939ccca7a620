//! Concatenation on the CPU, copied on every thread. DenseNet concatenates all earlier
//! feature maps before each of its layers, and candle's `Tensor::cat` copies on the
//! calling thread alone: 15 % of a DenseNet-121 forward at batch 8, with the other
//! thread idle.

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, filled, untracked_cpu_f32};

/// Values below which candle's copy runs (spreading it costs more than it saves).
const PARALLEL_FROM: usize = 64 * 1024;
/// Values per copy task: large enough to amortise the task, small enough to balance.
const PIECE: usize = 32 * 1024;

/// `Tensor::cat(ts, axis)` for contiguous f32 CPU tensors that no gradient flows from
/// (no backward is recorded); `None` where that does not hold, or the shapes disagree
/// off `axis`, or the result is small: the caller then runs candle's, which also reports
/// the errors.
pub fn cat(ts: &[Tensor], axis: usize) -> candle_core::Result<Option<Tensor>> {
    let Some(first) = ts.first() else {
        return Ok(None);
    };
    let agree = |t: &Tensor| {
        t.rank() == first.rank()
            && (0..t.rank()).all(|d| d == axis || t.dims()[d] == first.dims()[d])
    };
    let usable =
        axis < first.rank() && ts.len() > 1 && ts.iter().all(|t| untracked_cpu_f32(t) && agree(t));
    let total: usize = ts.iter().map(Tensor::elem_count).sum();
    if !usable || total < PARALLEL_FROM {
        return Ok(None);
    }
    let outer: usize = first.dims()[..axis].iter().product();
    let inner: Vec<usize> = ts.iter().map(|t| t.elem_count() / outer.max(1)).collect();
    let row: usize = inner.iter().sum();
    let held: Vec<_> = ts.iter().map(Tensor::storage_and_layout).collect();
    let srcs = held
        .iter()
        .map(|(s, l)| match &**s {
            Storage::Cpu(c) => contiguous_f32(c, l),
            _ => candle_core::bail!("cat: not a CPU tensor"),
        })
        .collect::<candle_core::Result<Vec<&[f32]>>>()?;
    // (input, offset in it, offset in the output, length): each input's block of every
    // outer index, cut into pieces.
    let mut pieces = Vec::new();
    for o in 0..outer {
        let mut at = o * row;
        for (i, &n) in inner.iter().enumerate() {
            for s in (0..n).step_by(PIECE) {
                pieces.push((i, o * n + s, at + s, PIECE.min(n - s)));
            }
            at += n;
        }
    }
    let out = filled(outer * row, |dst| {
        pieces.par_iter().for_each(|&(i, from, to, len)| {
            // SAFETY: the pieces tile the output exactly once, and each reads `len`
            // values of its input inside its (outer, input) block.
            unsafe {
                std::ptr::copy_nonoverlapping(srcs[i].as_ptr().add(from), dst.get().add(to), len)
            }
        })
    });
    let mut dims = first.dims().to_vec();
    dims[axis] = ts.iter().map(|t| t.dims()[axis]).sum();
    Ok(Some(Tensor::from_vec(out, dims, first.device())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn ramp(dims: &[usize], from: f32) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|i| from + i as f32).collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    /// Equal to candle's cat, value for value, along every axis; inputs of uneven sizes
    /// along it (DenseNet's growing channels) and a piece split inside one block.
    #[test]
    fn parallel_cat_equals_candles() {
        for (shapes, axis) in [
            (vec![[2, 64, 28, 28], [2, 32, 28, 28], [2, 96, 28, 28]], 1),
            (vec![[3, 8, 60, 60], [1, 8, 60, 60]], 0),
            (vec![[2, 4, 90, 100], [2, 4, 90, 30]], 3),
            (vec![[1, 300, 300, 1], [1, 1, 300, 1]], 1),
        ] {
            let ts: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| ramp(s, 1e6 * i as f32))
                .collect();
            let ours = cat(&ts, axis).unwrap().expect("the parallel copy runs");
            let theirs = Tensor::cat(&ts, axis).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let (a, b) = (ours.flatten_all().unwrap(), theirs.flatten_all().unwrap());
            assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
        }
    }

    /// Where a gradient flows, or the result is small, or the shapes disagree, candle's
    /// cat runs instead (it records the backward, and reports the error).
    #[test]
    fn cat_falls_back_to_candles() {
        let big = ramp(&[1, 64, 32, 32], 0.0);
        let tracked = Var::from_tensor(&big).unwrap();
        assert!(cat(&[big.clone(), tracked.as_tensor().clone()], 1)
            .unwrap()
            .is_none());
        let small = ramp(&[1, 2, 4, 4], 0.0);
        assert!(cat(&[small.clone(), small], 1).unwrap().is_none());
        let other = ramp(&[1, 64, 32, 31], 0.0);
        assert!(cat(&[big.clone(), other], 1).unwrap().is_none());
        assert!(cat(&[big.clone(), big.t().unwrap()], 1).unwrap().is_none());
    }
}
