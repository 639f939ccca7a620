//! The operator registry, split by family (as tract splits its ops): each family module
//! lists the ONNX operators it runs. A node finds its function once, at load, so an
//! unknown operator is refused there, by node name. Every operator is written with
//! candle's tensor ops, so the gradient from the logits back to a target flows through
//! candle's autograd, and nothing runs a per-element loop of our own.

mod activation;
mod arith;
mod conv;
mod norm;
mod reduce;
mod shape;

pub(super) use reduce::is_global_pool;

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::{DType, Tensor};
use candle_onnx::onnx;

use crate::model::layers::Conv;

pub(super) type OpFn = fn(&Ctx) -> OpResult;
pub(super) type OpResult = std::result::Result<Vec<Tensor>, OpError>;

/// Why a node could not be evaluated.
#[derive(Debug)]
pub(super) enum OpError {
    Candle(candle_core::Error),
    /// An attribute or input combination the operator does not run.
    Unsupported(String),
}

impl From<candle_core::Error> for OpError {
    fn from(e: candle_core::Error) -> Self {
        OpError::Candle(e)
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // candle's errors may carry a backtrace: keep the first line.
            OpError::Candle(e) => f.write_str(e.to_string().lines().next().unwrap_or("")),
            OpError::Unsupported(w) => write!(f, "unsupported: {w}"),
        }
    }
}

pub(super) fn unsupported(what: impl Into<String>) -> OpError {
    OpError::Unsupported(what.into())
}

/// The number of values of a tensor with these dims; `None` for a negative dim or a
/// product past `usize`.
pub(super) fn elem_count(dims: &[i64]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| {
        usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
    })
}

/// A tensor stored in the graph (initialiser or `Constant`), its dims checked before
/// candle-onnx multiplies them out unchecked (the onnx fuzzer overflowed it there).
pub(super) fn tensor(t: &candle_onnx::onnx::TensorProto, name: &str) -> Result<Tensor, OpError> {
    if elem_count(&t.dims).is_none() {
        return Err(unsupported(format!(
            "dims {:?}: negative or too large",
            t.dims
        )));
    }
    Ok(candle_onnx::eval::get_tensor(t, name)?)
}

const FAMILIES: &[&[(&str, OpFn)]] = &[
    activation::OPS,
    arith::OPS,
    conv::OPS,
    norm::OPS,
    reduce::OPS,
    shape::OPS,
];

pub(super) fn lookup(op: &str) -> Option<OpFn> {
    FAMILIES
        .iter()
        .flat_map(|f| f.iter())
        .find(|(name, _)| *name == op)
        .map(|(_, f)| *f)
}

/// Every operator the evaluator runs, sorted.
pub fn supported() -> Vec<&'static str> {
    let mut v: Vec<&str> = FAMILIES
        .iter()
        .flat_map(|f| f.iter().map(|(n, _)| *n))
        .collect();
    v.sort_unstable();
    v
}

/// One graph node, with its operator resolved.
#[derive(Clone, Debug)]
pub(super) struct Node {
    pub name: String,
    pub op: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: HashMap<String, onnx::AttributeProto>,
    pub run: OpFn,
    /// A Conv whose weights are initialisers, built (and its weights packed) once.
    pub conv: OnceLock<Conv>,
    /// The same for a 3D convolution.
    pub conv3d: OnceLock<crate::model::volume::Conv3d>,
    /// A view (Reshape, or a Gather that is one) whose constant shape starts with the
    /// batch size baked in at export: it keeps its input's batch instead (set by
    /// `OnnxGraph::free_batch` once checked).
    pub batch_lead: bool,
}

impl Node {
    pub fn describe(&self) -> String {
        if self.name.is_empty() {
            format!("{} -> {}", self.op, self.outputs.join(","))
        } else {
            format!("{} `{}`", self.op, self.name)
        }
    }
}

/// What an operator sees: its node and the values computed so far.
pub(super) struct Ctx<'a> {
    pub node: &'a Node,
    pub values: &'a HashMap<String, Tensor>,
    pub consts: &'a HashMap<String, Tensor>,
    /// The activation a Conv or BatchNormalization applies as it stores (a fusion, see
    /// `fuse`); Identity elsewhere, and the other operators ignore it.
    pub act: crate::model::fastconv::Act,
    /// The tensor a Conv adds before its activation (a fused residual Add), if any.
    pub residual: Option<&'a str>,
    /// A Conv's squeeze-and-excitation gate, `(x, scale)`, when the Mul that makes its
    /// input was left to it (see `fuse::Gate`).
    pub gate: Option<(&'a str, &'a str)>,
}

impl Ctx<'_> {
    fn name(&self, i: usize) -> Option<&str> {
        self.node
            .inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Input `i`, which must be given.
    pub fn input(&self, i: usize) -> std::result::Result<Tensor, OpError> {
        let name = self
            .name(i)
            .ok_or_else(|| unsupported(format!("input {i} missing")))?;
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| unsupported(format!("`{name}` not computed")))
    }

    /// An optional input.
    pub fn opt(&self, i: usize) -> Option<Tensor> {
        self.name(i).and_then(|n| self.values.get(n).cloned())
    }

    pub fn num_inputs(&self) -> usize {
        self.node.inputs.len()
    }

    /// Whether input `i` is absent or an initialiser (a weight, not computed).
    pub fn is_const(&self, i: usize) -> bool {
        self.name(i).is_none_or(|n| self.consts.contains_key(n))
    }

    fn attr(&self, name: &str) -> Option<&onnx::AttributeProto> {
        self.node.attrs.get(name)
    }
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        self.attr(name).map(|a| a.i)
    }
    pub fn float(&self, name: &str) -> Option<f32> {
        self.attr(name).map(|a| a.f)
    }
    pub fn string(&self, name: &str) -> Option<String> {
        self.attr(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
    pub fn tensor_attr(&self, name: &str) -> Option<&onnx::TensorProto> {
        self.attr(name).and_then(|a| a.t.as_ref())
    }
    /// Integers given as an input (newer opsets) or as an attribute (older ones).
    pub fn ints_from(
        &self,
        input: usize,
        attr: &str,
    ) -> std::result::Result<Option<Vec<i64>>, OpError> {
        match self.opt(input) {
            Some(t) => Ok(Some(i64s(&t)?)),
            None => Ok(self.ints(attr)),
        }
    }
}

/// A tensor's values as integers (shapes, axes, indices).
pub(super) fn i64s(t: &Tensor) -> candle_core::Result<Vec<i64>> {
    t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()
}

/// The first value of a tensor as f32 (scalar inputs such as Clip's bounds).
pub(super) fn scalar(t: &Tensor) -> candle_core::Result<f32> {
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    v.first()
        .copied()
        .ok_or_else(|| candle_core::Error::Msg("empty scalar".into()))
}

/// An ONNX axis (negative counts from the end) as an index below `rank`.
pub(super) fn axis(a: i64, rank: usize) -> std::result::Result<usize, OpError> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r.max(1)).contains(&v) {
        Ok(v as usize)
    } else {
        Err(unsupported(format!("axis {a} of a rank-{rank} tensor")))
    }
}

pub(super) fn one(t: Tensor) -> OpResult {
    Ok(vec![t])
}
