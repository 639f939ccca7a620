//! Convolution, pooling and padding: the CNN operators, on camstream's own layers
//! (the packed CPU convolution, and max pooling whose gradient goes to the first
//! maximum of a window as PyTorch's does).

use super::{i64s, one, unsupported, Ctx, OpError, OpFn, OpResult};
use candle_core::Tensor;

use crate::model::layers::{ceil_extra, pad_sides, pad_spatial, Conv, Dims, Pool, PoolKind};
use crate::model::volume::{Conv3d, Pool3d};

pub(super) const OPS: &[(&str, OpFn)] = &[
    ("AveragePool", pool),
    ("Conv", conv),
    ("MaxPool", pool),
    ("Pad", pad),
];

fn dims_of(rank: usize) -> Result<Dims, OpError> {
    match rank {
        1 => Ok(Dims::One),
        2 => Ok(Dims::Two),
        r => Err(unsupported(format!("{r}D spatial operator"))),
    }
}

/// `pads` as (begin, end) per spatial dim; `auto_pad` other than NOTSET is refused
/// except where the caller handles it.
fn pads(c: &Ctx, rank: usize) -> Result<Vec<(usize, usize)>, OpError> {
    let p = c.ints("pads").unwrap_or_else(|| vec![0; 2 * rank]);
    if p.len() != 2 * rank || p.iter().any(|&v| v < 0) {
        return Err(unsupported(format!("pads {p:?}")));
    }
    Ok((0..rank)
        .map(|d| (p[d] as usize, p[d + rank] as usize))
        .collect())
}

/// One value for every spatial dim (square kernels, equal strides).
fn uniform(v: Option<Vec<i64>>, rank: usize, what: &str) -> Result<usize, OpError> {
    let v = v.unwrap_or_else(|| vec![1; rank]);
    match v.first() {
        Some(&f) if v.iter().all(|&s| s == f) && f > 0 => Ok(f as usize),
        _ => Err(unsupported(format!("{what} {v:?} (unequal per dimension)"))),
    }
}

fn conv(c: &Ctx) -> OpResult {
    let value = |name: &str| {
        (c.values.get(name).cloned()).ok_or_else(|| unsupported(format!("`{name}` not computed")))
    };
    // With a gate, input 0 was never computed: x and its per-channel scale stand for it.
    let (x, gate) = match c.gate {
        Some((x, scale)) => (value(x)?, Some(value(scale)?)),
        None => (c.input(0)?, None),
    };
    let w = c.input(1)?;
    // Untrusted graphs: a weight of rank < 3 or a group count < 1 is an error, not an
    // underflow.
    let rank = w
        .rank()
        .checked_sub(2)
        .ok_or_else(|| unsupported(format!("weight of rank {}", w.rank())))?;
    if rank == 3 {
        let x = match &gate {
            Some(g) => x.broadcast_mul(g)?,
            None => x,
        };
        return conv3d(c, x, w);
    }
    let dims = dims_of(rank)?;
    let stride = uniform(c.ints("strides"), rank, "strides")?;
    let dilation = uniform(c.ints("dilations"), rank, "dilations")?;
    let groups = match c.int("group").unwrap_or(1) {
        g if g >= 1 => g as usize,
        g => return Err(unsupported(format!("group {g}"))),
    };
    let mut tf_same = false;
    let mut padding = 0;
    let x = match c.string("auto_pad").as_deref() {
        None | Some("") | Some("NOTSET") => {
            let p = pads(c, rank)?;
            match p.first() {
                // Equal pads on every side are the conv's own (no padded copy of x).
                Some(&(a, _)) if p.iter().all(|&s| s == (a, a)) => {
                    padding = a;
                    x
                }
                _ => pad_spatial(&x, &p, 0.0)?,
            }
        }
        Some("SAME_UPPER") => {
            tf_same = true;
            x
        }
        Some("VALID") => x,
        Some(o) => return Err(unsupported(format!("auto_pad {o}"))),
    };
    // The packed kernels read weights and bias by the shapes: check them against each
    // other and the input first (an untrusted graph may disagree).
    let (w_dims, x_dims) = (w.dims(), x.dims());
    let bias_len = c.opt(2).map(|b| b.elem_count());
    if x_dims.len() != rank + 2
        || w_dims[0] % groups != 0
        || x_dims[1] != w_dims[1] * groups
        || bias_len.is_some_and(|n| n != w_dims[0])
    {
        return Err(unsupported(format!(
            "Conv of input {x_dims:?}, weight {w_dims:?}, group {groups}, bias of {bias_len:?} values: shapes disagree"
        )));
    }
    let build = || Conv {
        dims,
        weight: w.clone(),
        bias: c.opt(2),
        stride,
        padding,
        dilation,
        groups,
        tf_same,
        packed: Default::default(),
        groups_dense: Default::default(),
    };
    let fresh;
    let conv = if c.is_const(1) && c.is_const(2) {
        c.node.conv.get_or_init(build)
    } else {
        fresh = build();
        &fresh
    };
    let residual = fused_residual(c)?;
    one(match gate {
        Some(g) => conv.forward_gated(&x, &g, c.act, residual)?,
        None => conv.forward_with(&x, c.act, residual)?,
    })
}

