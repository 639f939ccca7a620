//! Readers for recorded 1D signals (WAV, CSV, WFDB, `.npy`, raw float32), each streamed
//! chunk by chunk so a 24-hour recording is never held in memory. Every reader yields
//! interleaved frames of physical values (WAV: full scale = 1.0; WFDB: the header's
//! units; CSV and arrays: as written).

mod csv;
mod npy;
mod wav;
pub mod wfdb;

use std::path::{Path, PathBuf};

pub use self::csv::CsvReader;
pub use self::npy::NpyReader;
pub use self::wav::WavReader;
pub use self::wfdb::WfdbReader;

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("{path}: no such file")]
    NotFound { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Corrupt, truncated or malformed content.
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{path}: holds no samples")]
    Empty { path: PathBuf },
    #[error("{path}: sample {frame} of channel {channel} is NaN or infinite")]
    NotFinite {
        path: PathBuf,
        frame: u64,
        channel: usize,
    },
    #[error("{path}: unsupported signal format `{ext}`; supported: .wav, .csv, .hea/.dat (WFDB 16, 212), .npy, .f32 (raw little-endian float32)")]
    Unsupported { path: PathBuf, ext: String },
    #[error("{path}: {msg}")]
    Options { path: PathBuf, msg: String },
}

impl SignalError {
    pub(crate) fn format(path: &Path, msg: impl Into<String>) -> Self {
        SignalError::Format {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            SignalError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            SignalError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// What a recording is, known before its samples are read.
#[derive(Clone, Debug)]
pub struct SignalInfo {
    pub path: PathBuf,
    /// Samples per second; `None` when the file does not say (arrays without `--rate`).
    pub rate: Option<f64>,
    /// One name per channel (CSV header, WFDB description, or `ch0`, `ch1`, ...).
    pub channels: Vec<String>,
    /// Frames (samples per channel) when the header says so.
    pub frames: Option<u64>,
    pub format: String,
}

/// A stream of interleaved frames.
pub trait SignalReader: Send {
    fn info(&self) -> &SignalInfo;
    /// Appends up to `max_frames` interleaved frames to `out`; returns how many were
    /// read, 0 at the end of the recording.
    fn read(&mut self, max_frames: usize, out: &mut Vec<f32>) -> Result<usize, SignalError>;
}

/// How to read files that do not describe themselves fully.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Sample rate for inputs without one (CSV without a time column, arrays).
    pub rate: Option<f64>,
    /// CSV: read only this column (by header name or 0-based index).
    pub column: Option<String>,
    /// Raw `.f32`: interleaved channels.
    pub raw_channels: usize,
}

/// Opens a recording by its extension (`.hea`, `.dat` or an extension-less record path
/// are WFDB).
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn SignalReader>, SignalError> {
    let options = |msg: String| SignalError::Options {
        path: path.to_path_buf(),
        msg,
    };
    if let Some(r) = opts.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        return Err(options(format!(
            "`rate` must be a positive number of Hz, got {r}"
        )));
    }
    if path.is_dir() {
        return Err(options(
            "is a folder; give the recordings themselves (a WFDB record as its .hea file)".into(),
        ));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let reader: Box<dyn SignalReader> = match ext.as_str() {
        "wav" | "wave" => Box::new(WavReader::open(path)?),
        "csv" | "tsv" | "txt" => Box::new(CsvReader::open(path, opts)?),
        "hea" | "dat" | "" => Box::new(WfdbReader::open(&path.with_extension(""))?),
        "npy" => Box::new(NpyReader::open(path, opts.rate)?),
        "f32" | "raw" => Box::new(NpyReader::open_raw(path, opts.rate, opts.raw_channels)?),
        _ => {
            return Err(SignalError::Unsupported {
                path: path.to_path_buf(),
                ext: format!(".{ext}"),
            })
        }
    };
    if let (Some(r), Some(opt)) = (reader.info().rate, opts.rate) {
        if (r - opt).abs() > 1e-9 * r.max(1.0) && !matches!(ext.as_str(), "npy" | "f32" | "raw") {
            return Err(SignalError::Options {
                path: path.to_path_buf(),
                msg: format!("the file says {r} Hz but `rate` says {opt} Hz; drop `rate`"),
            });
        }
    }
    Ok(reader)
}

/// Reads a whole (short) recording into per-channel vectors; for tests and small files.
pub fn read_all(reader: &mut dyn SignalReader) -> Result<Vec<Vec<f32>>, SignalError> {
    let c = reader.info().channels.len();
    let mut inter = Vec::new();
    while reader.read(1 << 16, &mut inter)? > 0 {}
    let mut out = vec![Vec::with_capacity(inter.len() / c.max(1)); c];
    for (i, v) in inter.into_iter().enumerate() {
        out[i % c].push(v);
    }
    Ok(out)
}
