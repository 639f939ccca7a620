//! ONNX models (`torch.onnx.export`, opset 13-18) as a graph camstream evaluates itself:
//! candle-onnx parses the protobuf and decodes the initialisers, the CNN operators run
//! on our layers. Our own evaluator because Grad-CAM needs what `simple_eval` cannot
//! give: the graph cut at any tensor (evaluate once, then only the nodes downstream of
//! the target, with the target as a leaf variable), MaxPool with padding and the exact
//! PyTorch max-pool gradient, GlobalAveragePool, 1D models. Any other operator is
//! refused at load, by name.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_onnx::onnx;

use crate::error::{Error, Result};
use crate::model::layers::{Conv, Dims, Pool, PoolKind};

/// Operators the evaluator runs.
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Identity",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Softmax",
    "Squeeze",
    "Sub",
    "Tanh",
    "Unsqueeze",
];

#[derive(Clone, Debug)]
struct Node {
    name: String,
    op: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attrs: HashMap<String, onnx::AttributeProto>,
    /// A Conv whose weights are initialisers, built (and its weights packed) once.
    conv: std::sync::OnceLock<Conv>,
}

/// A loaded ONNX graph.
#[derive(Clone, Debug)]
pub struct OnnxGraph {
    pub path: PathBuf,
    nodes: Vec<Node>,
    consts: HashMap<String, Tensor>,
    pub input: String,
    /// Declared input dims; `None` for a dynamic (named) dim.
    pub input_dims: Vec<Option<usize>>,
    pub output: String,
    /// Per-sample shape (batch 1) of every tensor, from a probe run.
    shapes: HashMap<String, Vec<usize>>,
    /// Tensors a CAM can target, in graph order: (name, shape).
    targets: Vec<(String, Vec<usize>)>,
    pub default_target: String,
}

fn err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Weights {
        file: path.to_path_buf(),
        msg: msg.into(),
    }
}

impl Node {
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attrs.get(name).map(|a| a.ints.clone())
    }
    fn int(&self, name: &str) -> Option<i64> {
        self.attrs.get(name).map(|a| a.i)
    }
    fn float(&self, name: &str) -> Option<f32> {
        self.attrs.get(name).map(|a| a.f)
    }
    fn string(&self, name: &str) -> Option<String> {
        self.attrs
            .get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
    fn describe(&self) -> String {
        if self.name.is_empty() {
            format!("{} -> {}", self.op, self.outputs.join(","))
        } else {
            format!("{} `{}`", self.op, self.name)
        }
    }
}

fn to_usizes(v: &[i64]) -> Vec<usize> {
    v.iter().map(|&x| x.max(0) as usize).collect()
}

fn i64s(t: &Tensor) -> candle_core::Result<Vec<i64>> {
    t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()
}

