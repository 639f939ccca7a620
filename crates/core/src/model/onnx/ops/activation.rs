//! Pointwise activations. Each is a few whole-tensor candle ops, so candle's autograd
//! gives the gradient PyTorch's backward formula gives (away from the kinks).

use super::{one, scalar, unsupported, Ctx, OpFn, OpResult};

pub(super) const OPS: &[(&str, OpFn)] = &[
    ("Clip", clip),
    ("Elu", elu),
    ("Erf", erf),
    ("Gelu", gelu),
    ("HardSigmoid", hard_sigmoid),
    ("HardSwish", hard_swish),
    ("LeakyRelu", leaky_relu),
    ("Relu", relu),
    ("Sigmoid", sigmoid),
    ("Softplus", softplus),
    ("Tanh", tanh),
];

fn relu(c: &Ctx) -> OpResult {
    one(c.input(0)?.relu()?)
}

fn sigmoid(c: &Ctx) -> OpResult {
    one(candle_nn::ops::sigmoid(&c.input(0)?)?)
}

fn tanh(c: &Ctx) -> OpResult {
    one(c.input(0)?.tanh()?)
}

fn erf(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    match crate::model::fastconv::gelu::erf(&x)? {
        Some(y) => one(y),
        None => one(x.erf()?),
    }
}

fn softplus(c: &Ctx) -> OpResult {
    // log(1 + e^x), written stably: relu(x) + log(1 + e^-|x|).
    let x = c.input(0)?;
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    one((x.relu()? + tail)?)
}

fn elu(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let alpha = c.float("alpha").unwrap_or(1.0) as f64;
    let neg = ((x.minimum(0f32)?.exp()? - 1.0)? * alpha)?;
    one((x.relu()? + neg)?)
}

fn leaky_relu(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let a = c.float("alpha").unwrap_or(0.01) as f64;
    one((x.relu()? + (x.minimum(0f32)? * a)?)?)
}

/// Clip (ReLU6 and friends); bounds are inputs from opset 11, attributes before.
fn clip(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let lo = match c.opt(1) {
        Some(t) => scalar(&t)?,
        None => c.float("min").unwrap_or(f32::NEG_INFINITY),
    };
    let hi = match c.opt(2) {
        Some(t) => scalar(&t)?,
        None => c.float("max").unwrap_or(f32::INFINITY),
    };
    one(x.clamp(lo, hi)?)
}

/// max(0, min(1, alpha·x + beta)); torch writes alpha = 1/6 (ONNX's default is 0.2).
fn hard_sigmoid_of(
    x: &candle_core::Tensor,
    alpha: f32,
    beta: f32,
) -> candle_core::Result<candle_core::Tensor> {
    x.affine(alpha as f64, beta as f64)?.clamp(0f32, 1f32)
}

fn hard_sigmoid(c: &Ctx) -> OpResult {
    let alpha = c.float("alpha").unwrap_or(0.2);
    let beta = c.float("beta").unwrap_or(0.5);
    one(hard_sigmoid_of(&c.input(0)?, alpha, beta)?)
}

/// x · HardSigmoid(x) with alpha 1/6, beta 1/2 (MobileNetV3).
fn hard_swish(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    one((&x * hard_sigmoid_of(&x, 1.0 / 6.0, 0.5)?)?)
}

/// Gelu (opset 20): exact (erf) or the tanh approximation.
fn gelu(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    match c.string("approximate").as_deref() {
        None | Some("none") => match crate::model::fastconv::gelu::gelu_erf(&x)? {
            Some(y) => one(y),
            None => one(x.gelu_erf()?),
        },
        Some("tanh") => one(x.gelu()?),
        Some(o) => Err(unsupported(format!("Gelu approximate `{o}`"))),
    }
}
