//! Backgrounds for the shapes task. A model trained on one texture learns that texture:
//! the first sample model's Grad-CAM lit up the background as soon as the noise changed.
//! `Mix` randomises them for training, and one generator (`HeldOut`) is kept out of every
//! training to measure how well a model localises on backgrounds it never saw.

use std::sync::OnceLock;

use image::imageops::{self, FilterType};
use image::RgbImage;
use rand::Rng as _;

use super::shapes::Canvas;
use super::Rng;

/// Which family a shapes picture's background comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backgrounds {
    /// Soft gratings under faint noise: what the first sample model was trained on.
    Textured,
    /// The randomised mix the sample model is trained on: the gratings texture, colour or
    /// grey noise at every scale from one pixel to half the picture, linear and radial
    /// gradients, stripes, and crops of the photos in `samples/photos`; pixel noise of any
    /// strength on top, and one picture in five blurred ([`Backgrounds::finish`]).
    Mix,
    /// Never used in training: a rotated mosaic of random-colour tiles under strong
    /// per-pixel colour noise.
    HeldOut,
    /// Strong per-pixel colour noise alone, the background the first sample model failed on.
    Noise,
}

impl Backgrounds {
    pub const NAMES: [&'static str; 4] = ["textured", "mix", "held-out", "noise"];

    const ALL: [Self; 4] = [Self::Textured, Self::Mix, Self::HeldOut, Self::Noise];

    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Textured => "textured",
            Self::Mix => "mix",
            Self::HeldOut => "held-out",
            Self::Noise => "noise",
        }
    }

    /// A `w` x `h` background of this family.
    pub fn canvas(self, rng: &mut Rng, w: u32, h: u32) -> Canvas {
        match self {
            Self::Textured => Canvas::textured(rng, w, h),
            Self::Mix => {
                let mut c = match rng.random_range(0..5) {
                    0 => Canvas::textured(rng, w, h),
                    1 => value_noise(rng, w, h),
                    2 => gradient(rng, w, h),
                    3 => stripes(rng, w, h),
                    _ => photo_crop(rng, w, h),
                };
                // Pixel noise on every background, from the sample pictures' faint grain
                // to strong: the shapes are drawn flat, so the model learns the object
                // rather than which backgrounds are smooth.
                let amp = rng.random_range(0.03..0.3);
                add_noise(rng, &mut c, amp);
                c
            }
            Self::HeldOut => {
                let mut c = mosaic(rng, w, h);
                add_noise(rng, &mut c, 0.25);
                c
            }
            Self::Noise => {
                let base = colour(rng);
                let mut c = flat(w, h, base);
                add_noise(rng, &mut c, 0.4);
                c
            }
        }
    }

    /// What happens to the whole picture once the shape is drawn: for `Mix`, a blur
    /// (down- and up-sampling) one time in five. A model that only saw sharp shapes on
    /// noisy backgrounds learned "the smooth patch" and lost accuracy on resized pictures.
    pub fn finish(self, rng: &mut Rng, c: &mut Canvas) {
        if self != Self::Mix || !rng.random_bool(0.2) {
            return;
        }
        let f = rng.random_range(0.5..0.9);
        let small = imageops::resize(
            &c.to_image(),
            ((c.w as f32 * f) as u32).max(1),
            ((c.h as f32 * f) as u32).max(1),
            FilterType::Triangle,
        );
        *c = from_image(&imageops::resize(&small, c.w, c.h, FilterType::Triangle));
    }
}

fn from_image(img: &RgbImage) -> Canvas {
    Canvas {
        w: img.width(),
        h: img.height(),
        px: img
            .pixels()
            .map(|p| p.0.map(|v| f32::from(v) / 255.0))
            .collect(),
    }
}

fn colour(rng: &mut Rng) -> [f32; 3] {
    std::array::from_fn(|_| rng.random_range(0.0..1.0))
}

fn flat(w: u32, h: u32, c: [f32; 3]) -> Canvas {
    Canvas {
        w,
        h,
        px: vec![c; (w * h) as usize],
    }
}

/// Fills a canvas from `f(x, y)`, clamped to [0, 1].
fn from_fn(w: u32, h: u32, mut f: impl FnMut(f32, f32) -> [f32; 3]) -> Canvas {
    let mut px = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            px.push(f(x as f32, y as f32).map(|v| v.clamp(0.0, 1.0)));
        }
    }
    Canvas { w, h, px }
}

