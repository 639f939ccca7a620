use super::colormap::Colormap;

/// `show_cam_on_image(img/255, mask, use_rgb=True, image_weight=1-alpha)` as
/// pytorch-grad-cam computes it: colour `uint8(255*mask)`, blend, divide by the blend's
/// maximum, truncate to uint8. `rgb` is HxWx3, `mask` HxW in [0, 1].
pub fn overlay_like_show_cam_on_image(
    rgb: &[u8],
    mask: &[f32],
    cmap: &Colormap,
    alpha: f32,
) -> Vec<u8> {
    assert_eq!(
        rgb.len(),
        mask.len() * 3,
        "overlay: image and mask sizes differ"
    );
    // All float32, as numpy computes it for float32 inputs.
    let mut blend = vec![0f32; rgb.len()];
    let mut max = 0f32;
    for (i, &m) in mask.iter().enumerate() {
        let c = cmap.rgb_f(m);
        for k in 0..3 {
            let v = alpha * (c[k] as f32 / 255.0) + (1.0 - alpha) * (rgb[3 * i + k] as f32 / 255.0);
            blend[3 * i + k] = v;
            max = max.max(v);
        }
    }
    let max = if max > 0.0 { max } else { 1.0 };
    // np.uint8 truncates.
    blend.iter().map(|v| (255.0 * (v / max)) as u8).collect()
}

/// The overlay for people (video frames, large photos): the same blend without the
/// whole-image renormalisation, which would brighten each frame differently.
pub fn overlay(rgb: &mut [u8], mask: &[f32], cmap: &Colormap, alpha: f32) {
    assert_eq!(
        rgb.len(),
        mask.len() * 3,
        "overlay: image and mask sizes differ"
    );
    // Fixed point in 1/256 (within one level of the float blend): a 720p frame is a
    // million pixels per frame, and this runs on every frame.
    let w = (alpha.clamp(0.0, 1.0) * 256.0).round() as u32;
    let tinted: Vec<[u32; 3]> = cmap
        .lut
        .iter()
        .map(|c| {
            [
                w * c[0] as u32 + 128,
                w * c[1] as u32 + 128,
                w * c[2] as u32 + 128,
            ]
        })
        .collect();
    let keep = 256 - w;
    for (px, &m) in rgb.chunks_exact_mut(3).zip(mask) {
        let t = &tinted[(255.0 * m.clamp(0.0, 1.0)) as usize];
        for k in 0..3 {
            px[k] = ((t[k] + keep * px[k] as u32) >> 8) as u8;
        }
    }
}
