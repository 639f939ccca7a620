//! The CPU convolution, as a candle custom op with its own backward.
//!
//! candle 0.11's CPU conv2d converts every input to NHWC, repacks the weights, and
//! builds its im2col tiles with a scattered, bounds-checked inner loop that took more
//! time than the matrix products (perf: ~35 % of a ResNet-18 forward). Here the weights
//! are packed once at load (BatchNorm already folded), im2col rows are contiguous
//! copies of input rows, each (image, band of output rows) is one single-threaded gemm
//! whose result lands directly in the NCHW output, bias added while it is in cache, and
//! 1x1 stride-1 convolutions skip im2col altogether. Jobs run in parallel on rayon.
//! A squeeze-and-excitation gate, one scale per (image, input channel), can be applied
//! to the patch as it is built, so its gated copy of the input is never made.
//! The epilogue (bias, a residual added, an [`Act`]) runs on each job's rows while
//! they are in cache, so a ResNet block or a MobileNet conv is one pass over memory,
//! not three; its backward masks the gradient by the saved output.
//! 1D convolutions are 1-high 2D ones. The input gradient (what Grad-CAM needs below a
//! cut) is W^T times the output gradient, scattered back (col2im), per image.
//! Submodules: `winograd` (3x3 stride-1 convolutions on larger maps), `depthwise`,
//! `pool` (max pooling where no gradient flows), `act` (the fused activations),
//! `concat` (channel concatenation copied on every thread), `grouped` (grouped
//! convolutions where no gradient flows), `gelu` and `layernorm` (ONNX's GELU and
//! LayerNormalization where no gradient flows, on every thread).

mod act;
pub mod concat;
pub mod conv3d;
mod depthwise;
pub mod gelu;
mod grouped;
pub mod layernorm;
pub mod pool;
mod winograd;

pub use act::Act;
pub use depthwise::DepthwiseOp;
pub use grouped::GroupedConvOp;

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
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

/// Weights packed once: (c_out, c_in*kh*kw) row-major, the im2col row order; and for
/// 3x3 stride-1 convolutions also Winograd-transformed (see `winograd`).
#[derive(Debug)]
pub struct Packed {
    pub geo: Geometry,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    winograd: Option<Vec<f32>>,
}

impl Packed {
    /// Weights of a convolution in groups (depthwise included): `geo` has one group's
    /// input channels. No Winograd transform (`new` adds it where it applies): the
    /// grouped ops convolve directly.
    pub fn grouped(
        geo: Geometry,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> candle_core::Result<Self> {
        let (weight, bias) = host_weights(weight, bias, geo.c_out * geo.k_size(), &geo)?;
        Ok(Self {
            geo,
            weight,
            bias,
            winograd: None,
        })
    }

    pub fn new(geo: Geometry, weight: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Self> {
        let mut p = Self::grouped(geo, weight, bias)?;
        p.winograd = (winograd::eligible(&p.geo) && winograd::enabled())
            .then(|| winograd::transform_weights(&p.geo, &p.weight));
        Ok(p)
    }
}

/// A convolution's weights (`len` values, row-major) and bias on the host as f32.
fn host_weights(
    weight: &Tensor,
    bias: Option<&Tensor>,
    len: usize,
    geo: &dyn std::fmt::Debug,
) -> candle_core::Result<(Vec<f32>, Option<Vec<f32>>)> {
    let w: Vec<f32> = weight
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    if w.len() != len {
        candle_core::bail!("packed conv: weight has {} values for {geo:?}", w.len());
    }
    let bias = bias
        .map(|b| b.to_dtype(candle_core::DType::F32)?.to_vec1())
        .transpose()?;
    Ok((w, bias))
}

/// Output planes up to this size (ResNet's layer3 and layer4 at 224x224) are computed
/// for the whole batch in one product.
const BATCHED_PLANE: usize = 256;

/// Values (32 MB) up to which the batched path's buffers stay in a thread's scratch.
const KEPT_SCRATCH: usize = 8 << 20;

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

/// One job's epilogue: `m` output channels of `tp` values each, `plane` apart in `d`
/// (and in `res`, laid out like the output): v = act(v + bias + res).
///
/// # Safety
/// `d` and `res` must hold `m` rows of `tp` values, `plane` apart.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
    "x86_64+avx2+fma"
))]
unsafe fn epilogue(
    d: *mut f32,
    (m, tp, plane): (usize, usize, usize),
    bias: Option<&[f32]>,
    res: Option<*const f32>,
    act: Act,
) {
    if bias.is_none() && res.is_none() && act == Act::Identity {
        return;
    }
    for co in 0..m {
        // SAFETY: the caller's contract.
        let row = unsafe { std::slice::from_raw_parts_mut(d.add(co * plane), tp) };
        let b = bias.map_or(0.0, |b| b[co]);
        match res {
            Some(r) => {
                // SAFETY: the caller's contract.
                let r = unsafe { std::slice::from_raw_parts(r.add(co * plane), tp) };
                for (v, r) in row.iter_mut().zip(r) {
                    *v = *v + b + r;
                }
            }
            None if b != 0.0 => row.iter_mut().for_each(|v| *v += b),
            None => {}
        }
        act.apply_all(row);
    }
}

