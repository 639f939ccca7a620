//! Labels on frames, rasterised with ab_glyph from an embedded DejaVu Sans (Bitstream
//! Vera licence, shipped by the `dejavu` crate), so no system font is needed.

use std::sync::LazyLock;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use image::RgbImage;

static FONT: LazyLock<Option<FontRef<'static>>> =
    LazyLock::new(|| FontRef::try_from_slice(dejavu::sans::regular()).ok());

/// Draws `text` at the top-left corner on a dark box, sized to the frame.
pub fn draw_label(img: &mut RgbImage, text: &str) {
    let Some(font) = FONT.as_ref() else {
        return;
    };
    let px = (img.height() as f32 / 18.0).clamp(11.0, 48.0);
    let scaled = font.as_scaled(PxScale::from(px));
    let margin = (px * 0.3).ceil();
    // Lay out the glyphs on one line.
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
    let box_w = ((x + margin) as u32).min(img.width());
    let box_h = ((baseline - scaled.descent() + margin) as u32).min(img.height());
    for y in 0..box_h {
        for xx in 0..box_w {
            let p = img.get_pixel_mut(xx, y);
            for c in p.0.iter_mut() {
                *c = (*c as f32 * 0.35) as u8;
            }
        }
    }
    for g in glyphs {
        if let Some(outline) = font.outline_glyph(g) {
            let b = outline.px_bounds();
            outline.draw(|gx, gy, cov| {
                let (px_, py_) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
                if px_ < 0 || py_ < 0 || px_ >= img.width() as i64 || py_ >= img.height() as i64 {
                    return;
                }
                let p = img.get_pixel_mut(px_ as u32, py_ as u32);
                for c in p.0.iter_mut() {
                    *c = (*c as f32 * (1.0 - cov) + 255.0 * cov) as u8;
                }
            });
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
}