/// The residual a fusion adds in the conv's epilogue (see `fuse.rs`), if any.
fn fused_residual<'c>(c: &'c Ctx) -> Result<Option<&'c Tensor>, OpError> {
    match c.residual {
        Some(name) => c
            .values
            .get(name)
            .map(Some)
            .ok_or_else(|| unsupported(format!("fused residual `{name}` not computed"))),
        None => Ok(None),
    }
}

/// `ints` of a 3D operator as (t, h, w), `default` where absent.
fn axes3(c: &Ctx, name: &str, default: usize) -> Result<[usize; 3], OpError> {
    match c.ints(name) {
        None => Ok([default; 3]),
        Some(v) if v.len() == 3 && v.iter().all(|&s| s >= 0) => {
            Ok([v[0] as usize, v[1] as usize, v[2] as usize])
        }
        Some(v) => Err(unsupported(format!("{name} {v:?} for a 3D operator"))),
    }
}

/// A 3D convolution (video models): per-axis strides, dilations and pads; asymmetric
/// pads become a padded copy of the input.
fn conv3d(c: &Ctx, x: Tensor, w: Tensor) -> OpResult {
    let stride = axes3(c, "strides", 1)?;
    let dilation = axes3(c, "dilations", 1)?;
    if stride.contains(&0) || dilation.contains(&0) {
        return Err(unsupported(format!(
            "Conv3d strides {stride:?} dilations {dilation:?}"
        )));
    }
    if c.int("group").unwrap_or(1) != 1 {
        return Err(unsupported("grouped 3D convolutions"));
    }
    if !matches!(
        c.string("auto_pad").as_deref(),
        None | Some("") | Some("NOTSET") | Some("VALID")
    ) {
        return Err(unsupported("auto_pad on a 3D convolution"));
    }
    let sides = pads(c, 3)?;
    let (x, padding) = if sides.iter().all(|&(a, b)| a == b) {
        (x, [sides[0].0, sides[1].0, sides[2].0])
    } else {
        (pad_spatial(&x, &sides, 0.0)?, [0; 3])
    };
    let (w_dims, x_dims) = (w.dims(), x.dims());
    let bias_len = c.opt(2).map(|b| b.elem_count());
    if x_dims.len() != 5 || x_dims[1] != w_dims[1] || bias_len.is_some_and(|n| n != w_dims[0]) {
        return Err(unsupported(format!(
            "Conv of input {x_dims:?}, weight {w_dims:?}, bias of {bias_len:?} values: shapes disagree"
        )));
    }
    let build = || {
        let mut k = Conv3d::new(w.clone(), c.opt(2)).with(stride, padding);
        k.dilation = dilation;
        k
    };
    let fresh;
    let conv = if c.is_const(1) && c.is_const(2) {
        c.node.conv3d.get_or_init(build)
    } else {
        fresh = build();
        &fresh
    };
    one(conv.forward_with(&x, c.act, fused_residual(c)?)?)
}

