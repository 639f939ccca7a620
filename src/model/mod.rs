//! Networks as a flat list of named units, so Grad-CAM can cut anywhere: run the units up
//! to the target layer without gradients, then the rest from a leaf variable.

pub mod config;
pub mod efficientnet;
pub mod fastconv;
pub mod layers;
pub mod onnx;
pub mod resnet;
pub mod sequential;
pub mod weights;
pub mod yamnet;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
pub use config::{InputKind, InputSpec, Resize};
use layers::Op;
pub use weights::Weights;

/// Names accepted by `--model` besides a config path.
pub const BUILTIN: &[&str] = &[
    "resnet18",
    "resnet34",
    "resnet50",
    "efficientnet_lite0",
    "yamnet",
];

#[derive(Clone, Debug)]
pub struct Unit {
    pub name: String,
    pub op: Op,
    /// Set when this unit's op was folded into a neighbour (conv + BN): its own output no
    /// longer exists, so it cannot be a target.
    pub fused_into: Option<String>,
}

impl Unit {
    pub fn new(name: impl Into<String>, op: Op) -> Self {
        Self {
            name: name.into(),
            op,
            fused_into: None,
        }
    }

    /// Several ops as one target-able unit, optionally with an identity shortcut.
    pub fn chain(name: impl Into<String>, ops: Vec<Op>, residual: bool) -> Self {
        Self::new(name, Op::Chain(Box::new(layers::Chain { ops, residual })))
    }
}

#[derive(Clone, Debug)]
pub struct Network {
    pub name: String,
    pub units: Vec<Unit>,
    pub input: InputSpec,
    pub labels: Option<Vec<String>>,
    pub num_classes: usize,
    pub default_layer: String,
    pub device: Device,
    /// Independent sigmoid scores per class (AudioSet) rather than one softmax.
    pub multi_label: bool,
    /// An ONNX graph instead of `units`: targets are tensor names.
    pub graph: Option<std::sync::Arc<onnx::OnnxGraph>>,
}

/// How a model is named on the command line.
pub struct ModelRequest<'a> {
    /// A built-in architecture name or a TOML config path.
    pub model: &'a str,
    /// Weights file; a config may name its own.
    pub weights: Option<&'a Path>,
    /// The layer the caller will target, so that BN folding keeps its output intact.
    pub target: Option<&'a str>,
    pub labels_file: Option<&'a Path>,
}

impl Network {
    pub fn load(req: &ModelRequest, device: &Device) -> Result<Self> {
        let net = if BUILTIN.contains(&req.model) {
            let Some(wpath) = req.weights else {
                return Err(Error::input(
                    req.model,
                    "built-in architectures need --weights <FILE> (torchvision state_dict as .safetensors or .pth)",
                ));
            };
            let w = Weights::load(wpath, device)?;
            match req.model {
                "efficientnet_lite0" => efficientnet::build(&w, device)?,
                "yamnet" => yamnet::build(&w, device)?,
                _ => resnet::build_builtin(req.model, &w, device)?,
            }
        } else if req.model.ends_with(".onnx") {
            from_onnx(Path::new(req.model), None, device)?
        } else if req.model.ends_with(".toml") {
            let path = Path::new(req.model);
            let cfg = config::ModelFile::read(path)?;
            if cfg.model.arch == "onnx" {
                let file = match (req.weights, &cfg.model.weights) {
                    (Some(p), _) => p.to_path_buf(),
                    (None, Some(p)) => cfg.resolve(p),
                    (None, None) => {
                        return Err(Error::config(
                            path,
                            "arch = \"onnx\" needs `weights = \"model.onnx\"`",
                        ))
                    }
                };
                let input = cfg.input_spec()?;
                let mut net = from_onnx(&file, Some(input), device)?;
                if let Some(t) = &cfg.model.target_layer {
                    net.resolve_layer(t)?;
                    net.default_layer = t.clone();
                }
                net.labels = cfg.labels()?;
                return finish_load(net, req);
            }
            let wpath: PathBuf =
                match (req.weights, &cfg.model.weights) {
                    (Some(p), _) => p.to_path_buf(),
                    (None, Some(p)) => cfg.resolve(p),
                    (None, None) => return Err(Error::config(
                        path,
                        "no weights: pass --weights <FILE> or set `weights = \"file\"` in [model]",
                    )),
                };
            let w = Weights::load(&wpath, device)?;
            cfg.build(&w, req.target, device)?
        } else {
            let mut supported: Vec<String> = BUILTIN.iter().map(|s| s.to_string()).collect();
            supported.push("<config>.toml".into());
            return Err(Error::Unsupported {
                what: "model",
                name: req.model.to_string(),
                supported,
            });
        };
        finish_load(net, req)
    }
}

