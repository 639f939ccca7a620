//! ROAD's noisy linear imputer (Rong et al. 2022, as pytorch-grad-cam ships it): every
//! removed position becomes the weighted mean of its neighbours, removed or not, which
//! is one sparse linear system per picture, solved here by conjugate gradients instead
//! of SciPy's direct `spsolve`. In 1D the neighbours are the two adjacent samples, so a
//! gap is filled by the straight line between its ends (constant past the edges).

use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use crate::random::Rng;

/// The neighbours of a position and their weights: ROAD's 8-neighbourhood on a grid
/// (1/6 for edges, 1/12 for corners), the two adjacent samples (1/2 each) on a line.
fn neighbours(rank: usize) -> Vec<([isize; 2], f64)> {
    if rank == 1 {
        return vec![([0, -1], 0.5), ([0, 1], 0.5)];
    }
    let (e, c) = (1.0 / 6.0, 1.0 / 12.0);
    vec![
        ([1, 1], c),
        ([0, 1], e),
        ([-1, 1], c),
        ([1, -1], c),
        ([0, -1], e),
        ([-1, -1], c),
        ([1, 0], e),
        ([-1, 0], e),
    ]
}

/// The value at NumPy's default ("linear") percentile `p` of `v`.
pub fn percentile(v: &[f32], p: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
    s.sort_by(f64::total_cmp);
    let at = p / 100.0 * (s.len() - 1) as f64;
    let lo = at.floor() as usize;
    let hi = (lo + 1).min(s.len() - 1);
    let t = at - lo as f64;
    // NumPy's _lerp: exact at both ends.
    if t < 0.5 {
        s[lo] + (s[hi] - s[lo]) * t
    } else {
        s[hi] - (s[hi] - s[lo]) * (1.0 - t)
    }
}

/// Fills the positions where `keep` is false in each of the `x.len() / keep.len()`
/// channels of `x` (C, spatial...), adding `noise` times a standard normal draw to each
/// filled value. With nothing kept there is no data to spread and every position
/// becomes 0, as SciPy's `spsolve` answers that system (its right-hand side is 0).
pub fn impute(x: &[f32], spatial: &[usize], keep: &[bool], noise: f32, rng: &mut Rng) -> Vec<f32> {
    let p = keep.len();
    let channels = x.len() / p.max(1);
    // (rows, cols): a signal is one row.
    let (h, w) = match spatial {
        [l] => (1, *l),
        [h, w] => (*h, *w),
        _ => (1, p),
    };
    let removed: Vec<usize> = (0..p).filter(|&i| !keep[i]).collect();
    let mut out = x.to_vec();
    if removed.is_empty() {
        return out;
    }
    let mut var = vec![usize::MAX; p];
    for (v, &i) in removed.iter().enumerate() {
        var[i] = v;
    }
    // Row v: diag[v] x_v − Σ w x_u (removed neighbours u) = Σ w x_k (kept neighbours).
    let mut diag = vec![0f64; removed.len()];
    let mut links: Vec<Vec<(usize, f64)>> = vec![Vec::new(); removed.len()];
    let mut known: Vec<Vec<(usize, f64)>> = vec![Vec::new(); removed.len()];
    for (v, &i) in removed.iter().enumerate() {
        let (r, c) = ((i / w) as isize, (i % w) as isize);
        for ([dr, dc], wt) in neighbours(spatial.len()) {
            let (nr, nc) = (r + dr, c + dc);
            if nr < 0 || nc < 0 || nr >= h as isize || nc >= w as isize {
                continue;
            }
            diag[v] += wt;
            let j = nr as usize * w + nc as usize;
            if keep[j] {
                known[v].push((j, wt));
            } else {
                links[v].push((var[j], wt));
            }
        }
    }
    let system = System { diag, links };
    // The channels share the system: solved in parallel, the noise drawn afterwards in
    // channel order, so a seed gives the same values on any number of threads.
    let filled: Vec<Vec<f64>> = (0..channels)
        .into_par_iter()
        .map(|ch| {
            let plane = &x[ch * p..(ch + 1) * p];
            let rhs: Vec<f64> = known
                .iter()
                .map(|k| k.iter().map(|&(j, wt)| wt * f64::from(plane[j])).sum())
                .collect();
            system.solve(&rhs)
        })
        .collect();
    for (ch, filled) in filled.iter().enumerate() {
        for (v, &i) in removed.iter().enumerate() {
            let n: f32 = if noise == 0.0 {
                0.0
            } else {
                let z: f32 = StandardNormal.sample(rng);
                noise * z
            };
            out[ch * p + i] = filled[v] as f32 + n;
        }
    }
    out
}

