//! Model configs in TOML: the `[model]`, `[input]` and `[[layer]]` contract that other
//! tools write, so any plain PyTorch CNN can be described without code.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::sequential::LayerSpec;
use crate::model::{resnet, sequential, Network, Weights};
use crate::preprocess::melspec::{MelConfig, MelScale};
use crate::preprocess::{InputKind, InputSpec, Resize};

#[derive(Debug, Deserialize)]
pub struct ModelSection {
    pub arch: String,
    pub labels: Option<Vec<String>>,
    pub labels_file: Option<PathBuf>,
    pub target_layer: Option<String>,
    pub weights: Option<PathBuf>,
    /// `arch = "resnet"`: "basic" or "bottleneck".
    pub block: Option<String>,
    /// `arch = "resnet"`: blocks per stage, e.g. [2, 2, 2, 2].
    pub blocks: Option<Vec<usize>>,
}

#[derive(Debug, Deserialize)]
pub struct InputSection {
    pub kind: String,
    pub channels: usize,
    pub size: Vec<usize>,
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    pub scale: Option<f32>,
    /// "stretch" (default), "letterbox", or "shorter_side" (then `resize_to`, and a
    /// centre crop).
    pub resize: Option<String>,
    pub resize_to: Option<usize>,
    pub sample_rate: Option<f32>,
    // The audio front end (kind = "audio").
    pub n_fft: Option<usize>,
    pub win_length: Option<usize>,
    pub hop: Option<usize>,
    /// STFT frames between windows by default (audio models).
    pub patch_hop: Option<usize>,
    pub n_mels: Option<usize>,
    pub fmin: Option<f32>,
    pub fmax: Option<f32>,
    pub mel_scale: Option<MelScale>,
    pub log_offset: Option<f32>,
    /// "torch" (default) or "tf" (tf.signal conventions, as YAMNet).
    pub frontend: Option<crate::preprocess::melspec::MelFlavour>,
    /// "mel_time" (default: size = [n_mels, frames]) or "time_mel" ([frames, n_mels]).
    pub layout: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ModelFile {
    pub model: ModelSection,
    pub input: Option<InputSection>,
    #[serde(default, rename = "layer")]
    pub layers: Vec<LayerSpec>,
    #[serde(skip)]
    pub path: PathBuf,
}

pub const ARCHS: &[&str] = &["sequential", "resnet", "efficientnet_lite0", "yamnet"];

pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let labels: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if labels.is_empty() {
        return Err(Error::input(path, "labels file is empty"));
    }
    Ok(labels)
}

