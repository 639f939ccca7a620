//! 3D convolutions (video models, (N, C, T, H, W)) on the same packed GEMM path as 2D.
//!
//! The output's frames and rows are one sequence of T_out·H_out rows, cut into bands as a
//! 2D output's rows are: each (clip, band, group of output channels) job builds the
//! im2col patch of its band straight from the input volume (every kernel tap
//! (channel, dt, dy, dx) a copy of input row segments, as in 2D) and runs one
//! single-threaded gemm whose result lands in the NCTHW output, epilogue included.
//! 1x1x1 stride-1 convolutions are a plain product. The input gradient is W^T times
//! the output gradient, scattered back per clip.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{
    add_row_segment, band, banded_jobs, contiguous_f32, count_flops, filled, matmul, row_segment,
    Act, BandedOutput, PackedView,
};

/// Geometry of a 3D convolution; every array is (time, height, width).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry3 {
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    pub dilation: [usize; 3],
}

impl Geometry3 {
    fn k_size(&self) -> usize {
        self.c_in * self.kernel.iter().product::<usize>()
    }

    /// Output (T, H, W) of an input volume.
    pub fn out(&self, dims: [usize; 3]) -> [usize; 3] {
        std::array::from_fn(|a| {
            let span = (self.kernel[a] - 1) * self.dilation[a] + 1;
            (dims[a] + 2 * self.padding[a]).saturating_sub(span) / self.stride[a] + 1
        })
    }

    fn pointwise(&self) -> bool {
        self.kernel == [1; 3] && self.stride == [1; 3] && self.padding == [0; 3]
    }
}

/// Weights packed once: (c_out, c_in·kt·kh·kw) row-major, the im2col row order.
#[derive(Debug)]
pub struct Packed3 {
    pub geo: Geometry3,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl Packed3 {
    pub fn new(
        geo: Geometry3,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> candle_core::Result<Self> {
        let (weight, bias) = super::host_weights(weight, bias, geo.c_out * geo.k_size(), &geo)?;
        Ok(Self { geo, weight, bias })
    }
}

/// Fills `col` (k_size x rows·ow) with the patch of output rows [r0, r0 + rows) of one
/// clip `x` (c_in, t, h, w), counting rows across frames (row r is frame r / oh, row
/// r % oh).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
    "x86_64+avx2+fma"
))]
fn im2col3(
    g: &Geometry3,
    x: &[f32],
    [t, h, w]: [usize; 3],
    (r0, rows, oh, ow): (usize, usize, usize, usize),
    col: &mut [f32],
) {
    let [kt, kh, kw] = g.kernel;
    let tp = rows * ow;
    for (r, dst) in col.chunks_exact_mut(tp).take(g.k_size()).enumerate() {
        let (ci, a, i, j) = (r / (kt * kh * kw), r / (kh * kw) % kt, r / kw % kh, r % kw);
        let off = (j * g.dilation[2]) as isize - g.padding[2] as isize;
        for (fr, seg) in (r0..r0 + rows).zip(dst.chunks_exact_mut(ow)) {
            match source_row(g, (ci, a, i), [t, h, w], fr, oh) {
                Some(at) => row_segment(&x[at..at + w], off, g.stride[2], seg),
                None => seg.fill(0.0),
            }
        }
    }
}

/// Where, in a clip of `dims`, the input row that kernel tap (channel, dt, dy) reads
/// for output row `fr` starts; None where it falls in the padding.
#[inline(always)]
fn source_row(
    g: &Geometry3,
    (ci, a, i): (usize, usize, usize),
    [t, h, w]: [usize; 3],
    fr: usize,
    oh: usize,
) -> Option<usize> {
    let at = |o: usize, k: usize, axis: usize, len: usize| {
        (o * g.stride[axis] + k * g.dilation[axis])
            .checked_sub(g.padding[axis])
            .filter(|&v| v < len)
    };
    let it = at(fr / oh, a, 0, t)?;
    let iy = at(fr % oh, i, 1, h)?;
    Some(((ci * t + it) * h + iy) * w)
}

/// The forward op: (N, c_in, T, H, W) -> (N, c_out, OT, OH, OW), then the epilogue; as
/// a `CustomOp2` the second argument is a residual shaped like the output.
pub struct Conv3dOp {
    pub packed: Arc<Packed3>,
    pub act: Act,
}

fn dims5(l: &Layout) -> candle_core::Result<[usize; 5]> {
    let d = l.shape().dims();
    match d {
        &[n, c, t, h, w] => Ok([n, c, t, h, w]),
        _ => candle_core::bail!("camstream conv3d: input of shape {d:?}, expected (N,C,T,H,W)"),
    }
}

