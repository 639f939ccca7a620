//! The batch crate's errors. Each says whether a retry can help: storage and local I/O
//! faults are retriable, a bad manifest or shard setting is not.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: {why}")]
    Manifest {
        path: String,
        line: usize,
        why: String,
    },
    /// An option or environment value that cannot work; `name` is the parameter.
    #[error("`{name}`: {why}")]
    BadOption { name: &'static str, why: String },
    #[error("{0}")]
    Core(#[from] camstream_core::Error),
    #[error("{0}")]
    Media(#[from] camstream_media::Error),
}

pub type Result<T, E = BatchError> = std::result::Result<T, E>;

impl BatchError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub(crate) fn store(what: impl Into<String>) -> impl FnOnce(object_store::Error) -> Self {
        let what = what.into();
        move |source| Self::Store { what, source }
    }
}
