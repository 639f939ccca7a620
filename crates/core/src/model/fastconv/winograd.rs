//! Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions (most of a ResNet's work).
//!
//! Each 4x4 input tile d becomes V = Bᵀ d B, each filter g becomes U = G g Gᵀ (once, at
//! pack time), and the 2x2 output tile is Aᵀ [Σ_ci U ⊙ V] A. The sum over input channels
//! is 16 independent matrix products (one per tile position ξ), so a convolution costs
//! 16 multiply-adds per 2x2 outputs instead of 36: 2.25x fewer, for a few adds of
//! transform per tile. oneDNN, which PyTorch runs on the CPU, convolves directly.
//! F(2x2, 3x3) keeps float32 error near the direct sum's (its transforms only add,
//! subtract and halve); F(4x4, 3x3) would save more products, but its transforms scale
//! by up to 8 and 1/24 and lose accuracy, so it is not used.
//!
//! Jobs are bands of whole tile rows, across images when the maps are small, so every
//! transform runs along contiguous rows and vectorises; the epilogue (bias, residual,
//! activation) runs on each output row while it is in cache, as in the direct path.

use rayon::prelude::*;

use super::{epilogue, matmul, with_scratch, Act, Geometry, SendPtr};

/// Tiles per job: the transformed inputs (16 x c_in x this) and products stay near L2.
/// 128 rather than 256 also splits ResNet's 28x28 maps at batch 1 into one job per thread
/// instead of one job for both. Forward, 2-vCPU Xeon (AVX-512), 2026-12-06, alternating
/// runs against 256: ResNet-18 b1 44.0-46.3 img/s against 40.2-40.8, b8 74.6-81.9
/// against 73.2-79.3; ResNet-50 b8 31.3-32.9 against 29.2-32.1.
const TILES: usize = 128;
/// Below this many channels the transforms cost more than the products save.
const MIN_CHANNELS: usize = 16;

/// `CAMSTREAM_WINOGRAD=0` convolves directly, to compare the two in one binary.
pub(super) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("CAMSTREAM_WINOGRAD").map_or(true, |v| v != "0"))
}

/// Whether a convolution runs as F(2x2, 3x3).
pub(super) fn eligible(g: &Geometry) -> bool {
    g.kh == 3
        && g.kw == 3
        && (g.sh, g.sw, g.dh, g.dw) == (1, 1, 1, 1)
        && g.ph <= 2
        && g.pw <= 2
        && g.c_in >= MIN_CHANNELS
        && g.c_out >= MIN_CHANNELS
}

/// Whether F(2x2, 3x3) beats the direct convolution on this output: not on small maps,
/// where edge tiles waste up to a third and the 16 transformed weight matrices (16/9 of
/// the direct ones) are packed for few tiles. ResNet's 7x7 `layer4` once ran 20 % slower
/// as Winograd; since jobs band tile rows across images it runs faster (ResNet-18 forward
/// per image, 2026-12-06, 3 alternating runs: b1 21.6–22.0 against 22.6–22.9 ms, b8
/// 16.4–16.8 against 17.7–18.6, b16 17.2–17.7 against 18.7–19.0; ResNet-50 unchanged).
pub(super) fn worth(oh: usize, ow: usize) -> bool {
    oh * ow >= MIN_PLANE
}

/// Output pixels below which the direct convolution runs (7x7 and up run Winograd).
const MIN_PLANE: usize = 49;

/// The transformed filters: 16 row-major (c_out x c_in) matrices, U_ξ = (G g Gᵀ)_ξ, from
/// the (c_out, c_in, 3, 3) weights.
pub(super) fn transform_weights(g: &Geometry, w: &[f32]) -> Vec<f32> {
    let (co, ci) = (g.c_out, g.c_in);
    // G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    let gv = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    let mut u = vec![0f32; 16 * co * ci];
    for (oi, f) in w.chunks_exact(9).enumerate() {
        let cols: [[f32; 4]; 3] = std::array::from_fn(|c| gv(f[c], f[3 + c], f[6 + c]));
        for r in 0..4 {
            let row = gv(cols[0][r], cols[1][r], cols[2][r]);
            for (c, v) in row.into_iter().enumerate() {
                u[(r * 4 + c) * co * ci + oi] = v;
            }
        }
    }
    u
}

