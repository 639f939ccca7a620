//! Shapes and plumbing: reshapes, permutes, slices, concatenation, and the integer
//! shape arithmetic the TorchScript exporter writes (Shape → Gather → Concat →
//! Reshape, as in ShuffleNet's channel shuffle). Float data moves through candle's
//! differentiable views; the integer tensors carry no gradient.

use super::{axis, i64s, one, tensor, unsupported, Ctx, OpFn, OpResult};
use candle_core::{DType, Tensor};

pub(super) const OPS: &[(&str, OpFn)] = &[
    ("Cast", cast),
    ("Concat", concat),
    ("Constant", constant),
    ("ConstantOfShape", constant_of_shape),
    ("Dropout", identity),
    ("Expand", expand),
    ("Flatten", flatten),
    ("Gather", gather),
    ("Identity", identity),
    ("Reshape", reshape),
    ("Shape", shape),
    ("Slice", slice),
    ("Split", split),
    ("Squeeze", squeeze),
    ("Transpose", transpose),
    ("Unsqueeze", unsqueeze),
];

fn identity(c: &Ctx) -> OpResult {
    one(c.input(0)?)
}

fn constant(c: &Ctx) -> OpResult {
    let dev = c
        .values
        .values()
        .next()
        .map(|t| t.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let t = if let Some(t) = c.tensor_attr("value") {
        tensor(t, &c.node.name)?
    } else if let Some(v) = c.node.attrs.get("value_float") {
        Tensor::new(v.f, &dev)?
    } else if let Some(v) = c.node.attrs.get("value_floats") {
        Tensor::new(v.floats.as_slice(), &dev)?
    } else if let Some(v) = c.node.attrs.get("value_int") {
        Tensor::new(v.i, &dev)?
    } else if let Some(v) = c.node.attrs.get("value_ints") {
        Tensor::new(v.ints.as_slice(), &dev)?
    } else {
        return Err(unsupported(
            "Constant without a tensor, float(s) or int(s) value",
        ));
    };
    one(t.to_device(&dev)?)
}

fn constant_of_shape(c: &Ctx) -> OpResult {
    let dims: Vec<usize> = i64s(&c.input(0)?)?
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect();
    let dev = c.input(0)?.device().clone();
    let v = match c.tensor_attr("value") {
        Some(t) => tensor(t, &c.node.name)?.to_device(&dev)?,
        None => Tensor::new(&[0f32], &dev)?,
    };
    one(v
        .flatten_all()?
        .narrow(0, 0, 1)?
        .reshape(())?
        .broadcast_as(dims)?
        .contiguous()?)
}

fn shape(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let r = x.rank() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(c.int("start").unwrap_or(0));
    let end = c.int("end").map_or(x.rank(), clamp);
    let d: Vec<i64> = x.dims()[start..end.max(start)]
        .iter()
        .map(|&v| v as i64)
        .collect();
    let n = d.len();
    one(Tensor::from_vec(d, n, x.device())?)
}

fn cast(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    // TensorProto data types: 1 float, 6 int32, 7 int64, 11 double.
    let to = match c.int("to").unwrap_or(1) {
        1 => DType::F32,
        6 | 7 => DType::I64,
        11 => DType::F64,
        t => return Err(unsupported(format!("Cast to type {t}"))),
    };
    one(x.to_dtype(to)?)
}

fn gather(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let idx = c.input(1)?;
    if c.node.batch_lead {
        // Every value of a flat tensor in order: a reshape to the indices' shape, with
        // the batch the input has (see `OnnxGraph::bakes_batch`).
        let rest = idx.dims()[1..].to_vec();
        let mut shape = vec![x.elem_count() / rest.iter().product::<usize>().max(1)];
        shape.extend(rest);
        return one(x.reshape(shape)?);
    }
    let a = axis(c.int("axis").unwrap_or(0), x.rank())?;
    let dim = x.dim(a)? as i64;
    let ids: Vec<u32> = i64s(&idx)?
        .into_iter()
        .map(|i| (if i < 0 { i + dim } else { i }) as u32)
        .collect();
    let n = ids.len();
    let y = x.index_select(&Tensor::from_vec(ids, n, x.device())?, a)?;
    // The index tensor's shape replaces the gathered axis.
    let mut shape = x.dims()[..a].to_vec();
    shape.extend(idx.dims());
    shape.extend(&x.dims()[a + 1..]);
    one(y.reshape(shape)?)
}

fn unsqueeze(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let axes = c.ints_from(1, "axes")?.unwrap_or_default();
    let out_rank = x.rank() + axes.len();
    let mut ax: Vec<usize> = axes
        .iter()
        .map(|&a| axis(a, out_rank))
        .collect::<Result<_, _>>()?;
    ax.sort_unstable();
    let mut y = x;
    for a in ax {
        y = y.unsqueeze(a)?;
    }
    one(y)
}

fn squeeze(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let axes = c.ints_from(1, "axes")?.unwrap_or_default();
    let mut ax: Vec<usize> = if axes.is_empty() {
        (0..x.rank()).filter(|&d| x.dims()[d] == 1).collect()
    } else {
        axes.iter()
            .map(|&a| axis(a, x.rank()))
            .collect::<Result<_, _>>()?
    };
    ax.sort_unstable();
    let mut y = x;
    for a in ax.into_iter().rev() {
        y = y.squeeze(a)?;
    }
    one(y)
}

fn concat(c: &Ctx) -> OpResult {
    let ts: Vec<Tensor> = (0..c.num_inputs())
        .map(|i| c.input(i))
        .collect::<Result<_, _>>()?;
    let rank = ts.first().map_or(1, |t| t.rank());
    let a = axis(c.int("axis").unwrap_or(0), rank)?;
    match crate::model::fastconv::concat::cat(&ts, a)? {
        Some(t) => one(t),
        None => one(Tensor::cat(&ts, a)?),
    }
}

fn reshape(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let spec = i64s(&c.input(1)?)?;
    let allow_zero = c.int("allowzero").unwrap_or(0) != 0;
    let mut shape: Vec<usize> = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            _ if i == 0 && c.node.batch_lead => shape.push(x.dim(0)?),
            0 if !allow_zero => shape.push(x.dim(i)?),
            -1 => {
                infer = Some(i);
                shape.push(1);
            }
            s if s < 0 => return Err(unsupported(format!("Reshape to {spec:?}"))),
            s => shape.push(s as usize),
        }
    }
    if let Some(i) = infer {
        let known: usize = shape.iter().product();
        shape[i] = x.elem_count() / known.max(1);
    }
    if shape.iter().product::<usize>() != x.elem_count() {
        // A shape baked in at export that the graph's batch check did not free.
        return Err(unsupported(format!(
            "Reshape of {:?} to {spec:?}: the element counts differ",
            x.dims()
        )));
    }
    one(x.reshape(shape)?)
}

