//! pytorch-grad-cam's `aug_smooth`: the CAM of each test-time augmentation of ttach's
//! `Compose([HorizontalFlip(), Multiply([0.9, 1, 1.1])])`, mapped back and averaged.

use candle_core::{Tensor, D};

use crate::error::Result;

/// One augmentation: flip the last (width or length) axis, then scale the input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augmentation {
    pub flip: bool,
    pub factor: f64,
}

/// ttach's product order: every factor unflipped, then every factor flipped.
pub const AUGMENTATIONS: [Augmentation; 6] = {
    const fn a(flip: bool, factor: f64) -> Augmentation {
        Augmentation { flip, factor }
    }
    [
        a(false, 0.9),
        a(false, 1.0),
        a(false, 1.1),
        a(true, 0.9),
        a(true, 1.0),
        a(true, 1.1),
    ]
};

impl Augmentation {
    pub fn is_identity(self) -> bool {
        !self.flip && self.factor == 1.0
    }

    /// The augmented batch `(N, C, spatial...)`: ttach flips before it multiplies.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        let x = if self.flip { flip_last(x)? } else { x.clone() };
        Ok(if self.factor == 1.0 {
            x
        } else {
            x.affine(self.factor, 0.0)?
        })
    }

    /// A map at the input's size back in the input's frame (`deaugment_mask`: the flip
    /// is undone, the factor leaves a mask alone).
    pub fn undo_on_map(self, map: &mut [f32], size: &[usize]) {
        if self.flip {
            let w = *size.last().unwrap_or(&1);
            map.chunks_mut(w.max(1)).for_each(<[f32]>::reverse);
        }
    }
}

/// `x` reversed along its last axis.
fn flip_last(x: &Tensor) -> Result<Tensor> {
    let n = x.dim(D::Minus1)?;
    let idx: Vec<u32> = (0..n as u32).rev().collect();
    let idx = Tensor::from_vec(idx, n, x.device())?;
    Ok(x.index_select(&idx, x.rank() - 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn flip_and_scale_then_undo() {
        let x =
            Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], (1, 1, 2, 3), &Device::Cpu).unwrap();
        let a = Augmentation {
            flip: true,
            factor: 1.1,
        };
        let y = a
            .apply(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = [3.3f32, 2.2, 1.1, 6.6, 5.5, 4.4];
        assert!(
            y.iter().zip(want).all(|(p, q)| (p - q).abs() < 1e-6),
            "{y:?}"
        );
        let mut m = vec![1f32, 2., 3., 4., 5., 6.];
        a.undo_on_map(&mut m, &[2, 3]);
        assert_eq!(m, [3., 2., 1., 6., 5., 4.]);
        assert_eq!(AUGMENTATIONS.iter().filter(|a| a.is_identity()).count(), 1);
    }
}
