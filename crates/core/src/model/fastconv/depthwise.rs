//! Depthwise 2D convolution on the CPU (MobileNets, EfficientNets): one k x k filter per
//! channel (packed with c_in = 1), planes in parallel, padding done inside the op.
//!
//! Each plane is first staged in a per-thread buffer: zero-padded, and with a stride
//! every row split into its column phases, so that each tap of each output row reads a
//! contiguous run. Outputs are then summed `LANES` at a time in registers over all k x k
//! taps and stored once with the bias and activation: a tap costs one load and one
//! fused multiply-add, where summing whole rows in memory cost a load and a store more
//! per tap, and padding the tensor with candle cost two copies of it.
//! The input gradient scatters each output gradient back over the taps that read it.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, count_flops, filled, grown, with_scratch, Act, Packed};

/// Output values summed in registers at a time (two AVX-512 or four AVX2 vectors).
const LANES: usize = 32;

/// act(depthwise(x) + bias), x (N, C, H, W) padded with zeros: (before, after) rows
/// and columns (TF SAME pads are asymmetric).
pub struct DepthwiseOp {
    pub packed: Arc<Packed>,
    pub act: Act,
    pub pads: [(usize, usize); 2],
}

/// One staged plane's layout.
#[derive(Clone, Copy, Debug)]
struct Stage {
    /// Input plane, and the zero rows above it and columns left of it.
    h: usize,
    w: usize,
    top: usize,
    left: usize,
    /// Staged rows.
    rows: usize,
    /// Output plane.
    oh: usize,
    ow: usize,
    /// Column stride: phases per row.
    s: usize,
    /// Values per phase (LANES spare at the end), and per staged row (s phases).
    per: usize,
    row: usize,
}

impl DepthwiseOp {
    fn stage(&self, h: usize, w: usize) -> candle_core::Result<Stage> {
        let g = &self.packed.geo;
        let [(top, bottom), (left, right)] = self.pads;
        let (hp, wp, s) = (h + top + bottom, w + left + right, g.sw);
        let span = |k: usize| (k - 1) * g.dh + 1;
        if g.c_in != 1 || g.sh != g.sw || hp < span(g.kh) || wp < span(g.kw) {
            candle_core::bail!("depthwise conv: a {h}x{w} input does not fit the filters {g:?}");
        }
        let (oh, ow) = ((hp - span(g.kh)) / s + 1, (wp - span(g.kw)) / s + 1);
        let per = if s == 1 {
            // Rows back to back: a run of LANES outputs may span several narrow rows
            // (see `plane`); the spare values follow the last row.
            wp
        } else {
            // The last tap reads from (kw-1)*d/s on, LANES at a time from every x0 < ow.
            wp.div_ceil(s).max((g.kw - 1) * g.dw / s + ow) + LANES
        };
        Ok(Stage {
            h,
            w,
            top,
            left,
            rows: hp,
            oh,
            ow,
            s,
            per,
            row: s * per,
        })
    }
}

impl Stage {
    /// Values a staged plane takes: its rows and LANES spare.
    fn len(&self) -> usize {
        self.rows * self.row + LANES
    }
}

/// Copies plane `x` (h x w) into `buf` as `st` says: zero padding, rows of phases.
fn stage_plane(x: &[f32], st: Stage, buf: &mut [f32]) {
    let (p, s) = (st.left, st.s);
    let (rows, spare) = buf.split_at_mut(st.rows * st.row);
    spare.fill(0.0);
    for (py, dst) in rows.chunks_exact_mut(st.row).enumerate() {
        dst.fill(0.0);
        let Some(src) = py
            .checked_sub(st.top)
            .filter(|&y| y < st.h)
            .map(|y| &x[y * st.w..(y + 1) * st.w])
        else {
            continue;
        };
        if s == 1 {
            dst[p..p + st.w].copy_from_slice(src);
        } else if s == 2 {
            // Input column x is padded column x + p: phase (x + p) % 2, index (x + p) / 2.
            let (ph0, ph1) = dst.split_at_mut(st.per);
            let (even, odd) = if p % 2 == 0 { (ph0, ph1) } else { (ph1, ph0) };
            let (e0, o0) = (p / 2, p.div_ceil(2));
            for (m, pair) in src.chunks_exact(2).enumerate() {
                even[e0 + m] = pair[0];
                odd[o0 + m] = pair[1];
            }
            if st.w % 2 == 1 {
                even[e0 + st.w / 2] = src[st.w - 1];
            }
        } else {
            for (x, v) in src.iter().enumerate() {
                let c = x + p;
                dst[(c % s) * st.per + c / s] = *v;
            }
        }
    }
}

