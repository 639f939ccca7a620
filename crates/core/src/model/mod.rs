//! Networks that Grad-CAM can cut anywhere: run up to the target layer without
//! gradients, then the rest from a leaf variable. Two kinds of network body implement
//! [`Body`]: a flat list of named units (built-in architectures and TOML configs) and,
//! with the `onnx` feature, an ONNX graph whose targets are tensor names.

pub mod config;
pub mod efficientnet;
pub mod fastconv;
pub mod layers;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod resnet;
pub mod sequential;
mod units;
pub mod video_resnet;
pub mod volume;
pub mod weights;
pub mod yamnet;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::preprocess::InputSpec;
#[cfg(feature = "onnx")]
use crate::preprocess::{InputKind, Resize};
pub use units::{Unit, UnitNet};
pub use weights::Weights;

/// The built-in architectures (they need a weights file with PyTorch's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    ResNet18,
    ResNet34,
    ResNet50,
    EfficientNetLite0,
    Yamnet,
    /// Video models (3D CNNs over clips); random weights unless a file is given.
    R3d18,
    Mc318,
    R2plus1d18,
}

impl Arch {
    pub const ALL: [Arch; 8] = [
        Arch::ResNet18,
        Arch::ResNet34,
        Arch::ResNet50,
        Arch::EfficientNetLite0,
        Arch::Yamnet,
        Arch::R3d18,
        Arch::Mc318,
        Arch::R2plus1d18,
    ];

    /// The name a user types (torchvision's, or the model's own).
    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet34 => "resnet34",
            Arch::ResNet50 => "resnet50",
            Arch::EfficientNetLite0 => "efficientnet_lite0",
            Arch::Yamnet => "yamnet",
            Arch::R3d18 => "r3d_18",
            Arch::Mc318 => "mc3_18",
            Arch::R2plus1d18 => "r2plus1d_18",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The video models, which run with portable random weights when none are given
    /// (their architecture, not their knowledge, is what benchmarks and tests need).
    pub fn is_video(self) -> bool {
        matches!(self, Arch::R3d18 | Arch::Mc318 | Arch::R2plus1d18)
    }

    pub fn names() -> Vec<String> {
        Self::ALL.iter().map(|a| a.name().to_string()).collect()
    }
}

/// Where a network comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A built-in architecture; its weights are [`ModelRequest::weights`].
    Builtin(Arch),
    /// A TOML model config (`[model]`, `[input]`, `[[layer]]`).
    Config(PathBuf),
    /// An ONNX file (needs the `onnx` feature).
    Onnx(PathBuf),
}

