//! The CPU convolution, as a candle custom op with its own backward.
//!
//! candle 0.11's CPU conv2d converts every input to NHWC, repacks the weights, and
//! builds its im2col tiles with a scattered, bounds-checked inner loop that took more
//! time than the matrix products (perf: ~35 % of a ResNet-18 forward). Here the weights
//! are packed once at load (BatchNorm already folded), im2col rows are contiguous
//! copies of input rows, each (image, band of output rows) is one single-threaded gemm
//! whose result lands directly in the NCHW output, bias added while it is in cache, and
//! 1x1 stride-1 convolutions skip im2col altogether. Jobs run in parallel on rayon.
//! 1D convolutions are 1-high 2D ones. The input gradient (what Grad-CAM needs below a
//! cut) is W^T times the output gradient, scattered back (col2im), per image.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

/// Geometry of a 2D convolution (1D: height 1, kernel height 1, no vertical padding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub c_in: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub dh: usize,
    pub dw: usize,
}

impl Geometry {
    fn k_size(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    fn out(&self, h: usize, w: usize) -> (usize, usize) {
        let oh = (h + 2 * self.ph).saturating_sub((self.kh - 1) * self.dh + 1) / self.sh + 1;
        let ow = (w + 2 * self.pw).saturating_sub((self.kw - 1) * self.dw + 1) / self.sw + 1;
        (oh, ow)
    }
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }
}

/// Weights packed once: (c_out, c_in*kh*kw) row-major, the im2col row order.
#[derive(Debug)]
pub struct Packed {
    pub geo: Geometry,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl Packed {
    pub fn new(geo: Geometry, weight: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Self> {
        let weight = weight
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
        if weight.len() != geo.c_out * geo.k_size() {
            candle_core::bail!(
                "packed conv: weight has {} values for {geo:?}",
                weight.len()
            );
        }
        let bias = bias
            .map(|b| b.to_dtype(candle_core::DType::F32)?.to_vec1())
            .transpose()?;
        Ok(Self { geo, weight, bias })
    }
}

/// Output rows per job: about 256 output pixels, at least one row.
fn band(ow: usize) -> usize {
    (256 / ow.max(1)).max(1)
}

/// How many groups of output channels (and how many channels each) to split `c_out`
/// into so that `jobs` (images x bands) give every thread about two jobs. Groups keep at
/// least 32 channels, so each gemm stays large enough to run at full speed.
fn channel_groups(c_out: usize, jobs: usize, threads: usize) -> (usize, usize) {
    let want = (2 * threads).div_ceil(jobs.max(1));
    let groups = want.clamp(1, (c_out / 32).max(1));
    (groups, c_out.div_ceil(groups))
}

/// Raw pointer that parallel jobs write through, each to its own region.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// A method, so closures capture the whole (Sync) wrapper, not the raw field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Fills `col` (k_size x (rows*ow)) with the im2col patch of output rows
/// [oy0, oy0+rows) of one image `x` (c_in, h, w).
fn im2col(
    g: &Geometry,
    x: &[f32],
    (h, w): (usize, usize),
    (oy0, rows, ow): (usize, usize, usize),
    col: &mut [f32],
) {
    let tp = rows * ow;
    let mut r = 0;
    for ci in 0..g.c_in {
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let dst = &mut col[r * tp..(r + 1) * tp];
                for (t, oy) in (oy0..oy0 + rows).enumerate() {
                    let seg = &mut dst[t * ow..(t + 1) * ow];
                    let iy = (oy * g.sh + i * g.dh) as isize - g.ph as isize;
                    if iy < 0 || iy >= h as isize {
                        seg.fill(0.0);
                        continue;
                    }
                    let row = &plane[iy as usize * w..(iy as usize + 1) * w];
                    let off = (j * g.dw) as isize - g.pw as isize;
                    if g.sw == 1 {
                        // Output columns whose input column lies inside the row.
                        let lo = (-off).clamp(0, ow as isize) as usize;
                        let hi = (w as isize - off).clamp(lo as isize, ow as isize) as usize;
                        seg[..lo].fill(0.0);
                        let start = (lo as isize + off) as usize;
                        seg[lo..hi].copy_from_slice(&row[start..start + (hi - lo)]);
                        seg[hi..].fill(0.0);
                    } else {
                        for (ox, v) in seg.iter_mut().enumerate() {
                            let ix = (ox * g.sw) as isize + off;
                            *v = if ix >= 0 && ix < w as isize {
                                row[ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
                r += 1;
            }
        }
    }
}

/// Adds `col` back into one image's gradient `gx` (c_in, h, w): the transpose of im2col.
fn col2im(
    g: &Geometry,
    col: &[f32],
    (h, w): (usize, usize),
    (oy0, rows, ow): (usize, usize, usize),
    gx: &mut [f32],
) {
    let tp = rows * ow;
    let mut r = 0;
    for ci in 0..g.c_in {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let src = &col[r * tp..(r + 1) * tp];
                for (t, oy) in (oy0..oy0 + rows).enumerate() {
                    let iy = (oy * g.sh + i * g.dh) as isize - g.ph as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let base = ci * h * w + iy as usize * w;
                    let off = (j * g.dw) as isize - g.pw as isize;
                    for (ox, v) in src[t * ow..(t + 1) * ow].iter().enumerate() {
                        let ix = (ox * g.sw) as isize + off;
                        if ix >= 0 && ix < w as isize {
                            gx[base + ix as usize] += v;
                        }
                    }
                }
                r += 1;
            }
        }
    }
}

/// C (m x n, row stride `rs_c`) = A (m x k, row-major) * B (k x n, row stride `rs_b`);
/// with `accumulate`, C += A*B.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    rs_c: usize,
    a: *const f32,
    rs_a: usize,
    cs_a: usize,
    b: *const f32,
    rs_b: usize,
    accumulate: bool,
) {
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        rs_c as isize,
        accumulate,
        a,
        cs_a as isize,
        rs_a as isize,
        b,
        1,
        rs_b as isize,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        Parallelism::None,
    )
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("camstream conv: float32 only");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("camstream conv: input must be contiguous"),
    }
}

