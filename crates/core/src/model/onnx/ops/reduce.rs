//! Reductions: global pooling, ReduceMean/Sum/Max (the pooling of MnasNet, the SE
//! blocks of MobileNetV3 and EfficientNet) and Softmax.

use super::{axis, one, unsupported, Ctx, OpError, OpFn, OpResult};
use candle_core::Tensor;

pub(super) const OPS: &[(&str, OpFn)] = &[
    ("GlobalAveragePool", global_pool),
    ("GlobalMaxPool", global_pool),
    ("ReduceMax", reduce),
    ("ReduceMean", reduce),
    ("ReduceSum", reduce),
    ("Softmax", softmax),
];

/// The ops that pool every spatial position of a map to one value per channel (the
/// default target is the input of the last of them).
pub(in crate::model::onnx) fn is_global_pool(op: &str) -> bool {
    matches!(
        op,
        "GlobalAveragePool"
            | "GlobalMaxPool"
            | "ReduceMean"
            | "ReduceMax"
            | "AveragePool"
            | "MaxPool"
    )
}

fn global_pool(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let op = if c.node.op == "GlobalAveragePool" {
        "ReduceMean"
    } else {
        "ReduceMax"
    };
    one(reduce_trailing(op, &x, 2, true)?)
}

fn reduce(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let given = c.ints_from(1, "axes")?.unwrap_or_default();
    let mut axes: Vec<usize> = if given.is_empty() {
        if c.int("noop_with_empty_axes").unwrap_or(0) != 0 {
            return one(x);
        }
        (0..x.rank()).collect()
    } else {
        given
            .iter()
            .map(|&a| axis(a, x.rank()))
            .collect::<Result<_, _>>()?
    };
    axes.sort_unstable();
    axes.dedup();
    let keep = c.int("keepdims").unwrap_or(1) != 0;
    let op = c.node.op.as_str();
    // Trailing axes (a ReduceMean over H and W: SE blocks, dynamo's global pooling).
    let trailing = axes.windows(2).all(|w| w[1] == w[0] + 1)
        && axes.last().is_some_and(|&a| a + 1 == x.rank());
    if axes.len() > 1 && trailing {
        return one(reduce_trailing(op, &x, axes[0], keep)?);
    }
    let mut y = x;
    for &a in axes.iter().rev() {
        y = reduce_axis(op, y, a, keep)?;
    }
    one(y)
}

/// `op` over every axis from `first` on, reduced as one contiguous axis (candle's
/// reduction over a strided axis is slow); with `keep`, those axes stay as 1s.
fn reduce_trailing(op: &str, x: &Tensor, first: usize, keep: bool) -> Result<Tensor, OpError> {
    let mut shape = x.dims()[..first].to_vec();
    if keep {
        shape.extend(std::iter::repeat_n(1, x.rank() - first));
    }
    Ok(reduce_axis(op, x.flatten_from(first)?, first, true)?.reshape(shape)?)
}

/// One ONNX reduction (ReduceMean, ReduceSum, ReduceMax) over axis `a`.
fn reduce_axis(op: &str, y: Tensor, a: usize, keep: bool) -> Result<Tensor, OpError> {
    Ok(match (op, keep) {
        ("ReduceMean", true) => y.mean_keepdim(a)?,
        ("ReduceMean", false) => y.mean(a)?,
        ("ReduceSum", true) => y.sum_keepdim(a)?,
        ("ReduceSum", false) => y.sum(a)?,
        ("ReduceMax", true) => y.max_keepdim(a)?,
        ("ReduceMax", false) => y.max(a)?,
        (op, _) => return Err(unsupported(op.to_string())),
    })
}

fn softmax(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let a = axis(c.int("axis").unwrap_or(-1), x.rank())?;
    let y = if a == x.rank() - 1 {
        candle_nn::ops::softmax_last_dim(&x)?
    } else {
        let m = x.max_keepdim(a)?.detach();
        let e = x.broadcast_sub(&m)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(a)?)?
    };
    one(y)
}