/// One channel's filter: k x k taps `d` apart, its weights, bias and activation.
#[derive(Clone, Copy)]
struct Filter<'a> {
    kh: usize,
    kw: usize,
    d: usize,
    weights: &'a [f32],
    bias: f32,
    act: Act,
}

impl Filter<'_> {
    /// act(bias + the taps' sum) for the LANES outputs whose taps start at `at` + `x0`.
    #[inline(always)]
    fn run(&self, buf: &[f32], at: &[usize], x0: usize) -> [f32; LANES] {
        let mut acc = sum_taps(buf, at, self.weights, x0);
        acc.iter_mut().for_each(|a| *a += self.bias);
        self.act.apply_all(&mut acc);
        acc
    }
}

/// One output plane from its staged input: every `LANES` outputs of a row summed over
/// the k x k taps in registers, then act(sum + bias).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
    "x86_64+avx2+fma"
))]
fn plane(buf: &[f32], st: Stage, filter: Filter, out: &mut [f32]) {
    if st.s == 1 {
        return plane_flat(buf, st, filter, out);
    }
    let Filter { kh, kw, d, .. } = filter;
    // Where each tap of an output row starts in `buf`, relative to the row's first
    // output; the same for every row but for the row offset.
    let taps: Vec<usize> = (0..kh * kw)
        .map(|t| {
            let (i, q) = (t / kw, t % kw * d);
            i * d * st.row + (q % st.s) * st.per + q / st.s
        })
        .collect();
    let mut at = taps.clone();
    for (oy, orow) in out.chunks_exact_mut(st.ow).enumerate() {
        for (a, t) in at.iter_mut().zip(&taps) {
            *a = oy * st.s * st.row + t;
        }
        // Every tap of every run reads LANES values inside `buf` (it is staged with
        // LANES spare values per phase).
        let last = at
            .iter()
            .max()
            .map_or(0, |m| m + st.ow.div_ceil(LANES) * LANES);
        assert!(last <= buf.len(), "depthwise staging too short");
        for x0 in (0..st.ow).step_by(LANES) {
            let acc = filter.run(buf, &at, x0);
            let n = LANES.min(st.ow - x0);
            orow[x0..x0 + n].copy_from_slice(&acc[..n]);
        }
    }
}

/// [`plane`] at stride 1, where the staged rows lie back to back (`row` = padded width):
/// output (y, x) is computed at y * row + x, as if the plane were one long row, so a run
/// of LANES outputs covers several rows of a narrow plane instead of one (a 7x7 map used
/// 7 of 32 lanes per run; now about half). Outputs in the padding columns (x >= ow) are
/// computed and dropped. Each output sums the same taps in the same order: same bits.
#[inline(always)]
fn plane_flat(buf: &[f32], st: Stage, filter: Filter, out: &mut [f32]) {
    let Filter { kh, kw, d, .. } = filter;
    let taps: Vec<usize> = (0..kh * kw)
        .map(|t| (t / kw) * d * st.row + (t % kw) * d)
        .collect();
    let end = (st.oh - 1) * st.row + st.ow;
    let last = taps
        .iter()
        .max()
        .map_or(0, |m| m + end.div_ceil(LANES) * LANES);
    assert!(last <= buf.len(), "depthwise staging too short");
    for q0 in (0..end).step_by(LANES) {
        let acc = filter.run(buf, &taps, q0);
        // Scatter the run's rows, dropping the padding columns.
        let (mut y, mut x, mut l) = (q0 / st.row, q0 % st.row, 0);
        while l < LANES && y < st.oh {
            let n = (st.row - x).min(LANES - l);
            if x < st.ow {
                let k = n.min(st.ow - x);
                out[y * st.ow + x..][..k].copy_from_slice(&acc[l..l + k]);
            }
            (l, x, y) = (l + n, 0, y + 1);
        }
    }
}

