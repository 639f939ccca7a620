//! The library's one error type. Every variant carries what a user needs to fix the
//! problem (the tensor, both shapes, the valid names), so the binary can print it as
//! a single line.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {msg}")]
    Input { path: PathBuf, msg: String },

    #[error("config {path}: {msg}")]
    Config { path: PathBuf, msg: String },

    #[error("weights {file}: tensor `{name}` is missing (the architecture needs it{hint})")]
    MissingTensor {
        file: PathBuf,
        name: String,
        hint: String,
    },

    #[error(
        "weights {file}: tensor `{name}` has shape {found:?}, the architecture expects {expected}"
    )]
    ShapeMismatch {
        file: PathBuf,
        name: String,
        expected: String,
        found: Vec<usize>,
    },

    #[error("weights {file}: {msg}")]
    Weights { file: PathBuf, msg: String },

    #[error("unknown layer `{name}`; valid target layers: {}", some(valid))]
    UnknownLayer { name: String, valid: Vec<String> },

    #[error("layer `{name}` cannot be a Grad-CAM target: {why}")]
    BadTarget { name: String, why: String },

    #[error("node `{node}`: unknown ONNX operator `{op}`; supported: {}", supported.join(", "))]
    UnsupportedOperator {
        node: String,
        op: String,
        supported: Vec<&'static str>,
    },

    #[error("unknown {what} `{name}`; supported: {}", supported.join(", "))]
    Unsupported {
        what: &'static str,
        name: String,
        supported: Vec<String>,
    },

    #[error("class {class} is out of range: the model has {num_classes} classes (0..={})", num_classes.saturating_sub(1))]
    ClassOutOfRange { class: usize, num_classes: usize },

    #[error("unknown class label `{label}`; labels: {}", labels.join(", "))]
    UnknownLabel { label: String, labels: Vec<String> },

    #[error("{classes} target classes given for a batch of {batch} samples: give one class for all, or exactly one per sample")]
    ClassCount { classes: usize, batch: usize },

    #[error("sample {sample} of shape {shape:?} does not fit the model: {msg}")]
    InputShape {
        sample: usize,
        shape: Vec<usize>,
        msg: String,
    },

    #[error("`{name}` {why}")]
    BadOption { name: &'static str, why: String },

    #[error("{0}")]
    Device(String),

    #[error("tensor maths: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn input(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn config(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// A list for a one-line message: an ONNX zoo model has hundreds of target tensors.
fn some(names: &[String]) -> String {
    const SHOWN: usize = 24;
    if names.len() <= SHOWN {
        return names.join(", ");
    }
    format!(
        "{}, ... ({} more, and the last: {})",
        names[..SHOWN - 1].join(", "),
        names.len() - SHOWN,
        names[names.len() - 1]
    )
}
