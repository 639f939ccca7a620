//! ONNX models from either torch exporter (TorchScript, opsets 13-17; dynamo, opsets
//! 18-20 with external data) as a graph camstream evaluates itself: candle-onnx parses
//! the protobuf and decodes the initialisers, our operators (`ops/`, split by family)
//! run the nodes. Our own evaluator because Grad-CAM needs what `simple_eval` cannot
//! give: the graph cut at any tensor (evaluate once, then only the nodes downstream of
//! the target, with the target as a leaf variable), PyTorch's max-pool gradient, 1D
//! models, and graphs whose batch size was fixed at export. Every node's operator is
//! looked up at load, and a probe run at load evaluates every node once, so what the
//! evaluator does not run is refused there, by node name.

mod fuse;
mod ops;
mod scopes;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_onnx::onnx;

use crate::error::{Error, Result};
use crate::model::fastconv::Act;
use ops::{Ctx, Node};

pub use ops::supported as supported_ops;

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
    /// The batch size fixed in the graph (dynamo exports bake their example's): batches
    /// run in chunks of it, the last one padded.
    batch: Option<usize>,
    /// Shape of every tensor of the probe run (batch dim included).
    shapes: HashMap<String, Vec<usize>>,
    /// Tensors a CAM can target, in graph order: (name, per-sample shape).
    targets: Vec<(String, Vec<usize>)>,
    /// PyTorch module names recorded in node scopes, with the tensor each stands for.
    modules: Vec<(String, String)>,
    pub default_target: String,
    /// Per node, the Conv + activation fusion that may start there.
    fusions: Vec<Option<fuse::Fusion>>,
    /// Per Conv node, the squeeze-and-excitation gate it may take over (`fuse::Gate`).
    gates: Vec<Option<fuse::Gate>>,
    /// Each such gate's Mul node, and its Conv node.
    gate_muls: HashMap<usize, usize>,
    /// Per tensor, the last node that reads it.
    last_read: HashMap<String, usize>,
}