/// Σ_t f[t] · buf[at[t] + x0 ..][..LANES], each term a fused multiply-add in tap order
/// (so every version below gives the same bits). LLVM splits a 32-float array
/// accumulator into odd pieces, so the x86 versions hold it in vector registers
/// explicitly.
#[inline(always)]
fn sum_taps(buf: &[f32], at: &[usize], f: &[f32], x0: usize) -> [f32; LANES] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; `plane` checked every read is inside `buf`.
            return unsafe { sum_taps_avx512(buf, at, f, x0) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above, with AVX2 and FMA.
            return unsafe { sum_taps_avx2(buf, at, f, x0) };
        }
    }
    let mut acc = [0f32; LANES];
    for (&a, &w) in at.iter().zip(f) {
        for (l, v) in acc.iter_mut().enumerate() {
            *v = w.mul_add(buf[a + x0 + l], *v);
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_taps_avx512(buf: &[f32], at: &[usize], f: &[f32], x0: usize) -> [f32; LANES] {
    use std::arch::x86_64::*;
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for (&a, &w) in at.iter().zip(f) {
        let p = buf.as_ptr().add(a + x0);
        let w = _mm512_set1_ps(w);
        a0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(p), a0);
        a1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(p.add(16)), a1);
    }
    let mut acc = [0f32; LANES];
    _mm512_storeu_ps(acc.as_mut_ptr(), a0);
    _mm512_storeu_ps(acc.as_mut_ptr().add(16), a1);
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_taps_avx2(buf: &[f32], at: &[usize], f: &[f32], x0: usize) -> [f32; LANES] {
    use std::arch::x86_64::*;
    let mut a = [_mm256_setzero_ps(); 4];
    for (&t, &w) in at.iter().zip(f) {
        let p = buf.as_ptr().add(t + x0);
        let w = _mm256_set1_ps(w);
        for (k, a) in a.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(p.add(8 * k)), *a);
        }
    }
    let mut acc = [0f32; LANES];
    for (k, a) in a.iter().enumerate() {
        _mm256_storeu_ps(acc.as_mut_ptr().add(8 * k), *a);
    }
    acc
}

impl CustomOp1 for DepthwiseOp {
    fn name(&self) -> &'static str {
        "camstream-depthwise"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = contiguous_f32(s, l)?;
        let g = &self.packed.geo;
        if g.c_out != c {
            candle_core::bail!("depthwise conv: {c} channels, {} filters", g.c_out);
        }
        let st = self.stage(h, w)?;
        let (kh, kw, d) = (g.kh, g.kw, g.dh);
        let staged = st.len();
        let plane_out = st.oh * st.ow;
        let out = filled(n * c * plane_out, |dst| {
            (0..n * c).into_par_iter().for_each(|pi| {
                with_scratch(|scratch| {
                    let buf = grown(&mut scratch.phases, staged);
                    stage_plane(&x[pi * h * w..(pi + 1) * h * w], st, buf);
                    let ch = pi % c;
                    let filter = Filter {
                        kh,
                        kw,
                        d,
                        weights: &self.packed.weight[ch * kh * kw..(ch + 1) * kh * kw],
                        bias: self.packed.bias.as_ref().map_or(0.0, |b| b[ch]),
                        act: self.act,
                    };
                    // SAFETY: plane `pi` of the output is this task's alone.
                    let o = unsafe {
                        std::slice::from_raw_parts_mut(dst.get().add(pi * plane_out), plane_out)
                    };
                    plane(buf, st, filter, o);
                })
            })
        });
        count_flops(n * c * plane_out * kh * kw);
        Ok((CpuStorage::F32(out), Shape::from((n, c, st.oh, st.ow))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        let st = self.stage(h, w)?;
        let g = self.act.backward(res, grad)?.contiguous()?;
        let gx = g.apply_op1_no_bwd(&DepthwiseInputGrad {
            packed: self.packed.clone(),
            h: st.rows,
            w: w + self.pads[1].0 + self.pads[1].1,
        })?;
        // The gradient of the padded input, cropped to the input.
        Ok(Some(gx.narrow(2, st.top, h)?.narrow(3, st.left, w)?))
    }
}

/// d(loss)/d(padded input) of a depthwise convolution, from d(loss)/d(output).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector versions of the tap sum give the portable one's bits (every term is
    /// one fused multiply-add, in tap order), on whichever this CPU runs.
    #[test]
    fn tap_sums_agree_bit_for_bit() {
        let buf: Vec<f32> = (0..400)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        let at = [0, 7, 33, 101, 250, 3, 64, 17, 90];
        let f: Vec<f32> = (0..at.len()).map(|i| (i as f32 - 4.0) * 0.37).collect();
        for x0 in [0, 32, 64] {
            let mut want = [0f32; LANES];
            for (&a, &w) in at.iter().zip(&f) {
                for (l, v) in want.iter_mut().enumerate() {
                    *v = w.mul_add(buf[a + x0 + l], *v);
                }
            }
            assert_eq!(sum_taps(&buf, &at, &f, x0), want);
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA; reads stay below 400.
                    assert_eq!(unsafe { sum_taps_avx2(&buf, &at, &f, x0) }, want);
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: as above, with AVX-512F.
                    assert_eq!(unsafe { sum_taps_avx512(&buf, &at, &f, x0) }, want);
                }
            }
        }
    }
}