/// An ONNX model; without a config the input is taken from the graph (pictures scaled
/// to 0..1, signals as they are).
fn from_onnx(path: &Path, input: Option<InputSpec>, device: &Device) -> Result<Network> {
    let size = input.as_ref().map(|i| i.size.clone());
    let g = onnx::OnnxGraph::load(path, size.as_deref(), device)?;
    let dims = g.sample_dims(size.as_deref())?;
    let input = match input {
        Some(i) => {
            if i.channels != dims[0] || (i.kind != InputKind::Audio && i.size != dims[1..]) {
                return Err(Error::input(
                    path,
                    format!(
                        "the graph takes {:?} per sample, the config says {} x {:?}",
                        dims, i.channels, i.size
                    ),
                ));
            }
            i
        }
        None => {
            let image = dims.len() == 3;
            InputSpec {
                kind: if image {
                    InputKind::Image
                } else {
                    InputKind::Signal
                },
                channels: dims[0],
                size: dims[1..].to_vec(),
                mean: vec![0.0; dims[0]],
                std: vec![1.0; dims[0]],
                scale: if image { 255.0 } else { 1.0 },
                resize: Resize::Stretch,
                sample_rate: None,
                frontend: None,
            }
        }
    };
    Ok(Network {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "onnx".into()),
        units: Vec::new(),
        input,
        labels: None,
        num_classes: g.num_classes(),
        default_layer: g.default_target.clone(),
        device: device.clone(),
        multi_label: false,
        graph: Some(std::sync::Arc::new(g)),
    })
}

fn finish_load(mut net: Network, req: &ModelRequest) -> Result<Network> {
    if let Some(lf) = req.labels_file {
        net.labels = Some(config::read_labels(lf)?);
    }
    if let Some(l) = &net.labels {
        if l.len() != net.num_classes {
            return Err(Error::input(
                req.labels_file
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| req.model.into()),
                format!(
                    "{} labels for a model with {} classes",
                    l.len(),
                    net.num_classes
                ),
            ));
        }
    }
    Ok(net)
}

impl Network {
    /// Index of the first unit that no longer has spatial dims (pooling or flatten).
    fn spatial_end(&self) -> usize {
        self.units
            .iter()
            .position(|u| matches!(u.op, Op::GlobalAvgPool | Op::Flatten | Op::Linear(_)))
            .unwrap_or(self.units.len())
    }

    /// Every name `--layer` accepts, in network order.
    pub fn target_names(&self) -> Vec<String> {
        if let Some(g) = &self.graph {
            return g.targets().iter().map(|t| t.0.clone()).collect();
        }
        let end = self.spatial_end();
        let mut names: Vec<String> = Vec::new();
        for (i, u) in self.units[..end].iter().enumerate() {
            if u.fused_into.is_none() {
                names.push(u.name.clone());
            }
            // A dotted name's parent (`features.6` for `features.6.relu`, `layer4` for
            // `layer4.1`) names the whole block's output, as a PyTorch module hook would.
            if let Some((parent, _)) = u.name.rsplit_once('.') {
                let next_same = self.units[..end]
                    .get(i + 1)
                    .is_some_and(|n| n.name.starts_with(&format!("{parent}.")));
                if !next_same && !names.iter().any(|n| n == parent) {
                    names.push(parent.to_string());
                }
            }
        }
        names
    }

