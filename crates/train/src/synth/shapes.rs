//! Shapes: one circle, square or triangle on a background from `backgrounds`; the ground
//! truth is the object's bounding box.

use image::{Rgb, RgbImage};
use rand::Rng as _;
use rand_distr::{Distribution, Normal};

pub use super::backgrounds::Backgrounds;
use super::Rng;

pub const LABELS: [&str; 3] = ["circle", "square", "triangle"];
pub const SIZE: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub class: usize,
    pub cx: f32,
    pub cy: f32,
    /// Diameter of the circle, or the size of the square/triangle's enclosing circle.
    pub size: f32,
    pub angle: f32,
    pub colour: [f32; 3],
}

pub struct ShapeSample {
    pub image: RgbImage,
    pub class: usize,
    /// x0, y0, x1, y1 with x1/y1 exclusive.
    pub bbox: [u32; 4],
}

/// A float RGB canvas, row-major, values in [0, 1].
pub struct Canvas {
    pub w: u32,
    pub h: u32,
    pub px: Vec<[f32; 3]>,
}

impl Canvas {
    /// Smooth colour gradient, two sinusoidal gratings and pixel noise: a texture a CNN
    /// cannot simply threshold, with no shape-like structure in it.
    pub fn textured(rng: &mut Rng, w: u32, h: u32) -> Self {
        let base: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.25..0.75));
        let grad: [f32; 3] = std::array::from_fn(|_| rng.random_range(-0.2..0.2));
        let dir = rng.random_range(0.0..std::f32::consts::TAU);
        let gratings: Vec<(f32, f32, f32, f32)> = (0..2)
            .map(|_| {
                (
                    rng.random_range(0.0..std::f32::consts::TAU),
                    rng.random_range(0.04..0.25) * 64.0 / w.max(h) as f32 * 2.0,
                    rng.random_range(0.01..0.05),
                    rng.random_range(0.0..std::f32::consts::TAU),
                )
            })
            .collect();
        let noise = Normal::new(0.0f32, rng.random_range(0.02..0.06))
            .unwrap_or(Normal::new(0.0, 0.04).expect("valid"));
        let (dx, dy) = (dir.cos(), dir.sin());
        let scale = 1.0 / w.max(h) as f32;
        let mut px = Vec::with_capacity((w * h) as usize);
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f32, y as f32);
                let t = (fx * dx + fy * dy) * scale - 0.5;
                let mut tex = 0.0;
                for &(a, f, amp, ph) in &gratings {
                    tex += amp * ((fx * a.cos() + fy * a.sin()) * f + ph).sin();
                }
                px.push(std::array::from_fn(|c| {
                    (base[c] + grad[c] * t + tex + noise.sample(rng)).clamp(0.0, 1.0)
                }));
            }
        }
        Self { w, h, px }
    }

    pub fn mean(&self) -> [f32; 3] {
        let n = self.px.len().max(1) as f32;
        let mut m = [0.0; 3];
        for p in &self.px {
            for c in 0..3 {
                m[c] += p[c] / n;
            }
        }
        m
    }

    /// Draws with 4x4 supersampled coverage; returns the box of pixels at least half covered.
    pub fn draw(&mut self, s: &Shape) -> [u32; 4] {
        let r = s.size / 2.0;
        let x0 = ((s.cx - r - 1.0).floor().max(0.0)) as u32;
        let y0 = ((s.cy - r - 1.0).floor().max(0.0)) as u32;
        let x1 = ((s.cx + r + 2.0).ceil() as u32).min(self.w);
        let y1 = ((s.cy + r + 2.0).ceil() as u32).min(self.h);
        let mut bbox = [u32::MAX, u32::MAX, 0, 0];
        for y in y0..y1 {
            for x in x0..x1 {
                let mut hits = 0;
                for sy in 0..4 {
                    for sx in 0..4 {
                        let px = x as f32 + (sx as f32 + 0.5) / 4.0;
                        let py = y as f32 + (sy as f32 + 0.5) / 4.0;
                        if inside(s, px, py) {
                            hits += 1;
                        }
                    }
                }
                if hits == 0 {
                    continue;
                }
                let cov = hits as f32 / 16.0;
                let p = &mut self.px[(y * self.w + x) as usize];
                for (v, c) in p.iter_mut().zip(s.colour) {
                    *v = *v * (1.0 - cov) + c * cov;
                }
                if hits >= 8 {
                    bbox = [
                        bbox[0].min(x),
                        bbox[1].min(y),
                        bbox[2].max(x + 1),
                        bbox[3].max(y + 1),
                    ];
                }
            }
        }
        if bbox[0] == u32::MAX {
            bbox = [0, 0, 0, 0];
        }
        bbox
    }

    pub fn to_image(&self) -> RgbImage {
        let mut img = RgbImage::new(self.w, self.h);
        for (p, q) in img.pixels_mut().zip(&self.px) {
            *p = Rgb(std::array::from_fn(|c| (q[c] * 255.0).round() as u8));
        }
        img
    }
}