/// Buffers each thread keeps across convolutions: allocating and zeroing them per job
/// (fresh pages from the kernel each time) cost more than the transforms they hold.
#[derive(Default)]
struct Scratch {
    bufs: [Vec<f32>; 3],
    /// For im2col's strided rows.
    phases: Vec<f32>,
}

impl Scratch {
    /// Three buffers of at least these lengths (grown, never shrunk; the contents are
    /// whatever the last user left).
    fn get(&mut self, lens: [usize; 3]) -> [&mut [f32]; 3] {
        let [a, b, c] = &mut self.bufs;
        [(a, lens[0]), (b, lens[1]), (c, lens[2])].map(|(v, n)| grown(v, n))
    }
}

/// The first `n` values of `v`, grown to hold them.
fn grown(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Runs `f` with this thread's scratch buffers; with fresh ones if they are in use (a
/// thread waiting inside a parallel gemm can pick up another job).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// A vector of `len` values that `fill` writes, every one, through the pointer before
/// anything reads them: no zeroing pass over memory a convolution overwrites anyway (on
/// a batch that pass was a serial memset of every output, on the calling thread).
fn filled(len: usize, fill: impl FnOnce(SendPtr)) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    fill(SendPtr(v.as_mut_ptr()));
    // SAFETY: `fill` initialised all `len` values (its callers' contract).
    unsafe { v.set_len(len) };
    v
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
/// [oy0, oy0+rows) of one image `x` (c_in, h, w). With a column stride, each input row
/// is split into its stride phases once (in `phases`), so every kernel column is a
/// contiguous copy rather than a strided, bounds-checked gather (ResNet's 7x7 stem).
fn im2col(
    g: &Geometry,
    x: &[f32],
    hw: (usize, usize),
    band: (usize, usize, usize),
    col: &mut [f32],
    phases: &mut Vec<f32>,
) {
    let tp = band.1 * band.2;
    if g.sw == 1 {
        for (r, dst) in col.chunks_exact_mut(tp).take(g.k_size()).enumerate() {
            im2col_row(g, x, hw, band, r, dst);
        }
    } else {
        im2col_strided(g, x, hw, band, col, phases);
    }
}

#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
    "x86_64+avx2+fma"
))]
fn im2col_strided(
    g: &Geometry,
    x: &[f32],
    (h, w): (usize, usize),
    (oy0, rows, ow): (usize, usize, usize),
    col: &mut [f32],
    phases: &mut Vec<f32>,
) {
    let tp = rows * ow;
    let (s, padded) = (g.sw, w + 2 * g.pw);
    // Long enough for the last kernel column's phase to hold `ow` values.
    let per = (padded.div_ceil(s)).max((g.kw - 1) * g.dw / s + ow);
    phases.clear();
    phases.resize(padded + s * per, 0.0);
    let (row, ph) = phases.split_at_mut(padded);
    for ci in 0..g.c_in {
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        for i in 0..g.kh {
            let rows_of = |j: usize| ((ci * g.kh + i) * g.kw + j) * tp;
            for t in 0..rows {
                let iy = ((oy0 + t) * g.sh + i * g.dh)
                    .checked_sub(g.ph)
                    .filter(|&v| v < h);
                let Some(iy) = iy else {
                    for j in 0..g.kw {
                        col[rows_of(j) + t * ow..rows_of(j) + (t + 1) * ow].fill(0.0);
                    }
                    continue;
                };
                row[g.pw..g.pw + w].copy_from_slice(&plane[iy * w..(iy + 1) * w]);
                for (r, phase) in ph.chunks_exact_mut(per).enumerate() {
                    for (d, v) in phase.iter_mut().zip(row[r..].iter().step_by(s)) {
                        *d = *v;
                    }
                }
                for j in 0..g.kw {
                    let q = j * g.dw;
                    let src = &ph[(q % s) * per + q / s..][..ow];
                    col[rows_of(j) + t * ow..rows_of(j) + (t + 1) * ow].copy_from_slice(src);
                }
            }
        }
    }
}

