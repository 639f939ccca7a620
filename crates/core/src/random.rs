//! The seeded generator behind random weights and synthetic data: ChaCha8 is stable
//! across platforms and versions, so a seed always gives the same numbers.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub type Rng = ChaCha8Rng;

pub fn rng(seed: u64) -> Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` values in [-1, 1) for a named tensor that a few lines of numpy reproduce bit for
/// bit (tests compare against PyTorch networks built from them, and random built-in
/// weights too large to ship are made this way on both sides):
///
/// ```python
/// def portable(name, seed, n):
///     h = 0xCBF29CE484222325                      # FNV-1a 64 of the name
///     for b in name.encode():
///         h = ((h ^ b) * 0x100000001B3) % 2**64
///     base = np.uint64(h ^ ((seed * 0x9E3779B97F4A7C15) % 2**64))
///     z = base + np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
///     z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
///     z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
///     z = z ^ (z >> np.uint64(31))                # splitmix64
///     return (z >> np.uint64(40)).astype(np.float32) / np.float32(2**23) - np.float32(1)
/// ```
pub fn portable(name: &str, seed: u64, n: usize) -> Vec<f32> {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    let h = name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    });
    let base = h ^ seed.wrapping_mul(GOLDEN);
    (0..n as u64)
        .map(|i| {
            let mut z = base.wrapping_add(i).wrapping_add(GOLDEN);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Test tensors of uniform values in [-0.5, 0.5) from a small LCG (no RNG state to
/// thread through).
#[cfg(test)]
pub(crate) fn test_tensor(shape: &[usize], seed: u64) -> candle_core::Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    candle_core::Tensor::from_vec(v, shape, &candle_core::Device::Cpu).expect("shape fits")
}

#[cfg(test)]
mod tests {
    #[test]
    fn portable_values_are_the_python_ones() {
        // portable("fc.bias", 0, 4) and portable("stem.0.weight", 3, 2) with the numpy
        // lines of the doc comment.
        assert_eq!(super::portable("fc.bias", 0, 4), PY_FC_BIAS);
        assert_eq!(super::portable("stem.0.weight", 3, 2), PY_STEM);
    }
    const PY_FC_BIAS: [f32; 4] = [
        -0.044_697_404,
        -0.549_157_4,
        -0.000_191_569_33,
        -0.501_048_7,
    ];
    const PY_STEM: [f32; 2] = [-0.426_475_88, -0.014_798_284];
}
