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

/// Threads for a codec that shares the machine with the network: a quarter of the
/// cores, at least one. One codec thread costs less CPU per frame than several (frame
/// threads copy and wait), and a CPU model needs every core it can get; one thread
/// still decodes or encodes 720p several times faster than a CPU model explains it.
/// On the 2-core EPYC, libx264's 720p ultrafast took 6.0 ms of CPU a frame with one
/// thread against 7.2 with its own three (528 frames).
#[cfg(feature = "video")]
pub fn codec_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).max(1))
}