/// Row `r` (input channel, kernel row, kernel column) of the im2col patch: `dst` gets
/// rows*ow values.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
    "x86_64+avx2+fma"
))]
fn im2col_row(
    g: &Geometry,
    x: &[f32],
    (h, w): (usize, usize),
    (oy0, rows, ow): (usize, usize, usize),
    r: usize,
    dst: &mut [f32],
) {
    let (ci, i, j) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
    let plane = &x[ci * h * w..(ci + 1) * h * w];
    for (t, oy) in (oy0..oy0 + rows).enumerate() {
        let seg = &mut dst[t * ow..(t + 1) * ow];
        let iy = (oy * g.sh + i * g.dh) as isize - g.ph as isize;
        if iy < 0 || iy >= h as isize {
            seg.fill(0.0);
            continue;
        }
        let row = &plane[iy as usize * w..(iy as usize + 1) * w];
        let off = (j * g.dw) as isize - g.pw as isize;
        row_segment(row, off, g.sw, seg);
    }
}

/// One im2col row segment: `seg[ox] = row[ox * stride + off]`, zero where that falls
/// outside the row (padding). Shared by the 2D and 3D im2col.
#[inline(always)]
fn row_segment(row: &[f32], off: isize, stride: usize, seg: &mut [f32]) {
    let (w, ow) = (row.len() as isize, seg.len() as isize);
    if stride == 1 {
        // Output columns whose input column lies inside the row.
        let lo = (-off).clamp(0, ow) as usize;
        let hi = (w - off).clamp(lo as isize, ow) as usize;
        seg[..lo].fill(0.0);
        let start = (lo as isize + off) as usize;
        seg[lo..hi].copy_from_slice(&row[start..start + (hi - lo)]);
        seg[hi..].fill(0.0);
    } else {
        for (ox, v) in seg.iter_mut().enumerate() {
            let ix = (ox * stride) as isize + off;
            *v = if ix >= 0 && ix < w {
                row[ix as usize]
            } else {
                0.0
            };
        }
    }
}

/// The transpose of [`row_segment`]: `row[ox * stride + off] += seg[ox]` inside the row.
#[inline(always)]
fn add_row_segment(seg: &[f32], off: isize, stride: usize, row: &mut [f32]) {
    let w = row.len() as isize;
    for (ox, v) in seg.iter().enumerate() {
        let ix = (ox * stride) as isize + off;
        if ix >= 0 && ix < w {
            row[ix as usize] += v;
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
                    let seg = &src[t * ow..(t + 1) * ow];
                    add_row_segment(seg, off, g.sw, &mut gx[base..base + w]);
                }
                r += 1;
            }
        }
    }
}