fn err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Weights {
        file: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Dims as `[?, 3, 224, 224]`, `?` for a dynamic one.
fn show_dims(d: &[Option<usize>]) -> String {
    let v: Vec<String> = d
        .iter()
        .map(|d| d.map_or("?".into(), |v| v.to_string()))
        .collect();
    format!("[{}]", v.join(", "))
}

/// Initialisers, with external data (`m.onnx.data`, as torch's dynamo exporter writes)
/// read from the files the model names, relative to its own folder.
fn initialisers(
    path: &Path,
    graph: &onnx::GraphProto,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    let mut consts = HashMap::new();
    for t in &graph.initializer {
        let bad = |msg: String| err(path, format!("initializer `{}`: {msg}", t.name));
        let inlined;
        let proto = if t.data_location == onnx::tensor_proto::DataLocation::External as i32 {
            let kv = |k: &str| {
                t.external_data
                    .iter()
                    .find(|e| e.key == k)
                    .map(|e| e.value.clone())
            };
            let location =
                kv("location").ok_or_else(|| bad("external data without a location".into()))?;
            let file = dir.join(&location);
            if !files.contains_key(&file) {
                let bytes = std::fs::read(&file)
                    .map_err(|e| bad(format!("external data file `{}`: {e}", file.display())))?;
                files.insert(file.clone(), bytes);
            }
            let bytes = &files[&file];
            let num = |k: &str| -> Result<Option<usize>> {
                kv(k)
                    .map(|v| {
                        v.parse::<usize>()
                            .map_err(|_| bad(format!("external data {k} `{v}`")))
                    })
                    .transpose()
            };
            let offset = num("offset")?.unwrap_or(0);
            let length = num("length")?.unwrap_or(bytes.len().saturating_sub(offset));
            let Some(data) = bytes.get(offset..offset.saturating_add(length)) else {
                return Err(bad(format!(
                    "bytes {offset}..{} lie past the end of `{}` ({} bytes)",
                    offset.saturating_add(length),
                    file.display(),
                    bytes.len()
                )));
            };
            let mut p = t.clone();
            p.raw_data = data.to_vec();
            p.external_data.clear();
            p.data_location = onnx::tensor_proto::DataLocation::Default as i32;
            inlined = p;
            &inlined
        } else {
            t
        };
        let v = ops::tensor(proto, &t.name)
            .and_then(|v| Ok(v.to_device(device)?))
            .map_err(|e| bad(e.to_string()))?;
        if Some(v.elem_count()) != ops::elem_count(&t.dims) {
            return Err(bad(format!(
                "{} values for dims {:?} (a missing external data file?)",
                v.elem_count(),
                t.dims
            )));
        }
        consts.insert(t.name.clone(), v);
    }
    Ok(consts)
}

fn input_dims(inp: &onnx::ValueInfoProto) -> Option<Vec<Option<usize>>> {
    use onnx::tensor_shape_proto::dimension::Value;
    match inp.r#type.as_ref()?.value.as_ref()? {
        onnx::type_proto::Value::TensorType(tt) => Some(
            tt.shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(Value::DimValue(v)) if *v > 0 => Some(*v as usize),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => None,
    }
}

/// A graph split at one tensor (see `OnnxGraph::cut`).
struct Cut {
    target: String,
    /// Per node, whether it depends on the target (the tail).
    after: Vec<bool>,
    /// The tensors computed before the target that the tail reads.
    reads: HashSet<String>,
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
        let mut nodes = Vec::with_capacity(graph.node.len());
        for n in &graph.node {
            let Some(run) =
                ops::lookup(&n.op_type).filter(|_| n.domain.is_empty() || n.domain == "ai.onnx")
            else {
                let op = if n.domain.is_empty() {
                    n.op_type.clone()
                } else {
                    format!("{}.{}", n.domain, n.op_type)
                };
                return Err(Error::UnsupportedOperator {
                    node: n.name.clone(),
                    op,
                    supported: supported_ops(),
                });
            };
            nodes.push(Node {
                name: n.name.clone(),
                op: n.op_type.clone(),
                inputs: n.input.clone(),
                outputs: n.output.clone(),
                attrs: n
                    .attribute
                    .iter()
                    .map(|a| (a.name.clone(), a.clone()))
                    .collect(),
                run,
                conv: Default::default(),
                conv3d: Default::default(),
                batch_lead: false,
            });
        }
        let mut consts = initialisers(path, &graph, device)?;
        // The TorchScript exporter shares equal initialisers through Identity nodes (the
        // zero biases BatchNorm folding leaves, for one). Their outputs are constants too,
        // so a Conv reading one packs its weights once, not at every call.
        for n in nodes.iter().filter(|n| n.op == "Identity") {
            if let (Some(i), Some(o)) = (n.inputs.first(), n.outputs.first()) {
                if let Some(t) = consts.get(i).cloned() {
                    consts.insert(o.clone(), t);
                }
            }
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
        let input_dims =
            input_dims(inp).ok_or_else(|| err(path, "the graph input is not a tensor"))?;
        if !(3..=5).contains(&input_dims.len()) {
            return Err(err(
                path,
                format!(
                    "input `{}` has shape {}; camstream explains CNNs over (N,C,L), (N,C,H,W) or (N,C,T,H,W)",
                    inp.name,
                    show_dims(&input_dims)
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
            batch: input_dims[0],
            input_dims,
            output,
            shapes: HashMap::new(),
            targets: Vec::new(),
            modules: Vec::new(),
            default_target: String::new(),
            fusions: Vec::new(),
            gates: Vec::new(),
            gate_muls: HashMap::new(),
            last_read: HashMap::new(),
        };
        g.probe(size, device)?;
        g.free_batch(device)?;
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
                            "input dim {i} of `{}` (shape {}) is dynamic; give the size in a model config ([input] size)",
                            self.input,
                            show_dims(&self.input_dims)
                        ),
                    ))
                }
            }
        }
        Ok(dims)
    }

    /// Runs one zero batch to learn every tensor's shape, the CAM targets and the
    /// default one.
    fn probe(&mut self, size: Option<&[usize]>, device: &Device) -> Result<()> {
        let mut dims = vec![self.batch.unwrap_or(1)];
        dims.extend(self.sample_dims(size)?);
        let x = Tensor::zeros(dims, DType::F32, device)?;
        // Every tensor kept and none fused: the probe records them all.
        let values = self.eval_all(&x, None, None)?;
        self.fusions = fuse::plan(&self.nodes, &values, &self.output);
        self.gates = fuse::gates(&self.nodes, &values, &self.consts, &self.output);
        self.gate_muls = (self.gates.iter().enumerate())
            .filter_map(|(conv, g)| Some((g.as_ref()?.mul, conv)))
            .collect();
        self.last_read = fuse::last_reads(&self.nodes, &self.gates);
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
        let targets: HashSet<String> = self.target_set(&values);
        self.targets = self
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter())
            .filter(|o| targets.contains(*o))
            .map(|o| (o.clone(), self.shapes[o][1..].to_vec()))
            .collect();
        // The default: the input of the last global pooling (the classifier's; SE
        // blocks pool too, earlier), seen through the views an exporter puts before it
        // (dynamo lowers a 1D pooling to 2D behind an Unsqueeze).
        let producer: HashMap<&str, &Node> = self
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().map(move |o| (o.as_str(), n)))
            .collect();
        let through_views = |t: &str| -> Option<String> {
            let mut t = t.to_string();
            while !targets.contains(&t) {
                let p = producer.get(t.as_str())?;
                if !matches!(
                    p.op.as_str(),
                    "Unsqueeze" | "Squeeze" | "Reshape" | "Identity"
                ) {
                    return None;
                }
                t = p.inputs.first()?.clone();
            }
            Some(t)
        };
        let pooled = self.nodes.iter().rev().find_map(|n| {
            let i = n.inputs.first()?;
            let (si, so) = (self.shapes.get(i)?, self.shapes.get(n.outputs.first()?)?);
            let global = ops::is_global_pool(&n.op)
                && si.len() >= 3
                && so.len() == si.len()
                && so[1] == si[1]
                && si[2..].iter().product::<usize>() > 1
                && so[2..].iter().all(|&d| d == 1);
            if global {
                through_views(i)
            } else {
                None
            }
        });
        self.default_target = pooled
            .or_else(|| self.targets.last().map(|t| t.0.clone()))
            .ok_or_else(|| err(&self.path, "no tensor with spatial dims to explain"))?;
        let targets = &self.targets;
        self.modules = scopes::module_outputs(&self.nodes, &self.output)
            .into_iter()
            .filter(|(_, t)| targets.iter().any(|(n, _)| n == t))
            .collect();
        Ok(())
    }

    /// Tensors a CAM can target: float maps (N, C, spatial...) with one or two spatial
    /// dims (no more than the input has: a 1D model's maps an exporter lowers to 2D are
    /// not its own) of which at least one is longer than 1, computed from the input, on
    /// the way to the output, and channels-first (not inside a permute to NHWC and back).
    fn target_set(&self, values: &HashMap<String, Tensor>) -> HashSet<String> {
        let mut from_input: HashSet<&str> = HashSet::from([self.input.as_str()]);
        // Per tensor, the permutation of its axes relative to (N, C, spatial...).
        let mut layout: HashMap<&str, Vec<usize>> = HashMap::new();
        for n in &self.nodes {
            let live = n.inputs.iter().find(|i| from_input.contains(i.as_str()));
            let Some(live) = live else { continue };
            let perm = match n.op.as_str() {
                "Transpose" => {
                    let r = values.get(live).map_or(0, |t| t.rank());
                    let inner = layout
                        .get(live.as_str())
                        .cloned()
                        .unwrap_or_else(|| (0..r).collect());
                    let p: Vec<usize> = n.attrs.get("perm").map_or_else(
                        || (0..r).rev().collect(),
                        |a| a.ints.iter().map(|&v| v as usize).collect(),
                    );
                    p.iter()
                        .map(|&i| inner.get(i).copied().unwrap_or(i))
                        .collect()
                }
                "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => Vec::new(),
                _ => layout.get(live.as_str()).cloned().unwrap_or_default(),
            };
            for o in &n.outputs {
                from_input.insert(o);
                layout.insert(o, perm.clone());
            }
        }
        let mut needed: HashSet<&str> = HashSet::from([self.output.as_str()]);
        for n in self.nodes.iter().rev() {
            if n.outputs.iter().any(|o| needed.contains(o.as_str())) {
                needed.extend(n.inputs.iter().map(String::as_str));
            }
        }
        let channels_first = |p: &[usize]| p.iter().enumerate().all(|(i, &v)| i == v);
        values
            .iter()
            .filter(|(k, v)| {
                from_input.contains(k.as_str())
                    && needed.contains(k.as_str())
                    && k.as_str() != self.input
                    && v.dtype() == DType::F32
                    && (3..=self.input_dims.len()).contains(&v.rank())
                    && v.dims()[2..].iter().product::<usize>() > 1
                    && channels_first(layout.get(k.as_str()).map_or(&[], |p| p.as_slice()))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn num_classes(&self) -> usize {
        self.shapes.get(&self.output).map_or(0, |s| s[1])
    }

    /// Every tensor a CAM can target, with its per-sample shape.
    pub fn targets(&self) -> &[(String, Vec<usize>)] {
        &self.targets
    }

    /// The PyTorch modules (from the exporter's node scopes) whose output `tensor` is.
    pub fn modules_of(&self, tensor: &str) -> Vec<String> {
        self.modules
            .iter()
            .filter(|(_, t)| t == tensor)
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// The tensor a target name stands for: a tensor, or a module name from the node
    /// scopes (`features.16`: what a forward hook on that module sees).
    pub fn resolve(&self, name: &str) -> Result<&str> {
        if let Some((t, _)) = self.targets.iter().find(|(t, _)| t == name) {
            return Ok(t);
        }
        if let Some((_, t)) = self.modules.iter().find(|(m, _)| m == name) {
            return Ok(t);
        }
        if let Some(s) = self.shapes.get(name) {
            let why = if s.len() < 3 || s[2..].iter().product::<usize>() <= 1 {
                format!("tensor of shape {s:?} has no spatial dimensions to explain")
            } else {
                format!("tensor of shape {s:?} is not a channels-first map computed from the input on the way to the output")
            };
            return Err(Error::BadTarget {
                name: name.into(),
                why,
            });
        }
        let mut valid: Vec<String> = self.targets.iter().map(|t| t.0.clone()).collect();
        valid.extend(self.modules.iter().map(|m| m.0.clone()));
        Err(Error::UnknownLayer {
            name: name.into(),
            valid,
        })
    }

    /// Evaluates the graph. With `keep`, Conv + activation pairs whose hidden tensors are
    /// not kept run fused, and values are dropped after their last reader unless kept;
    /// without, every tensor is computed and kept (the probe). With `cut`, the nodes after
    /// it are left out: a split's tail runs them from its leaf.
    fn eval_all(
        &self,
        x: &Tensor,
        keep: Option<&HashSet<String>>,
        cut: Option<&Cut>,
    ) -> Result<HashMap<String, Tensor>> {
        let mut values = self.consts.clone();
        values.insert(self.input.clone(), x.clone());
        let mut skip = match cut {
            Some(cut) => cut.after.clone(),
            None => vec![false; self.nodes.len()],
        };
        for i in 0..self.nodes.len() {
            if skip[i] {
                continue;
            }
            match keep {
                Some(keep) => self.step(i, keep, &mut values, &mut skip)?,
                None => self.eval_node(&self.nodes[i], None, &mut values)?,
            }
            if let Some(keep) = keep {
                for t in self.reads(i) {
                    if self.last_read.get(t) == Some(&i)
                        && !keep.contains(t)
                        && !self.consts.contains_key(t)
                    {
                        values.remove(t);
                    }
                }
            }
        }
        Ok(values)
    }

    /// Runs node `i`, fused where it may be; a gate's Mul that its Conv may take over
    /// does not run (the Conv finds its product missing and reads the gate).
    fn step(
        &self,
        i: usize,
        keep: &HashSet<String>,
        values: &mut HashMap<String, Tensor>,
        skip: &mut [bool],
    ) -> Result<()> {
        let gate_of = |conv: usize| self.gates.get(conv).and_then(Option::as_ref);
        if let Some(g) = self.gate_muls.get(&i).and_then(|&c| gate_of(c)) {
            if g.allowed(keep, values) {
                return Ok(());
            }
        }
        let gate = gate_of(i).filter(|g| !values.contains_key(&g.product));
        let n = &self.nodes[i];
        match self.fusion(i, keep, values, gate) {
            Some(f) => self.eval_fused(n, f, gate, values, skip),
            None => self.eval_node(n, gate, values),
        }
    }

    /// The tensors node `i` reads: its inputs, and a gated Conv's gate.
    fn reads(&self, i: usize) -> impl Iterator<Item = &String> {
        let gate = self.gates.get(i).and_then(Option::as_ref);
        self.nodes[i]
            .inputs
            .iter()
            .chain(gate.into_iter().flat_map(|g| [&g.x, &g.scale]))
    }

    /// The fusion that starts at node `i`, if it may run now (reading `gate`'s input
    /// in place of its own when its Mul was skipped).
    fn fusion(
        &self,
        i: usize,
        keep: &HashSet<String>,
        values: &HashMap<String, Tensor>,
        gate: Option<&fuse::Gate>,
    ) -> Option<&fuse::Fusion> {
        let f = self.fusions.get(i)?.as_ref()?;
        let first = match gate {
            Some(g) => Some(&g.x),
            None => self.nodes[i].inputs.first(),
        };
        f.allowed(keep, first.and_then(|t| values.get(t)))
            .then_some(f)
    }

    /// A Conv with its activation as one op; the nodes it stands for are marked skipped.
    fn eval_fused(
        &self,
        n: &Node,
        f: &fuse::Fusion,
        gate: Option<&fuse::Gate>,
        values: &mut HashMap<String, Tensor>,
        skip: &mut [bool],
    ) -> Result<()> {
        let ctx = Ctx {
            node: n,
            values,
            consts: &self.consts,
            act: f.act,
            residual: f.residual.as_deref(),
            gate: gate.map(|g| (g.x.as_str(), g.scale.as_str())),
        };
        let out = (n.run)(&ctx)
            .map_err(|e| err(&self.path, format!("node {}: {e}", n.describe())))?
            .into_iter()
            .next()
            .ok_or_else(|| err(&self.path, format!("node {}: no output", n.describe())))?;
        values.insert(f.out.clone(), out);
        for &a in &f.absorbed {
            skip[a] = true;
        }
        Ok(())
    }

    fn eval_node(
        &self,
        n: &Node,
        gate: Option<&fuse::Gate>,
        values: &mut HashMap<String, Tensor>,
    ) -> Result<()> {
        let ctx = Ctx {
            node: n,
            values,
            consts: &self.consts,
            act: Act::Identity,
            residual: None,
            gate: gate.map(|g| (g.x.as_str(), g.scale.as_str())),
        };
        let outs =
            (n.run)(&ctx).map_err(|e| err(&self.path, format!("node {}: {e}", n.describe())))?;
        for (name, t) in n.outputs.iter().zip(outs) {
            if !name.is_empty() {
                values.insert(name.clone(), t);
            }
        }
        Ok(())
    }

    /// The graph cut at `target`: the nodes that depend on it and what they read from
    /// before it, found once per split. Fails when the output does not depend on it.
    fn cut(&self, target: String) -> Result<Cut> {
        let mut made = HashSet::from([target.as_str()]);
        let after: Vec<bool> = self
            .nodes
            .iter()
            .map(|n| {
                let after = n.inputs.iter().any(|i| made.contains(i.as_str()));
                if after {
                    made.extend(n.outputs.iter().map(String::as_str));
                }
                after
            })
            .collect();
        if !made.contains(self.output.as_str()) {
            return Err(err(
                &self.path,
                format!("the output does not depend on `{target}`"),
            ));
        }
        let reads = self
            .nodes
            .iter()
            .zip(&after)
            .filter(|(_, after)| **after)
            .flat_map(|(n, _)| &n.inputs)
            .filter(|i| !made.contains(i.as_str()))
            .cloned()
            .collect();
        Ok(Cut {
            target,
            after,
            reads,
        })
    }

    /// Re-evaluates only the nodes after the cut, with `leaf` in place of its target and
    /// every other value taken (detached) from `values`; returns the logits.
    fn forward_from(
        &self,
        cut: &Cut,
        leaf: &Tensor,
        mut values: HashMap<String, Tensor>,
    ) -> Result<Tensor> {
        for v in values.values_mut() {
            *v = v.detach();
        }
        values.insert(cut.target.clone(), leaf.clone());
        let keep = HashSet::from([self.output.clone()]);
        let mut skip = vec![false; self.nodes.len()];
        for i in 0..self.nodes.len() {
            if !skip[i] && cut.after[i] {
                self.step(i, &keep, &mut values, &mut skip)?;
            }
        }
        values
            .get(&self.output)
            .cloned()
            .ok_or_else(|| err(&self.path, "no output"))
    }

    /// Lets a graph whose batch was fixed at export (dynamo bakes its example's) run any
    /// batch in one pass: chunks of 1 ran a batch-8 ResNet-18 at 0.64 of the speed of
    /// the same network with a dynamic batch. The views whose constant shape starts with
    /// that batch (`bakes_batch`) keep their input's instead, and the graph is freed only
    /// if a batch one larger, of distinct samples, gives the logits and default-target
    /// activations that the chunked run gives; any other shape baked in fails there, and
    /// the chunks stay.
    fn free_batch(&mut self, device: &Device) -> Result<()> {
        /// Checking costs 2 (b + 1) forwards; past this the chunks are large enough.
        const MAX_CHECKED: usize = 8;
        let Some(b) = self.batch.filter(|&b| b <= MAX_CHECKED) else {
            return Ok(());
        };
        let leads: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.bakes_batch(&self.nodes[i], b))
            .collect();
        let mut dims = self.shapes[&self.input].clone();
        dims[0] = b + 1;
        let n = dims.iter().product();
        let x = Tensor::from_vec(crate::random::portable("free_batch", 0, n), dims, device)?;
        let Ok(chunked) = self.checked_values(&x) else {
            return Ok(()); // the chunks stay, and the first real batch reports why
        };
        self.set_batch_leads(&leads, true);
        self.batch = None;
        let free = self.checked_values(&x).is_ok_and(|whole| {
            whole
                .iter()
                .zip(&chunked)
                .all(|(a, b)| close(a, b).unwrap_or(false))
        });
        if !free {
            self.set_batch_leads(&leads, false);
            self.batch = Some(b);
        }
        Ok(())
    }

    /// The logits and the default target's activations for the batch `x`, run in the
    /// graph's chunks (one when its batch is free), each narrowed to the real samples.
    fn checked_values(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let names = [&self.output, &self.default_target];
        let keep: HashSet<String> = names.iter().map(|n| n.to_string()).collect();
        let mut parts = vec![Vec::new(); names.len()];
        for c in self.chunks(x.dim(0)?) {
            let v = self.eval_all(&self.chunk_of(x, c)?, Some(&keep), None)?;
            for (part, name) in parts.iter_mut().zip(names) {
                part.push(self.output_of(&v, name)?.narrow(0, 0, c.1)?);
            }
        }
        parts.iter().map(|p| Ok(Tensor::cat(p, 0)?)).collect()
    }

    /// Whether node `n` is a view whose constant shape starts with the baked batch `b`:
    /// a Reshape, or a Gather of every value of a flattened tensor in order (dynamo's
    /// lowering of a view through `as_strided`, ConvNeXt's head), a reshape to the
    /// indices' shape.
    fn bakes_batch(&self, n: &Node, b: usize) -> bool {
        let Some(c) = n.inputs.get(1).and_then(|s| self.consts.get(s)) else {
            return false;
        };
        let Ok(v) = ops::i64s(c) else { return false };
        match n.op.as_str() {
            "Reshape" => v.first() == Some(&(b as i64)),
            "Gather" => {
                let flat = n.inputs.first().and_then(|x| self.shapes.get(x));
                n.attrs.get("axis").is_none_or(|a| a.i == 0)
                    && c.dims().first() == Some(&b)
                    && flat == Some(&vec![v.len()])
                    && v.iter().enumerate().all(|(i, &j)| j == i as i64)
            }
            _ => false,
        }
    }

    fn set_batch_leads(&mut self, nodes: &[usize], on: bool) {
        for &i in nodes {
            self.nodes[i].batch_lead = on;
        }
    }

    /// Batch slices (start, len) the graph runs: one, or chunks of the fixed batch.
    fn chunks(&self, n: usize) -> Vec<(usize, usize)> {
        match self.batch {
            Some(b) if b != n => (0..n).step_by(b).map(|s| (s, b.min(n - s))).collect(),
            _ => vec![(0, n)],
        }
    }

    /// `x` narrowed to a chunk and padded with zeros to the graph's fixed batch.
    fn chunk_of(&self, x: &Tensor, (start, len): (usize, usize)) -> Result<Tensor> {
        let part = x.narrow(0, start, len)?;
        match self.batch {
            Some(b) if b > len => {
                let mut shape = x.dims().to_vec();
                shape[0] = b - len;
                let pad = Tensor::zeros(shape, x.dtype(), x.device())?;
                Ok(Tensor::cat(&[&part, &pad], 0)?)
            }
            _ => Ok(part),
        }
    }

    /// What the nodes after `target` read from before it: one sample's values of those
    /// tensors, repeated `rows` times (constants and shape vectors stay as they are).
    fn repeat_sample(
        &self,
        cut: &Cut,
        values: &HashMap<String, Tensor>,
        rows: usize,
    ) -> Result<HashMap<String, Tensor>> {
        let mut out = self.consts.clone();
        for name in &cut.reads {
            let Some(t) = values.get(name) else { continue };
            let per_sample =
                t.rank() >= 2 && t.dtype().is_float() && !self.consts.contains_key(name);
            let t = if per_sample {
                let mut dims = t.dims().to_vec();
                dims[0] = rows;
                t.narrow(0, 0, 1)?.broadcast_as(dims)?.contiguous()?
            } else {
                t.clone()
            };
            out.insert(name.clone(), t);
        }
        Ok(out)
    }

    fn output_of(&self, values: &HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
        values
            .get(name)
            .cloned()
            .ok_or_else(|| err(&self.path, format!("tensor `{name}` was not computed")))
    }
}

/// Whether two runs' values agree to float rounding (1e-4 of their largest magnitude).
fn close(a: &Tensor, b: &Tensor) -> candle_core::Result<bool> {
    if a.dims() != b.dims() {
        return Ok(false);
    }
    let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    Ok(diff <= 1e-4 * scale.max(1.0))
}

/// A graph is evaluated once up to the target; then only the nodes downstream of it run
/// again, from the tensor put in its place. A fixed-batch graph does both per chunk.
impl crate::model::Body for OnnxGraph {
    fn target_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.targets.iter().map(|t| t.0.clone()).collect();
        v.extend(self.modules.iter().map(|m| m.0.clone()));
        v
    }

    fn check_target(&self, layer: &str) -> Result<()> {
        self.resolve(layer).map(|_| ())
    }

    fn aliases(&self, layer: &str) -> Vec<String> {
        self.modules_of(layer)
    }

    fn fixed_batch(&self) -> Option<usize> {
        self.batch
    }

    fn layer_shapes(&self, _input: &Tensor) -> Result<Vec<(String, Vec<usize>)>> {
        Ok(self.targets.clone())
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut outs = Vec::new();
        let keep = HashSet::from([self.output.clone()]);
        for c in self.chunks(x.dim(0)?) {
            let v = self.eval_all(&self.chunk_of(x, c)?, Some(&keep), None)?;
            outs.push(self.output_of(&v, &self.output)?.narrow(0, 0, c.1)?);
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    fn split<'s>(&'s self, x: &Tensor, layer: &str) -> Result<(Tensor, crate::model::Tail<'s>)> {
        let cut = self.cut(self.resolve(layer)?.to_string())?;
        let chunks = self.chunks(x.dim(0)?);
        let mut acts = Vec::with_capacity(chunks.len());
        let mut states = Vec::with_capacity(chunks.len());
        // What the tail reads from before the cut, and the cut itself.
        let mut keep = cut.reads.clone();
        keep.insert(cut.target.clone());
        for &c in &chunks {
            let v = self.eval_all(&self.chunk_of(x, c)?, Some(&keep), Some(&cut))?;
            acts.push(self.output_of(&v, &cut.target)?.narrow(0, 0, c.1)?);
            states.push(v);
        }
        let n = x.dim(0)?;
        let tail: crate::model::Tail<'s> = Box::new(move |leaf: &Tensor| {
            let rows = leaf.dim(0)?;
            let mut logits = Vec::new();
            if rows == n {
                for (&c, values) in chunks.iter().zip(&states) {
                    let part = self.chunk_of(leaf, c)?;
                    let out = self.forward_from(&cut, &part, values.clone())?;
                    logits.push(out.narrow(0, 0, c.1)?);
                }
            } else if n == 1 {
                // Variants of one sample: every tensor the tail reads from before the cut
                // is that sample's, repeated.
                for c in self.chunks(rows) {
                    let part = self.chunk_of(leaf, c)?;
                    let values = self.repeat_sample(&cut, &states[0], part.dim(0)?)?;
                    let out = self.forward_from(&cut, &part, values)?;
                    logits.push(out.narrow(0, 0, c.1)?);
                }
            } else {
                return Err(err(
                    &self.path,
                    format!("the tail was split for {n} samples and given {rows}"),
                ));
            }
            Ok(Tensor::cat(&logits, 0)?)
        });
        Ok((Tensor::cat(&acts, 0)?, tail))
    }

    /// The output of a first Conv with constant weights, when nothing else reads the
    /// input (a tail given masked stems must not see the unmasked input elsewhere) and
    /// that output is a target.
    fn affine_stem(&self) -> Option<String> {
        let mut readers = self.nodes.iter().filter(|n| n.inputs.contains(&self.input));
        let (Some(conv), None) = (readers.next(), readers.next()) else {
            return None;
        };
        let constant = conv.inputs[1..]
            .iter()
            .all(|i| i.is_empty() || self.consts.contains_key(i));
        let out = conv.outputs.first()?;
        (conv.op == "Conv" && conv.inputs[0] == self.input && constant)
            .then(|| self.targets.iter().find(|(t, _)| t == out))
            .flatten()
            .map(|(t, _)| t.clone())
    }
}
