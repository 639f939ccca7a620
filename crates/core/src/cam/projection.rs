//! The first principal component of a (positions × channels) map, which EigenCAM and
//! `eigen_smooth` use in place of a sum over channels.
//!
//! Only the top component is needed, so it is found by power iteration on the smaller
//! of the two Gram matrices (K×K or P×P) in f64, not by a full SVD. A singular vector's
//! sign is arbitrary: NumPy's LAPACK picks one by the accident of its rounding (numpy
//! 2.x's OpenBLAS 0.3.31 and Debian 12's LAPACK 3.11 disagree on a quarter of random
//! matrices), so here the sign is fixed to make the map agree with the activations'
//! channel sum: the map lights up where the layer responds, not where it is silent.

/// Projection (P values) of `x`, K channels of P positions each (channel-major, as a
/// (K, P) slice), onto the first principal component of its centred (P, K) transpose.
pub fn first_component(x: &[f32], k: usize, p: usize) -> Vec<f32> {
    assert_eq!(x.len(), k * p);
    // Centre each channel over the positions (NaN as 0, like pytorch-grad-cam).
    let mut c = vec![0f64; k * p];
    for ch in 0..k {
        let row = &x[ch * p..(ch + 1) * p];
        let v = |f: f32| if f.is_nan() { 0.0 } else { f as f64 };
        let mean = row.iter().map(|&f| v(f)).sum::<f64>() / p as f64;
        for (d, &s) in c[ch * p..(ch + 1) * p].iter_mut().zip(row) {
            *d = v(s) - mean;
        }
    }
    let mut proj = if k <= p {
        // v = top eigenvector of XᵀX (K×K); projection X v.
        let g = gram(&c, k, p, true);
        let v = top_eigenvector(&g, k);
        (0..p)
            .map(|i| (0..k).map(|ch| c[ch * p + i] * v[ch]).sum())
            .collect::<Vec<f64>>()
    } else {
        // u = top eigenvector of XXᵀ (P×P) with eigenvalue σ²; X v = σ u.
        let g = gram(&c, k, p, false);
        let u = top_eigenvector(&g, p);
        let gu: Vec<f64> = (0..p)
            .map(|i| (0..p).map(|j| g[i * p + j] * u[j]).sum())
            .collect();
        let sigma = gu
            .iter()
            .zip(&u)
            .map(|(a, b)| a * b)
            .sum::<f64>()
            .max(0.0)
            .sqrt();
        u.iter().map(|x| x * sigma).collect()
    };
    // The sign: positively correlated with the channel sum of the activations.
    let agree: f64 = (0..p)
        .map(|i| proj[i] * (0..k).map(|ch| x[ch * p + i] as f64).sum::<f64>())
        .sum();
    let largest = proj
        .iter()
        .cloned()
        .fold(0f64, |m, v| if v.abs() > m.abs() { v } else { m });
    if agree < 0.0 || (agree == 0.0 && largest < 0.0) {
        proj.iter_mut().for_each(|v| *v = -*v);
    }
    proj.into_iter().map(|v| v as f32).collect()
}

/// XᵀX (channels) or XXᵀ (positions) of the channel-major (K, P) `c`. Both are
/// dot products of contiguous rows: the positions' case transposes `c` first, so the
/// inner loop never strides (this keeps the principal component far below a forward).
fn gram(c: &[f64], k: usize, p: usize, channels: bool) -> Vec<f64> {
    let (m, len) = if channels { (k, p) } else { (p, k) };
    let rows: std::borrow::Cow<[f64]> = if channels {
        c.into()
    } else {
        let mut t = vec![0f64; k * p];
        for ch in 0..k {
            for i in 0..p {
                t[i * k + ch] = c[ch * p + i];
            }
        }
        t.into()
    };
    let row = |a: usize| &rows[a * len..(a + 1) * len];
    let mut g = vec![0f64; m * m];
    for a in 0..m {
        for b in a..m {
            let s = dot(row(a), row(b));
            g[a * m + b] = s;
            g[b * m + a] = s;
        }
    }
    g
}

/// A dot product in eight independent sums, which the compiler vectorises (one
/// running sum waits on each addition in turn).
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0f64; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f64 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// The unit eigenvector of the largest eigenvalue of the symmetric positive
/// semi-definite `g` (m×m), by power iteration from a fixed start.
fn top_eigenvector(g: &[f64], m: usize) -> Vec<f64> {
    // A start with no symmetry: the ones vector is orthogonal to everything centred.
    let mut v: Vec<f64> = (0..m)
        .map(|i| 1.0 + ((i as u64 * 2_654_435_761) % 1000) as f64 / 1000.0)
        .collect();
    normalise(&mut v);
    for _ in 0..20_000 {
        let mut w: Vec<f64> = (0..m)
            .map(|i| {
                g[i * m..(i + 1) * m]
                    .iter()
                    .zip(&v)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect();
        if normalise(&mut w) == 0.0 {
            return w;
        }
        let change = w
            .iter()
            .zip(&v)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        v = w;
        if change < 1e-13 {
            break;
        }
    }
    v
}

fn normalise(v: &mut [f64]) -> f64 {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rank-one data: every position is t_i · (1, 2, 3) plus nothing else, so the
    /// centred projection is ±|(1,2,3)| (t_i − mean t).
    #[test]
    fn rank_one_projection_is_exact_and_points_along_the_activations() {
        let t = [0.0f32, 1.0, 4.0, 2.0, 3.0];
        let dir = [1.0f32, 2.0, 3.0];
        let x: Vec<f32> = dir
            .iter()
            .flat_map(|d| t.iter().map(move |ti| d * ti))
            .collect();
        let norm = 14f32.sqrt();
        let mean = 2.0;
        for (k, p, x) in [(3, 5, x.clone())] {
            let proj = first_component(&x, k, p);
            for (pi, ti) in proj.iter().zip(t) {
                assert!((pi - norm * (ti - mean)).abs() < 1e-5, "{proj:?}");
            }
        }
        // Wide case (more channels than positions) takes the other Gram matrix.
        let wide: Vec<f32> = (0..6).flat_map(|ch| [0.0, 1.0 + ch as f32, 0.5]).collect();
        let proj = first_component(&wide, 6, 3);
        assert!(proj[1] > 0.0 && proj[0] < 0.0 && proj[2] < 0.0, "{proj:?}");
    }
}