/// The symmetric, positive definite system of the removed positions.
struct System {
    diag: Vec<f64>,
    links: Vec<Vec<(usize, f64)>>,
}

impl System {
    fn apply(&self, x: &[f64], out: &mut [f64]) {
        for (v, o) in out.iter_mut().enumerate() {
            *o = self.diag[v] * x[v] - self.links[v].iter().map(|&(u, w)| w * x[u]).sum::<f64>();
        }
    }

    /// Jacobi-preconditioned conjugate gradients, to a relative residual of 1e-12.
    fn solve(&self, b: &[f64]) -> Vec<f64> {
        let n = b.len();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mut x = vec![0f64; n];
        let target = 1e-12 * norm(b);
        if target == 0.0 {
            return x;
        }
        let mut r = b.to_vec();
        let mut z: Vec<f64> = r.iter().zip(&self.diag).map(|(r, d)| r / d).collect();
        let mut d = z.clone();
        let mut rz: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
        let mut q = vec![0f64; n];
        for _ in 0..(10 * n + 100) {
            self.apply(&d, &mut q);
            let alpha = rz / d.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>();
            for i in 0..n {
                x[i] += alpha * d[i];
                r[i] -= alpha * q[i];
            }
            if norm(&r) <= target {
                break;
            }
            for i in 0..n {
                z[i] = r[i] / self.diag[i];
            }
            let next: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
            let beta = next / rz;
            rz = next;
            for i in 0..n {
                d[i] = z[i] + beta * d[i];
            }
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_percentiles() {
        // np.percentile([3, 1, 2, 10], [0, 10, 50, 90, 100]) = [1, 1.3, 2.5, 7.9, 10]
        let v = [3.0, 1.0, 2.0, 10.0];
        for (p, want) in [
            (0.0, 1.0),
            (10.0, 1.3),
            (50.0, 2.5),
            (90.0, 7.9),
            (100.0, 10.0),
        ] {
            assert!((percentile(&v, p) - want).abs() < 1e-12, "{p}");
        }
    }

    #[test]
    fn a_gap_in_a_line_is_filled_by_the_line_between_its_ends() {
        let x = [0.0, 9.0, 9.0, 9.0, 4.0, 9.0];
        let keep = [true, false, false, false, true, false];
        let y = impute(&x, &[6], &keep, 0.0, &mut crate::random::rng(0));
        let want = [0.0, 1.0, 2.0, 3.0, 4.0, 4.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn a_removed_pixel_is_the_weighted_mean_of_its_neighbours() {
        // 3x3, centre removed: the mean of 4 edges (1/6) and 4 corners (1/12).
        let x = [1.0, 2.0, 1.0, 2.0, 50.0, 2.0, 1.0, 2.0, 1.0];
        let mut keep = [true; 9];
        keep[4] = false;
        let y = impute(&x, &[3, 3], &keep, 0.0, &mut crate::random::rng(0));
        let want = 4.0 * 2.0 / 6.0 + 4.0 * 1.0 / 12.0;
        assert!((y[4] as f64 - want).abs() < 1e-6, "{}", y[4]);
        assert_eq!(y[0], 1.0);
    }
}