impl ModelSource {
    /// A built-in name, or a file whose extension says what it is (`.onnx`, `.toml`).
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(arch) = Arch::from_name(s) {
            return Ok(Self::Builtin(arch));
        }
        let path = PathBuf::from(s);
        match path.extension().and_then(|e| e.to_str()) {
            Some("onnx") => Ok(Self::Onnx(path)),
            Some("toml") => Ok(Self::Config(path)),
            _ => Err(Error::BadOption {
                name: "model",
                why: format!(
                    "unknown model `{s}`; supported: {}, <model>.onnx, <config>.toml",
                    Arch::names().join(", ")
                ),
            }),
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Builtin(a) => f.write_str(a.name()),
            ModelSource::Config(p) | ModelSource::Onnx(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A network to load, with what the caller overrides.
#[derive(Clone, Debug)]
pub struct ModelRequest {
    pub source: ModelSource,
    /// Weights file; a config may name its own, a built-in needs one.
    pub weights: Option<PathBuf>,
    /// The layer the caller will target (or layers, comma-separated), so that BN folding
    /// keeps their outputs intact.
    pub target: Option<String>,
    /// Class names, one per line (overrides a config's labels).
    pub labels: Option<PathBuf>,
}

impl ModelRequest {
    pub fn new(source: ModelSource) -> Self {
        Self {
            source,
            weights: None,
            target: None,
            labels: None,
        }
    }
}

/// What Grad-CAM needs of a network body, whatever its representation: the layers it
/// can be cut at, and a way to run it whole or in two halves around one of them.
pub trait Body: Send + Sync + std::fmt::Debug {
    /// Every name a target layer can have, in network order.
    fn target_names(&self) -> Vec<String>;
    /// Checks that `layer` can be a target; the error lists the valid ones.
    fn check_target(&self, layer: &str) -> Result<()>;
    /// Every target layer with its per-sample output shape (no batch dim), from a dry
    /// run on `input` (one sample, batch dim included).
    fn layer_shapes(&self, input: &Tensor) -> Result<Vec<(String, Vec<usize>)>>;
    /// Other names of target `layer` (the PyTorch modules an ONNX tensor is the output
    /// of), for listings.
    fn aliases(&self, _layer: &str) -> Vec<String> {
        Vec::new()
    }
    /// Logits (N, classes).
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// The activations at `layer` (computed without gradient bookkeeping) and the rest
    /// of the network: a function from a tensor in their place to the logits. The tail
    /// can be called again, and when `x` is one sample it also takes a batch of variants
    /// of that sample's activations (AblationCAM runs only the tail, once per channel).
    fn split<'s>(&'s self, x: &Tensor, layer: &str) -> Result<(Tensor, Tail<'s>)>;
    /// The deepest target layer whose output is still an affine function of the input
    /// (a first convolution with its BatchNorm folded), if the network opens with one.
    /// ScoreCAM forms that layer's response to each masked input from the responses to
    /// a few basis masks instead of running it again (see `cam::perturb`).
    fn affine_stem(&self) -> Option<String> {
        None
    }
    /// The batch size the network only runs at (an ONNX graph's, fixed at export), so
    /// larger batches run in chunks of it; `None` for any batch.
    fn fixed_batch(&self) -> Option<usize> {
        None
    }
}

/// The part of a network after its cut: activations in, logits out.
pub type Tail<'s> = Box<dyn Fn(&Tensor) -> Result<Tensor> + 's>;

#[derive(Clone, Debug)]
pub struct Network {
    pub name: String,
    pub body: Arc<dyn Body>,
    pub input: InputSpec,
    pub labels: Option<Vec<String>>,
    pub num_classes: usize,
    pub default_layer: String,
    pub device: Device,
    /// Independent sigmoid scores per class (AudioSet) rather than one softmax.
    pub multi_label: bool,
}

impl Network {
    /// A network of named units (built-in architectures, configs).
    pub fn from_units(
        name: impl Into<String>,
        units: Vec<Unit>,
        input: InputSpec,
        num_classes: usize,
        default_layer: impl Into<String>,
        device: &Device,
    ) -> Self {
        Self {
            name: name.into(),
            body: Arc::new(UnitNet::new(units)),
            input,
            labels: None,
            num_classes,
            default_layer: default_layer.into(),
            device: device.clone(),
            multi_label: false,
        }
    }

    pub fn load(req: &ModelRequest, device: &Device) -> Result<Self> {
        let net = match &req.source {
            ModelSource::Builtin(arch) if arch.is_video() => {
                let w = match &req.weights {
                    Some(p) => Weights::load(p, device)?,
                    None => video_resnet::random_weights(arch.name(), 400, 0, device)?,
                };
                video_resnet::build(arch.name(), &w, device)?
            }
            ModelSource::Builtin(arch) => {
                let Some(wpath) = &req.weights else {
                    return Err(Error::input(
                        arch.name(),
                        "built-in architectures need a `weights` file (torchvision state_dict as .safetensors or .pth)",
                    ));
                };
                let w = Weights::load(wpath, device)?;
                match arch {
                    Arch::EfficientNetLite0 => efficientnet::build(&w, device)?,
                    Arch::Yamnet => yamnet::build(&w, device)?,
                    _ => resnet::build_builtin(arch.name(), &w, device)?,
                }
            }
            ModelSource::Onnx(path) => from_onnx(path, None, device)?,
            ModelSource::Config(path) => {
                let cfg = config::ModelFile::read(path)?;
                if cfg.model.arch == "onnx" {
                    let file = match (&req.weights, &cfg.model.weights) {
                        (Some(p), _) => p.clone(),
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
                        net.body.check_target(t)?;
                        net.default_layer = t.clone();
                    }
                    net.labels = cfg.labels()?;
                    return finish_load(net, req);
                }
                let wpath: PathBuf = match (&req.weights, &cfg.model.weights) {
                    (Some(p), _) => p.clone(),
                    (None, Some(p)) => cfg.resolve(p),
                    (None, None) => return Err(Error::config(
                        path,
                        "no weights: give a `weights` file or set `weights = \"file\"` in [model]",
                    )),
                };
                let w = Weights::load(&wpath, device)?;
                cfg.build(&w, req.target.as_deref(), device)?
            }
        };
        finish_load(net, req)
    }
}

/// An ONNX model; without a config the input is taken from the graph (pictures scaled
/// to 0..1, signals as they are).
#[cfg(feature = "onnx")]
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
            let kind = match dims.len() {
                2 => InputKind::Signal,
                3 => InputKind::Image,
                _ => InputKind::Clip,
            };
            let image = kind != InputKind::Signal;
            InputSpec {
                kind,
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
        input,
        labels: None,
        num_classes: g.num_classes(),
        default_layer: g.default_target.clone(),
        device: device.clone(),
        multi_label: false,
        body: Arc::new(g),
    })
}

#[cfg(not(feature = "onnx"))]
fn from_onnx(path: &Path, _input: Option<InputSpec>, _device: &Device) -> Result<Network> {
    Err(Error::input(
        path,
        "this build of camstream-core has no ONNX support (enable the `onnx` feature)",
    ))
}

fn finish_load(mut net: Network, req: &ModelRequest) -> Result<Network> {
    if let Some(lf) = &req.labels {
        net.labels = Some(config::read_labels(lf)?);
    }
    if let Some(l) = &net.labels {
        if l.len() != net.num_classes {
            return Err(Error::input(
                req.labels
                    .clone()
                    .unwrap_or_else(|| req.source.to_string().into()),
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
    /// Every name a target layer can have, in network order.
    pub fn target_names(&self) -> Vec<String> {
        self.body.target_names()
    }

    /// Logits (N, classes).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.body.forward(x)
    }

    /// Other names of a target layer (see [`Body::aliases`]).
    pub fn aliases(&self, layer: &str) -> Vec<String> {
        self.body.aliases(layer)
    }

    /// See [`Body::fixed_batch`].
    pub fn fixed_batch(&self) -> Option<usize> {
        self.body.fixed_batch()
    }

    /// Every target layer with its per-sample output shape.
    pub fn layer_shapes(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let mut shape = vec![1, self.input.channels];
        shape.extend(&self.input.size);
        let x = Tensor::zeros(shape, candle_core::DType::F32, &self.device)?;
        self.body.layer_shapes(&x)
    }

    pub fn label(&self, class: usize) -> String {
        self.labels
            .as_ref()
            .and_then(|l| l.get(class).cloned())
            .unwrap_or_else(|| format!("class {class}"))
    }

    /// A class given as an index or a label.
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
