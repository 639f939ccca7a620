use super::resize::{resize_final, resize_linear};

/// pytorch-grad-cam's `scale_cam_image` normalisation: `m -= min; m /= (max + 1e-7)`,
/// so a map that is constant (e.g. all zero after ReLU) becomes all zeros.
pub fn minmax_in_place(m: &mut [f32]) {
    if m.is_empty() {
        return;
    }
    let min = m.iter().cloned().fold(f32::INFINITY, f32::min);
    let max = m.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    // Subtraction rounds monotonically, so the largest shifted value is `max - min`:
    // the same bits as shifting first and taking the maximum after, in one pass less
    // (a 720p frame's map is a million values).
    let d = (max - min) + 1e-7;
    m.iter_mut().for_each(|v| *v = (*v - min) / d);
}

/// The final map of one sample, exactly as pytorch-grad-cam computes it: ReLU, min-max,
/// resize to `dst` ((bi)linear, or cubic-spline zoom for 3D), clamp at 0, min-max again.
pub fn heatmap(raw: &[f32], src: &[usize], dst: &[usize]) -> Vec<f32> {
    aggregate(&[(raw, src)], dst)
}

/// The final map of several target layers, as pytorch-grad-cam's
/// `aggregate_multi_layers`: each layer's map ReLU'd, min-maxed and resized to `dst`,
/// then clamped at 0, averaged over the layers and min-maxed. One layer is [`heatmap`].
pub fn aggregate(layers: &[(&[f32], &[usize])], dst: &[usize]) -> Vec<f32> {
    let mut mean = vec![0f32; dst.iter().product()];
    for (raw, src) in layers {
        let mut m: Vec<f32> = raw.iter().map(|v| v.max(0.0)).collect();
        minmax_in_place(&mut m);
        for (acc, v) in mean.iter_mut().zip(resize_final(&m, src, dst)) {
            *acc += v.max(0.0);
        }
    }
    let n = layers.len().max(1) as f32;
    mean.iter_mut().for_each(|v| *v /= n);
    minmax_in_place(&mut mean);
    mean
}

/// Maps a low-resolution map in [0, 1] onto the source region the model input shows:
/// `model_rect` (x, y, w, h) of the `model` (h, w) input is resized to `out` (h, w).
/// `renormalise` applies pytorch-grad-cam's clamp and second min-max after resizing.
pub fn upsample_to_source(
    map01: &[f32],
    spatial: &[usize],
    model: [usize; 2],
    model_rect: [usize; 4],
    out: [usize; 2],
    renormalise: bool,
) -> Vec<f32> {
    let full = model_rect == [0, 0, model[1], model[0]];
    let mut m = if full {
        resize_linear(map01, spatial, &out)
    } else {
        let at_model = resize_linear(map01, spatial, &model);
        let [x0, y0, w, h] = model_rect;
        let mut crop = Vec::with_capacity(w * h);
        for y in y0..y0 + h {
            crop.extend_from_slice(&at_model[y * model[1] + x0..y * model[1] + x0 + w]);
        }
        resize_linear(&crop, &[h, w], &out)
    };
    m.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
    if renormalise {
        minmax_in_place(&mut m);
    }
    m
}

/// The final pytorch-grad-cam map of a 2D sample, drawn over the source region.
pub fn heatmap_on_source(
    raw: &[f32],
    spatial: &[usize],
    model: [usize; 2],
    model_rect: [usize; 4],
    out: [usize; 2],
) -> Vec<f32> {
    let mut m: Vec<f32> = raw.iter().map(|v| v.max(0.0)).collect();
    minmax_in_place(&mut m);
    upsample_to_source(&m, spatial, model, model_rect, out, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_negative_map_is_all_zero() {
        let out = heatmap(&[-1.0, -2.0, -0.5, -3.0], &[2, 2], &[4, 4]);
        assert!(out.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn constant_positive_map_is_all_zero() {
        let out = heatmap(&[2.0; 5], &[5], &[10]);
        assert!(out.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn single_peak_is_one_and_min_is_zero() {
        let out = heatmap(&[0.0, 5.0, -3.0], &[3], &[3]);
        // ReLU -> [0, 5, 0]; min-max -> [0, 1 - tiny, 0]; second min-max keeps it.
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 1.0).abs() < 1e-6);
        assert_eq!(out[2], 0.0);
    }

    #[test]
    fn two_layers_average_their_scaled_maps() {
        // Layer a peaks at the left, layer b (coarser) is flat: the flat one becomes all
        // zero after its min-max, so the mean is half of a's map, rescaled to a's map.
        let a = aggregate(&[(&[4.0, 0.0, 0.0, 0.0], &[4])], &[4]);
        let ab = aggregate(&[(&[4.0, 0.0, 0.0, 0.0], &[4]), (&[1.0, 1.0], &[2])], &[4]);
        assert_eq!(a, heatmap(&[4.0, 0.0, 0.0, 0.0], &[4], &[4]));
        for (x, y) in a.iter().zip(&ab) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {ab:?}");
        }
        // Two peaks of two layers: both ends end up at 1 in the mean.
        let two = aggregate(&[(&[1.0, 0.0, 0.0], &[3]), (&[0.0, 0.0, 1.0], &[3])], &[3]);
        assert!((two[0] - 1.0).abs() < 1e-6 && (two[2] - 1.0).abs() < 1e-6 && two[1] == 0.0);
    }

    #[test]
    fn minmax_matches_numpy_eps_semantics() {
        let mut m = vec![1.0f32, 3.0];
        minmax_in_place(&mut m);
        assert_eq!(m[0], 0.0);
        assert_eq!(m[1], 2.0 / (2.0 + 1e-7));
    }
}
