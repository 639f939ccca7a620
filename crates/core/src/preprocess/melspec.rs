//! The log-mel front end for audio models: framed STFT (realfft), a triangular mel
//! filterbank, natural log with an offset. Two conventions:
//! - `torch` (torchaudio/librosa style): frames centred (zero padding of n_fft/2 at both
//!   ends, frame i centred on sample i*hop), Hann window centred in the FFT frame, power
//!   spectrum, triangles in Hz (HTK or Slaney scale, Slaney area-normalised).
//! - `tf` (`tf.signal`, as YAMNet): frames not padded (frame i covers samples
//!   [i*hop, i*hop+win)), window at the start of the FFT frame, magnitude spectrum,
//!   triangles computed in the mel domain on HTK mels, the DC bin weighted 0.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};
use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MelScale {
    Htk,
    Slaney,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MelFlavour {
    #[default]
    Torch,
    Tf,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct MelConfig {
    pub sample_rate: u32,
    pub n_fft: usize,
    /// Hann window length (<= n_fft), centred in the FFT frame.
    pub win_length: usize,
    pub hop: usize,
    pub n_mels: usize,
    pub fmin: f32,
    pub fmax: f32,
    pub mel_scale: MelScale,
    pub log_offset: f32,
    #[serde(default)]
    pub flavour: MelFlavour,
    /// The model takes (frames, n_mels) rather than (n_mels, frames).
    #[serde(default)]
    pub time_major: bool,
    /// STFT frames between the model's patches as it was trained (YAMNet: 48, 0.48 s):
    /// the default step between windows of a recording.
    #[serde(default)]
    pub patch_hop: Option<usize>,
}

impl Default for MelConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16000,
            n_fft: 512,
            win_length: 400,
            hop: 160,
            n_mels: 64,
            fmin: 50.0,
            fmax: 8000.0,
            mel_scale: MelScale::Htk,
            log_offset: 1e-6,
            flavour: MelFlavour::Torch,
            time_major: false,
            patch_hop: None,
        }
    }
}

fn hz_to_mel(f: f32, s: MelScale) -> f32 {
    match s {
        MelScale::Htk => 2595.0 * (1.0 + f / 700.0).log10(),
        MelScale::Slaney => {
            let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
            let min_log_mel = min_log_hz / f_sp;
            let logstep = 6.4f32.ln() / 27.0;
            if f >= min_log_hz {
                min_log_mel + (f / min_log_hz).ln() / logstep
            } else {
                f / f_sp
            }
        }
    }
}

fn mel_to_hz(m: f32, s: MelScale) -> f32 {
    match s {
        MelScale::Htk => 700.0 * (10f32.powf(m / 2595.0) - 1.0),
        MelScale::Slaney => {
            let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
            let min_log_mel = min_log_hz / f_sp;
            let logstep = 6.4f32.ln() / 27.0;
            if m >= min_log_mel {
                min_log_hz * (logstep * (m - min_log_mel)).exp()
            } else {
                f_sp * m
            }
        }
    }
}

pub struct LogMel {
    cfg: MelConfig,
    window: Vec<f32>,
    /// (n_mels, n_fft/2+1) row-major.
    filters: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl LogMel {
    pub fn new(cfg: MelConfig) -> Self {
        let n_bins = cfg.n_fft / 2 + 1;
        // Periodic Hann (torch.hann_window default), centred in the n_fft frame.
        let wl = cfg.win_length.min(cfg.n_fft);
        let off = match cfg.flavour {
            MelFlavour::Torch => (cfg.n_fft - wl) / 2,
            MelFlavour::Tf => 0,
        };
        let mut window = vec![0f32; cfg.n_fft];
        for i in 0..wl {
            window[off + i] = 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / wl as f32).cos();
        }
        let (mlo, mhi) = (
            hz_to_mel(cfg.fmin, cfg.mel_scale),
            hz_to_mel(cfg.fmax, cfg.mel_scale),
        );
        let pts: Vec<f32> = (0..cfg.n_mels + 2)
            .map(|i| {
                mel_to_hz(
                    mlo + (mhi - mlo) * i as f32 / (cfg.n_mels + 1) as f32,
                    cfg.mel_scale,
                )
            })
            .collect();
        let mut filters = vec![0f32; cfg.n_mels * n_bins];
        if cfg.flavour == MelFlavour::Tf {
            // tf.signal.linear_to_mel_weight_matrix: edges equally spaced in HTK mel,
            // each bin's weight from its own mel value; bin 0 (DC) contributes nothing.
            let mel = |f: f64| 1127.0 * (1.0 + f / 700.0).ln();
            let (lo, hi) = (mel(cfg.fmin as f64), mel(cfg.fmax as f64));
            let edges: Vec<f64> = (0..cfg.n_mels + 2)
                .map(|i| lo + (hi - lo) * i as f64 / (cfg.n_mels + 1) as f64)
                .collect();
            let nyquist = cfg.sample_rate as f64 / 2.0;
            for b in 1..n_bins {
                let m = mel(nyquist * b as f64 / (n_bins - 1) as f64);
                for j in 0..cfg.n_mels {
                    let (l, c, u) = (edges[j], edges[j + 1], edges[j + 2]);
                    let w = ((m - l) / (c - l)).min((u - m) / (u - c)).max(0.0);
                    filters[j * n_bins + b] = w as f32;
                }
            }
        }
        for m in 0..cfg.n_mels * usize::from(cfg.flavour == MelFlavour::Torch) {
            let (lo, c, hi) = (pts[m], pts[m + 1], pts[m + 2]);
            // Slaney normalisation keeps each band's area equal.
            let norm = match cfg.mel_scale {
                MelScale::Slaney => 2.0 / (hi - lo),
                MelScale::Htk => 1.0,
            };
            for b in 0..n_bins {
                let f = b as f32 * cfg.sample_rate as f32 / cfg.n_fft as f32;
                let w = ((f - lo) / (c - lo)).min((hi - f) / (hi - c)).max(0.0);
                filters[m * n_bins + b] = w * norm;
            }
        }
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(cfg.n_fft);
        Self {
            cfg,
            window,
            filters,
            fft,
        }
    }

    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    /// Frames a signal of `len` samples yields.
    pub fn frames(&self, len: usize) -> usize {
        match self.cfg.flavour {
            MelFlavour::Torch => 1 + len / self.cfg.hop,
            MelFlavour::Tf => {
                let wl = self.cfg.win_length.min(self.cfg.n_fft);
                if len < wl {
                    0
                } else {
                    1 + (len - wl) / self.cfg.hop
                }
            }
        }
    }