/// The forward op: (N, c_in, H, W) -> (N, c_out, OH, OW).
pub struct ConvOp(pub Arc<Packed>);

impl CustomOp1 for ConvOp {
    fn name(&self) -> &'static str {
        "camstream-conv"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = &self.0;
        let g = &p.geo;
        let (n, c, h, w) = l.shape().dims4()?;
        if c != g.c_in {
            candle_core::bail!(
                "camstream conv: {c} input channels, weights take {}",
                g.c_in
            );
        }
        let x = contiguous_f32(s, l)?;
        let (oh, ow) = g.out(h, w);
        let plane = oh * ow;
        let mut out = vec![0f32; n * g.c_out * plane];
        let dst = SendPtr(out.as_mut_ptr());
        let rows = band(ow);
        let bands = oh.div_ceil(rows);
        let ks = g.k_size();
        // Small batches of small maps (batch 1 at ResNet's layer3/layer4 is one band)
        // would leave threads idle: split the output channels too.
        let (groups, per) = channel_groups(g.c_out, n * bands, rayon::current_num_threads());
        (0..n * bands * groups)
            .into_par_iter()
            .for_each_init(Vec::new, |col, job| {
                let (img_band, grp) = (job / groups, job % groups);
                let (b, t) = (img_band / bands, img_band % bands);
                let (co0, m) = (grp * per, per.min(g.c_out - grp * per));
                let oy0 = t * rows;
                let r = rows.min(oh - oy0);
                let tp = r * ow;
                let img = &x[b * c * h * w..(b + 1) * c * h * w];
                // SAFETY: each job writes only its own channels of its own band of rows of
                // its own image; `out` outlives the parallel loop; gemm reads
                // `img`/`col`/weights in bounds.
                unsafe {
                    let d = dst.get().add(b * g.c_out * plane + co0 * plane + oy0 * ow);
                    let wt = p.weight.as_ptr().add(co0 * ks);
                    if g.pointwise() {
                        let src = img.as_ptr().add(oy0 * ow);
                        matmul(m, tp, ks, d, plane, wt, ks, 1, src, plane, false);
                    } else {
                        col.resize(ks * tp, 0.0);
                        im2col(g, img, (h, w), (oy0, r, ow), col);
                        matmul(m, tp, ks, d, plane, wt, ks, 1, col.as_ptr(), tp, false);
                    }
                    if let Some(bias) = &p.bias {
                        for (co, bv) in bias[co0..co0 + m].iter().enumerate() {
                            let row = std::slice::from_raw_parts_mut(d.add(co * plane), tp);
                            for v in row {
                                *v += bv;
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, g.c_out, oh, ow))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        let g = grad.contiguous()?;
        Ok(Some(g.apply_op1_no_bwd(&ConvInputGrad {
            packed: self.0.clone(),
            h,
            w,
        })?))
    }
}

/// d(loss)/d(input) from d(loss)/d(output): per image, W^T * grad, then col2im.
struct ConvInputGrad {
    packed: Arc<Packed>,
    h: usize,
    w: usize,
}

impl CustomOp1 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "camstream-conv-input-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = &self.packed;
        let g = &p.geo;
        let (n, co, oh, ow) = l.shape().dims4()?;
        let gy = contiguous_f32(s, l)?;
        let (h, w) = (self.h, self.w);
        let plane = oh * ow;
        let ks = g.k_size();
        let mut gx = vec![0f32; n * g.c_in * h * w];
        let rows = band(ow);
        gx.par_chunks_mut(g.c_in * h * w)
            .enumerate()
            .for_each(|(b, gxi)| {
                let gyi = &gy[b * co * plane..(b + 1) * co * plane];
                if g.pointwise() {
                    // SAFETY: shapes checked above; W^T is W with swapped strides.
                    unsafe {
                        matmul(
                            ks,
                            plane,
                            co,
                            gxi.as_mut_ptr(),
                            plane,
                            p.weight.as_ptr(),
                            1,
                            ks,
                            gyi.as_ptr(),
                            plane,
                            true,
                        );
                    }
                    return;
                }
                let mut col = Vec::new();
                let mut oy0 = 0;
                while oy0 < oh {
                    let r = rows.min(oh - oy0);
                    let tp = r * ow;
                    col.clear();
                    col.resize(ks * tp, 0.0);
                    // SAFETY: col is ks x tp; the grad band starts at row oy0.
                    unsafe {
                        matmul(
                            ks,
                            tp,
                            co,
                            col.as_mut_ptr(),
                            tp,
                            p.weight.as_ptr(),
                            1,
                            ks,
                            gyi.as_ptr().add(oy0 * ow),
                            plane,
                            false,
                        );
                    }
                    col2im(g, &col, (h, w), (oy0, r, ow), gxi);
                    oy0 += r;
                }
            });
        Ok((CpuStorage::F32(gx), Shape::from((n, g.c_in, h, w))))
    }
}

/// Depthwise 2D convolution (one k x k filter per channel: packed with c_in = 1) on an
/// already padded input, planes in parallel; the bias is left to the caller. Its input
/// gradient scatters each output gradient back over the taps that read it.
pub struct DepthwiseOp(pub Arc<Packed>);

impl DepthwiseOp {
    fn out(&self, h: usize, w: usize) -> (usize, usize) {
        let g = &self.0.geo;
        let sh = (g.kh - 1) * g.dh + 1;
        let sw = (g.kw - 1) * g.dw + 1;
        ((h - sh) / g.sh + 1, (w - sw) / g.sw + 1)
    }
}

impl CustomOp1 for DepthwiseOp {
    fn name(&self) -> &'static str {
        "camstream-depthwise"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = contiguous_f32(s, l)?;
        let g = &self.0.geo;
        let (kh, kw, st, d) = (g.kh, g.kw, g.sh, g.dh);
        if g.c_in != 1 || g.c_out != c || h < (kh - 1) * d + 1 || w < (kw - 1) * d + 1 {
            candle_core::bail!("depthwise conv: input {n}x{c}x{h}x{w} does not fit the filters");
        }
        let (oh, ow) = self.out(h, w);
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(p, o)| {
            let ch = p % c;
            let xp = &x[p * h * w..(p + 1) * h * w];
            let f = &self.0.weight[ch * kh * kw..(ch + 1) * kh * kw];
            for i in 0..kh {
                for j in 0..kw {
                    let wv = f[i * kw + j];
                    for oy in 0..oh {
                        let row = &xp[(oy * st + i * d) * w..];
                        let dst = &mut o[oy * ow..(oy + 1) * ow];
                        if st == 1 {
                            let src = &row[j * d..j * d + ow];
                            for (a, b) in dst.iter_mut().zip(src) {
                                *a += wv * b;
                            }
                        } else {
                            for (ox, a) in dst.iter_mut().enumerate() {
                                *a += wv * row[ox * st + j * d];
                            }
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        let g = grad.contiguous()?;
        Ok(Some(g.apply_op1_no_bwd(&DepthwiseInputGrad {
            packed: self.0.clone(),
            h,
            w,
        })?))
    }
}

struct DepthwiseInputGrad {
    packed: Arc<Packed>,
    h: usize,
    w: usize,
}

impl CustomOp1 for DepthwiseInputGrad {
    fn name(&self) -> &'static str {
        "camstream-depthwise-input-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, oh, ow) = l.shape().dims4()?;
        let gy = contiguous_f32(s, l)?;
        let (h, w) = (self.h, self.w);
        let geo = &self.packed.geo;
        let (kh, kw, st, d) = (geo.kh, geo.kw, geo.sh, geo.dh);
        let mut gx = vec![0f32; n * c * h * w];
        gx.par_chunks_mut(h * w).enumerate().for_each(|(p, g)| {
            let ch = p % c;
            let gyp = &gy[p * oh * ow..(p + 1) * oh * ow];
            let f = &self.packed.weight[ch * kh * kw..(ch + 1) * kh * kw];
            for i in 0..kh {
                for j in 0..kw {
                    let wv = f[i * kw + j];
                    for oy in 0..oh {
                        let base = (oy * st + i * d) * w + j * d;
                        for (ox, v) in gyp[oy * ow..(oy + 1) * ow].iter().enumerate() {
                            g[base + ox * st] += wv * v;
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(gx), Shape::from((n, c, h, w))))
    }
}
