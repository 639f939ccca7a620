//! camstream's core: CNNs that can be cut at any layer, their weights (safetensors,
//! PyTorch state dicts, ONNX), the CAM maths and the preprocessing that turns decoded
//! pictures and signal windows into model tensors. It depends on candle and nothing
//! media-related, so it builds without FFmpeg, protoc (ONNX is the `onnx` feature) or
//! a plotting library.
//!
//! Data flows one way: `preprocess` → `model` (cut at the target layer) → `cam`.

pub mod cam;
pub mod device;
pub mod error;
pub mod explain;
pub mod metrics;
pub mod model;
pub mod preprocess;
pub mod random;
pub mod record;

pub use cam::{CamConfig, Method, Targets};
pub use error::{Error, Result};
pub use explain::{ExplainOptions, Explainer, Explanation, Input};
pub use model::{Arch, ModelRequest, ModelSource, Network};