    /// Samples that make `frames` frames.
    pub fn samples_for(&self, frames: usize) -> usize {
        let f = frames.saturating_sub(1) * self.cfg.hop;
        match self.cfg.flavour {
            MelFlavour::Torch => f,
            MelFlavour::Tf => f + self.cfg.win_length.min(self.cfg.n_fft),
        }
    }

    /// The sample at the centre of frame 0 (frame t is centred `t*hop` later).
    pub fn frame_centre(&self) -> f32 {
        match self.cfg.flavour {
            MelFlavour::Torch => 0.0,
            MelFlavour::Tf => self.cfg.win_length.min(self.cfg.n_fft) as f32 / 2.0,
        }
    }

    /// (n_mels, frames) row-major log-mel spectrogram.
    pub fn compute(&self, x: &[f32]) -> Vec<f32> {
        let c = &self.cfg;
        let n_bins = c.n_fft / 2 + 1;
        let frames = self.frames(x.len());
        let pad = match c.flavour {
            MelFlavour::Torch => c.n_fft / 2,
            MelFlavour::Tf => 0,
        };
        let mut out = vec![0f32; c.n_mels * frames];
        let mut buf = self.fft.make_input_vec();
        let mut spec = self.fft.make_output_vec();
        let mut power = vec![0f32; n_bins];
        for t in 0..frames {
            let start = (t * c.hop) as isize - pad as isize;
            for (i, b) in buf.iter_mut().enumerate() {
                let j = start + i as isize;
                let v = if j >= 0 && (j as usize) < x.len() {
                    x[j as usize]
                } else {
                    0.0
                };
                *b = v * self.window[i];
            }
            // Lengths match by construction, so the transform cannot fail.
            if self.fft.process(&mut buf, &mut spec).is_err() {
                continue;
            }
            for (p, s) in power.iter_mut().zip(&spec) {
                *p = match c.flavour {
                    MelFlavour::Torch => s.norm_sqr(),
                    MelFlavour::Tf => s.norm(),
                };
            }
            for m in 0..c.n_mels {
                let f = &self.filters[m * n_bins..(m + 1) * n_bins];
                let e: f32 = f.iter().zip(&power).map(|(a, b)| a * b).sum();
                out[m * frames + t] = (e + c.log_offset).ln();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_lights_the_band_around_its_frequency() {
        let cfg = MelConfig::default();
        let mel = LogMel::new(cfg.clone());
        let x: Vec<f32> = (0..16000)
            .map(|i| (std::f32::consts::TAU * 1000.0 * i as f32 / 16000.0).sin())
            .collect();
        let s = mel.compute(&x);
        let frames = mel.frames(x.len());
        assert_eq!(frames, 101);
        assert_eq!(s.len(), 64 * frames);
        // The band whose centre is nearest 1 kHz is the loudest in a middle frame.
        let t = 50;
        let best = (0..64)
            .max_by(|&a, &b| s[a * frames + t].total_cmp(&s[b * frames + t]))
            .unwrap();
        let (lo, hi) = (
            hz_to_mel(cfg.fmin, cfg.mel_scale),
            hz_to_mel(cfg.fmax, cfg.mel_scale),
        );
        let centre = mel_to_hz(lo + (hi - lo) * (best + 1) as f32 / 65.0, cfg.mel_scale);
        assert!(
            (centre - 1000.0).abs() < 80.0,
            "band {best} centred at {centre} Hz"
        );
    }

    #[test]
    fn mel_scales_round_trip() {
        for s in [MelScale::Htk, MelScale::Slaney] {
            for f in [0.0, 440.0, 1000.0, 7999.0] {
                assert!((mel_to_hz(hz_to_mel(f, s), s) - f).abs() < 0.05);
            }
        }
        assert!((hz_to_mel(1000.0, MelScale::Slaney) - 15.0).abs() < 1e-4);
    }
}