/// A convolution's packed weights as the banded jobs read them.
struct PackedView<'a> {
    weight: &'a [f32],
    bias: Option<&'a [f32]>,
    c_out: usize,
    /// Conv groups: each reads c_in / groups input channels (1: a dense conv).
    groups: usize,
    /// Values per output channel's weights: one im2col column's length.
    ks: usize,
    /// 1x1 (x1) stride 1 without padding: the input is the patch.
    pointwise: bool,
    act: Act,
    /// Squeeze-and-excitation's gate: one scale per (sample, input channel), applied to
    /// the patch as it is built (the weights' columns scaled per sample), so no gated
    /// copy of the whole input is made.
    gate: Option<&'a [f32]>,
}

/// The output's shape as the jobs cut it: `n` samples of `in_len` input values; per
/// channel `rows` rows of `ow` values (a 3D output's frames and rows in one sequence).
struct BandedOutput {
    n: usize,
    in_len: usize,
    rows: usize,
    ow: usize,
}

/// Builds the im2col patch of output rows (r0, count) of one sample into `col`
/// (`phases` is scratch for strided rows).
type PatchFn<'a> = dyn Fn(&[f32], (usize, usize), &mut [f32], &mut Vec<f32>) + Sync + 'a;

/// Each (sample, band of output rows, conv group, split of the group's output channels)
/// as one single-threaded product written into `dst`, then the epilogue on its rows.
/// Small batches of small maps (batch 1 at ResNet's layer4 is one band) would leave
/// threads idle, so the output channels are split too. A conv group reads its own
/// slice of each sample's channels and writes its own output channels.
fn banded_jobs(
    k: &PackedView,
    out: &BandedOutput,
    x: &[f32],
    residual: Option<&[f32]>,
    dst: SendPtr,
    patch: &PatchFn,
) {
    let (ow, plane, ks) = (out.ow, out.rows * out.ow, k.ks);
    let rows = band(ow);
    let bands = out.rows.div_ceil(rows);
    let (groups, co_g, in_g) = (k.groups, k.c_out / k.groups, out.in_len / k.groups);
    let (splits, per) = channel_groups(co_g, out.n * bands * groups, rayon::current_num_threads());
    (0..out.n * bands * groups * splits)
        .into_par_iter()
        .for_each(|job| {
            with_scratch(|scratch| {
                let (rest, split) = (job / splits, job % splits);
                let (sample_band, gi) = (rest / groups, rest % groups);
                let (b, t) = (sample_band / bands, sample_band % bands);
                let (co0, m) = (gi * co_g + split * per, per.min(co_g - split * per));
                let r0 = t * rows;
                let r = rows.min(out.rows - r0);
                let tp = r * ow;
                let from = b * out.in_len + gi * in_g;
                let sample = &x[from..from + in_g];
                let at = b * k.c_out * plane + co0 * plane + r0 * ow;
                // SAFETY: each job writes only its own channels of its own band of rows
                // of its own sample; `dst` outlives the parallel loop; gemm reads the
                // sample, the patch and the weights in bounds, and the residual is shaped
                // like the output.
                unsafe {
                    let d = dst.get().add(at);
                    let wt = k.weight.as_ptr().add(co0 * ks);
                    if k.pointwise && k.gate.is_none() {
                        let src = sample.as_ptr().add(r0 * ow);
                        matmul(m, tp, ks, d, plane, wt, ks, 1, src, plane, false, 1);
                    } else {
                        let col = grown(&mut scratch.bufs[0], ks * tp);
                        patch(sample, (r0, r), col, &mut scratch.phases);
                        if let Some(gate) = k.gate {
                            // This sample's scales of this group's channels.
                            let c_in = gate.len() / out.n;
                            let c_g = c_in / groups;
                            let scales = &gate[b * c_in + gi * c_g..][..c_g];
                            scale_rows(col, tp, ks / c_g, scales);
                        }
                        matmul(m, tp, ks, d, plane, wt, ks, 1, col.as_ptr(), tp, false, 1);
                    }
                    let bias = k.bias.map(|b| &b[co0..co0 + m]);
                    let res = residual.map(|r| r.as_ptr().add(at));
                    epilogue(d, (m, tp, plane), bias, res, k.act);
                }
            })
        });
}

