//! A clip's frames side by side, each with its slice of a spatio-temporal heatmap: where
//! *and when* a video model looked, at a glance.

use camstream_core::preprocess::{denormalise, InputSpec};
use image::RgbImage;

use super::colormap::Colormap;
use super::overlay::overlay;

/// `clip` is one normalised (C, T, H, W) sample and `map` its final (T, H, W) map in
/// [0, 1]. At most `max_frames` frames are drawn, evenly spaced and the first and last
/// included; each is the model input denormalised, blended with the map like the video
/// overlay (no per-frame renormalisation, so frames compare).
pub fn clip_strip(
    clip: &[f32],
    [c, t, h, w]: [usize; 4],
    map: &[f32],
    spec: &InputSpec,
    cmap: &Colormap,
    alpha: f32,
    max_frames: usize,
) -> RgbImage {
    assert_eq!(clip.len(), c * t * h * w, "clip_strip: clip size");
    assert_eq!(map.len(), t * h * w, "clip_strip: map size");
    let n = t.min(max_frames.max(1));
    let frames: Vec<usize> = if n == t {
        (0..t).collect()
    } else if n == 1 {
        vec![0]
    } else {
        (0..n)
            .map(|i| (i * (t - 1) + (n - 1) / 2) / (n - 1))
            .collect()
    };
    let plane = h * w;
    let mut strip = RgbImage::new((n * w) as u32, h as u32);
    let mut chw = vec![0f32; c * plane];
    for (slot, &k) in frames.iter().enumerate() {
        for ch in 0..c {
            let at = (ch * t + k) * plane;
            chw[ch * plane..(ch + 1) * plane].copy_from_slice(&clip[at..at + plane]);
        }
        let mut frame = denormalise(&chw, h, w, spec);
        overlay(&mut frame, &map[k * plane..(k + 1) * plane], cmap, alpha);
        image::imageops::replace(&mut strip, &frame, (slot * w) as i64, 0);
    }
    strip
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::JET;
    use camstream_core::preprocess::InputKind;

    #[test]
    fn frames_sit_side_by_side_with_their_own_slice_of_the_map() {
        let spec = InputSpec {
            kind: InputKind::Clip,
            channels: 1,
            size: vec![3, 2, 2],
            mean: vec![0.0],
            std: vec![1.0],
            scale: 1.0,
            resize: camstream_core::preprocess::Resize::Stretch,
            sample_rate: None,
            frontend: None,
        };
        // A grey clip; the map is hot only in frame 2, top-left pixel.
        let clip = vec![0.5f32; 12];
        let mut map = vec![0f32; 12];
        map[8] = 1.0;
        let s = clip_strip(&clip, [1, 3, 2, 2], &map, &spec, &JET, 0.5, 16);
        assert_eq!((s.width(), s.height()), (6, 2));
        let cold = s.get_pixel(0, 0);
        let hot = s.get_pixel(4, 0);
        assert_eq!(s.get_pixel(2, 0), cold, "frames 0 and 1 have the same map");
        assert_ne!(hot, cold);
        assert_eq!(s.get_pixel(5, 1), cold, "only the hot pixel changes");
        // Two of three frames: the first and the last.
        let two = clip_strip(&clip, [1, 3, 2, 2], &map, &spec, &JET, 0.5, 2);
        assert_eq!(two.width(), 4);
        assert_eq!(two.get_pixel(2, 0), hot);
    }
}