impl Conv3dOp {
    fn forward(
        &self,
        x: &[f32],
        [n, c, t, h, w]: [usize; 5],
        residual: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = &self.packed;
        let g = &p.geo;
        if c != g.c_in {
            candle_core::bail!(
                "camstream conv3d: {c} input channels, weights take {}",
                g.c_in
            );
        }
        let [ot, oh, ow] = g.out([t, h, w]);
        let vol = ot * oh * ow;
        if residual.is_some_and(|r| r.len() != n * g.c_out * vol) {
            candle_core::bail!("camstream conv3d: the residual is not shaped like the output");
        }
        let ks = g.k_size();
        count_flops(n * g.c_out * vol * ks);
        let weights = PackedView {
            weight: &p.weight,
            bias: p.bias.as_deref(),
            c_out: g.c_out,
            groups: 1,
            ks,
            pointwise: g.pointwise(),
            act: self.act,
            gate: None,
        };
        let shape = BandedOutput {
            n,
            in_len: c * t * h * w,
            rows: ot * oh,
            ow,
        };
        let out = filled(n * g.c_out * vol, |dst| {
            banded_jobs(
                &weights,
                &shape,
                x,
                residual,
                dst,
                &|clip, (r0, r), col, _| im2col3(g, clip, [t, h, w], (r0, r, oh, ow), col),
            )
        });
        Ok((
            CpuStorage::F32(out),
            Shape::from(vec![n, g.c_out, ot, oh, ow]),
        ))
    }

    fn input_grad(&self, arg: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
        let d = arg.dims();
        grad.contiguous()?.apply_op1_no_bwd(&Conv3dInputGrad {
            packed: self.packed.clone(),
            dims: [d[2], d[3], d[4]],
        })
    }
}

super::epilogue_op!(Conv3dOp, "camstream-conv3d", dims5);

/// d(loss)/d(input) from d(loss)/d(output): per clip and band, W^T times the gradient,
/// then scattered back (the transpose of `im2col3`).
struct Conv3dInputGrad {
    packed: Arc<Packed3>,
    dims: [usize; 3],
}

impl CustomOp1 for Conv3dInputGrad {
    fn name(&self) -> &'static str {
        "camstream-conv3d-input-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = &self.packed;
        let g = &p.geo;
        let [n, co, ot, oh, ow] = dims5(l)?;
        let gy = contiguous_f32(s, l)?;
        let [t, h, w] = self.dims;
        let (vol, in_vol, ks) = (ot * oh * ow, g.c_in * t * h * w, g.k_size());
        let [kt, kh, kw] = g.kernel;
        let mut gx = vec![0f32; n * in_vol];
        let rows = band(ow);
        gx.par_chunks_mut(in_vol).enumerate().for_each(|(b, gxi)| {
            let gyi = &gy[b * co * vol..(b + 1) * co * vol];
            if g.pointwise() {
                // SAFETY: W^T is W with swapped strides; gx is ks x vol here.
                unsafe {
                    let wt = p.weight.as_ptr();
                    matmul(
                        ks,
                        vol,
                        co,
                        gxi.as_mut_ptr(),
                        vol,
                        wt,
                        1,
                        ks,
                        gyi.as_ptr(),
                        vol,
                        true,
                        1,
                    );
                }
                return;
            }
            let mut col = Vec::new();
            let mut r0 = 0;
            while r0 < ot * oh {
                let tp = rows.min(ot * oh - r0) * ow;
                col.clear();
                col.resize(ks * tp, 0.0);
                // SAFETY: col is ks x tp; the gradient band starts at row r0.
                unsafe {
                    let src = gyi.as_ptr().add(r0 * ow);
                    let wt = p.weight.as_ptr();
                    matmul(
                        ks,
                        tp,
                        co,
                        col.as_mut_ptr(),
                        tp,
                        wt,
                        1,
                        ks,
                        src,
                        vol,
                        false,
                        1,
                    );
                }
                for (r, src) in col.chunks_exact(tp).enumerate() {
                    let (ci, a, i, j) =
                        (r / (kt * kh * kw), r / (kh * kw) % kt, r / kw % kh, r % kw);
                    let off = (j * g.dilation[2]) as isize - g.padding[2] as isize;
                    for (fr, seg) in (r0..r0 + tp / ow).zip(src.chunks_exact(ow)) {
                        if let Some(at) = source_row(g, (ci, a, i), [t, h, w], fr, oh) {
                            add_row_segment(seg, off, g.stride[2], &mut gxi[at..at + w]);
                        }
                    }
                }
                r0 += tp / ow;
            }
        });
        Ok((CpuStorage::F32(gx), Shape::from(vec![n, g.c_in, t, h, w])))
    }
}
