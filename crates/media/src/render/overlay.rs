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
    let blend = Blend::new(cmap.lut.iter().copied(), alpha);
    for (px, &m) in rgb.chunks_exact_mut(3).zip(mask) {
        let i = lut_index(m);
        for (k, c) in px.iter_mut().enumerate() {
            *c = blend.mix(k, i, *c);
        }
    }
}

/// One plane of 8-bit samples, `stride` bytes apart row to row.
pub struct Plane<'a> {
    pub data: &'a mut [u8],
    pub stride: usize,
}

/// An 8-bit 4:2:0 picture (BT.601, limited range, as swscale converts and libx264 takes
/// it): luma `width` x `height`, chroma at half size rounded up.
pub struct Yuv420Planes<'a> {
    pub width: usize,
    pub height: usize,
    pub y: Plane<'a>,
    pub u: Plane<'a>,
    pub v: Plane<'a>,
}

impl<'a> Yuv420Planes<'a> {
    /// Planes without row padding: luma rows `width` apart, chroma rows half that
    /// (rounded up).
    pub fn packed(
        width: usize,
        height: usize,
        y: &'a mut [u8],
        u: &'a mut [u8],
        v: &'a mut [u8],
    ) -> Self {
        let cw = width.div_ceil(2);
        Self {
            width,
            height,
            y: Plane {
                data: y,
                stride: width,
            },
            u: Plane {
                data: u,
                stride: cw,
            },
            v: Plane {
                data: v,
                stride: cw,
            },
        }
    }
}

/// BT.601 limited-range YUV of an RGB colour, as swscale computes it.
pub(crate) fn bt601_yuv([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (r as f32, g as f32, b as f32);
    let y = 16.0 + 219.0 / 255.0 * (0.299 * r + 0.587 * g + 0.114 * b);
    let u = 128.0 + 224.0 / 255.0 * (-0.168_736 * r - 0.331_264 * g + 0.5 * b);
    let v = 128.0 + 224.0 / 255.0 * (0.5 * r - 0.418_688 * g - 0.081_312 * b);
    [y, u, v].map(|c| c.round().clamp(0.0, 255.0) as u8)
}

/// [`overlay`] drawn straight into a decoded frame's 4:2:0 planes. The YUV transform is
/// affine, so blending in YUV equals blending in RGB and converting (to within rounding),
/// and the video path skips two full-frame colour conversions and blends half the bytes.
/// Chroma takes the mask at each 2x2 block's top-left pixel (the maps are smooth).
pub fn overlay_yuv(p: Yuv420Planes, mask: &[f32], cmap: &Colormap, alpha: f32) {
    let w = p.width;
    assert_eq!(
        mask.len(),
        w * p.height,
        "overlay: image and mask sizes differ"
    );
    overlay_yuv_rows(
        p,
        |y, row| row.copy_from_slice(&mask[y * w..(y + 1) * w]),
        cmap,
        alpha,
    );
}

/// [`overlay_yuv`] with the mask given a row at a time: `mask_row(y, row)` fills row `y`
/// (width values), called once per row, top to bottom. A video frame's mask is then
/// never stored whole (a million floats at 720p).
pub fn overlay_yuv_rows(
    p: Yuv420Planes,
    mut mask_row: impl FnMut(usize, &mut [f32]),
    cmap: &Colormap,
    alpha: f32,
) {
    let (w, h) = (p.width, p.height);
    let blend = Blend::new(cmap.lut.iter().map(|&c| bt601_yuv(c)), alpha);
    // One row of table indices at a time, then one table lookup per sample; chroma
    // takes the even rows' even indices.
    let mut m = vec![0f32; w];
    let mut index = vec![0u8; w];
    let mut half = vec![0u8; w.div_ceil(2)];
    let mut chroma =
        p.u.data
            .chunks_mut(p.u.stride)
            .zip(p.v.data.chunks_mut(p.v.stride));
    for (row, luma) in p.y.data.chunks_mut(p.y.stride).take(h).enumerate() {
        mask_row(row, &mut m);
        index_row(&m, &mut index);
        blend.mix_row(0, &index, &mut luma[..w]);
        if row % 2 == 0 {
            let Some((u, v)) = chroma.next() else { break };
            half.iter_mut()
                .zip(index.iter().step_by(2))
                .for_each(|(h, &i)| *h = i);
            blend.mix_row(1, &half, u);
            blend.mix_row(2, &half, v);
        }
    }
}

/// The colormap's table index of a map value.
#[inline]
fn lut_index(m: f32) -> u8 {
    (255.0 * m.clamp(0.0, 1.0)) as u8
}

/// [`lut_index`] of each value, for as many as both slices hold. The baseline build
/// turns the saturating float-to-byte cast into one scalar conversion per value, which
/// was the larger half of a 720p overlay; with AVX2 it is eight at a time.
fn index_row(m: &[f32], index: &mut [u8]) {
    let n = m.len().min(index.len());
    let (m, index) = (&m[..n], &mut index[..n]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2; the kernel stays within the two slices.
        done = unsafe { index_row_avx2(m, index) };
    }
    for (i, &m) in index[done..].iter_mut().zip(&m[done..]) {
        *i = lut_index(m);
    }
}

/// [`index_row`] on the first multiple of 8 values; returns how many it did. `max_ps`
/// returns its second operand for NaN, so NaN maps to 0 as the cast does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn index_row_avx2(m: &[f32], index: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let n = m.len().min(index.len()) / 8 * 8;
    let (zero, one, scale) = (
        _mm256_setzero_ps(),
        _mm256_set1_ps(1.0),
        _mm256_set1_ps(255.0),
    );
    for k in (0..n).step_by(8) {
        let v = _mm256_min_ps(_mm256_max_ps(_mm256_loadu_ps(m.as_ptr().add(k)), zero), one);
        let i = _mm256_cvttps_epi32(_mm256_mul_ps(scale, v));
        _mm_storel_epi64(index.as_mut_ptr().add(k).cast(), low_bytes(i));
    }
    n
}

