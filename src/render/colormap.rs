//! OpenCV's `COLORMAP_JET`, rebuilt the way OpenCV builds it: MATLAB's 64-entry jet
//! control points, linearly interpolated onto 256 entries and rounded to 8 bits. Matching
//! its table exactly is what lets our overlays equal pytorch-grad-cam's pixel for pixel.

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

/// MATLAB `jet(64)`: quarter-length ramps (n = 16) shifted per channel.
fn matlab_jet64() -> [[f32; 64]; 3] {
    let n = 16usize;
    // u = [(1:n)/n, ones(1, n-1), (n:-1:1)/n]
    let mut u = Vec::with_capacity(3 * n - 1);
    u.extend((1..=n).map(|i| i as f32 / n as f32));
    u.extend(std::iter::repeat_n(1.0, n - 1));
    u.extend((1..=n).rev().map(|i| i as f32 / n as f32));
    let g0 = n / 2; // ceil(n/2) - (mod(64,4) == 1): green starts after 8 entries
    let mut out = [[0f32; 64]; 3];
    for (k, &v) in u.iter().enumerate() {
        let g = g0 + k; // 0-based index into 64
        if g < 64 {
            out[1][g] = v;
        }
        if g + n < 64 {
            out[0][g + n] = v;
        }
        if g >= n && g - n < 64 {
            out[2][g - n] = v;
        }
    }
    out
}

fn build_jet() -> Colormap {
    let ctrl = matlab_jet64();
    let mut lut = [[0u8; 3]; 256];
    let step_x = 1.0f32 / 63.0;
    let step_xi = 1.0f32 / 255.0;
    for (i, entry) in lut.iter_mut().enumerate() {
        let xi = i as f32 * step_xi;
        let lo = ((xi / step_x).floor() as usize).min(62);
        let x_lo = lo as f32 * step_x;
        let x_hi = (lo + 1) as f32 * step_x;
        for c in 0..3 {
            let (y0, y1) = (ctrl[c][lo], ctrl[c][lo + 1]);
            let y = y0 + (xi - x_lo) * (y1 - y0) / (x_hi - x_lo);
            entry[c] = (y * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    Colormap { lut }
}

pub static JET: LazyLock<Colormap> = LazyLock::new(build_jet);

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