impl ModelFile {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut cfg: ModelFile = toml::from_str(&text).map_err(|e| {
            // toml's message spans lines; keep the first for a one-line error.
            let msg = e.to_string();
            Error::config(
                path,
                msg.lines().next().unwrap_or("invalid TOML").to_string(),
            )
        })?;
        cfg.path = path.to_path_buf();
        Ok(cfg)
    }

    /// Paths in a config are relative to the config's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    pub fn input_spec(&self) -> Result<InputSpec> {
        let Some(inp) = &self.input else {
            if self.model.arch == "resnet" {
                return Ok(InputSpec::imagenet());
            }
            return Err(Error::config(&self.path, "missing [input] section"));
        };
        const KINDS: [InputKind; 4] = [
            InputKind::Image,
            InputKind::Signal,
            InputKind::Audio,
            InputKind::Clip,
        ];
        let Some(kind) = KINDS.into_iter().find(|k| k.name() == inp.kind) else {
            return Err(Error::Unsupported {
                what: "input kind",
                name: inp.kind.clone(),
                supported: KINDS.iter().map(|k| k.name().to_string()).collect(),
            });
        };
        let want = kind.rank();
        if inp.size.len() != want || inp.size.contains(&0) {
            return Err(Error::config(
                &self.path,
                format!(
                    "[input] size must be {} positive numbers for kind = \"{}\"",
                    want, inp.kind
                ),
            ));
        }
        let per_channel = |v: &Option<Vec<f32>>, default: f32, what: &str| -> Result<Vec<f32>> {
            match v {
                None => Ok(vec![default; inp.channels]),
                Some(v) if v.len() == 1 => Ok(vec![v[0]; inp.channels]),
                Some(v) if v.len() == inp.channels => Ok(v.clone()),
                Some(v) => Err(Error::config(
                    &self.path,
                    format!(
                        "[input] {what} has {} values for {} channels",
                        v.len(),
                        inp.channels
                    ),
                )),
            }
        };
        let std = per_channel(&inp.std, 1.0, "std")?;
        if std.contains(&0.0) {
            return Err(Error::config(&self.path, "[input] std must not be 0"));
        }
        let resize = match inp.resize.as_deref() {
            None | Some("stretch") => Resize::Stretch,
            Some("letterbox") => Resize::Letterbox,
            Some("keep_aspect") => Resize::KeepAspect,
            Some("shorter_side") => Resize::ShorterSideCrop(
                inp.resize_to
                    .unwrap_or_else(|| inp.size.iter().copied().min().unwrap_or(0)),
            ),
            Some(other) => {
                return Err(Error::Unsupported {
                    what: "resize mode",
                    name: other.into(),
                    supported: vec![
                        "stretch".into(),
                        "letterbox".into(),
                        "keep_aspect".into(),
                        "shorter_side".into(),
                    ],
                })
            }
        };
        let frontend = if kind == InputKind::Audio {
            let d = MelConfig::default();
            let mel = MelConfig {
                sample_rate: inp.sample_rate.map_or(d.sample_rate, |r| r as u32),
                n_fft: inp.n_fft.unwrap_or(d.n_fft),
                win_length: inp.win_length.or(inp.n_fft).unwrap_or(d.win_length),
                hop: inp.hop.unwrap_or(d.hop),
                n_mels: inp.n_mels.unwrap_or(inp.size[0]),
                fmin: inp.fmin.unwrap_or(d.fmin),
                fmax: inp.fmax.unwrap_or(d.fmax),
                mel_scale: inp.mel_scale.unwrap_or(d.mel_scale),
                log_offset: inp.log_offset.unwrap_or(d.log_offset),
                flavour: inp.frontend.unwrap_or_default(),
                patch_hop: inp.patch_hop,
                time_major: match inp.layout.as_deref() {
                    None | Some("mel_time") => false,
                    Some("time_mel") => true,
                    Some(other) => {
                        return Err(Error::Unsupported {
                            what: "audio layout",
                            name: other.into(),
                            supported: vec!["mel_time".into(), "time_mel".into()],
                        })
                    }
                },
            };
            let mel_dim = if mel.time_major { 1 } else { 0 };
            let n_mels = inp.n_mels.unwrap_or(inp.size[mel_dim]);
            let mel = MelConfig { n_mels, ..mel };
            if mel.n_mels != inp.size[mel_dim] || mel.hop == 0 || mel.n_fft == 0 {
                return Err(Error::config(
                    &self.path,
                    "[input] audio: n_mels must equal the mel dimension of size, hop and n_fft must be positive",
                ));
            }
            Some(mel)
        } else {
            None
        };
        Ok(InputSpec {
            kind,
            channels: inp.channels,
            size: inp.size.clone(),
            mean: per_channel(&inp.mean, 0.0, "mean")?,
            std,
            scale: inp.scale.unwrap_or(1.0),
            resize,
            sample_rate: inp.sample_rate,
            frontend,
        })
    }

    pub fn labels(&self) -> Result<Option<Vec<String>>> {
        match (&self.model.labels, &self.model.labels_file) {
            (Some(l), _) => Ok(Some(l.clone())),
            (None, Some(f)) => Ok(Some(read_labels(&self.resolve(f))?)),
            (None, None) => Ok(None),
        }
    }

    /// Builds the network; `keep` is a layer whose own output must survive BN folding.
    pub fn build(&self, w: &Weights, keep: Option<&str>, device: &Device) -> Result<Network> {
        let input = self.input_spec()?;
        let name = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let mut net = match self.model.arch.as_str() {
            "sequential" => {
                if self.layers.is_empty() {
                    return Err(Error::config(
                        &self.path,
                        "arch = \"sequential\" needs [[layer]] entries",
                    ));
                }
                sequential::build(&name, &self.layers, input, w, keep, device, &self.path)?
            }
            "resnet" => {
                let block = match self.model.block.as_deref().unwrap_or("basic") {
                    "basic" => resnet::Block::Basic,
                    "bottleneck" => resnet::Block::Bottleneck,
                    other => {
                        return Err(Error::Unsupported {
                            what: "resnet block",
                            name: other.into(),
                            supported: vec!["basic".into(), "bottleneck".into()],
                        })
                    }
                };
                let blocks = self.model.blocks.clone().ok_or_else(|| {
                    Error::config(
                        &self.path,
                        "arch = \"resnet\" needs `blocks = [..]` (blocks per stage)",
                    )
                })?;
                resnet::build(&name, block, &blocks, input, w, device)?
            }
            "efficientnet_lite0" | "yamnet" => {
                let mut n = if self.model.arch == "yamnet" {
                    super::yamnet::build(w, device)?
                } else {
                    super::efficientnet::build(w, device)?
                };
                n.input = input;
                n.name = name;
                n
            }
            other => {
                return Err(Error::Unsupported {
                    what: "arch",
                    name: other.into(),
                    supported: ARCHS.iter().map(|s| s.to_string()).collect(),
                })
            }
        };
        if let Some(t) = &self.model.target_layer {
            // Validate now so a typo in the config fails at load, not mid-run.
            net.body.check_target(t)?;
            net.default_layer = t.clone();
        }
        net.labels = self.labels()?;
        Ok(net)
    }
}