/// The low byte of each 32-bit lane, in order, in the first 8 bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn low_bytes(v: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    // Each 128-bit half gathers its lanes' bytes at its front; then the two halves'
    // first 4 bytes go side by side.
    #[rustfmt::skip]
    let front = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    );
    let halves = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
    _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
        _mm256_shuffle_epi8(v, front),
        halves,
    ))
}

/// The colormap pre-multiplied by the heatmap weight, per channel, in fixed point (1/256,
/// within one level of the float blend): a 720p frame is a million pixels, and this runs
/// on each.
struct Blend {
    tinted: [[u32; 256]; 3],
    keep: u32,
}

impl Blend {
    fn new(colours: impl Iterator<Item = [u8; 3]>, alpha: f32) -> Self {
        let w = (alpha.clamp(0.0, 1.0) * 256.0).round() as u32;
        let mut tinted = [[0u32; 256]; 3];
        for (i, c) in colours.take(256).enumerate() {
            for k in 0..3 {
                tinted[k][i] = w * c[k] as u32 + 128;
            }
        }
        Self {
            tinted,
            keep: 256 - w,
        }
    }

    #[inline]
    fn mix(&self, channel: usize, index: u8, px: u8) -> u8 {
        ((self.tinted[channel][index as usize] + self.keep * px as u32) >> 8) as u8
    }

    /// [`Blend::mix`] along a row: `px[i]` with the colour of `index[i]`, for as many
    /// samples as both hold. Eight at a time with AVX2's gather where the CPU has it (a
    /// 720p frame is 1.4 million lookups), the same integer sums either way.
    fn mix_row(&self, channel: usize, index: &[u8], px: &mut [u8]) {
        let n = index.len().min(px.len());
        let (index, px) = (&index[..n], &mut px[..n]);
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2; the kernel stays within the two slices.
            done = unsafe { mix_row_avx2(&self.tinted[channel], self.keep, index, px) };
        }
        for (p, &i) in px[done..].iter_mut().zip(&index[done..]) {
            *p = self.mix(channel, i, *p);
        }
    }
}

