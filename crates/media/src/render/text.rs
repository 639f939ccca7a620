//! Labels on frames, rasterised with ab_glyph from an embedded DejaVu Sans (Bitstream
//! Vera licence, shipped by the `dejavu` crate), so no system font is needed.

use std::sync::LazyLock;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use image::RgbImage;

use super::overlay::Yuv420Planes;

static FONT: LazyLock<Option<FontRef<'static>>> =
    LazyLock::new(|| FontRef::try_from_slice(dejavu::sans::regular()).ok());

/// A label's dark box at the top-left corner and its text's coverage inside it.
struct Label {
    width: usize,
    height: usize,
    /// Text coverage in [0, 1], `width` x `height`.
    coverage: Vec<f32>,
}

/// How much the box keeps of what is under it.
const SHADE: f32 = 0.35;

/// Lays `text` out on one line, sized to a `width` x `height` frame.
fn layout(width: u32, height: u32, text: &str) -> Option<Label> {
    let font = FONT.as_ref()?;
    let px = (height as f32 / 18.0).clamp(11.0, 48.0);
    let scaled = font.as_scaled(PxScale::from(px));
    let margin = (px * 0.3).ceil();
    let mut x = margin;
    let baseline = margin + scaled.ascent();
    let mut glyphs = Vec::new();
    let mut prev = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = prev {
            x += scaled.kern(p, id);
        }
        glyphs.push(id.with_scale_and_position(PxScale::from(px), point(x, baseline)));
        x += scaled.h_advance(id);
        prev = Some(id);
    }
    let box_w = ((x + margin) as u32).min(width) as usize;
    let box_h = ((baseline - scaled.descent() + margin) as u32).min(height) as usize;
    if box_w == 0 || box_h == 0 {
        return None;
    }
    let mut coverage = vec![0f32; box_w * box_h];
    for g in glyphs {
        let Some(outline) = font.outline_glyph(g) else {
            continue;
        };
        let b = outline.px_bounds();
        outline.draw(|gx, gy, cov| {
            let (x, y) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
            if (0..box_w as i64).contains(&x) && (0..box_h as i64).contains(&y) {
                coverage[y as usize * box_w + x as usize] = cov;
            }
        });
    }
    Some(Label {
        width: box_w,
        height: box_h,
        coverage,
    })
}

/// Draws `text` at the top-left corner in white on a dark box, sized to the frame.
pub fn draw_label(img: &mut RgbImage, text: &str) {
    let Some(l) = layout(img.width(), img.height(), text) else {
        return;
    };
    for y in 0..l.height {
        for x in 0..l.width {
            let cov = l.coverage[y * l.width + x];
            for c in img.get_pixel_mut(x as u32, y as u32).0.iter_mut() {
                let shaded = (*c as f32 * SHADE) as u8;
                *c = (shaded as f32 * (1.0 - cov) + 255.0 * cov) as u8;
            }
        }
    }
}

/// [`draw_label`] on 4:2:0 planes: the same shade and white in BT.601 limited range
/// (black 16, white 235, no colour 128); chroma follows each block's top-left pixel.
pub fn draw_label_yuv(p: Yuv420Planes, text: &str) {
    let Some(l) = layout(p.width as u32, p.height as u32, text) else {
        return;
    };
    let paint = |v: u8, zero: f32, white: f32, cov: f32| {
        let shaded = zero + (v as f32 - zero) * SHADE;
        (shaded * (1.0 - cov) + white * cov).round() as u8
    };
    let luma = p.y.data.chunks_mut(p.y.stride);
    for (row, cov) in luma.zip(l.coverage.chunks_exact(l.width)) {
        for (px, &c) in row.iter_mut().zip(cov) {
            *px = paint(*px, 16.0, 235.0, c);
        }
    }
    for cy in 0..l.height.div_ceil(2) {
        let (u, v) = (
            &mut p.u.data[cy * p.u.stride..],
            &mut p.v.data[cy * p.v.stride..],
        );
        for cx in 0..l.width.div_ceil(2) {
            let cov = l.coverage[2 * cy * l.width + 2 * cx];
            u[cx] = paint(u[cx], 128.0, 128.0, cov);
            v[cx] = paint(v[cx], 128.0, 128.0, cov);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_draws_white_text_on_a_dark_box() {
        let mut img = RgbImage::from_pixel(200, 100, image::Rgb([100, 100, 100]));
        draw_label(&mut img, "square 0.97");
        let white = img
            .pixels()
            .filter(|p| p.0.iter().all(|&c| c > 200))
            .count();
        let dark = img.pixels().filter(|p| p.0 == [35, 35, 35]).count();
        assert!(white > 10 && dark > 100, "white {white}, dark {dark}");
        // Far corner untouched.
        assert_eq!(img.get_pixel(199, 99).0, [100, 100, 100]);
    }

    #[test]
    fn yuv_label_is_the_same_box_and_text() {
        let (w, h) = (200, 100);
        let (mut y, mut u, mut v) = (
            vec![100u8; w * h],
            vec![90u8; w * h / 4],
            vec![160u8; w * h / 4],
        );
        let planes = Yuv420Planes::packed(w, h, &mut y, &mut u, &mut v);
        draw_label_yuv(planes, "square 0.97");
        let l = layout(w as u32, h as u32, "square 0.97").unwrap();
        // Shaded luma: 16 + 0.35 * (100 - 16) = 45.4; white text is near 235.
        let white = y.iter().filter(|&&c| c > 200).count();
        let dark = y.iter().filter(|&&c| c == 45).count();
        assert!(white > 10 && dark > 100, "white {white}, dark {dark}");
        // Chroma in the box moves towards grey: 128 + 0.35 * (90 - 128) = 114.7.
        assert_eq!(u[0], 115);
        assert_eq!(v[0], 139);
        // Outside the box nothing changes.
        assert_eq!(y[h * w - 1], 100);
        assert_eq!(y[l.width + 1], 100);
        assert_eq!((u[w * h / 4 - 1], v[w * h / 4 - 1]), (90, 160));
    }
}
