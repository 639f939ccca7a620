//! camstream's media: everything that touches files and pixels. FFmpeg video decode and
//! encode, streamed signal readers (WAV, CSV, WFDB, `.npy`), resampling, output files
//! written under a temporary name, and rendering (colormaps, overlays, labels, plots).
//! The numbers themselves come from `camstream-core`.

pub mod decode;
#[cfg(feature = "video")]
pub mod encode;
pub mod error;
#[cfg(feature = "video")]
pub mod frame;
pub mod guard;
pub mod inputs;
pub mod io;
pub mod npy;
pub mod picture;
pub mod render;
pub mod resample;

pub use error::{Error, Result};
