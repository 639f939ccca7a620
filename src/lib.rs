//! camstream: Grad-CAM for CNNs over pictures, video and 1D signals, on candle.
//!
//! Data flows one way: `preprocess` → `model` (cut at the target layer) → `cam` →
//! `render` → `io`.

pub mod cam;
pub mod decode;
pub mod device;
pub mod encode;
pub mod error;
pub mod eval;
pub mod io;
pub mod model;
pub mod pipeline;
pub mod preprocess;
pub mod render;
pub mod synth;
pub mod train;

pub use error::{Error, Result};