/// Uniform per-pixel, per-channel noise of amplitude `amp`.
fn add_noise(rng: &mut Rng, c: &mut Canvas, amp: f32) {
    if amp <= 0.0 {
        return;
    }
    for p in &mut c.px {
        for v in p.iter_mut() {
            *v = (*v + rng.random_range(-amp..amp)).clamp(0.0, 1.0);
        }
    }
}

/// Random values on a grid of `cell`-pixel cells, bilinearly interpolated: every
/// frequency from per-pixel noise (cell 1) to broad blotches; in colour or grey.
fn value_noise(rng: &mut Rng, w: u32, h: u32) -> Canvas {
    const CELLS: [f32; 10] = [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0];
    let cell = CELLS[rng.random_range(0..CELLS.len())] * w.max(h) as f32 / 64.0;
    let base = colour(rng);
    let amp = rng.random_range(0.1..0.45);
    let grey = rng.random_bool(0.3);
    let (gw, gh) = (
        (w as f32 / cell) as usize + 2,
        (h as f32 / cell) as usize + 2,
    );
    let grid: Vec<[f32; 3]> = (0..gw * gh)
        .map(|_| {
            let g = rng.random_range(-1.0..1.0f32);
            std::array::from_fn(|_| if grey { g } else { rng.random_range(-1.0..1.0) })
        })
        .collect();
    from_fn(w, h, |x, y| {
        let (u, v) = (x / cell, y / cell);
        let (i, j) = (u as usize, v as usize);
        let (fu, fv) = (u.fract(), v.fract());
        let at = |i: usize, j: usize| grid[j.min(gh - 1) * gw + i.min(gw - 1)];
        let (a, b, c, d) = (at(i, j), at(i + 1, j), at(i, j + 1), at(i + 1, j + 1));
        std::array::from_fn(|k| {
            let top = a[k] + (b[k] - a[k]) * fu;
            let bottom = c[k] + (d[k] - c[k]) * fu;
            base[k] + amp * (top + (bottom - top) * fv)
        })
    })
}

/// A linear or radial blend between two random colours.
fn gradient(rng: &mut Rng, w: u32, h: u32) -> Canvas {
    let (c0, c1) = (colour(rng), colour(rng));
    let scale = 1.0 / w.max(h) as f32;
    if rng.random_bool(0.5) {
        let dir = rng.random_range(0.0..std::f32::consts::TAU);
        let (dx, dy) = (dir.cos(), dir.sin());
        from_fn(w, h, |x, y| {
            let t = ((x * dx + y * dy) * scale * 0.7 + 0.5).clamp(0.0, 1.0);
            std::array::from_fn(|k| c0[k] + (c1[k] - c0[k]) * t)
        })
    } else {
        let (cx, cy) = (
            rng.random_range(0.0..w as f32),
            rng.random_range(0.0..h as f32),
        );
        let radius = rng.random_range(0.3..1.2) * w.max(h) as f32;
        from_fn(w, h, |x, y| {
            let t = (((x - cx).powi(2) + (y - cy).powi(2)).sqrt() / radius).min(1.0);
            std::array::from_fn(|k| c0[k] + (c1[k] - c0[k]) * t)
        })
    }
}

/// Parallel stripes of two colours at any angle and period, hard-edged or sinusoidal.
fn stripes(rng: &mut Rng, w: u32, h: u32) -> Canvas {
    let (c0, c1) = (colour(rng), colour(rng));
    let angle = rng.random_range(0.0..std::f32::consts::PI);
    let period = rng.random_range(3.0..24.0) * w.max(h) as f32 / 64.0;
    let duty = rng.random_range(0.3..0.7);
    let phase = rng.random_range(0.0..1.0);
    let hard = rng.random_bool(0.5);
    let (dx, dy) = (angle.cos(), angle.sin());
    from_fn(w, h, |x, y| {
        let p = ((x * dx + y * dy) / period + phase).rem_euclid(1.0);
        let t = if hard {
            f32::from(p < duty)
        } else {
            0.5 + 0.5 * (p * std::f32::consts::TAU).sin()
        };
        std::array::from_fn(|k| c0[k] + (c1[k] - c0[k]) * t)
    })
}