/// Multiplies the patch rows of each input channel (`per` rows of `tp` values each, one
/// per kernel tap) by that channel's scale.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
    "x86_64+avx2+fma"
))]
fn scale_rows(col: &mut [f32], tp: usize, per: usize, scales: &[f32]) {
    for (r, row) in col.chunks_exact_mut(tp).enumerate() {
        let s = scales[r / per];
        row.iter_mut().for_each(|v| *v *= s);
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
    threads: usize,
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
        if threads > 1 {
            Parallelism::Rayon(threads)
        } else {
            Parallelism::None
        },
    )
}

/// Whether a no-backward CPU op (`concat`, `gelu`) may take `t` in candle's place: a
/// contiguous f32 CPU tensor from which no gradient flows.
pub(crate) fn untracked_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous() && !t.track_op()
}

pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("camstream conv: float32 only");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("camstream conv: input must be contiguous"),
    }
}

/// The output size of a 2D conv in `groups` (1: dense) on an (n, c, h, w) input, once
/// the channels and the residual's size are checked; its multiply-adds are counted.
fn checked_output(
    g: &Geometry,
    groups: usize,
    (n, c, h, w): (usize, usize, usize, usize),
    residual: Option<&[f32]>,
) -> candle_core::Result<(usize, usize)> {
    if groups == 0 || c != g.c_in * groups || !g.c_out.is_multiple_of(groups) {
        candle_core::bail!(
            "camstream conv: {c} input channels, {} output channels, weights take {} in each of {groups} groups",
            g.c_out,
            g.c_in
        );
    }
    let (oh, ow) = g.out(h, w);
    let len = n * g.c_out * oh * ow;
    if residual.is_some_and(|r| r.len() != len) {
        candle_core::bail!("camstream conv: the residual is not shaped like the output");
    }
    count_flops(len * g.k_size());
    Ok((oh, ow))
}

/// Each (image, band of output rows, conv group, group of output channels) as one
/// single-threaded product, written into `dst` (n, c_out, oh, ow).
fn forward_bands(
    p: &Packed,
    (act, groups, gate): (Act, usize, Option<&[f32]>),
    x: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    residual: Option<&[f32]>,
    dst: SendPtr,
) {
    let g = &p.geo;
    let (oh, ow) = g.out(h, w);
    let weights = PackedView {
        weight: &p.weight,
        bias: p.bias.as_deref(),
        c_out: g.c_out,
        groups,
        ks: g.k_size(),
        pointwise: g.pointwise(),
        act,
        gate,
    };
    let out = BandedOutput {
        n,
        in_len: c * h * w,
        rows: oh,
        ow,
    };
    banded_jobs(
        &weights,
        &out,
        x,
        residual,
        dst,
        &|img, (r0, r), col, phases| im2col(g, img, (h, w), (r0, r, ow), col, phases),
    );
}

/// The forward op: (N, c_in, H, W) -> (N, c_out, OH, OW), then the epilogue. As a
/// `CustomOp2` its second argument is a residual shaped like the output, added before
/// the activation.
pub struct ConvOp {
    pub packed: Arc<Packed>,
    pub act: Act,
    /// N x c_in scales of the input's channels (squeeze-and-excitation's gate), applied
    /// as the input is read. No backward: only where no gradient flows.
    pub gate: Option<Vec<f32>>,
}

