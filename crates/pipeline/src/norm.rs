//! How each frame's map is scaled to [0, 1] before colouring. Runs in frame order in
//! the model stage, so temporal modes see frames in sequence.

/// `--norm`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Norm {
    /// Per-frame min-max, exactly as pytorch-grad-cam scales each image.
    Frame,
    /// Exponential smoothing of the map and of its scale over time (factor = weight of
    /// the past), so heatmaps do not flicker between frames.
    Ema(f32),
    /// One scale for the whole clip (its largest map value), as SlowFast shows clips:
    /// a first pass over the video finds it.
    Clip,
}

impl Norm {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "frame" => Some(Norm::Frame),
            "clip" => Some(Norm::Clip),
            _ => {
                let a: f32 = s.strip_prefix("ema:")?.parse().ok()?;
                (0.0..1.0).contains(&a).then_some(Norm::Ema(a))
            }
        }
    }
}

/// State across frames.
#[cfg(feature = "video")]
#[derive(Default)]
pub struct Normaliser {
    smooth: Vec<f32>,
    scale: f32,
}

#[cfg(feature = "video")]
impl Normaliser {
    /// For `Norm::Clip`: the clip's largest ReLU'd map value, from the first pass.
    pub fn with_clip_scale(scale: f32) -> Self {
        Self {
            smooth: Vec::new(),
            scale,
        }
    }
}

#[cfg(feature = "video")]
impl Normaliser {
    /// Signed raw map in, map in [0, 1] out (same low resolution). A `scaled` map is
    /// already pytorch-grad-cam's final map, which per-frame scaling keeps as it is.
    pub fn apply(&mut self, norm: Norm, raw: &[f32], scaled: bool) -> Vec<f32> {
        let relu: Vec<f32> = raw.iter().map(|v| v.max(0.0)).collect();
        match norm {
            Norm::Frame if scaled => relu,
            Norm::Frame => {
                let mut m = relu;
                camstream_core::cam::minmax_in_place(&mut m);
                m
            }
            Norm::Clip => {
                let d = self.scale.max(1e-7);
                relu.iter().map(|v| (v / d).clamp(0.0, 1.0)).collect()
            }
            Norm::Ema(a) => {
                if self.smooth.len() != relu.len() {
                    self.smooth = relu.clone();
                    self.scale = relu.iter().cloned().fold(0.0, f32::max);
                } else {
                    for (s, r) in self.smooth.iter_mut().zip(&relu) {
                        *s = a * *s + (1.0 - a) * r;
                    }
                    let peak = self.smooth.iter().cloned().fold(0.0, f32::max);
                    self.scale = a * self.scale + (1.0 - a) * peak;
                }
                let d = self.scale.max(1e-7);
                self.smooth
                    .iter()
                    .map(|v| (v / d).clamp(0.0, 1.0))
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_modes() {
        assert_eq!(Norm::parse("frame"), Some(Norm::Frame));
        assert_eq!(Norm::parse("ema:0.8"), Some(Norm::Ema(0.8)));
        assert_eq!(Norm::parse("ema:1.5"), None);
        assert_eq!(Norm::parse("clip"), Some(Norm::Clip));
        assert_eq!(Norm::parse("clips"), None);
    }

    #[test]
    fn ema_smooths_a_jumping_peak() {
        let mut n = Normaliser::default();
        let a = n.apply(Norm::Ema(0.5), &[1.0, 0.0], false);
        assert_eq!(a, vec![1.0, 0.0]);
        let b = n.apply(Norm::Ema(0.5), &[0.0, 1.0], false);
        // Half of the old peak remains: the map moves, it does not jump.
        assert!((b[0] - b[1]).abs() < 1e-6 && b[0] > 0.4, "{b:?}");
        let mut f = Normaliser::default();
        assert_eq!(f.apply(Norm::Frame, &[0.0, 1.0], false)[0], 0.0);
        // A final map is drawn as it is.
        assert_eq!(f.apply(Norm::Frame, &[0.2, 0.5], true), vec![0.2, 0.5]);
        let mut c = Normaliser::with_clip_scale(4.0);
        assert_eq!(
            c.apply(Norm::Clip, &[-1.0, 1.0, 2.0], false),
            vec![0.0, 0.25, 0.5]
        );
    }
}
