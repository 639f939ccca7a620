//! What a batch run does to each input, and its hash: outputs live under
//! `<out>/<config-hash>/`, so a changed model, weight file or option never mixes its
//! outputs with an earlier run's.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use camstream_core::{CamConfig, Method, ModelRequest, ModelSource};

use crate::error::{BatchError, Result};

/// The explain settings of a batch run, as plain values (the manifest and the markers
/// record them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkConfig {
    /// A built-in name, a `.toml` config or an `.onnx` file.
    pub model: String,
    pub weights: Option<PathBuf>,
    pub labels: Option<PathBuf>,
    pub layer: Option<String>,
    pub method: String,
    pub eigen_smooth: bool,
    pub aug_smooth: bool,
    pub method_batch: Option<usize>,
    /// One class (index or label) for every frame or window; `None`: each one's top-1.
    pub class: Option<String>,
    /// Frames or windows per forward/backward pass.
    pub batch: usize,
    /// Video: explain one frame in `every` and reuse its map for the frames between.
    pub every: u64,
    /// Heatmap weight in the video overlay.
    pub alpha: f32,
}

impl WorkConfig {
    pub fn cam(&self) -> Result<CamConfig> {
        Ok(CamConfig {
            method: Method::from_name(&self.method)?,
            eigen_smooth: self.eigen_smooth,
            aug_smooth: self.aug_smooth,
            method_batch: self.method_batch,
        })
    }

    pub fn request(&self) -> Result<ModelRequest> {
        Ok(ModelRequest {
            source: ModelSource::parse(&self.model)?,
            weights: self.weights.clone(),
            target: self.layer.clone(),
            labels: self.labels.clone(),
        })
    }

    /// 16 hex digits of SHA-256 over the settings, with every file they name (model,
    /// weights, labels, a config's own weights) replaced by the SHA-256 of its bytes:
    /// the same model mounted at another path hashes the same, an edited one does not.
    /// The camstream version is part of it, since a new release may draw differently.
    pub fn hash(&self) -> Result<String> {
        self.cam()?;
        let mut files = Vec::new();
        let source = ModelSource::parse(&self.model)?;
        let model = match &source {
            ModelSource::Builtin(_) => self.model.clone(),
            ModelSource::Config(p) | ModelSource::Onnx(p) => {
                files.push(p.clone());
                "file".into()
            }
        };
        if let ModelSource::Config(p) = &source {
            files.extend(config_weights(p)?);
        }
        files.extend(self.weights.iter().cloned());
        files.extend(self.labels.iter().cloned());
        let mut h = Sha256::new();
        let mut plain = self.clone();
        plain.model = model;
        plain.weights = None;
        plain.labels = None;
        let json = serde_json::to_string(&plain).expect("plain values serialise");
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update([0]);
        h.update(json.as_bytes());
        for f in files {
            h.update([0]);
            h.update(sha256_file(&f)?.as_bytes());
        }
        Ok(hex(&h.finalize())[..16].to_string())
    }
}

/// The weights file a TOML model config names (relative to the config), if any.
fn config_weights(config: &Path) -> Result<Option<PathBuf>> {
    let text = std::fs::read_to_string(config).map_err(BatchError::io(config))?;
    let value: toml::Value = toml::from_str(&text).map_err(|e| BatchError::BadOption {
        name: "model",
        why: format!("{}: {e}", config.display()),
    })?;
    Ok(value
        .get("model")
        .and_then(|m| m.get("weights"))
        .and_then(|w| w.as_str())
        .map(|w| config.parent().unwrap_or(Path::new("")).join(w)))
}

/// SHA-256 of a file's bytes, read in 1 MB pieces, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(BatchError::io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(BatchError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
