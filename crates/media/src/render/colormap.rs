//! OpenCV's `COLORMAP_JET`, which equals GNU Octave's `jet(256)`: piecewise-linear ramps
//! sampled at x = i/255 and rounded to 8 bits. Matching its table is what lets our
//! overlays equal pytorch-grad-cam's pixel for pixel.

use std::sync::LazyLock;

/// A 256-entry RGB lookup table.
pub struct Colormap {
    pub lut: [[u8; 3]; 256],
}

impl Colormap {
    pub fn rgb(&self, v: u8) -> [u8; 3] {
        self.lut[v as usize]
    }

    /// The colour of a value in [0, 1], quantised as `np.uint8(255 * v)` (truncation).
    pub fn rgb_f(&self, v: f32) -> [u8; 3] {
        self.lut[(255.0 * v.clamp(0.0, 1.0)) as usize]
    }
}

/// Octave's jet at position `y = 255 x`: trapezoids of slope 4 (in x), written in units
/// of 1/255 so every sloped value is an exact half-integer in f64.
fn octave_jet_255(y: f64) -> [f64; 3] {
    let r = if y < 95.625 {
        0.0
    } else if y < 159.375 {
        4.0 * y - 382.5
    } else if y < 223.125 {
        255.0
    } else {
        -4.0 * y + 1147.5
    };
    let g = if y < 31.875 {
        0.0
    } else if y < 95.625 {
        4.0 * y - 127.5
    } else if y < 159.375 {
        255.0
    } else if y < 223.125 {
        -4.0 * y + 892.5
    } else {
        0.0
    };
    let b = if y < 31.875 {
        4.0 * y + 127.5
    } else if y < 95.625 {
        255.0
    } else if y < 159.375 {
        -4.0 * y + 637.5
    } else {
        0.0
    };
    [r, g, b]
}

fn build_jet() -> Colormap {
    let mut lut = [[0u8; 3]; 256];
    for (i, entry) in lut.iter_mut().enumerate() {
        let c = octave_jet_255(i as f64);
        for k in 0..3 {
            // OpenCV rounds half to even (cvRound), and the ramps land on exact halves.
            entry[k] = c[k].round_ties_even().clamp(0.0, 255.0) as u8;
        }
    }
    // OpenCV's float maths lands just below the half here (1.5 -> 1); measured against
    // pytorch-grad-cam's overlays (tests/overlay.rs), which then match exactly.
    lut[159][2] = 1;
    Colormap { lut }
}

pub static JET: LazyLock<Colormap> = LazyLock::new(build_jet);

/// A perceptual colormap from the `colorous` crate as a 256-entry table.
fn from_gradient(g: colorous::Gradient) -> Colormap {
    let mut lut = [[0u8; 3]; 256];
    for (i, e) in lut.iter_mut().enumerate() {
        let c = g.eval_continuous(i as f64 / 255.0);
        *e = [c.r, c.g, c.b];
    }
    Colormap { lut }
}

pub static TURBO: LazyLock<Colormap> = LazyLock::new(|| from_gradient(colorous::TURBO));
pub static VIRIDIS: LazyLock<Colormap> = LazyLock::new(|| from_gradient(colorous::VIRIDIS));
pub static INFERNO: LazyLock<Colormap> = LazyLock::new(|| from_gradient(colorous::INFERNO));

/// `--colormap` names.
pub const COLORMAPS: &[&str] = &["jet", "turbo", "viridis", "inferno"];

pub fn by_name(name: &str) -> Option<&'static Colormap> {
    match name {
        "jet" => Some(&JET),
        "turbo" => Some(&TURBO),
        "viridis" => Some(&VIRIDIS),
        "inferno" => Some(&INFERNO),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_endpoints_and_middle() {
        // cv2.applyColorMap(np.array([[0, 128, 255]], np.uint8), cv2.COLORMAP_JET)
        // gives BGR [128, 0, 0], [?, 255, ?] (green-ish), [0, 0, 128].
        assert_eq!(JET.rgb(0), [0, 0, 128]);
        assert_eq!(JET.rgb(255), [128, 0, 0]);
        let mid = JET.rgb(128);
        assert!(mid[1] > 250, "{mid:?}");
    }
}
