//! camstream's synthetic tasks (shapes, ECG, audio events) with ground truth known by
//! construction, the candle trainer for the sample models, and the localisation
//! metrics (pointing game, energy in region) that check a map against that truth, on
//! those tasks or on a user's labelled folder or manifest.

pub mod arch;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod synth;
pub mod tasks;
pub mod train;

pub use error::{Error, Result};
