//! Weight files with PyTorch state_dict names: safetensors, or the zip-format `.pth`/`.pt`
//! that `torch.save(model.state_dict())` writes. Every tensor is checked against the shape
//! the architecture needs, so a mismatch names the tensor and both shapes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// An expected shape: `None` dimensions are taken from the file (e.g. a kernel size).
pub type ShapeSpec = Vec<Option<usize>>;

pub struct Weights {
    file: PathBuf,
    tensors: HashMap<String, Tensor>,
}

fn fmt_spec(spec: &[Option<usize>]) -> String {
    let dims: Vec<String> = spec
        .iter()
        .map(|d| d.map_or_else(|| "_".to_string(), |d| d.to_string()))
        .collect();
    let any = if spec.iter().any(Option::is_none) {
        " (_ = any size)"
    } else {
        ""
    };
    format!("[{}]{any}", dims.join(", "))
}

impl Weights {
    /// Reads every tensor of a safetensors or zip-format PyTorch file as float32 on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::input(
                path,
                "is a directory, expected a weights file",
            ));
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let bad = |e: candle_core::Error| Error::Weights {
            file: path.to_path_buf(),
            msg: format!(
                "cannot read ({e}); expected a safetensors file or a zip-format PyTorch state_dict"
            ),
        };
        let raw: Vec<(String, Tensor)> = match ext.as_str() {
            "safetensors" => candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(bad)?
                .into_iter()
                .collect(),
            "pth" | "pt" | "bin" => {
                let mut t = candle_core::pickle::read_all(path).map_err(bad)?;
                if t.is_empty() {
                    // Checkpoints often nest the weights under "state_dict".
                    t = candle_core::pickle::read_all_with_key(path, Some("state_dict"))
                        .map_err(bad)?;
                }
                t
            }
            other => {
                return Err(Error::Unsupported {
                    what: "weights format",
                    name: format!(".{other}"),
                    supported: vec![".safetensors".into(), ".pth".into(), ".pt".into()],
                })
            }
        };
        if raw.is_empty() {
            return Err(Error::Weights {
                file: path.to_path_buf(),
                msg: "holds no tensors".into(),
            });
        }
        let mut tensors = HashMap::with_capacity(raw.len());
        for (name, t) in raw {
            // Drop bookkeeping such as BN's `num_batches_tracked` (int64 scalars).
            if !t.dtype().is_float() {
                continue;
            }
            let t = t.to_dtype(DType::F32)?.to_device(device)?;
            // A "module." prefix comes from DataParallel checkpoints.
            let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
            tensors.insert(name, t);
        }
        Ok(Self {
            file: path.to_path_buf(),
            tensors,
        })
    }

    /// Builds a store from tensors already in memory (tests, trainers).
    pub fn from_tensors(file: impl Into<PathBuf>, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            file: file.into(),
            tensors,
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A tensor that must exist with the given shape.
    pub fn get(&self, name: &str, spec: &[Option<usize>]) -> Result<Tensor> {
        self.get_opt(name, spec)?.ok_or_else(|| {
            // Help with the most common cause: a prefix that differs.
            let suffix = name.rsplit('.').next().unwrap_or(name);
            let mut near: Vec<&String> = self
                .tensors
                .keys()
                .filter(|k| k.ends_with(suffix))
                .collect();
            near.sort();
            near.truncate(4);
            let hint = if near.is_empty() {
                String::new()
            } else {
                format!(
                    "; the file has e.g. {}",
                    near.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            Error::MissingTensor {
                file: self.file.clone(),
                name: name.to_string(),
                hint,
            }
        })
    }

    /// A tensor that may be absent (e.g. an optional bias); if present its shape must match.
    pub fn get_opt(&self, name: &str, spec: &[Option<usize>]) -> Result<Option<Tensor>> {
        let Some(t) = self.tensors.get(name) else {
            return Ok(None);
        };
        let dims = t.dims();
        let ok = dims.len() == spec.len()
            && dims
                .iter()
                .zip(spec)
                .all(|(d, s)| s.is_none_or(|s| s == *d));
        if !ok {
            return Err(Error::ShapeMismatch {
                file: self.file.clone(),
                name: name.to_string(),
                expected: fmt_spec(spec),
                found: dims.to_vec(),
            });
        }
        Ok(Some(t.clone()))
    }
}
