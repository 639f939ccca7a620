//! RISE's causal metrics (Petsiuk et al. 2018) as torchcam 0.5 defines them: deletion
//! moves the input towards a baseline, most salient positions first, and insertion
//! moves the baseline towards the input; each scores the area under the class
//! probability against the fraction of positions moved.

use std::cmp::Ordering;
use std::str::FromStr;

/// What deleted positions become, or what insertion starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// RISE's blurred input: an 11-tap Gaussian (σ = 5) along each spatial axis, zero
    /// padded, as RISE's `conv2d(x, gkern(11, 5), padding=5)`.
    Blur,
    /// Zeros (the normalised input's mean colour): torchcam's default.
    Zero,
    /// Each channel's own mean.
    Mean,
}

impl Baseline {
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Blur => "blur",
            Baseline::Zero => "zero",
            Baseline::Mean => "mean",
        }
    }

    /// The baseline of `x` (C, spatial...).
    pub fn of(self, x: &[f32], spatial: &[usize]) -> Vec<f32> {
        let p: usize = spatial.iter().product();
        match self {
            Baseline::Zero => vec![0.0; x.len()],
            Baseline::Mean => x
                .chunks(p)
                .flat_map(|c| {
                    let m = c.iter().map(|&v| f64::from(v)).sum::<f64>() / p as f64;
                    std::iter::repeat_n(m as f32, p)
                })
                .collect(),
            Baseline::Blur => x.chunks(p).flat_map(|c| blur(c, spatial)).collect(),
        }
    }
}

impl FromStr for Baseline {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "blur" => Ok(Baseline::Blur),
            "zero" => Ok(Baseline::Zero),
            "mean" => Ok(Baseline::Mean),
            _ => Err(format!("unknown baseline {s:?}: blur, zero or mean")),
        }
    }
}

/// RISE's kernel: 11 taps of a Gaussian with σ = 5, summing to 1.
fn kernel() -> [f64; 11] {
    let mut k = [0f64; 11];
    for (i, v) in k.iter_mut().enumerate() {
        let d = i as f64 - 5.0;
        *v = (-d * d / 50.0).exp();
    }
    let s: f64 = k.iter().sum();
    k.map(|v| v / s)
}

/// One channel blurred along every spatial axis, zero padded.
fn blur(plane: &[f32], spatial: &[usize]) -> Vec<f32> {
    let k = kernel();
    let mut v: Vec<f64> = plane.iter().map(|&x| f64::from(x)).collect();
    let mut stride = 1;
    for &len in spatial.iter().rev() {
        let mut out = vec![0f64; v.len()];
        for (i, o) in out.iter_mut().enumerate() {
            let at = (i / stride) % len;
            for (t, kt) in k.iter().enumerate() {
                let j = at as isize + t as isize - 5;
                if j >= 0 && (j as usize) < len {
                    *o += kt * v[i - at * stride + j as usize * stride];
                }
            }
        }
        v = out;
        stride *= len;
    }
    v.into_iter().map(|x| x as f32).collect()
}

/// Positions by descending saliency; equal values keep their order, so the walk is the
/// same on every machine (RISE's `argsort` leaves ties to the sort).
pub fn salient_order(map: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..map.len()).collect();
    order.sort_by(|&a, &b| map[b].partial_cmp(&map[a]).unwrap_or(Ordering::Equal));
    order
}

/// Positions moved before each point of a walk over `p` positions in `steps` steps:
/// 0, per, 2·per, ..., p with per = ceil(p / steps) (torchcam's counts).
pub fn counts(p: usize, steps: usize) -> Vec<usize> {
    let per = p.div_ceil(steps.max(1)).max(1);
    let mut c: Vec<usize> = (0..p).step_by(per).collect();
    c.push(p);
    c
}

/// The inputs of a causal walk from `start` to `finish` (C, P each): point i has the
/// first `counts[i]` positions of `order` taken from `finish`, in every channel.
pub fn walk<'a>(
    start: Vec<f32>,
    finish: &'a [f32],
    order: &'a [usize],
    counts: &'a [usize],
) -> impl Iterator<Item = Vec<f32>> + 'a {
    let p = order.len();
    let channels = finish.len() / p.max(1);
    let mut cur = start;
    let mut done = 0;
    counts.iter().map(move |&upto| {
        for &j in &order[done..upto] {
            for c in 0..channels {
                cur[c * p + j] = finish[c * p + j];
            }
        }
        done = upto;
        cur.clone()
    })
}

/// The area under the scores against the fraction of positions moved (trapezoids,
/// as torchcam's `torch.trapezoid(scores, counts / p)`).
pub fn auc(scores: &[f32], counts: &[usize]) -> f64 {
    let p = *counts.last().unwrap_or(&1) as f64;
    scores
        .windows(2)
        .zip(counts.windows(2))
        .map(|(s, c)| (c[1] - c[0]) as f64 / p * f64::from(s[0] + s[1]) / 2.0)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_a_constant_inside_and_fades_at_zero_padded_edges() {
        let x = vec![1.0f32; 30];
        let y = blur(&x, &[30]);
        assert!((y[15] - 1.0).abs() < 1e-6);
        assert!(y[0] < 0.7 && y[0] > 0.5, "{}", y[0]);
        let y2 = blur(&vec![1.0f32; 30 * 30], &[30, 30]);
        assert!((y2[15 * 30 + 15] - 1.0).abs() < 1e-6);
        assert!((y2[0] - y[0] * y[0]).abs() < 1e-6);
    }

    #[test]
    fn walks_move_the_most_salient_first_and_end_at_the_finish() {
        let map = [0.1, 0.9, 0.5, 0.9, 0.0];
        let order = salient_order(&map);
        assert_eq!(order, vec![1, 3, 2, 0, 4]);
        let c = counts(5, 2);
        assert_eq!(c, vec![0, 3, 5]);
        let start = vec![1.0; 10];
        let finish = vec![0.0; 10];
        let steps: Vec<_> = walk(start, &finish, &order, &c).collect();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0], vec![1.0; 10]);
        assert_eq!(
            steps[1],
            vec![1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        );
        assert_eq!(steps[2], finish);
        // Fractions 0, 0.6, 1: 0.6 * 0.75 + 0.4 * 0.25.
        assert!((auc(&[1.0, 0.5, 0.0], &c) - 0.55).abs() < 1e-7);
    }
}