/// MaxPool and AveragePool, with asymmetric pads and `ceil_mode` (GoogLeNet,
/// SqueezeNet): the extra windows that ceil mode adds become padding at the end, -inf
/// for max pooling, so values and gradients are PyTorch's. 3D pooling (video models)
/// takes per-axis kernels and strides.
fn pool(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let k = c.ints("kernel_shape").unwrap_or_default();
    let rank = k.len();
    let max = c.node.op == "MaxPool";
    let kind = if max { PoolKind::Max } else { PoolKind::Avg };
    if rank == 3 {
        let kernel = axes3(c, "kernel_shape", 1)?;
        let stride = axes3(c, "strides", 1)?;
        if kernel.contains(&0) || stride.contains(&0) {
            return Err(unsupported(format!(
                "pooling kernel {kernel:?} strides {stride:?}"
            )));
        }
        let sides = pool_sides(c, &x, &kernel, &stride, max)?;
        let padding = [sides[0], sides[1], sides[2]];
        return one(Pool3d {
            kind,
            kernel,
            stride,
            padding,
        }
        .forward(&x)?);
    }
    let dims = dims_of(rank)?;
    let kernel = uniform(Some(k), rank, "kernel_shape")?;
    let stride = uniform(c.ints("strides"), rank, "strides")?;
    let sides = pool_sides(c, &x, &vec![kernel; rank], &vec![stride; rank], max)?;
    // The same padding on every side is the pool's own (its CPU max pool reads it as -inf
    // without a padded copy, which was a serial copy of a ResNet stem's output); ceil
    // mode's uneven sides are padded here.
    let p = sides[0].0;
    let (x, padding) = if sides.iter().all(|&s| s == (p, p)) {
        (x, p)
    } else {
        let fill = if max { f32::NEG_INFINITY } else { 0.0 };
        (pad_spatial(&x, &sides, fill)?, 0)
    };
    one(Pool {
        kind,
        dims,
        kernel,
        stride,
        padding,
    }
    .forward(&x)?)
}

/// A pooling node's (begin, end) padding per spatial dim, ceil mode's extra windows
/// included; refuses what PyTorch's pools cannot be (dilation, auto_pad, average pools
/// over partial or zero-excluding windows).
fn pool_sides(
    c: &Ctx,
    x: &Tensor,
    kernel: &[usize],
    stride: &[usize],
    max: bool,
) -> Result<Vec<(usize, usize)>, OpError> {
    if c.ints("dilations")
        .is_some_and(|d| d.iter().any(|&v| v != 1))
    {
        return Err(unsupported("dilated pooling"));
    }
    if !matches!(
        c.string("auto_pad").as_deref(),
        None | Some("") | Some("NOTSET")
    ) {
        return Err(unsupported("auto_pad on pooling"));
    }
    let mut sides = pads(c, kernel.len())?;
    if c.int("ceil_mode").unwrap_or(0) != 0 {
        for (d, side) in sides.iter_mut().enumerate() {
            let extra = ceil_extra(x.dim(2 + d)?, *side, kernel[d], stride[d]);
            if extra > 0 && !max {
                return Err(unsupported(
                    "AveragePool with ceil_mode=1 over a partial window",
                ));
            }
            side.1 += extra;
        }
    }
    let padded = sides.iter().any(|&(a, b)| a + b > 0);
    if !max && padded && c.int("count_include_pad").unwrap_or(0) == 0 {
        return Err(unsupported(
            "AveragePool with padding and count_include_pad=0",
        ));
    }
    Ok(sides)
}

fn pad(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let mode = c.string("mode").unwrap_or_else(|| "constant".into());
    let p = c.ints_from(1, "pads")?.unwrap_or_default();
    let value = match c.opt(2) {
        Some(t) => super::scalar(&t)?,
        None => c.float("value").unwrap_or(0.0),
    };
    let r = x.rank();
    let axes: Vec<usize> = match c.opt(3) {
        Some(t) => i64s(&t)?
            .into_iter()
            .map(|a| super::axis(a, r))
            .collect::<Result<_, _>>()?,
        None => (0..r).collect(),
    };
    if mode != "constant" || p.iter().any(|&v| v < 0) || p.len() != 2 * axes.len() {
        return Err(unsupported(format!(
            "Pad mode `{mode}` pads {p:?} (constant, non-negative only)"
        )));
    }
    let n = axes.len();
    let mut y = x;
    for (i, &d) in axes.iter().enumerate() {
        y = pad_sides(&y, d, p[i] as usize, p[i + n] as usize, value)?;
    }
    one(y)
}

#[cfg(test)]
mod tests {
    use super::ceil_extra;

    #[test]
    fn ceil_mode_matches_torch_output_lengths() {
        // torch.nn.MaxPool2d(3, 2, ceil_mode=True): 112 -> 56, 55 -> 27, 13 -> 6.
        for (len, pad, want) in [(112, 0, 56), (55, 0, 27), (13, 0, 6), (14, 0, 7), (7, 1, 4)] {
            let extra = ceil_extra(len, (pad, pad), 3, 2);
            let out = (len + 2 * pad + extra - 3) / 2 + 1;
            assert_eq!(out, want, "len {len} pad {pad}");
        }
    }
}