impl ConvOp {
    fn forward(
        &self,
        x: &[f32],
        (n, c, h, w): (usize, usize, usize, usize),
        residual: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = &self.packed;
        let g = &p.geo;
        let (oh, ow) = checked_output(g, 1, (n, c, h, w), residual)?;
        let gate = self.gate.as_deref();
        if gate.is_some_and(|s| s.len() != n * c) {
            candle_core::bail!("camstream conv: the gate needs one scale per sample and channel");
        }
        let plane = oh * ow;
        let shape = Shape::from((n, g.c_out, oh, ow));
        let winograd = p.winograd.as_ref().filter(|_| gate.is_none());
        if let Some(u) = winograd.filter(|_| winograd::worth(oh, ow)) {
            let bias = p.bias.as_deref();
            let out = filled(n * g.c_out * plane, |dst| {
                winograd::forward(g, u, bias, x, (n, h, w), residual, self.act, dst)
            });
            return Ok((CpuStorage::F32(out), shape));
        }
        if n > 1 && plane <= BATCHED_PLANE {
            return Ok((self.forward_batched(x, (n, c, h, w), residual), shape));
        }
        let out = filled(n * g.c_out * plane, |dst| {
            forward_bands(p, (self.act, 1, gate), x, (n, c, h, w), residual, dst)
        });
        Ok((CpuStorage::F32(out), shape))
    }

    /// Small maps of a batch as one product over all images: k x (n*plane) columns,
    /// then the epilogue while scattering back to NCHW. A gemm per image would pack
    /// the whole weight matrix for 49-256 columns: at ResNet-50's layer4 that packing
    /// cost about as much as the multiply-adds.
    fn forward_batched(
        &self,
        x: &[f32],
        (n, c, h, w): (usize, usize, usize, usize),
        residual: Option<&[f32]>,
    ) -> CpuStorage {
        let p = &self.packed;
        let g = &p.geo;
        let (oh, ow) = g.out(h, w);
        let (plane, ks, cols) = (oh * ow, g.k_size(), n * oh * ow);
        let taps = g.kh * g.kw;
        let product = |col: &mut [f32], prod: &mut [f32]| {
            col.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
                for (b, dst) in row.chunks_exact_mut(plane).enumerate() {
                    let img = &x[b * c * h * w..(b + 1) * c * h * w];
                    im2col_row(g, img, (h, w), (0, oh, ow), r, dst);
                    if let Some(gate) = &self.gate {
                        scale_rows(dst, plane, 1, &[gate[b * c + r / taps]]);
                    }
                }
            });
            // SAFETY: prod is c_out x cols, the weights c_out x ks, col ks x cols.
            unsafe {
                matmul(
                    g.c_out,
                    cols,
                    ks,
                    prod.as_mut_ptr(),
                    cols,
                    p.weight.as_ptr(),
                    ks,
                    1,
                    col.as_ptr(),
                    cols,
                    false,
                    rayon::current_num_threads(),
                );
            }
            // Back to NCHW, with the epilogue.
            filled(n * g.c_out * plane, |dst| {
                (0..n * g.c_out).into_par_iter().for_each(|bc| {
                    let (b, co) = (bc / g.c_out, bc % g.c_out);
                    let src = &prod[co * cols + b * plane..co * cols + (b + 1) * plane];
                    let bias = p.bias.as_ref().map(|v| &v[co..co + 1]);
                    let res = residual.map(|r| r[bc * plane..].as_ptr());
                    // SAFETY: plane `bc` of the output is this task's alone; the residual
                    // is shaped like the output.
                    unsafe {
                        let o = dst.get().add(bc * plane);
                        std::ptr::copy_nonoverlapping(src.as_ptr(), o, plane);
                        epilogue(o, (1, plane, 0), bias, res, self.act);
                    }
                })
            })
        };
        // The patch matrix and the product in this thread's reused buffers (no zeroing,
        // no fresh pages per call), unless a large batch makes them big to keep.
        let (col_len, prod_len) = (ks * cols, g.c_out * cols);
        let out = if col_len + prod_len <= KEPT_SCRATCH {
            with_scratch(|s| {
                let [col, prod, _] = s.get([col_len, prod_len, 0]);
                product(col, prod)
            })
        } else {
            product(&mut vec![0f32; col_len], &mut vec![0f32; prod_len])
        };
        CpuStorage::F32(out)
    }

    fn input_grad(&self, arg: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
        if self.gate.is_some() {
            candle_core::bail!("camstream conv: a gated conv runs only where no gradient flows");
        }
        let (_, _, h, w) = arg.dims4()?;
        let g = grad.contiguous()?;
        g.apply_op1_no_bwd(&ConvInputGrad {
            packed: self.packed.clone(),
            h,
            w,
        })
    }
}