    /// The unit whose output a layer name means.
    pub fn resolve_layer(&self, name: &str) -> Result<usize> {
        if let Some(g) = &self.graph {
            g.check_target(name)?;
            return Ok(0);
        }
        let end = self.spatial_end();
        let found = self.units.iter().position(|u| u.name == name).or_else(|| {
            let prefix = format!("{name}.");
            self.units.iter().rposition(|u| u.name.starts_with(&prefix))
        });
        let Some(idx) = found else {
            return Err(Error::UnknownLayer {
                name: name.to_string(),
                valid: self.target_names(),
            });
        };
        if idx >= end {
            return Err(Error::BadTarget {
                name: name.to_string(),
                why: "its output has no spatial dimensions (it comes after global pooling)".into(),
            });
        }
        if let Some(into) = &self.units[idx].fused_into {
            return Err(Error::BadTarget {
                name: name.to_string(),
                why: format!("it was folded into `{into}` at load; target `{into}`"),
            });
        }
        Ok(idx)
    }

    /// Runs units `from..to` (exclusive end).
    pub fn forward_range(&self, x: &Tensor, from: usize, to: usize) -> Result<Tensor> {
        let mut x = x.clone();
        for u in &self.units[from..to] {
            x = u.op.forward(&x)?;
        }
        Ok(x)
    }

    /// Logits (N, classes).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(g) = &self.graph {
            return g.forward(x);
        }
        self.forward_range(x, 0, self.units.len())
    }

    /// Every target layer with its per-sample output shape.
    pub fn layer_shapes(&self) -> Result<Vec<(String, Vec<usize>)>> {
        if let Some(g) = &self.graph {
            return Ok(g
                .targets()
                .iter()
                .map(|(n, s)| (n.clone(), s[1..].to_vec()))
                .collect());
        }
        let shapes = self.unit_shapes()?;
        self.target_names()
            .into_iter()
            .map(|n| {
                let i = self.resolve_layer(&n)?;
                Ok((n, shapes[i][1..].to_vec()))
            })
            .collect()
    }

    pub fn label(&self, class: usize) -> String {
        self.labels
            .as_ref()
            .and_then(|l| l.get(class).cloned())
            .unwrap_or_else(|| format!("class {class}"))
    }

    /// Output shape (per sample, batch dim included as 1) of every unit, from a dry run.
    pub fn unit_shapes(&self) -> Result<Vec<Vec<usize>>> {
        let mut shape = vec![1, self.input.channels];
        shape.extend(&self.input.size);
        let mut x = Tensor::zeros(shape, candle_core::DType::F32, &self.device)?;
        let mut out = Vec::with_capacity(self.units.len());
        for u in &self.units {
            x = u.op.forward(&x)?;
            out.push(x.dims().to_vec());
        }
        Ok(out)
    }

    /// Turns `--class` values (indices or labels) into class indices.
    pub fn parse_class(&self, s: &str) -> Result<usize> {
        if let Ok(i) = s.parse::<usize>() {
            if i >= self.num_classes {
                return Err(Error::ClassOutOfRange {
                    class: i,
                    num_classes: self.num_classes,
                });
            }
            return Ok(i);
        }
        match &self.labels {
            Some(l) => l
                .iter()
                .position(|x| x == s)
                .ok_or_else(|| Error::UnknownLabel {
                    label: s.to_string(),
                    labels: l.clone(),
                }),
            None => Err(Error::UnknownLabel {
                label: s.to_string(),
                labels: vec![format!(
                    "(the model has no labels; use an index 0..{})",
                    self.num_classes
                )],
            }),
        }
    }
}