/// The convolution of `x` (n, c_in, h, w) into `out` (n, c_out, oh, ow), then
/// act(out + bias + residual); every output value is written.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    g: &Geometry,
    u: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    (n, h, w): (usize, usize, usize),
    residual: Option<&[f32]>,
    act: Act,
    out: SendPtr,
) {
    let (oh, ow) = g.out(h, w);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let all_rows = n * th;
    let (per_job, jobs) = bands(all_rows, (TILES / tw).max(1), rayon::current_num_threads());
    let (ci, co) = (g.c_in, g.c_out);
    let sink = Sink {
        out,
        residual,
        bias,
        act,
    };
    let dims = (oh, ow, th, tw);
    let rows_len = 18 * (tw + 1);
    if jobs == 1 {
        // One band (small maps, small batch): the transforms run in parallel over
        // channels and each product on every thread, or one thread would do it all.
        let band = (0, all_rows);
        let tb = all_rows * tw;
        return with_scratch(|s| {
            let [v, m, _] = s.get([16 * ci * tb, 16 * co * tb, 0]);
            let vp = SendPtr(v.as_mut_ptr());
            (0..ci).into_par_iter().with_min_len(8).for_each(|c| {
                with_scratch(|s| {
                    let [_, _, rows] = s.get([0, 0, rows_len]);
                    input_transform(g, x, (h, w), dims, band, c..c + 1, vp, rows);
                })
            });
            products(u, v, m, (co, ci, tb), rayon::current_num_threads());
            let m = &*m;
            (0..co).into_par_iter().with_min_len(8).for_each(|o| {
                with_scratch(|s| {
                    let [_, _, rows] = s.get([0, 0, rows_len]);
                    output_transform(o..o + 1, co, m, dims, band, &sink, rows);
                })
            });
        });
    }
    (0..jobs).into_par_iter().for_each(|j| {
        with_scratch(|s| {
            let r0 = j * per_job;
            let band = (r0, per_job.min(all_rows - r0));
            let tb = band.1 * tw;
            let [v, m, rows] = s.get([16 * ci * tb, 16 * co * tb, rows_len]);
            let vp = SendPtr(v.as_mut_ptr());
            input_transform(g, x, (h, w), dims, band, 0..ci, vp, rows);
            products(u, v, m, (co, ci, tb), 1);
            output_transform(0..co, co, m, dims, band, &sink, rows);
        })
    });
}

/// (tile rows per job, jobs) for `rows` tile rows and at most `most` per job: equal jobs,
/// as many as a multiple of the threads when there are few (2 jobs of 36 and 20 rows
/// left one of two threads idle for a third of the convolution).
fn bands(rows: usize, most: usize, threads: usize) -> (usize, usize) {
    let mut jobs = rows.div_ceil(most);
    if jobs > 1 && jobs < 4 * threads {
        jobs = jobs.next_multiple_of(threads).min(rows);
    }
    let per_job = rows.div_ceil(jobs);
    (per_job, rows.div_ceil(per_job))
}

/// M_ξ = U_ξ V_ξ for the 16 tile positions; with `threads` > 1, on the rayon pool.
fn products(
    u: &[f32],
    v: &[f32],
    m: &mut [f32],
    (co, ci, tb): (usize, usize, usize),
    threads: usize,
) {
    assert!(u.len() >= 16 * co * ci && v.len() >= 16 * ci * tb && m.len() >= 16 * co * tb);
    let product = |xi: usize, m: SendPtr| {
        // SAFETY: U_ξ is co x ci, V_ξ ci x tb, M_ξ co x tb, all row-major, in bounds; each
        // ξ writes only its own M_ξ.
        unsafe {
            matmul(
                co,
                tb,
                ci,
                m.get().add(xi * co * tb),
                tb,
                u.as_ptr().add(xi * co * ci),
                ci,
                1,
                v.as_ptr().add(xi * ci * tb),
                tb,
                false,
                1,
            );
        }
    };
    let mp = SendPtr(m.as_mut_ptr());
    if threads > 1 {
        // The 16 products are independent: one per task, not each split across threads.
        (0..16).into_par_iter().for_each(|xi| product(xi, mp));
    } else {
        (0..16).for_each(|xi| product(xi, mp));
    }
}

