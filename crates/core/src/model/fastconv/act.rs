//! The activation a CPU op applies as it stores its outputs (a convolution's epilogue).

use candle_core::{DType, Tensor};

/// An activation fused into an op. ReLU, ReLU6 and Sigmoid have gradients that can be
/// read back from their outputs, so ops that fuse them keep their backward. SiLU and
/// HardSwish do not: they are fused only where no gradient flows (the part of a network
/// before its cut), and their backward is an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Act {
    #[default]
    Identity,
    Relu,
    Relu6,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// x · sigmoid(x) (EfficientNet; torch exports it as Sigmoid and Mul)
    Silu,
    /// x · clamp(x / 6 + 1/2, 0, 1) (MobileNetV3)
    HardSwish,
}

impl Act {
    #[inline(always)]
    pub(super) fn apply(self, v: f32) -> f32 {
        match self {
            Act::Identity => v,
            Act::Relu => v.max(0.0),
            Act::Relu6 => v.clamp(0.0, 6.0),
            Act::Sigmoid => sigmoid(v),
            Act::Silu => v * sigmoid(v),
            Act::HardSwish => v * (v * (1.0 / 6.0) + 0.5).clamp(0.0, 1.0),
        }
    }

    /// The activation over a run of values, the variant chosen once per run (so that
    /// each loop is a plain, vectorised one).
    #[inline(always)]
    pub(super) fn apply_all(self, v: &mut [f32]) {
        match self {
            Act::Identity => {}
            Act::Relu => v.iter_mut().for_each(|x| *x = Act::Relu.apply(*x)),
            Act::Relu6 => v.iter_mut().for_each(|x| *x = Act::Relu6.apply(*x)),
            Act::Sigmoid => v.iter_mut().for_each(|x| *x = Act::Sigmoid.apply(*x)),
            Act::Silu => v.iter_mut().for_each(|x| *x = Act::Silu.apply(*x)),
            Act::HardSwish => v.iter_mut().for_each(|x| *x = Act::HardSwish.apply(*x)),
        }
    }

    /// Whether the gradient through it can be computed from its output alone.
    pub fn invertible(self) -> bool {
        !matches!(self, Act::Silu | Act::HardSwish)
    }

    /// The activation as candle ops, where the fused op does not run.
    pub fn tensor(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Act::Identity => Ok(x.clone()),
            Act::Relu => x.relu(),
            Act::Relu6 => x.clamp(0f32, 6f32),
            Act::Sigmoid => candle_nn::ops::sigmoid(x),
            Act::Silu => x * candle_nn::ops::sigmoid(x)?,
            Act::HardSwish => x * x.affine(1.0 / 6.0, 0.5)?.clamp(0f32, 1f32)?,
        }
    }

    /// The output gradient through the activation, from the activation's output `y`
    /// (PyTorch's masks: y > 0 for ReLU, 0 < y < 6 for ReLU6; y (1 - y) for Sigmoid).
    pub(super) fn backward(self, y: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Act::Identity => Ok(grad.clone()),
            Act::Relu => grad.mul(&y.gt(0f32)?.to_dtype(DType::F32)?),
            Act::Relu6 => {
                let inside =
                    (y.gt(0f32)?.to_dtype(DType::F32)? * y.lt(6f32)?.to_dtype(DType::F32)?)?;
                grad.mul(&inside)
            }
            Act::Sigmoid => grad.mul(&(y * (1.0 - y)?)?),
            Act::Silu | Act::HardSwish => candle_core::bail!(
                "{self:?} was fused where a gradient flows; it is fused only where none does"
            ),
        }
    }
}

/// 1 / (1 + e^-x), with [`exp`].
#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// erf(x) by Abramowitz and Stegun's 7.1.26 (absolute error below 1.5e-7; in float32,
/// within 6e-7 of libm's), with [`exp`]: 1 - (a1 t + ... + a5 t^5) e^(-x^2), t = 1 / (1 +
/// p |x|), odd in x. PyTorch's vectorised CPU erf evaluates the same formula. FMA only,
/// as [`exp`].
#[inline(always)]
pub(super) fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    // a5 .. a1, for Horner.
    const A: [f32; 5] = [
        1.061_405_4,
        -1.453_152_1,
        1.421_413_8,
        -0.284_496_74,
        0.254_829_6,
    ];
    let a = x.abs();
    let t = 1.0 / P.mul_add(a, 1.0);
    let poly = A[1..].iter().fold(A[0], |p, &c| p.mul_add(t, c));
    (1.0 - poly * t * exp(-a * a)).copysign(x)
}

/// x Φ(x) = x/2 (1 + erf(x/√2)), GELU's exact form (ConvNeXt). FMA only, as [`exp`].
#[inline(always)]
pub(super) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// e^x to about 1 ulp, in plain arithmetic so that it vectorises inside the ops (libm's
/// expf is a call per value: a tenth of an EfficientNet forward went to it). x = n ln 2 +
/// r with |r| <= ln 2 / 2, e^r by its Taylor polynomial to r^7/7!, 2^n in the exponent
/// bits. Only call it from code compiled with FMA (the multiversioned ops): elsewhere
/// `mul_add` is a library call. Saturates below -87.3 (to e^-87.3) and above 88.3 (to e^88.3).
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| < 2^10.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Horner in fused multiply-adds, every coefficient a product (the ops that call this
    // are compiled for FMA; a division by 5040 here cost as much as the rest).
    const C: [f32; 8] = [
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
    let p = C[1..].iter().fold(C[0], |p, &c| p.mul_add(r, c));
    // `t` holds n in its low mantissa bits: 2^n without `n as i32`, which the compiler
    // turned into one checked conversion per lane (NaN and range) in every vector.
    let k = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    p * f32::from_bits(((k + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The polynomial exp against libm's over the range activations see, and at the ends.
    #[test]
    fn exp_is_within_two_ulps_of_libm() {
        let mut worst = 0f32;
        for i in -87_000..=88_000 {
            let x = i as f32 * 1e-3 + 1.7e-4;
            let (a, b) = (exp(x), x.exp());
            worst = worst.max((a - b).abs() / b);
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert!(exp(-200.0) < 1e-37 && exp(-200.0) > 0.0);
        assert!(exp(200.0).is_finite());
        assert!(sigmoid(-200.0) < 1e-38);
        assert_eq!(sigmoid(200.0), 1.0);
    }

    /// The polynomial erf against libm's: within A&S's 1.5e-7 plus float32's rounding of
    /// the sum near 1 (the worst is 5.1e-7, four ulps there), odd, saturated in the tails.
    #[test]
    fn erf_is_within_abramowitz_stegun_of_libm() {
        let xs: Vec<f32> = (-10_000..=10_000)
            .map(|i| i as f32 * 1e-3 + 3.1e-5)
            .collect();
        // candle's erf is libm's.
        let libm = candle_core::Tensor::new(xs.as_slice(), &candle_core::Device::Cpu)
            .and_then(|t| t.erf()?.to_vec1::<f32>())
            .expect("candle's erf");
        let mut worst = 0f32;
        for (&x, &want) in xs.iter().zip(&libm) {
            worst = worst.max((erf(x) - want).abs());
            assert_eq!(erf(-x), -erf(x));
        }
        assert!(worst < 6e-7, "worst absolute error {worst:e}");
        assert_eq!(erf(30.0), 1.0);
        assert_eq!(erf(-1e30), -1.0);
        assert_eq!(gelu(-30.0), 0.0);
        assert_eq!(gelu(30.0), 30.0);
    }
}
