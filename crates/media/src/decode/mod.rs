//! Decoding: recorded signals (WAV, CSV, WFDB, arrays; no FFmpeg) and, with the `video`
//! feature, video streams through FFmpeg.

pub mod signal;
#[cfg(feature = "video")]
mod video;

#[cfg(feature = "video")]
pub use video::*;