/// V (16 x c_in x tiles) of the tile rows `band` = (first global tile row, count), for
/// the input channels `chans`; a global tile row is (image, ty). `scratch` holds
/// 18 * (tw + 1) values. Writes only the rows of V that belong to `chans`.
#[allow(clippy::too_many_arguments)]
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
    "x86_64+avx2+fma"
))]
fn input_transform(
    g: &Geometry,
    x: &[f32],
    (h, w): (usize, usize),
    (_, _, th, tw): (usize, usize, usize, usize),
    (r0, rows): (usize, usize),
    chans: std::ops::Range<usize>,
    v: SendPtr,
    scratch: &mut [f32],
) {
    let (c, tb) = (g.c_in, rows * tw);
    let (eo, rest) = scratch.split_at_mut(2 * (tw + 1));
    // d B of the tile row's 4 input rows: cr[k][q][tx].
    let cr = &mut rest[..16 * tw];
    for ci in chans {
        let mut last = None;
        for lr in 0..rows {
            let (b, ty) = ((r0 + lr) / th, (r0 + lr) % th);
            let plane = &x[(b * c + ci) * h * w..(b * c + ci + 1) * h * w];
            // Tile rows overlap by two input rows: reuse those of the row above.
            let first = if ty > 0 && last == Some((b, ty - 1)) {
                cr.copy_within(8 * tw..16 * tw, 0);
                2
            } else {
                0
            };
            last = Some((b, ty));
            for k in first..4 {
                let row = (2 * ty + k)
                    .checked_sub(g.ph)
                    .filter(|&i| i < h)
                    .map(|iy| &plane[iy * w..(iy + 1) * w]);
                columns(row, g.pw, eo, &mut cr[k * 4 * tw..(k + 1) * 4 * tw]);
            }
            // Bᵀ (d B): V_(i,q) from rows [0 - 2, 1 + 2, 2 - 1, 1 - 3].
            let at = ci * tb + lr * tw;
            for q in 0..4 {
                let r = |k: usize| &cr[(k * 4 + q) * tw..(k * 4 + q + 1) * tw];
                let rows = [
                    (r(0), r(2), -1.0),
                    (r(1), r(2), 1.0),
                    (r(2), r(1), -1.0),
                    (r(1), r(3), -1.0),
                ];
                for (i, (a, b, sign)) in rows.into_iter().enumerate() {
                    // SAFETY: V holds 16 x c x tb values; this row belongs to channel ci,
                    // which no other caller writes.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(v.get().add((i * 4 + q) * c * tb + at), tw)
                    };
                    combine(dst, a, b, sign);
                }
            }
        }
    }
}

/// One input row's d B for every tile along it: out = [c0, c1, c2, c3], tw values each,
/// where tile t reads padded columns 2t..2t+4 (padded column j is input column j - pw).
/// `eo` holds 2 (tw + 1) values.
#[inline(always)]
fn columns(row: Option<&[f32]>, pw: usize, eo: &mut [f32], out: &mut [f32]) {
    let Some(row) = row else {
        out.fill(0.0);
        return;
    };
    let tw = out.len() / 4;
    // Even and odd padded columns, read straight from the row: tile t reads e[t], o[t],
    // e[t+1], o[t+1]. Input column k is padded column k + pw, so with odd padding the
    // row's even columns are the odd ones.
    let (e, o) = eo.split_at_mut(tw + 1);
    e.fill(0.0);
    o.fill(0.0);
    let row = &row[..row.len().min(2 * (tw + 1) - pw)];
    let (first, f0, second, s0) = if pw.is_multiple_of(2) {
        (&mut *e, pw / 2, &mut *o, pw / 2)
    } else {
        (&mut *o, pw / 2, &mut *e, pw / 2 + 1)
    };
    let pairs = row.chunks_exact(2);
    if let [last] = pairs.remainder() {
        first[f0 + row.len() / 2] = *last;
    }
    for ((x, y), p) in first[f0..].iter_mut().zip(&mut second[s0..]).zip(pairs) {
        *x = p[0];
        *y = p[1];
    }
    let (c0, rest) = out.split_at_mut(tw);
    let (c1, rest) = rest.split_at_mut(tw);
    let (c2, c3) = rest.split_at_mut(tw);
    combine(c0, &e[..tw], &e[1..], -1.0);
    combine(c1, &o[..tw], &e[1..], 1.0);
    combine(c2, &e[1..], &o[..tw], -1.0);
    combine(c3, &o[..tw], &o[1..], -1.0);
}