impl OnnxGraph {
    /// Loads and checks a model; `size` gives spatial dims the file leaves dynamic.
    pub fn load(path: &Path, size: Option<&[usize]>, device: &Device) -> Result<Self> {
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        // candle's errors may carry a backtrace: keep the first line.
        let model = candle_onnx::read_file(path).map_err(|e| {
            let e = e.to_string();
            err(
                path,
                format!("not an ONNX model ({})", e.lines().next().unwrap_or("")),
            )
        })?;
        let graph = model
            .graph
            .ok_or_else(|| err(path, "not an ONNX model (no graph)"))?;
        let mut consts = HashMap::new();
        for t in &graph.initializer {
            let v = candle_onnx::eval::get_tensor(t, &t.name)
                .and_then(|v| v.to_device(device))
                .map_err(|e| err(path, format!("initializer `{}`: {e}", t.name)))?;
            consts.insert(t.name.clone(), v);
        }
        let nodes: Vec<Node> = graph
            .node
            .iter()
            .map(|n| Node {
                name: n.name.clone(),
                op: n.op_type.clone(),
                inputs: n.input.clone(),
                outputs: n.output.clone(),
                attrs: n
                    .attribute
                    .iter()
                    .map(|a| (a.name.clone(), a.clone()))
                    .collect(),
                conv: Default::default(),
            })
            .collect();
        if let Some(n) = nodes
            .iter()
            .find(|n| !SUPPORTED_OPS.contains(&n.op.as_str()))
        {
            return Err(Error::Unsupported {
                what: "ONNX operator",
                name: format!("{} (node {})", n.op, n.describe()),
                supported: SUPPORTED_OPS.iter().map(|s| s.to_string()).collect(),
            });
        }
        let real_inputs: Vec<&onnx::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !consts.contains_key(&i.name))
            .collect();
        let [inp] = real_inputs.as_slice() else {
            return Err(err(
                path,
                format!(
                    "{} graph inputs; camstream explains models with exactly one input",
                    real_inputs.len()
                ),
            ));
        };
        let input_dims: Vec<Option<usize>> =
            match inp.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(onnx::type_proto::Value::TensorType(tt)) => tt
                    .shape
                    .as_ref()
                    .map(|s| {
                        s.dim
                            .iter()
                            .map(|d| match &d.value {
                                Some(onnx::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                                    Some(*v as usize)
                                }
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                _ => return Err(err(path, "the graph input is not a tensor")),
            };
        if !(3..=4).contains(&input_dims.len()) {
            return Err(err(
                path,
                format!(
                    "input `{}` has rank {}; camstream explains CNNs over (N,C,L) or (N,C,H,W)",
                    inp.name,
                    input_dims.len()
                ),
            ));
        }
        let output = graph
            .output
            .first()
            .map(|o| o.name.clone())
            .ok_or_else(|| err(path, "the graph has no output"))?;
        let mut g = Self {
            path: path.to_path_buf(),
            nodes,
            consts,
            input: inp.name.clone(),
            input_dims,
            output,
            shapes: HashMap::new(),
            targets: Vec::new(),
            default_target: String::new(),
        };
        g.probe(size, device)?;
        Ok(g)
    }

    /// Per-sample input dims (C, spatial...).
    pub fn sample_dims(&self, size: Option<&[usize]>) -> Result<Vec<usize>> {
        let mut dims = Vec::new();
        for (i, d) in self.input_dims.iter().enumerate().skip(1) {
            match (d, size.and_then(|s| s.get(i - 2))) {
                (Some(v), _) => dims.push(*v),
                (None, Some(v)) if i >= 2 => dims.push(*v),
                _ => {
                    return Err(err(
                        &self.path,
                        format!(
                            "input dim {i} of `{}` is dynamic; give the size in a model config ([input] size)",
                            self.input
                        ),
                    ))
                }
            }
        }
        Ok(dims)
    }

    /// Runs one zero sample to learn every tensor's shape and the CAM targets.
    fn probe(&mut self, size: Option<&[usize]>, device: &Device) -> Result<()> {
        let mut dims = vec![1];
        dims.extend(self.sample_dims(size)?);
        let x = Tensor::zeros(dims, DType::F32, device)?;
        let values = self.eval_all(&x)?;
        let out = values.get(&self.output).ok_or_else(|| {
            err(
                &self.path,
                format!("output `{}` was not computed", self.output),
            )
        })?;
        if out.rank() != 2 {
            return Err(err(
                &self.path,
                format!(
                    "output `{}` has shape {:?}; camstream needs class scores (N, classes)",
                    self.output,
                    out.dims()
                ),
            ));
        }
        self.shapes = values
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        // Targets: float tensors with spatial dims computed from the input, in order,
        // up to the first global pooling.
        let mut targets = Vec::new();
        let mut pool_input = None;
        for n in &self.nodes {
            if pool_input.is_none()
                && (n.op == "GlobalAveragePool" || n.op == "GlobalMaxPool" || n.op == "ReduceMean")
            {
                pool_input = n.inputs.first().cloned();
            }
            for o in &n.outputs {
                if let Some(v) = values.get(o) {
                    if v.rank() >= 3
                        && v.dtype() == DType::F32
                        && v.dims()[2..].iter().product::<usize>() > 1
                    {
                        targets.push((o.clone(), v.dims().to_vec()));
                    }
                }
            }
            if pool_input.is_some() {
                break;
            }
        }
        self.default_target = pool_input
            .filter(|p| targets.iter().any(|(t, _)| t == p))
            .or_else(|| targets.last().map(|t| t.0.clone()))
            .ok_or_else(|| err(&self.path, "no tensor with spatial dims to explain"))?;
        self.targets = targets;
        Ok(())
    }

    pub fn num_classes(&self) -> usize {
        self.shapes.get(&self.output).map_or(0, |s| s[1])
    }

    /// Every tensor `--layer` accepts, with its shape (batch 1).
    pub fn targets(&self) -> &[(String, Vec<usize>)] {
        &self.targets
    }

    /// Checks a target name; the error lists the valid ones.
    pub fn check_target(&self, name: &str) -> Result<()> {
        if self.targets.iter().any(|(t, _)| t == name) {
            return Ok(());
        }
        if let Some(s) = self.shapes.get(name) {
            return Err(Error::BadTarget {
                name: name.into(),
                why: format!("tensor of shape {s:?} has no spatial dimensions to explain"),
            });
        }
        Err(Error::UnknownLayer {
            name: name.into(),
            valid: self.targets.iter().map(|t| t.0.clone()).collect(),
        })
    }

    fn eval_all(&self, x: &Tensor) -> Result<HashMap<String, Tensor>> {
        let mut values = self.consts.clone();
        values.insert(self.input.clone(), x.clone());
        for n in &self.nodes {
            self.eval_node(n, &mut values)?;
        }
        Ok(values)
    }

    /// Logits of the whole graph.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let v = self.eval_all(x)?;
        v.get(&self.output)
            .cloned()
            .ok_or_else(|| err(&self.path, "no output"))
    }

    /// Evaluates the whole graph once; returns the target tensor and every value.
    pub fn forward_to(
        &self,
        x: &Tensor,
        target: &str,
    ) -> Result<(Tensor, HashMap<String, Tensor>)> {
        let v = self.eval_all(x)?;
        let a = v
            .get(target)
            .cloned()
            .ok_or_else(|| err(&self.path, format!("tensor `{target}` was not computed")))?;
        Ok((a, v))
    }

    /// Re-evaluates only the nodes downstream of `target`, with `leaf` in its place and
    /// every other value taken (detached) from `values`; returns the logits.
    pub fn forward_from(
        &self,
        target: &str,
        leaf: &Tensor,
        mut values: HashMap<String, Tensor>,
    ) -> Result<Tensor> {
        for v in values.values_mut() {
            *v = v.detach();
        }
        values.insert(target.to_string(), leaf.clone());
        let mut dirty: HashSet<&str> = HashSet::from([target]);
        for n in &self.nodes {
            if n.inputs.iter().any(|i| dirty.contains(i.as_str())) {
                self.eval_node(n, &mut values)?;
                dirty.extend(n.outputs.iter().map(String::as_str));
            }
        }
        if !dirty.contains(self.output.as_str()) {
            return Err(err(
                &self.path,
                format!("the output does not depend on `{target}`"),
            ));
        }
        values
            .get(&self.output)
            .cloned()
            .ok_or_else(|| err(&self.path, "no output"))
    }

    fn eval_node(&self, n: &Node, values: &mut HashMap<String, Tensor>) -> Result<()> {
        let node_err =
            |e: candle_core::Error| err(&self.path, format!("node {}: {e}", n.describe()));
        let get = |i: usize| -> Result<Tensor> {
            let name = n.inputs.get(i).filter(|s| !s.is_empty()).ok_or_else(|| {
                err(
                    &self.path,
                    format!("node {}: input {i} missing", n.describe()),
                )
            })?;
            values.get(name).cloned().ok_or_else(|| {
                err(
                    &self.path,
                    format!("node {}: `{name}` not computed", n.describe()),
                )
            })
        };
        let opt = |i: usize| -> Option<Tensor> {
            n.inputs
                .get(i)
                .filter(|s| !s.is_empty())
                .and_then(|s| values.get(s).cloned())
        };
        let unsupported = |what: String| err(&self.path, format!("node {}: {what}", n.describe()));
        let y: Tensor = match n.op.as_str() {
            "Identity" | "Dropout" => get(0)?,
            "Relu" => get(0)?.relu().map_err(node_err)?,
            "Sigmoid" => candle_nn::ops::sigmoid(&get(0)?).map_err(node_err)?,
            "Tanh" => get(0)?.tanh().map_err(node_err)?,
            "LeakyRelu" => {
                let x = get(0)?;
                let a = n.float("alpha").unwrap_or(0.01) as f64;
                (x.relu().map_err(node_err)?
                    + (x.minimum(0f32).map_err(node_err)? * a).map_err(node_err)?)
                .map_err(node_err)?
            }
            "Clip" => {
                let x = get(0)?;
                let scalar = |t: Option<Tensor>| -> Result<Option<f32>> {
                    t.map(|t| {
                        t.to_dtype(DType::F32)
                            .and_then(|t| t.flatten_all())
                            .and_then(|t| t.to_vec1::<f32>())
                            .map(|v| v[0])
                            .map_err(node_err)
                    })
                    .transpose()
                };
                let lo = scalar(opt(1))?
                    .or(n.float("min"))
                    .unwrap_or(f32::NEG_INFINITY);
                let hi = scalar(opt(2))?.or(n.float("max")).unwrap_or(f32::INFINITY);
                x.clamp(lo, hi).map_err(node_err)?
            }
            "Add" => get(0)?.broadcast_add(&get(1)?).map_err(node_err)?,
            "Sub" => get(0)?.broadcast_sub(&get(1)?).map_err(node_err)?,
            "Mul" => get(0)?.broadcast_mul(&get(1)?).map_err(node_err)?,
            "Div" => get(0)?.broadcast_div(&get(1)?).map_err(node_err)?,
            "MatMul" => get(0)?.broadcast_matmul(&get(1)?).map_err(node_err)?,
            "Softmax" => {
                let axis = n.int("axis").unwrap_or(-1);
                let x = get(0)?;
                if axis != -1 && axis as usize != x.rank() - 1 {
                    return Err(unsupported(format!("Softmax over axis {axis}")));
                }
                candle_nn::ops::softmax_last_dim(&x).map_err(node_err)?
            }
            "Gemm" => {
                let (mut a, mut b) = (get(0)?, get(1)?);
                if n.int("transA").unwrap_or(0) != 0 {
                    a = a.t().map_err(node_err)?;
                }
                if n.int("transB").unwrap_or(0) != 0 {
                    b = b.t().map_err(node_err)?;
                }
                let mut y = a.matmul(&b).map_err(node_err)?;
                let alpha = n.float("alpha").unwrap_or(1.0);
                if alpha != 1.0 {
                    y = (y * alpha as f64).map_err(node_err)?;
                }
                if let Some(c) = opt(2) {
                    let beta = n.float("beta").unwrap_or(1.0) as f64;
                    let c = if beta != 1.0 {
                        (c * beta).map_err(node_err)?
                    } else {
                        c
                    };
                    y = y.broadcast_add(&c).map_err(node_err)?;
                }
                y
            }
            "Flatten" => {
                let x = get(0)?;
                let axis = n.int("axis").unwrap_or(1);
                let axis = if axis < 0 {
                    x.rank() as i64 + axis
                } else {
                    axis
                } as usize;
                let lead: usize = x.dims()[..axis].iter().product();
                let rest: usize = x.dims()[axis..].iter().product();
                x.reshape((lead, rest)).map_err(node_err)?
            }
            "GlobalAveragePool" | "GlobalMaxPool" => {
                let x = get(0)?;
                let keep: Vec<usize> = x.dims()[..2].to_vec();
                let flat = x.flatten_from(2).map_err(node_err)?;
                let r = if n.op == "GlobalAveragePool" {
                    flat.mean_keepdim(D::Minus1)
                } else {
                    flat.max_keepdim(D::Minus1)
                }
                .map_err(node_err)?;
                let mut shape = keep;
                shape.extend(std::iter::repeat_n(1, x.rank() - 2));
                r.reshape(shape).map_err(node_err)?
            }
            "ReduceMean" => {
                let x = get(0)?;
                let axes = match (n.ints("axes"), opt(1)) {
                    (Some(a), _) if !a.is_empty() => a,
                    (_, Some(t)) => i64s(&t).map_err(node_err)?,
                    _ => (0..x.rank() as i64).collect(),
                };
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| {
                        if a < 0 {
                            (x.rank() as i64 + a) as usize
                        } else {
                            a as usize
                        }
                    })
                    .collect();
                axes.sort_unstable();
                let keep = n.int("keepdims").unwrap_or(1) != 0;
                let mut y = x;
                for &a in axes.iter().rev() {
                    y = if keep { y.mean_keepdim(a) } else { y.mean(a) }.map_err(node_err)?;
                }
                y
            }
            "BatchNormalization" => {
                let x = get(0)?;
                let (scale, bias, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
                let eps = n.float("epsilon").unwrap_or(1e-5) as f64;
                let s = scale
                    .broadcast_div(&(var + eps).map_err(node_err)?.sqrt().map_err(node_err)?)
                    .map_err(node_err)?;
                let shift = (bias - mean.mul(&s).map_err(node_err)?).map_err(node_err)?;
                let mut shape = vec![1; x.rank()];
                shape[1] = s.dim(0).map_err(node_err)?;
                x.broadcast_mul(&s.reshape(shape.clone()).map_err(node_err)?)
                    .and_then(|y| y.broadcast_add(&shift.reshape(shape)?))
                    .map_err(node_err)?
            }
            "Conv" => {
                let x = get(0)?;
                let w = get(1)?;
                let rank = w.rank() - 2;
                let dims = match rank {
                    1 => Dims::One,
                    2 => Dims::Two,
                    r => return Err(unsupported(format!("{r}D convolution"))),
                };
                let one = |v: Option<Vec<i64>>, what: &str| -> Result<usize> {
                    let v = v.unwrap_or_else(|| vec![1; rank]);
                    if v.iter().any(|&s| s != v[0]) {
                        return Err(unsupported(format!("unequal {what} {v:?}")));
                    }
                    Ok(v.first().copied().unwrap_or(1) as usize)
                };
                let stride = one(n.ints("strides"), "strides")?;
                let dilation = one(n.ints("dilations"), "dilations")?;
                let group = n.int("group").unwrap_or(1) as usize;
                let auto = n.string("auto_pad").unwrap_or_default();
                let mut xp = x;
                let mut tf_same = false;
                match auto.as_str() {
                    "" | "NOTSET" => {
                        let pads = to_usizes(&n.ints("pads").unwrap_or_else(|| vec![0; 2 * rank]));
                        for d in 0..rank {
                            let (a, b) = (pads[d], pads[d + rank]);
                            if a + b > 0 {
                                xp = xp.pad_with_zeros(2 + d, a, b).map_err(node_err)?;
                            }
                        }
                    }
                    "SAME_UPPER" => tf_same = true,
                    "VALID" => {}
                    other => return Err(unsupported(format!("auto_pad {other}"))),
                }
                let build = || Conv {
                    dims,
                    weight: w.clone(),
                    bias: opt(2),
                    stride,
                    padding: 0,
                    dilation,
                    groups: group,
                    tf_same,
                    packed: Default::default(),
                };
                let constant = n.inputs[1..]
                    .iter()
                    .all(|i| i.is_empty() || self.consts.contains_key(i));
                let fresh;
                let conv = if constant {
                    n.conv.get_or_init(build)
                } else {
                    fresh = build();
                    &fresh
                };
                conv.forward(&xp).map_err(node_err)?
            }
            "MaxPool" | "AveragePool" => {
                let x = get(0)?;
                let k = n.ints("kernel_shape").unwrap_or_default();
                let rank = k.len();
                let dims = match rank {
                    1 => Dims::One,
                    2 => Dims::Two,
                    _ => return Err(unsupported(format!("{rank}D pooling"))),
                };
                let strides = n.ints("strides").unwrap_or_else(|| vec![1; rank]);
                let pads = n.ints("pads").unwrap_or_else(|| vec![0; 2 * rank]);
                if k.iter().any(|&v| v != k[0])
                    || strides.iter().any(|&v| v != strides[0])
                    || pads.iter().any(|&v| v != pads[0])
                {
                    return Err(unsupported(format!(
                        "non-square pooling (kernel {k:?}, strides {strides:?}, pads {pads:?})"
                    )));
                }
                if n.int("ceil_mode").unwrap_or(0) != 0 {
                    return Err(unsupported("ceil_mode=1".into()));
                }
                if n.ints("dilations")
                    .is_some_and(|d| d.iter().any(|&v| v != 1))
                {
                    return Err(unsupported("dilated pooling".into()));
                }
                if !matches!(
                    n.string("auto_pad").as_deref(),
                    None | Some("") | Some("NOTSET")
                ) {
                    return Err(unsupported("auto_pad on pooling".into()));
                }
                let kind = if n.op == "MaxPool" {
                    PoolKind::Max
                } else {
                    if pads[0] > 0 && n.int("count_include_pad").unwrap_or(0) == 0 {
                        return Err(unsupported(
                            "AveragePool with padding and count_include_pad=0".into(),
                        ));
                    }
                    PoolKind::Avg
                };
                Pool {
                    kind,
                    dims,
                    kernel: k[0] as usize,
                    stride: strides[0] as usize,
                    padding: pads[0] as usize,
                }
                .forward(&x)
                .map_err(node_err)?
            }
            "Pad" => {
                let x = get(0)?;
                let mode = n.string("mode").unwrap_or_else(|| "constant".into());
                let pads = match (opt(1), n.ints("pads")) {
                    (Some(t), _) => i64s(&t).map_err(node_err)?,
                    (None, Some(p)) => p,
                    _ => vec![],
                };
                let value = match opt(2) {
                    Some(t) => t
                        .to_dtype(DType::F32)
                        .and_then(|t| t.flatten_all())
                        .and_then(|t| t.to_vec1::<f32>())
                        .map_err(node_err)?
                        .first()
                        .copied()
                        .unwrap_or(0.0),
                    None => n.float("value").unwrap_or(0.0),
                };
                if mode != "constant"
                    || value != 0.0
                    || pads.iter().any(|&p| p < 0)
                    || opt(3).is_some()
                {
                    return Err(unsupported(format!(
                        "Pad mode `{mode}` value {value} pads {pads:?} (only zero padding)"
                    )));
                }
                let r = x.rank();
                let mut y = x;
                for d in 0..r.min(pads.len() / 2) {
                    let (a, b) = (pads[d] as usize, pads[d + r] as usize);
                    if a + b > 0 {
                        y = y.pad_with_zeros(d, a, b).map_err(node_err)?;
                    }
                }
                y
            }
            "Constant" => {
                let a = n
                    .attrs
                    .get("value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| unsupported("Constant without a tensor value".into()))?;
                candle_onnx::eval::get_tensor(a, &n.name)
                    .and_then(|t| t.to_device(&get_device(values)))
                    .map_err(node_err)?
            }
            "Shape" => {
                let x = get(0)?;
                let d: Vec<i64> = x.dims().iter().map(|&v| v as i64).collect();
                Tensor::from_vec(d, x.rank(), x.device()).map_err(node_err)?
            }
            "Cast" => {
                let x = get(0)?;
                // TensorProto data types: 1 float, 7 int64, 6 int32, 11 double.
                let to = match n.int("to").unwrap_or(1) {
                    1 => DType::F32,
                    7 | 6 => DType::I64,
                    11 => DType::F64,
                    t => return Err(unsupported(format!("Cast to type {t}"))),
                };
                x.to_dtype(to).map_err(node_err)?
            }
            "Gather" => {
                let x = get(0)?;
                let idx = get(1)?;
                let axis = n.int("axis").unwrap_or(0);
                let axis = if axis < 0 {
                    x.rank() as i64 + axis
                } else {
                    axis
                } as usize;
                let dim = x.dim(axis).map_err(node_err)? as i64;
                let ids: Vec<i64> = i64s(&idx)
                    .map_err(node_err)?
                    .into_iter()
                    .map(|i| if i < 0 { i + dim } else { i })
                    .collect();
                let scalar = idx.rank() == 0;
                let t = Tensor::from_vec(
                    ids.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                    ids.len(),
                    x.device(),
                )
                .map_err(node_err)?;
                let y = x.index_select(&t, axis).map_err(node_err)?;
                if scalar {
                    y.squeeze(axis).map_err(node_err)?
                } else {
                    y
                }
            }
            "Unsqueeze" | "Squeeze" => {
                let x = get(0)?;
                let axes = match (opt(1), n.ints("axes")) {
                    (Some(t), _) => i64s(&t).map_err(node_err)?,
                    (None, Some(a)) => a,
                    (None, None) => vec![],
                };
                if n.op == "Unsqueeze" {
                    let out_rank = x.rank() + axes.len();
                    let mut ax: Vec<usize> = axes
                        .iter()
                        .map(|&a| {
                            if a < 0 {
                                (out_rank as i64 + a) as usize
                            } else {
                                a as usize
                            }
                        })
                        .collect();
                    ax.sort_unstable();
                    let mut y = x;
                    for a in ax {
                        y = y.unsqueeze(a).map_err(node_err)?;
                    }
                    y
                } else {
                    let mut ax: Vec<usize> = if axes.is_empty() {
                        (0..x.rank()).filter(|&d| x.dims()[d] == 1).collect()
                    } else {
                        axes.iter()
                            .map(|&a| {
                                if a < 0 {
                                    (x.rank() as i64 + a) as usize
                                } else {
                                    a as usize
                                }
                            })
                            .collect()
                    };
                    ax.sort_unstable();
                    let mut y = x;
                    for a in ax.into_iter().rev() {
                        y = y.squeeze(a).map_err(node_err)?;
                    }
                    y
                }
            }
            "Concat" => {
                let axis = n.int("axis").unwrap_or(0);
                let ts: Vec<Tensor> = (0..n.inputs.len()).map(get).collect::<Result<_>>()?;
                let rank = ts.first().map_or(1, |t| t.rank());
                let axis = if axis < 0 { rank as i64 + axis } else { axis } as usize;
                Tensor::cat(&ts, axis).map_err(node_err)?
            }
            "Reshape" => {
                let x = get(0)?;
                let spec = i64s(&get(1)?).map_err(node_err)?;
                let total = x.elem_count();
                let mut shape: Vec<usize> = Vec::with_capacity(spec.len());
                let mut infer = None;
                for (i, &s) in spec.iter().enumerate() {
                    match s {
                        0 => shape.push(x.dim(i).map_err(node_err)?),
                        -1 => {
                            infer = Some(i);
                            shape.push(1);
                        }
                        s => shape.push(s as usize),
                    }
                }
                if let Some(i) = infer {
                    let known: usize = shape.iter().product();
                    shape[i] = total / known.max(1);
                }
                x.reshape(shape).map_err(node_err)?
            }
            other => {
                return Err(Error::Unsupported {
                    what: "ONNX operator",
                    name: other.into(),
                    supported: SUPPORTED_OPS.iter().map(|s| s.to_string()).collect(),
                })
            }
        };
        if let Some(o) = n.outputs.first() {
            values.insert(o.clone(), y);
        }
        Ok(())
    }
}

fn get_device(values: &HashMap<String, Tensor>) -> Device {
    values
        .values()
        .next()
        .map(|t| t.device().clone())
        .unwrap_or(Device::Cpu)
}

/// A graph is evaluated once up to the target; then only the nodes downstream of it run
/// again, from the tensor put in its place.
impl crate::model::Body for OnnxGraph {
    fn target_names(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.0.clone()).collect()
    }

    fn check_target(&self, layer: &str) -> Result<()> {
        OnnxGraph::check_target(self, layer)
    }

    fn layer_shapes(&self, _input: &Tensor) -> Result<Vec<(String, Vec<usize>)>> {
        Ok(self
            .targets
            .iter()
            .map(|(n, s)| (n.clone(), s[1..].to_vec()))
            .collect())
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        OnnxGraph::forward(self, x)
    }

    fn split<'s>(&'s self, x: &Tensor, layer: &str) -> Result<(Tensor, crate::model::Tail<'s>)> {
        self.check_target(layer)?;
        let (a, values) = self.forward_to(x, layer)?;
        let layer = layer.to_string();
        let tail: crate::model::Tail<'s> =
            Box::new(move |leaf: &Tensor| self.forward_from(&layer, leaf, values));
        Ok((a, tail))
    }
}