fn flatten(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let a = c.int("axis").unwrap_or(1);
    let a = if a < 0 { x.rank() as i64 + a } else { a } as usize;
    let lead: usize = x.dims()[..a.min(x.rank())].iter().product();
    let rest = x.elem_count() / lead.max(1);
    one(x.reshape((lead, rest))?)
}

fn transpose(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let perm: Vec<usize> = match c.ints("perm") {
        Some(p) => p
            .iter()
            .map(|&a| axis(a, x.rank()))
            .collect::<Result<_, _>>()?,
        None => (0..x.rank()).rev().collect(),
    };
    one(x.permute(perm)?)
}

fn expand(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let want = i64s(&c.input(1)?)?;
    // Bidirectional broadcasting: align from the right, 1s take the other side's size.
    let rank = x.rank().max(want.len());
    let pad = |d: &[usize], r: usize| -> Vec<usize> {
        let mut v = vec![1; r - d.len()];
        v.extend(d);
        v
    };
    let xs = pad(x.dims(), rank);
    let ws = pad(
        &want.iter().map(|&v| v.max(0) as usize).collect::<Vec<_>>(),
        rank,
    );
    let out: Vec<usize> = xs
        .iter()
        .zip(&ws)
        .map(|(&a, &b)| if a == 1 { b } else { a })
        .collect();
    one(x.reshape(xs)?.broadcast_as(out)?)
}

/// Clamped ONNX slice bounds of one axis, for a positive step.
fn bounds(start: i64, end: i64, dim: usize) -> (usize, usize) {
    let d = dim as i64;
    let fix = |v: i64| (if v < 0 { v + d } else { v }).clamp(0, d) as usize;
    let (s, e) = (fix(start), fix(end));
    (s, e.max(s))
}

fn slice(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let starts = c.ints_from(1, "starts")?.unwrap_or_default();
    let ends = c.ints_from(2, "ends")?.unwrap_or_default();
    let axes = c
        .ints_from(3, "axes")?
        .unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = c
        .ints_from(4, "steps")?
        .unwrap_or_else(|| vec![1; starts.len()]);
    if starts.len() != ends.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(unsupported("Slice with inputs of unequal lengths"));
    }
    let mut y = x;
    for i in 0..starts.len() {
        let a = axis(axes[i], y.rank())?;
        let (s, e) = bounds(starts[i], ends[i], y.dim(a)?);
        match steps[i] {
            1 => y = y.narrow(a, s, e - s)?,
            st if st > 1 => {
                let ids: Vec<u32> = (s..e).step_by(st as usize).map(|v| v as u32).collect();
                let n = ids.len();
                y = y.index_select(&Tensor::from_vec(ids, n, y.device())?, a)?;
            }
            st => return Err(unsupported(format!("Slice step {st}"))),
        }
    }
    one(y)
}

/// Split into given sizes (an input from opset 13, an attribute before), into
/// `num_outputs` parts (opset 18), or into equal parts, one per output.
fn split(c: &Ctx) -> OpResult {
    let x = c.input(0)?;
    let a = axis(c.int("axis").unwrap_or(0), x.rank())?;
    let len = x.dim(a)?;
    let sizes: Vec<usize> = match c.ints_from(1, "split")? {
        Some(s) if !s.is_empty() => s.iter().map(|&v| v.max(0) as usize).collect(),
        _ => {
            let parts = c
                .int("num_outputs")
                .map_or(c.node.outputs.len(), |n| n as usize)
                .max(1);
            let each = len.div_ceil(parts);
            (0..parts)
                .map(|i| each.min(len.saturating_sub(i * each)))
                .collect()
        }
    };
    if sizes.iter().sum::<usize>() != len {
        return Err(unsupported(format!("Split of {len} into {sizes:?}")));
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(sizes.len());
    for s in sizes {
        out.push(x.narrow(a, start, s)?);
        start += s;
    }
    Ok(out)
}