/// [`Blend::mix_row`] on the first multiple of 8 samples; returns how many it did. The
/// sums stay below 2^16 (256 * 255 + 128), so 32-bit lanes hold them exactly.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn mix_row_avx2(tinted: &[u32; 256], keep: u32, index: &[u8], px: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let n = index.len().min(px.len()) / 8 * 8;
    let keep = _mm256_set1_epi32(keep as i32);
    for k in (0..n).step_by(8) {
        let i = _mm256_cvtepu8_epi32(_mm_loadl_epi64(index.as_ptr().add(k).cast()));
        let t = _mm256_i32gather_epi32::<4>(tinted.as_ptr().cast(), i);
        let p = _mm256_cvtepu8_epi32(_mm_loadl_epi64(px.as_ptr().add(k).cast()));
        let v = _mm256_srli_epi32::<8>(_mm256_add_epi32(t, _mm256_mullo_epi32(p, keep)));
        _mm_storel_epi64(px.as_mut_ptr().add(k).cast(), low_bytes(v));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::JET;

    /// The vectorised indices are the cast's, NaN, infinities and out-of-range values
    /// included, at every length.
    #[test]
    fn row_indices_equal_scalar_indices() {
        let special = [
            f32::NAN,
            -1.0,
            -0.0,
            0.0,
            1.0,
            1.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        for n in [0, 3, 8, 13, 64, 1283] {
            let m: Vec<f32> = (0..n)
                .map(|i| match i % 11 {
                    0 => special[(i / 11) % special.len()],
                    _ => (i as f32 * 0.618_034).fract() * 1.2 - 0.1,
                })
                .collect();
            let mut got = vec![7u8; n];
            index_row(&m, &mut got);
            let want: Vec<u8> = m.iter().map(|&v| lut_index(v)).collect();
            assert_eq!(got, want, "{n} values");
        }
    }

    /// The vectorised row blend gives the scalar blend's bytes, at every length and
    /// offset (the tail past the last 8 samples included).
    #[test]
    fn row_blend_equals_scalar_blend() {
        let blend = Blend::new(JET.lut.iter().map(|&c| bt601_yuv(c)), 0.4);
        for n in [0, 1, 7, 8, 9, 16, 31, 1280] {
            let index: Vec<u8> = (0..n).map(|i| (i * 73 % 256) as u8).collect();
            let px: Vec<u8> = (0..n).map(|i| (i * 151 % 253) as u8).collect();
            for channel in 0..3 {
                let mut got = px.clone();
                blend.mix_row(channel, &index, &mut got);
                let want: Vec<u8> = (0..n)
                    .map(|i| blend.mix(channel, index[i], px[i]))
                    .collect();
                assert_eq!(got, want, "{n} samples, channel {channel}");
                // A shorter index leaves the rest of the row alone.
                let mut part = px.clone();
                blend.mix_row(channel, &index[..n / 2], &mut part);
                assert_eq!(part[n / 2..], px[n / 2..]);
                assert_eq!(part[..n / 2], want[..n / 2]);
            }
        }
    }

    /// The YUV blend against the RGB blend converted with the same BT.601 transform:
    /// within two levels (each path rounds once more than the float maths).
    #[test]
    fn yuv_blend_equals_rgb_blend_converted() {
        let (w, h) = (6, 4);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        // Constant over each 2x2 block, so chroma sees what luma sees.
        let mask: Vec<f32> = (0..w * h)
            .map(|i| ((i % w) / 2 + 3 * ((i / w) / 2)) as f32 / 5.0)
            .collect();
        let mut blended = rgb.clone();
        overlay(&mut blended, &mask, &JET, 0.4);

        // The frame in 4:2:0, with chroma from each block's top-left pixel.
        let px = |buf: &[u8], x: usize, y: usize| {
            let i = 3 * (y * w + x);
            bt601_yuv([buf[i], buf[i + 1], buf[i + 2]])
        };
        let mut y: Vec<u8> = (0..w * h).map(|i| px(&rgb, i % w, i / w)[0]).collect();
        let chroma = |k: usize| -> Vec<u8> {
            (0..w * h / 4)
                .map(|i| px(&rgb, 2 * (i % (w / 2)), 2 * (i / (w / 2)))[k])
                .collect()
        };
        let (mut u, mut v) = (chroma(1), chroma(2));
        let planes = Yuv420Planes::packed(w, h, &mut y, &mut u, &mut v);
        overlay_yuv(planes, &mask, &JET, 0.4);
        for yy in 0..h {
            for x in 0..w {
                let want = px(&blended, x, yy);
                assert!(y[yy * w + x].abs_diff(want[0]) <= 2, "Y at ({x}, {yy})");
                if x % 2 == 0 && yy % 2 == 0 {
                    let c = (yy / 2) * (w / 2) + x / 2;
                    assert!(u[c].abs_diff(want[1]) <= 2, "U at ({x}, {yy})");
                    assert!(v[c].abs_diff(want[2]) <= 2, "V at ({x}, {yy})");
                }
            }
        }
        // The heat shows: the blend moved the frame.
        assert_ne!(
            y,
            (0..w * h)
                .map(|i| px(&rgb, i % w, i / w)[0])
                .collect::<Vec<_>>()
        );
    }
}
