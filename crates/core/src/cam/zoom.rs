//! `scipy.ndimage.zoom` with its defaults (cubic B-spline, `mode='constant'`,
//! `grid_mode=False`): the resize pytorch-grad-cam applies to the maps of 3D (video)
//! models, where 2D maps get OpenCV's bilinear one.
//!
//! Each axis in turn: the samples become B-spline coefficients (scipy's prefilter, with
//! its mirror boundary, in float64), and output position o reads the spline at
//! o·(n_in−1)/(n_out−1), with mirrored coefficients past the ends. The spline is
//! separable, so this equals scipy's 3D interpolation.

/// The pole of the cubic B-spline's inverse filter, √3 − 2.
const POLE: f64 = -0.267_949_192_431_122_7;

/// Resizes a map of any rank; `src` is row-major with `src_shape`.
pub fn zoom_cubic(src: &[f32], src_shape: &[usize], dst_shape: &[usize]) -> Vec<f32> {
    assert_eq!(src_shape.len(), dst_shape.len(), "zoom: rank mismatch");
    assert_eq!(src.len(), src_shape.iter().product::<usize>());
    let mut cur: Vec<f64> = src.iter().map(|&v| v as f64).collect();
    let mut shape = src_shape.to_vec();
    for axis in 0..shape.len() {
        cur = zoom_axis(&cur, &shape, axis, dst_shape[axis]);
        shape[axis] = dst_shape[axis];
    }
    cur.into_iter().map(|v| v as f32).collect()
}

fn zoom_axis(src: &[f64], shape: &[usize], axis: usize, n_out: usize) -> Vec<f64> {
    let n = shape[axis];
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let taps = taps(n, n_out);
    let mut out = vec![0f64; outer * n_out * inner];
    let mut line = vec![0f64; n];
    for o in 0..outer {
        for k in 0..inner {
            for (i, v) in line.iter_mut().enumerate() {
                *v = src[(o * n + i) * inner + k];
            }
            prefilter(&mut line);
            for (j, tap) in taps.iter().enumerate() {
                out[(o * n_out + j) * inner + k] = tap.iter().map(|&(i, w)| line[i] * w).sum();
            }
        }
    }
    out
}

/// For each output position, the four coefficients it reads and their B-spline weights.
fn taps(n: usize, n_out: usize) -> Vec<[(usize, f64); 4]> {
    let scale = if n_out > 1 {
        (n - 1) as f64 / (n_out - 1) as f64
    } else {
        1.0
    };
    (0..n_out)
        .map(|o| {
            let x = o as f64 * scale;
            let f = x.floor() as isize;
            std::array::from_fn(|t| {
                let k = f - 1 + t as isize;
                (mirror(k, n), bspline3(x - k as f64))
            })
        })
        .collect()
}

/// Index `k` reflected about both ends (whole-sample symmetric, period 2(n−1)).
fn mirror(k: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let k = k.abs() % period;
    (if k >= n as isize { period - k } else { k }) as usize
}

fn bspline3(t: f64) -> f64 {
    let t = t.abs();
    if t < 1.0 {
        2.0 / 3.0 - t * t + t * t * t / 2.0
    } else if t < 2.0 {
        (2.0 - t).powi(3) / 6.0
    } else {
        0.0
    }
}

/// Samples to cubic B-spline coefficients in place: the gain, then the causal and
/// anti-causal recursions, initialised for a mirror boundary as scipy's `ni_splines.c`.
fn prefilter(c: &mut [f64]) {
    let n = c.len();
    if n < 2 {
        return;
    }
    let z = POLE;
    let gain = (1.0 - z) * (1.0 - 1.0 / z);
    c.iter_mut().for_each(|v| *v *= gain);
    let zn1 = z.powi(n as i32 - 1);
    let mut c0 = c[0] + zn1 * c[n - 1];
    let mut zi = z;
    for i in 1..n - 1 {
        c0 += zi * (c[i] + zn1 * c[n - 1 - i]);
        zi *= z;
    }
    c[0] = c0 / (1.0 - zn1 * zn1);
    for i in 1..n {
        c[i] += z * c[i - 1];
    }
    c[n - 1] = (z * c[n - 2] + c[n - 1]) * z / (z * z - 1.0);
    for i in (0..n - 1).rev() {
        c[i] = z * (c[i + 1] - c[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-5, "[{i}] {g} vs {w}");
        }
    }

    #[test]
    #[allow(clippy::excessive_precision)] // scipy's output as printed
    fn matches_scipy_in_3d() {
        // a = np.arange(12, dtype=np.float32).reshape(2, 3, 2) ** 2 / 10
        // scipy.ndimage.zoom(a, [3/2, 5/3, 4/2]).flatten()  (scipy 1.17.1)
        let a: Vec<f32> = (0..12).map(|v| (v * v) as f32 / 10.0).collect();
        #[rustfmt::skip]
        let want = [
            5.2064834e-16, 2.5925927e-02, 7.4074075e-02, 1.0000000e-01, 5.0000001e-02, 1.0833333e-01,
            2.1666665e-01, 2.7499998e-01, 4.0000001e-01, 5.2962965e-01, 7.7037036e-01, 8.9999998e-01,
            1.1500000e+00, 1.3509259e+00, 1.7240741e+00, 1.9250000e+00, 1.6000000e+00, 1.8333334e+00,
            2.2666667e+00, 2.5000000e+00, 1.8000000e+00, 1.9814814e+00, 2.3185186e+00, 2.5000000e+00,
            2.2249999e+00, 2.4388890e+00, 2.8361111e+00, 3.0500002e+00, 3.4000001e+00, 3.6851852e+00,
            4.2148151e+00, 4.5000000e+00, 4.9749999e+00, 5.3314815e+00, 5.9935188e+00, 6.3500004e+00,
            5.8000002e+00, 6.1888890e+00, 6.9111114e+00, 7.3000002e+00, 3.5999999e+00, 3.9370370e+00,
            4.5629630e+00, 4.9000001e+00, 4.4000001e+00, 4.7694445e+00, 5.4555559e+00, 5.8250003e+00,
            6.4000001e+00, 6.8407407e+00, 7.6592598e+00, 8.1000004e+00, 8.8000002e+00, 9.3120375e+00,
            1.0262963e+01, 1.0775001e+01, 1.0000000e+01, 1.0544444e+01, 1.1555556e+01, 1.2100000e+01,
        ];
        assert_close(&zoom_cubic(&a, &[2, 3, 2], &[3, 5, 4]), &want);
    }

    #[test]
    #[allow(clippy::excessive_precision)]
    fn overshoots_like_a_cubic_spline() {
        // scipy.ndimage.zoom(np.float32([0, 1, 0, 0, 4]), 9/5): below zero between peaks,
        // which a linear resize never does.
        let want = [
            0.0,
            0.44642857,
            1.0,
            0.76785713,
            0.0,
            -0.64285713,
            0.0,
            2.4285715,
            4.0,
        ];
        assert_close(&zoom_cubic(&[0.0, 1.0, 0.0, 0.0, 4.0], &[5], &[9]), &want);
    }

    #[test]
    fn a_single_sample_spreads_and_equal_sizes_keep_the_map() {
        assert_eq!(zoom_cubic(&[0.25], &[1, 1, 1], &[2, 2, 3]), vec![0.25; 12]);
        let m: Vec<f32> = (0..24).map(|v| (v % 7) as f32).collect();
        assert_close(&zoom_cubic(&m, &[2, 3, 4], &[2, 3, 4]), &m);
    }
}
