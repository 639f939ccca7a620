//! Reductions: global pooling, ReduceMean/Sum/Max (the pooling of MnasNet, the SE
//! blocks of MobileNetV3 and EfficientNet) and Softmax.

use super::{axis, one, unsupported, Ctx, OpError, OpFn, OpResult};
use candle_core::{Tensor, D};

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
    let mut shape: Vec<usize> = x.dims()[..2].to_vec();
    let flat = x.flatten_from(2)?;
    let r = if c.node.op == "GlobalAveragePool" {
        flat.mean_keepdim(D::Minus1)?
    } else {
        flat.max_keepdim(D::Minus1)?
    };
    shape.extend(std::iter::repeat_n(1, x.rank() - 2));
    one(r.reshape(shape)?)
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
    let rank = x.rank();
    let mut y = x;
    // Trailing axes (a ReduceMean over H and W: SE blocks, dynamo's global pooling)
    // reduce as one contiguous axis; candle's reduction over a strided axis is slow.
    let first = axes.first().copied().unwrap_or(0);
    if axes.len() > 1
        && axes
            .iter()
            .enumerate()
            .all(|(i, &a)| a == first + i && a < rank)
        && axes.last() == Some(&(rank - 1))
    {
        let mut shape = y.dims()[..first].to_vec();
        if keep {
            shape.extend(std::iter::repeat_n(1, axes.len()));
        }
        return one(reduce_axis(c, y.flatten_from(first)?, first, true)?.reshape(shape)?);
    }
    for &a in axes.iter().rev() {
        y = reduce_axis(c, y, a, keep)?;
    }
    one(y)
}

/// One ONNX reduction over axis `a`.
fn reduce_axis(c: &Ctx, y: Tensor, a: usize, keep: bool) -> Result<Tensor, OpError> {
    Ok(match (c.node.op.as_str(), keep) {
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
