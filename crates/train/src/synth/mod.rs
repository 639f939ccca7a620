//! Synthetic tasks with ground truth known by construction: where the evidence is, so a
//! heatmap can be checked against it. Deterministic by seed (ChaCha8 is stable across
//! platforms and versions).

pub mod audio;
pub mod backgrounds;
pub mod ecg;
pub mod shapes;
pub mod video;

pub use camstream_core::random::{rng, Rng};

/// The three tasks, by the names `camstream train/eval` accept.
pub const TASKS: &[&str] = &["shapes", "ecg", "audio"];
