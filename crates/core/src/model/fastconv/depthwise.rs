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
        // The last tap reads from (kw-1)*d/s on, LANES at a time from every x0 < ow.
        let per = wp.div_ceil(s).max((g.kw - 1) * g.dw / s + ow) + LANES;
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

/// Copies plane `x` (h x w) into `buf` as `st` says: zero padding, rows of phases.
fn stage_plane(x: &[f32], st: Stage, buf: &mut [f32]) {
    let (p, s) = (st.left, st.s);
    for (py, dst) in buf.chunks_exact_mut(st.row).enumerate() {
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

/// One output plane from its staged input: every `LANES` outputs of a row summed over
/// the k x k taps in registers, then act(sum + bias).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
    "x86_64+avx2+fma"
))]
fn plane(
    buf: &[f32],
    st: Stage,
    (kh, kw, d): (usize, usize, usize),
    f: &[f32],
    bias: f32,
    act: Act,
    out: &mut [f32],
) {
    for (oy, orow) in out.chunks_exact_mut(st.ow).enumerate() {
        for x0 in (0..st.ow).step_by(LANES) {
            let mut acc = [0f32; LANES];
            for i in 0..kh {
                let base = (oy * st.s + i * d) * st.row + x0;
                for j in 0..kw {
                    let q = j * d;
                    let tap = &buf[base + (q % st.s) * st.per + q / st.s..][..LANES];
                    let wv = f[i * kw + j];
                    for (a, v) in acc.iter_mut().zip(tap) {
                        *a = wv.mul_add(*v, *a);
                    }
                }
            }
            let n = LANES.min(st.ow - x0);
            for (o, a) in orow[x0..x0 + n].iter_mut().zip(&acc) {
                *o = act.apply(*a + bias);
            }
        }
    }
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
        let staged = st.rows * st.row;
        let plane_out = st.oh * st.ow;
        let out = filled(n * c * plane_out, |dst| {
            (0..n * c).into_par_iter().for_each(|pi| {
                with_scratch(|scratch| {
                    let buf = grown(&mut scratch.phases, staged);
                    stage_plane(&x[pi * h * w..(pi + 1) * h * w], st, buf);
                    let ch = pi % c;
                    let f = &self.packed.weight[ch * kh * kw..(ch + 1) * kh * kw];
                    let bias = self.packed.bias.as_ref().map_or(0.0, |b| b[ch]);
                    // SAFETY: plane `pi` of the output is this task's alone.
                    let o = unsafe {
                        std::slice::from_raw_parts_mut(dst.get().add(pi * plane_out), plane_out)
                    };
                    plane(buf, st, (kh, kw, d), f, bias, self.act, o);
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