/// Point-in-shape test in pixel coordinates.
fn inside(s: &Shape, x: f32, y: f32) -> bool {
    let (dx, dy) = (x - s.cx, y - s.cy);
    let r = s.size / 2.0;
    // Rotate the point into the shape's frame.
    let (c, sn) = (s.angle.cos(), s.angle.sin());
    let (u, v) = (dx * c + dy * sn, -dx * sn + dy * c);
    match s.class {
        0 => dx * dx + dy * dy <= r * r,
        1 => {
            let h = r * std::f32::consts::FRAC_1_SQRT_2;
            u.abs() <= h && v.abs() <= h
        }
        _ => {
            // Equilateral triangle inscribed in the circle of radius r, apex up.
            let k = 3f32.sqrt();
            let bottom = v <= r / 2.0;
            let left = k * u - v <= r;
            let right = -k * u - v <= r;
            bottom && left && right
        }
    }
}

/// A colour far enough from the background that the object is visible.
pub fn contrasting_colour(rng: &mut Rng, bg: [f32; 3]) -> [f32; 3] {
    loop {
        let c: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..1.0));
        let d: f32 = (0..3).map(|k| (c[k] - bg[k]).powi(2)).sum::<f32>().sqrt();
        if d > 0.45 {
            return c;
        }
    }
}

/// A random shape of class `class` fully inside a `w` x `h` canvas.
pub fn random_shape(
    rng: &mut Rng,
    class: usize,
    w: u32,
    h: u32,
    min: f32,
    max: f32,
    bg: [f32; 3],
) -> Shape {
    let size = rng.random_range(min..max);
    let m = size / 2.0 + 1.0;
    // Squares stay near axis-aligned (a rotated square is a diamond, another shape to a
    // person); triangles point anywhere.
    let angle = if class == 1 {
        rng.random_range(-0.35..0.35)
    } else {
        rng.random_range(0.0..std::f32::consts::TAU)
    };
    Shape {
        class,
        cx: rng.random_range(m..(w as f32 - m)),
        cy: rng.random_range(m..(h as f32 - m)),
        size,
        angle,
        colour: contrasting_colour(rng, bg),
    }
}

/// One picture, SIZE x SIZE, class chosen uniformly, on the textured background.
pub fn sample(rng: &mut Rng) -> ShapeSample {
    sample_on(rng, Backgrounds::Textured)
}

/// A SIZE x SIZE picture of the given family's background alone, finished as a picture
/// with a shape would be (the shapes model's training-only "no shape" class).
pub fn background_only(rng: &mut Rng, backgrounds: Backgrounds) -> RgbImage {
    let mut canvas = backgrounds.canvas(rng, SIZE, SIZE);
    backgrounds.finish(rng, &mut canvas);
    canvas.to_image()
}

/// One picture on a background from the given family.
pub fn sample_on(rng: &mut Rng, backgrounds: Backgrounds) -> ShapeSample {
    let class = rng.random_range(0..LABELS.len());
    let mut canvas = backgrounds.canvas(rng, SIZE, SIZE);
    let shape = random_shape(rng, class, SIZE, SIZE, 12.0, 30.0, canvas.mean());
    let bbox = canvas.draw(&shape);
    backgrounds.finish(rng, &mut canvas);
    ShapeSample {
        image: canvas.to_image(),
        class,
        bbox,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_picture_and_box_contains_the_shape() {
        let a = sample(&mut crate::synth::rng(7));
        let b = sample(&mut crate::synth::rng(7));
        assert_eq!(a.image, b.image);
        assert_eq!(a.bbox, b.bbox);
        let [x0, y0, x1, y1] = a.bbox;
        assert!(
            x1 > x0 + 4 && y1 > y0 + 4 && x1 <= SIZE && y1 <= SIZE,
            "{:?}",
            a.bbox
        );
    }

    #[test]
    fn square_box_matches_its_geometry() {
        let mut c = Canvas {
            w: 40,
            h: 40,
            px: vec![[0.0; 3]; 1600],
        };
        let s = Shape {
            class: 1,
            cx: 20.0,
            cy: 20.0,
            size: 20.0 * std::f32::consts::SQRT_2,
            angle: 0.0,
            colour: [1.0; 3],
        };
        // Side 20 centred at 20: pixels 10..30.
        assert_eq!(c.draw(&s), [10, 10, 30, 30]);
        assert_eq!(c.px[20 * 40 + 20], [1.0; 3]);
        assert_eq!(c.px[5 * 40 + 5], [0.0; 3]);
    }
}
