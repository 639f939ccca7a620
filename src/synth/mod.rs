//! Synthetic tasks with ground truth known by construction: where the evidence is, so a
//! heatmap can be checked against it. Deterministic by seed (ChaCha8 is stable across
//! platforms and versions).

pub mod audio;
pub mod ecg;
pub mod shapes;
pub mod video;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub type Rng = ChaCha8Rng;

pub fn rng(seed: u64) -> Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// The three tasks, by the names `camstream train/eval` accept.
pub const TASKS: &[&str] = &["shapes", "ecg", "audio"];
