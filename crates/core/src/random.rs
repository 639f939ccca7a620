//! The seeded generator behind random weights and synthetic data: ChaCha8 is stable
//! across platforms and versions, so a seed always gives the same numbers.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub type Rng = ChaCha8Rng;

pub fn rng(seed: u64) -> Rng {
    ChaCha8Rng::seed_from_u64(seed)
}
