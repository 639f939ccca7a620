//! What a model takes as input: the contract between decoded media and the network.

use crate::preprocess::melspec::MelConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Image,
    Signal,
    /// A waveform turned into a (1, mels, frames) log-mel picture by the front end.
    Audio,
    /// A clip of frames, (C, T, H, W), for video models (3D CNNs).
    Clip,
}

impl InputKind {
    /// The name configs and services use.
    pub fn name(self) -> &'static str {
        match self {
            InputKind::Image => "image",
            InputKind::Signal => "signal",
            InputKind::Audio => "audio",
            InputKind::Clip => "clip",
        }
    }

    /// Spatial dims of a sample after its channels: 1 (signals), 2 (pictures,
    /// spectrograms) or 3 (clips).
    pub fn rank(self) -> usize {
        match self {
            InputKind::Signal => 1,
            InputKind::Image | InputKind::Audio => 2,
            InputKind::Clip => 3,
        }
    }
}

/// How a decoded picture is brought to the model's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// Straight to the model size, aspect ratio not kept.
    Stretch,
    /// Shorter side to this many pixels, then a centre crop (torchvision's eval transform).
    ShorterSideCrop(usize),
    /// Fit inside the model size keeping the aspect ratio; the border is the mean colour
    /// (0 after normalisation).
    Letterbox,
    /// Shorter side to the model's shorter side, aspect kept, nothing cropped or padded:
    /// the input grows with the picture's aspect ratio (for fully convolutional models
    /// with global pooling, where objects then keep the scale they were trained at).
    /// Up to [`MAX_KEEP_ASPECT`](super::MAX_KEEP_ASPECT):1; longer sides are squeezed.
    KeepAspect,
}

#[derive(Clone, Debug)]
pub struct InputSpec {
    pub kind: InputKind,
    pub channels: usize,
    /// `[H, W]` for images, `[L]` for signals, `[T, H, W]` for clips.
    pub size: Vec<usize>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Decoded values are divided by this first (255 for 8-bit pictures).
    pub scale: f32,
    pub resize: Resize,
    /// Sampling rate the model expects (signals and audio).
    pub sample_rate: Option<f32>,
    /// The log-mel front end of `kind = "audio"` models.
    pub frontend: Option<MelConfig>,
}

impl InputSpec {
    /// What one frame is prepared as: for a clip model a picture of its (H, W), for
    /// every other model the spec itself.
    pub fn frame(&self) -> InputSpec {
        match self.kind {
            InputKind::Clip => InputSpec {
                kind: InputKind::Image,
                size: self.size[1..].to_vec(),
                ..self.clone()
            },
            _ => self.clone(),
        }
    }

    pub fn imagenet() -> Self {
        Self {
            kind: InputKind::Image,
            channels: 3,
            size: vec![224, 224],
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            scale: 255.0,
            resize: Resize::ShorterSideCrop(256),
            sample_rate: None,
            frontend: None,
        }
    }
}
