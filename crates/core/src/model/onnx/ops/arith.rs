//! Arithmetic with NumPy broadcasting, and the matrix products.

use super::{one, scalar, Ctx, OpFn, OpResult};

pub(super) const OPS: &[(&str, OpFn)] = &[
    ("Add", add),
    ("Div", div),
    ("Exp", exp),
    ("Gemm", gemm),
    ("MatMul", matmul),
    ("Mul", mul),
    ("Neg", neg),
    ("Pow", pow),
    ("Reciprocal", reciprocal),
    ("Sqrt", sqrt),
    ("Sub", sub),
];

fn add(c: &Ctx) -> OpResult {
    one(c.input(0)?.broadcast_add(&c.input(1)?)?)
}
fn sub(c: &Ctx) -> OpResult {
    one(c.input(0)?.broadcast_sub(&c.input(1)?)?)
}
fn mul(c: &Ctx) -> OpResult {
    one(c.input(0)?.broadcast_mul(&c.input(1)?)?)
}
fn div(c: &Ctx) -> OpResult {
    one(c.input(0)?.broadcast_div(&c.input(1)?)?)
}
fn sqrt(c: &Ctx) -> OpResult {
    one(c.input(0)?.sqrt()?)
}
fn exp(c: &Ctx) -> OpResult {
    one(c.input(0)?.exp()?)
}
fn neg(c: &Ctx) -> OpResult {
    one(c.input(0)?.neg()?)
}
fn reciprocal(c: &Ctx) -> OpResult {
    one(c.input(0)?.recip()?)
}

/// Pow with a constant scalar exponent (LayerNorm's variance in opsets < 17 squares).
fn pow(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let e = c.input(1)?;
    if e.elem_count() == 1 {
        let p = scalar(&e)?;
        return one(if p == 2.0 {
            x.sqr()?
        } else {
            x.powf(p as f64)?
        });
    }
    // x^e = exp(e·ln x), for positive x as ONNX's float Pow defines it.
    one(x.log()?.broadcast_mul(&e)?.exp()?)
}

fn matmul(c: &Ctx) -> OpResult {
    let (a, b) = (c.input(0)?, c.input(1)?);
    // A weight (K, N) against activations (..., K): one 2D product over all rows.
    if b.rank() == 2 && a.rank() > 2 {
        let mut shape = a.dims().to_vec();
        let k = *shape.last().unwrap_or(&1);
        let rows = a.elem_count() / k.max(1);
        let y = a.reshape((rows, k))?.matmul(&b)?;
        *shape.last_mut().expect("rank > 2") = b.dim(1)?;
        return one(y.reshape(shape)?);
    }
    one(a.broadcast_matmul(&b)?)
}

fn gemm(c: &Ctx) -> OpResult {
    let (mut a, mut b) = (c.input(0)?, c.input(1)?);
    if c.int("transA").unwrap_or(0) != 0 {
        a = a.t()?;
    }
    if c.int("transB").unwrap_or(0) != 0 {
        b = b.t()?;
    }
    let mut y = a.matmul(&b)?;
    let alpha = c.float("alpha").unwrap_or(1.0);
    if alpha != 1.0 {
        y = (y * alpha as f64)?;
    }
    if let Some(bias) = c.opt(2) {
        let beta = c.float("beta").unwrap_or(1.0) as f64;
        let bias = if beta != 1.0 { (bias * beta)? } else { bias };
        y = y.broadcast_add(&bias)?;
    }
    one(y)
}
