use super::resize::{resize_axis, resize_final, resize_linear, LineTaps};

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
    let s = SourceMap::new(map01, spatial, model, model_rect, out, renormalise);
    let mut m = vec![0f32; out[0] * out[1]];
    for (y, row) in m.chunks_exact_mut(out[1].max(1)).enumerate() {
        s.row(y, row);
    }
    m
}

/// [`upsample_to_source`] one output row at a time, never held whole: a 720p frame's map
/// is a million floats, and the video overlay reads each row once. The resize is
/// separable; the vertical half is done here (`out` rows of the source's width), the
/// horizontal half per row, with the same arithmetic, so rows have the same bits.
/// The minimum, maximum and peak come from each row's extremes, which lie at the ends of
/// its interpolation runs: a few values per row instead of every pixel.
pub struct SourceMap {
    /// The map resized vertically: `out[0]` rows of `width`.
    columns: Vec<f32>,
    width: usize,
    line: Option<LineTaps>,
    out: [usize; 2],
    /// (min, max - min + 1e-7) of the clamped map, when renormalised.
    scale: Option<(f32, f32)>,
    /// Each row's largest clamped value.
    row_max: Vec<f32>,
}

impl SourceMap {
    /// The map of [`upsample_to_source`].
    pub fn new(
        map01: &[f32],
        spatial: &[usize],
        model: [usize; 2],
        model_rect: [usize; 4],
        out: [usize; 2],
        renormalise: bool,
    ) -> Self {
        let (src, [sh, sw]) = if model_rect == [0, 0, model[1], model[0]] {
            assert_eq!(spatial.len(), 2, "upsample_to_source: a 2D map");
            (map01.to_vec(), [spatial[0], spatial[1]])
        } else {
            let at_model = resize_linear(map01, spatial, &model);
            let [x0, y0, w, h] = model_rect;
            let mut crop = Vec::with_capacity(w * h);
            for y in y0..y0 + h {
                crop.extend_from_slice(&at_model[y * model[1] + x0..y * model[1] + x0 + w]);
            }
            (crop, [h, w])
        };
        let columns = if sh == out[0] {
            src
        } else {
            resize_axis(&src, &[sh, sw], 0, out[0], false)
        };
        let line = (sw != out[1]).then(|| LineTaps::new(sw, out[1], false));
        let mut map = Self {
            columns,
            width: sw,
            line,
            out,
            scale: None,
            row_max: Vec::with_capacity(out[0]),
        };
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        for y in 0..out[0] {
            let (lo, hi) = map.row_extremes(y);
            min = min.min(lo);
            max = max.max(hi);
            map.row_max.push(hi);
        }
        if renormalise {
            // As [`minmax_in_place`]: the largest shifted value is `max - min`.
            map.scale = Some((min, (max - min) + 1e-7));
        }
        map
    }

    /// Output row `y` (`out[1]` values) into `row`.
    pub fn row(&self, y: usize, row: &mut [f32]) {
        match &self.line {
            Some(line) => line.apply(self.source_row(y), row),
            None => row.copy_from_slice(self.source_row(y)),
        }
        row.iter_mut().for_each(|v| *v = self.finish(*v));
    }

    /// (x, y) of the map's first maximum, as [`super::argmax`] finds it in the whole map:
    /// only a row whose own maximum is the map's is drawn in full.
    pub fn peak(&self) -> (usize, usize) {
        let max = self
            .row_max
            .iter()
            .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let top = self.finish(max);
        let mut row = vec![0f32; self.out[1]];
        for (y, &row_max) in self.row_max.iter().enumerate() {
            if self.finish(row_max) == top {
                self.row(y, &mut row);
                if let Some(x) = row.iter().position(|&v| v == top) {
                    return (x, y);
                }
            }
        }
        (0, 0)
    }

    /// The vertically resized row `y`, before the horizontal resize.
    fn source_row(&self, y: usize) -> &[f32] {
        &self.columns[y * self.width..(y + 1) * self.width]
    }

    /// The clamped row's smallest and largest values. Clamping is monotone, so they are
    /// the clamped extremes of the resized row.
    fn row_extremes(&self, y: usize) -> (f32, f32) {
        let src = self.source_row(y);
        let (lo, hi) = match &self.line {
            Some(line) => line.extremes(src),
            None => src
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                }),
        };
        (lo.clamp(0.0, 1.0), hi.clamp(0.0, 1.0))
    }

    /// A resized value's final value: clamped, then normalised when asked.
    fn finish(&self, v: f32) -> f32 {
        let v = v.clamp(0.0, 1.0);
        match self.scale {
            Some((min, d)) => (v - min) / d,
            None => v,
        }
    }
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

    /// The map drawn row by row has the bits of the whole-map composition it replaced:
    /// resize, clamp, min-max; and its peak is that map's first maximum. Full and cropped
    /// (letterboxed) source regions, down- and upsampled, both normalisations.
    #[test]
    fn source_map_rows_equal_the_whole_map() {
        // Some values outside [0, 1], so the clamp has work (and the peak is a plateau);
        // and a constant map.
        let varied: Vec<f32> = (0..7 * 7)
            .map(|i| 1.4 * ((i * 37 % 49) as f32 / 48.0).powi(2) - 0.2)
            .collect();
        for map in [varied, vec![0.3; 49]] {
            source_map_equals_whole(&map);
        }
    }

    fn source_map_equals_whole(map: &[f32]) {
        let whole = |rect: [usize; 4], out: [usize; 2], renormalise: bool| {
            let full = rect == [0, 0, 224, 224];
            let mut m = if full {
                resize_linear(map, &[7, 7], &out)
            } else {
                let at = resize_linear(map, &[7, 7], &[224, 224]);
                let [x0, y0, w, h] = rect;
                let crop: Vec<f32> = (y0..y0 + h)
                    .flat_map(|y| at[y * 224 + x0..y * 224 + x0 + w].to_vec())
                    .collect();
                resize_linear(&crop, &[h, w], &out)
            };
            m.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
            if renormalise {
                minmax_in_place(&mut m);
            }
            m
        };
        for rect in [[0, 0, 224, 224], [0, 28, 224, 168], [10, 0, 200, 224]] {
            for out in [[720, 1280], [33, 17], [224, 224], [7, 7]] {
                for renormalise in [true, false] {
                    let want = whole(rect, out, renormalise);
                    let got = upsample_to_source(map, &[7, 7], [224, 224], rect, out, renormalise);
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{rect:?} {out:?} {renormalise}"
                    );
                    let s = SourceMap::new(map, &[7, 7], [224, 224], rect, out, renormalise);
                    let at = super::super::argmax(&want);
                    assert_eq!(s.peak(), (at % out[1], at / out[1]), "{rect:?} {out:?}");
                }
            }
        }
    }

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
