//! Errors of training, saving and evaluating the sample models.

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
    #[error("{0}")]
    Training(String),
    /// A labelled dataset (folder or manifest) that cannot be used as it is.
    #[error("{path}: {msg}")]
    Data { path: PathBuf, msg: String },
    #[error(transparent)]
    Core(#[from] camstream_core::Error),
    #[error(transparent)]
    Media(#[from] camstream_media::Error),
    #[error("tensor maths: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data {
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
