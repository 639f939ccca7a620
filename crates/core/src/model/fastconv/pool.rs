//! Max pooling on the CPU where no gradient flows (the part of a network before its
//! cut): planes in parallel, padding read as -inf without a padded copy. candle's
//! kernel runs on one thread over a padded copy; in a ResNet stem that serial step left
//! the other cores idle for about a tenth of a batch-8 forward.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use super::contiguous_f32;

/// (N, C, H, W) -> (N, C, OH, OW): the maximum of each k x k window, stride s, padding p
/// (PyTorch's `max_pool2d`, floor mode).
pub struct MaxPoolOp {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPoolOp {
    fn out(&self, len: usize) -> usize {
        (len + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// The input rows (or columns) window `o` covers, clipped to [0, len).
    fn window(&self, o: usize, len: usize) -> std::ops::Range<usize> {
        let start = (o * self.stride).saturating_sub(self.padding);
        let end = (o * self.stride + self.kernel)
            .saturating_sub(self.padding)
            .min(len);
        start..end
    }
}

/// One output plane: the window's rows reduced into a -inf padded row, which is
/// split into its `stride` phases so that every column tap is a contiguous max.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
    "x86_64+avx2+fma"
))]
fn pool_plane(
    op: &MaxPoolOp,
    plane: &[f32],
    (h, w): (usize, usize),
    o: &mut [f32],
    ow: usize,
    buf: &mut Vec<f32>,
) {
    let (k, s, p) = (op.kernel, op.stride, op.padding);
    let padded = w + 2 * p;
    let per = padded.div_ceil(s);
    buf.clear();
    buf.resize(padded + s * per, f32::NEG_INFINITY);
    let (vmax, phases) = buf.split_at_mut(padded);
    for (oy, dst) in o.chunks_exact_mut(ow).enumerate() {
        let rows = op.window(oy, h);
        let inner = &mut vmax[p..p + w];
        inner.copy_from_slice(&plane[rows.start * w..(rows.start + 1) * w]);
        for iy in rows.start + 1..rows.end {
            for (m, v) in inner.iter_mut().zip(&plane[iy * w..(iy + 1) * w]) {
                *m = m.max(*v);
            }
        }
        for (r, phase) in phases.chunks_exact_mut(per).enumerate() {
            for (d, v) in phase.iter_mut().zip(vmax[r..].iter().step_by(s)) {
                *d = *v;
            }
        }
        dst.fill(f32::NEG_INFINITY);
        for j in 0..k {
            let tap = &phases[(j % s) * per + j / s..][..ow];
            for (d, v) in dst.iter_mut().zip(tap) {
                *d = d.max(*v);
            }
        }
    }
}

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "camstream-max-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = contiguous_f32(s, l)?;
        if self.kernel == 0
            || self.stride == 0
            || h + 2 * self.padding < self.kernel
            || w + 2 * self.padding < self.kernel
            || 2 * self.padding > self.kernel
        {
            candle_core::bail!(
                "max pool: {h}x{w} does not fit kernel {} / padding {}",
                self.kernel,
                self.padding
            );
        }
        let (oh, ow) = (self.out(h), self.out(w));
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each_init(Vec::new, |buf, (o, plane)| {
                pool_plane(self, plane, (h, w), o, ow, buf)
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}