/// dst = a + sign * b (sign is ±1, exact).
#[inline(always)]
fn combine(dst: &mut [f32], a: &[f32], b: &[f32], sign: f32) {
    for (y, (a, b)) in dst.iter_mut().zip(a.iter().zip(b)) {
        *y = a + sign * b;
    }
}

/// Where the output tiles go, with the epilogue's operands.
struct Sink<'a> {
    out: SendPtr,
    residual: Option<&'a [f32]>,
    bias: Option<&'a [f32]>,
    act: Act,
}

/// Aᵀ M A for the output channels `chans` (of `co`) and every tile of the band, into
/// the NCHW output, with the epilogue on each output row. `scratch` holds at least 8 * tw values.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
    "x86_64+avx2+fma"
))]
fn output_transform(
    chans: std::ops::Range<usize>,
    co: usize,
    m: &[f32],
    (oh, ow, th, tw): (usize, usize, usize, usize),
    (r0, rows): (usize, usize),
    sink: &Sink,
    scratch: &mut [f32],
) {
    let tb = rows * tw;
    // s[0..4]: rows 0+1+2 of M, s[4..8]: rows 1-2-3 (Aᵀ M).
    let s = &mut scratch[..8 * tw];
    for lr in 0..rows {
        let (img, ty) = ((r0 + lr) / th, (r0 + lr) % th);
        for o in chans.clone() {
            let at = o * tb + lr * tw;
            let mr = |xi: usize| &m[xi * co * tb + at..xi * co * tb + at + tw];
            for q in 0..4 {
                let (m0, m1, m2, m3) = (mr(q), mr(4 + q), mr(8 + q), mr(12 + q));
                let (top, bottom) = s.split_at_mut(4 * tw);
                let (t, u) = (
                    &mut top[q * tw..(q + 1) * tw],
                    &mut bottom[q * tw..(q + 1) * tw],
                );
                for i in 0..tw {
                    t[i] = m0[i] + m1[i] + m2[i];
                    u[i] = m1[i] - m2[i] - m3[i];
                }
            }
            // (Aᵀ M) A: output columns 2t = s0 + s1 + s2, 2t + 1 = s1 - s2 - s3.
            for (dy, half) in s.chunks_exact(4 * tw).enumerate() {
                let oy = 2 * ty + dy;
                if oy >= oh {
                    break;
                }
                let (a, rest) = half.split_at(tw);
                let (b, rest) = rest.split_at(tw);
                let (c, d) = rest.split_at(tw);
                let at = ((img * co + o) * oh + oy) * ow;
                // SAFETY: this job alone writes the output rows of its tile rows, for
                // every channel; `at..at + ow` lies inside the (n, co, oh, ow) output,
                // and the residual is shaped like it.
                unsafe {
                    // Straight into the output row: pairs, then an odd width's last.
                    let row = std::slice::from_raw_parts_mut(sink.out.get().add(at), ow);
                    let mut pairs = row.chunks_exact_mut(2);
                    for (i, p) in pairs.by_ref().enumerate() {
                        p[0] = a[i] + b[i] + c[i];
                        p[1] = b[i] - c[i] - d[i];
                    }
                    if let [last] = pairs.into_remainder() {
                        let i = ow / 2;
                        *last = a[i] + b[i] + c[i];
                    }
                    let d = row.as_mut_ptr();
                    let res = sink.residual.map(|r| r.as_ptr().add(at));
                    let bias = sink.bias.map(|v| &v[o..o + 1]);
                    epilogue(d, (1, ow, 0), bias, res, sink.act);
                }
            }
        }
    }
}