/// The candle glue of a convolution op whose epilogue may add a residual: as a
/// `CustomOp1` (`$name`) and as a `CustomOp2` (`$name-add`, the residual shaped like the
/// output). Backward: through the fused activation (from the saved output), then the
/// op's `input_grad`; the residual takes the gradient as it is.
macro_rules! epilogue_op {
    ($op:ty, $name:literal, $dims:expr) => {
        impl candle_core::CustomOp1 for $op {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s: &candle_core::CpuStorage,
                l: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                self.forward(
                    $crate::model::fastconv::contiguous_f32(s, l)?,
                    $dims(l)?,
                    None,
                )
            }

            fn bwd(
                &self,
                arg: &candle_core::Tensor,
                res: &candle_core::Tensor,
                grad: &candle_core::Tensor,
            ) -> candle_core::Result<Option<candle_core::Tensor>> {
                let grad = self.act.backward(res, grad)?;
                Ok(Some(self.input_grad(arg, &grad)?))
            }
        }

        impl candle_core::CustomOp2 for $op {
            fn name(&self) -> &'static str {
                concat!($name, "-add")
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                let residual = $crate::model::fastconv::contiguous_f32(s2, l2)?;
                let x = $crate::model::fastconv::contiguous_f32(s1, l1)?;
                self.forward(x, $dims(l1)?, Some(residual))
            }

            fn bwd(
                &self,
                arg1: &candle_core::Tensor,
                _arg2: &candle_core::Tensor,
                res: &candle_core::Tensor,
                grad: &candle_core::Tensor,
            ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)>
            {
                let grad = self.act.backward(res, grad)?;
                Ok((Some(self.input_grad(arg1, &grad)?), Some(grad)))
            }
        }
    };
}
pub(crate) use epilogue_op;

epilogue_op!(ConvOp, "camstream-conv", |l: &Layout| l.shape().dims4());

/// Multiply-adds done by the CPU convolutions since the process started, so that
/// `bench` can report a model's GFLOP/s against the machine's GEMM ceiling.
static MACS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count_flops(macs: usize) {
    MACS.fetch_add(macs as u64, std::sync::atomic::Ordering::Relaxed);
}

/// Floating-point operations (2 per multiply-add) of every CPU convolution so far.
pub fn conv_flops() -> u64 {
    2 * MACS.load(std::sync::atomic::Ordering::Relaxed)
}

/// GFLOP/s of the GEMM kernels this crate uses on an `n` x `n` x `n` product, with the
/// threads of rayon's pool (best of `iters` runs): the machine's ceiling for a
/// convolution.
pub fn gemm_ceiling(n: usize, iters: usize) -> f64 {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let b = a.clone();
    let mut c = vec![0f32; n * n];
    let threads = rayon::current_num_threads();
    let mut best = f64::INFINITY;
    for _ in 0..iters.max(1) {
        let t = std::time::Instant::now();
        // SAFETY: a, b and c are n x n and row-major.
        unsafe {
            matmul(
                n,
                n,
                n,
                c.as_mut_ptr(),
                n,
                a.as_ptr(),
                n,
                1,
                b.as_ptr(),
                n,
                false,
                threads,
            );
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&c);
    2.0 * (n * n * n) as f64 / best / 1e9
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
                            1,
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
                            1,
                        );
                    }
                    col2im(g, &col, (h, w), (oy0, r, ow), gxi);
                    oy0 += r;
                }
            });
        Ok((CpuStorage::F32(gx), Shape::from((n, g.c_in, h, w))))
    }
}
