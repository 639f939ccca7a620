/// Linear (1D) or bilinear (2D) resize with half-pixel centres and edge clamping: OpenCV's
/// `INTER_LINEAR` and PyTorch's `align_corners=False`, which pytorch-grad-cam's output uses.
/// Bilinear is separable, so each axis is interpolated in turn.
pub fn resize_linear(src: &[f32], src_shape: &[usize], dst_shape: &[usize]) -> Vec<f32> {
    resize(src, src_shape, dst_shape, false)
}

/// The same with `align_corners=True` (corner samples on corner samples), as
/// `torch.nn.UpsamplingBilinear2d` does; ScoreCAM upsamples its masks this way.
pub fn resize_linear_corners(src: &[f32], src_shape: &[usize], dst_shape: &[usize]) -> Vec<f32> {
    resize(src, src_shape, dst_shape, true)
}

/// The resize of pytorch-grad-cam's final map: OpenCV's bilinear for 1D and 2D maps,
/// scipy's cubic-spline zoom for 3D (video) ones.
pub fn resize_final(src: &[f32], src_shape: &[usize], dst_shape: &[usize]) -> Vec<f32> {
    if src_shape.len() == 3 {
        super::zoom::zoom_cubic(src, src_shape, dst_shape)
    } else {
        resize_linear(src, src_shape, dst_shape)
    }
}

fn resize(src: &[f32], src_shape: &[usize], dst_shape: &[usize], corners: bool) -> Vec<f32> {
    assert_eq!(
        src_shape.len(),
        dst_shape.len(),
        "resize_linear: rank mismatch"
    );
    assert_eq!(src.len(), src_shape.iter().product::<usize>());
    let mut cur = src.to_vec();
    let mut shape = src_shape.to_vec();
    for axis in 0..shape.len() {
        if shape[axis] == dst_shape[axis] {
            continue;
        }
        cur = resize_axis(&cur, &shape, axis, dst_shape[axis], corners);
        shape[axis] = dst_shape[axis];
    }
    cur
}

/// Source index and weight of the upper neighbour for each output position.
fn taps(n_in: usize, n_out: usize, corners: bool) -> Vec<(usize, usize, f32)> {
    let scale = n_in as f64 / n_out as f64;
    let corner_scale = if n_out > 1 {
        (n_in - 1) as f64 / (n_out - 1) as f64
    } else {
        0.0
    };
    (0..n_out)
        .map(|i| {
            let x = if corners {
                i as f64 * corner_scale
            } else {
                ((i as f64 + 0.5) * scale - 0.5).max(0.0)
            };
            let x0 = (x.floor() as usize).min(n_in - 1);
            let x1 = (x0 + 1).min(n_in - 1);
            let w = if x0 == n_in - 1 { 0.0 } else { x - x0 as f64 };
            (x0, x1, w as f32)
        })
        .collect()
}

/// Linear resampling of one line (the last axis), as `resize_axis` does it. Upsampling,
/// long runs of outputs lie between the same two inputs and differ only in weight: a loop
/// over each run vectorises (a 720p heatmap is a million values per frame).
pub(crate) struct LineTaps {
    weights: Vec<f32>,
    /// (lower input, upper input, outputs between them).
    runs: Vec<(usize, usize, std::ops::Range<usize>)>,
}

impl LineTaps {
    pub(crate) fn new(n_in: usize, n_out: usize, corners: bool) -> Self {
        let t = taps(n_in, n_out, corners);
        let weights = t.iter().map(|&(_, _, w)| w).collect();
        let mut runs: Vec<(usize, usize, std::ops::Range<usize>)> = Vec::new();
        for (j, &(x0, x1, _)) in t.iter().enumerate() {
            match runs.last_mut() {
                Some((a, b, r)) if (*a, *b) == (x0, x1) => r.end = j + 1,
                _ => runs.push((x0, x1, j..j + 1)),
            }
        }
        Self { weights, runs }
    }