/// The shipped photos, decoded once; built into the binary so training needs no files.
fn photos() -> &'static [RgbImage] {
    static PHOTOS: OnceLock<Vec<RgbImage>> = OnceLock::new();
    PHOTOS.get_or_init(|| {
        let files: [&[u8]; 4] = [
            include_bytes!("../../../../samples/photos/astronaut.png"),
            include_bytes!("../../../../samples/photos/chelsea.png"),
            include_bytes!("../../../../samples/photos/coffee.png"),
            include_bytes!("../../../../samples/photos/rocket.jpg"),
        ];
        files
            .iter()
            .filter_map(|b| image::load_from_memory(b).ok().map(|i| i.to_rgb8()))
            .collect()
    })
}

/// A random square-ish crop of one of the photos, scaled to `w` x `h`, maybe mirrored.
fn photo_crop(rng: &mut Rng, w: u32, h: u32) -> Canvas {
    let all = photos();
    if all.is_empty() {
        return value_noise(rng, w, h);
    }
    let photo = &all[rng.random_range(0..all.len())];
    let side = photo.width().min(photo.height());
    let crop = rng.random_range(side / 8..=side).max(w.max(h).min(side));
    let x = rng.random_range(0..=photo.width() - crop);
    let y = rng.random_range(0..=photo.height() - crop);
    let mut img = imageops::resize(
        &*imageops::crop_imm(photo, x, y, crop, crop),
        w,
        h,
        FilterType::Triangle,
    );
    if rng.random_bool(0.5) {
        imageops::flip_horizontal_in_place(&mut img);
    }
    from_image(&img)
}

/// Tiles of random colours on a grid rotated by a random angle.
fn mosaic(rng: &mut Rng, w: u32, h: u32) -> Canvas {
    let tile = rng.random_range(4.0..16.0) * w.max(h) as f32 / 64.0;
    let angle = rng.random_range(0.0..std::f32::consts::FRAC_PI_2);
    let (ca, sa) = (angle.cos(), angle.sin());
    let n = (2.0 * w.max(h) as f32 / tile) as usize + 3;
    let colours: Vec<[f32; 3]> = (0..n * n).map(|_| colour(rng)).collect();
    let (mx, my) = (w as f32 / 2.0, h as f32 / 2.0);
    from_fn(w, h, |x, y| {
        let (u, v) = (x - mx, y - my);
        let (ru, rv) = (u * ca + v * sa, -u * sa + v * ca);
        let i = ((ru / tile).floor() as i64 + n as i64 / 2).clamp(0, n as i64 - 1) as usize;
        let j = ((rv / tile).floor() as i64 + n as i64 / 2).clamp(0, n as i64 - 1) as usize;
        colours[j * n + i]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_fills_the_canvas_in_range_and_repeats_by_seed() {
        assert_eq!(Backgrounds::NAMES.len(), Backgrounds::ALL.len());
        for name in Backgrounds::NAMES {
            let b = Backgrounds::by_name(name).unwrap();
            assert_eq!(b.name(), name);
            for seed in 0..20 {
                let c = b.canvas(&mut crate::synth::rng(seed), 64, 48);
                assert_eq!(c.px.len(), 64 * 48);
                assert!(c.px.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
                let again = b.canvas(&mut crate::synth::rng(seed), 64, 48);
                assert_eq!(c.px, again.px, "{name} seed {seed}");
            }
        }
    }

    #[test]
    fn only_the_mix_blurs_a_fifth_of_its_pictures() {
        let blurred = |b: Backgrounds| {
            (0..200)
                .filter(|&seed| {
                    let mut rng = crate::synth::rng(seed);
                    let mut c = b.canvas(&mut rng, 64, 48);
                    let before = c.px.clone();
                    b.finish(&mut rng, &mut c);
                    assert_eq!((c.w, c.h, c.px.len()), (64, 48, 64 * 48));
                    c.px != before
                })
                .count()
        };
        assert_eq!(blurred(Backgrounds::Textured), 0);
        assert_eq!(blurred(Backgrounds::HeldOut), 0);
        assert!((20..60).contains(&blurred(Backgrounds::Mix)));
    }

    #[test]
    fn the_photos_are_built_in() {
        assert_eq!(photos().len(), 4);
        let c = photo_crop(&mut crate::synth::rng(3), 64, 64);
        // A photo crop has structure: far from flat.
        let m = c.mean();
        let var: f32 =
            c.px.iter()
                .map(|p| (0..3).map(|k| (p[k] - m[k]).powi(2)).sum::<f32>())
                .sum::<f32>()
                / c.px.len() as f32;
        assert!(var > 1e-3, "{var}");
    }
}
