//! Errors of output files, pictures, plots and resampling. Video and signal readers
//! have their own ([`crate::decode::DecodeError`], [`crate::encode::EncodeError`],
//! [`crate::decode::signal::SignalError`]).

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

    /// A file that cannot be read, drawn or written as asked.
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },

    #[error("unknown {what} `{name}`; supported: {}", supported.join(", "))]
    Unsupported {
        what: &'static str,
        name: String,
        supported: Vec<String>,
    },

    #[error("tensor maths: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl Error {
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File {
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