    /// The smallest and largest of the values [`LineTaps::apply`] makes from `s`, from
    /// the ends of each run alone: within a run a + (b - a) w is monotone in w, rounding
    /// included, so the extremes are those of the full line, bit for bit.
    pub(crate) fn extremes(&self, s: &[f32]) -> (f32, f32) {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for (x0, x1, r) in &self.runs {
            let (a, b) = (s[*x0], s[*x1]);
            for j in [r.start, r.end - 1] {
                let v = a + (b - a) * self.weights[j];
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        (lo, hi)
    }

    /// `d` (n_out values) resampled from `s` (n_in values).
    pub(crate) fn apply(&self, s: &[f32], d: &mut [f32]) {
        for (x0, x1, r) in &self.runs {
            let (a, b) = (s[*x0], s[*x1]);
            for (dv, &w) in d[r.clone()].iter_mut().zip(&self.weights[r.clone()]) {
                *dv = a + (b - a) * w;
            }
        }
    }
}

pub(crate) fn resize_axis(
    src: &[f32],
    shape: &[usize],
    axis: usize,
    n_out: usize,
    corners: bool,
) -> Vec<f32> {
    let n_in = shape[axis];
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = vec![0f32; outer * n_out * inner];
    if inner == 1 {
        let line = LineTaps::new(n_in, n_out, corners);
        for (s, d) in src.chunks_exact(n_in).zip(out.chunks_exact_mut(n_out)) {
            line.apply(s, d);
        }
        return out;
    }
    let t = taps(n_in, n_out, corners);
    for o in 0..outer {
        let s = &src[o * n_in * inner..(o + 1) * n_in * inner];
        let d = &mut out[o * n_out * inner..(o + 1) * n_out * inner];
        for (j, &(x0, x1, w)) in t.iter().enumerate() {
            let a = &s[x0 * inner..(x0 + 1) * inner];
            let b = &s[x1 * inner..(x1 + 1) * inner];
            for (k, dv) in d[j * inner..(j + 1) * inner].iter_mut().enumerate() {
                *dv = a[k] + (b[k] - a[k]) * w;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_1d_matches_hand_computed_half_pixel_values() {
        // torch: F.interpolate(torch.tensor([[[0., 1., 3.]]]), size=6, mode='linear',
        //                      align_corners=False)
        // -> [0.0, 0.25, 0.75, 1.5, 2.5, 3.0]
        let out = resize_linear(&[0.0, 1.0, 3.0], &[3], &[6]);
        let want = [0.0, 0.25, 0.75, 1.5, 2.5, 3.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn bilinear_2x2_to_4x4() {
        // torch: F.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), size=(4, 4),
        //                      mode='bilinear', align_corners=False)
        let out = resize_linear(&[0.0, 1.0, 2.0, 3.0], &[2, 2], &[4, 4]);
        #[rustfmt::skip]
        let want = [
            0.0, 0.25, 0.75, 1.0,
            0.5, 0.75, 1.25, 1.5,
            1.5, 1.75, 2.25, 2.5,
            2.0, 2.25, 2.75, 3.0,
        ];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn non_integer_ratio_and_downscale() {
        // 3 -> 7: x = (i + 0.5) * 3/7 - 0.5; i = 3 -> x = 1.0 exactly.
        let out = resize_linear(&[0.0, 10.0, 20.0], &[3], &[7]);
        assert!((out[3] - 10.0).abs() < 1e-5);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[6], 20.0);
        // 4 -> 2: x = 0.5 and 2.5 -> the means of neighbours.
        let out = resize_linear(&[0.0, 2.0, 4.0, 6.0], &[4], &[2]);
        assert_eq!(out, vec![1.0, 5.0]);
    }

    #[test]
    fn align_corners_puts_the_ends_on_the_ends() {
        // torch: nn.UpsamplingBilinear2d(size=(1, 5))(torch.tensor([[[[0., 1., 3.]]]]))
        // -> [0.0, 0.5, 1.0, 2.0, 3.0]
        let out = resize_linear_corners(&[0.0, 1.0, 3.0], &[3], &[5]);
        assert_eq!(out, vec![0.0, 0.5, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn constant_map_stays_constant() {
        let out = resize_linear(&[0.7; 6], &[2, 3], &[5, 9]);
        assert!(out.iter().all(|v| (v - 0.7).abs() < 1e-6));
    }
}
