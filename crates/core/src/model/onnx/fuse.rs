//! What the evaluator can skip: a Conv and the activation after it run as one op (with
//! a residual Add between them: ResNet's blocks, MobileNet's bottlenecks), so does a
//! standalone BatchNormalization and its activation (DenseNet), a Conv reads the
//! squeeze-and-excitation gate before it instead of its gated copy (EfficientNet,
//! MobileNetV3), and a value is dropped after its last reader.
//!
//! Every tensor of a graph can be a CAM target, so nothing is rewritten at load: a
//! fusion is planned per Conv node and taken at run time only when none of the tensors
//! it hides is wanted (the target, the output, or a value the part after the cut reads),
//! and, for activations whose gradient needs their input (SiLU, HardSwish), only where no
//! gradient flows. Dropping dead values keeps an evaluation's memory at the live set,
//! so freed blocks are reused instead of fresh pages being faulted in for every tensor.

use std::collections::{HashMap, HashSet};

use candle_core::Tensor;

use super::ops::{scalar, Node};
use crate::model::fastconv::Act;

/// A Conv (or BatchNormalization) node, by index, with the nodes after it that its
/// epilogue replaces.
#[derive(Clone, Debug)]
pub(super) struct Fusion {
    pub act: Act,
    /// Nodes the fused op stands for (skipped when it runs).
    pub absorbed: Vec<usize>,
    /// Tensors that do not exist when it runs: the conv's own output, and SiLU's sigmoid.
    pub hidden: Vec<String>,
    /// The tensor the fused op produces (the last absorbed node's output).
    pub out: String,
    /// The other operand of an absorbed Add, computed by an earlier node (or a constant,
    /// or the input) and shaped like the conv's output.
    pub residual: Option<String>,
}

impl Fusion {
    /// Whether it may run, given the tensors wanted and the conv's input.
    pub fn allowed(&self, keep: &HashSet<String>, input: Option<&Tensor>) -> bool {
        let hidden_wanted = self.hidden.iter().any(|h| keep.contains(h));
        let grad = input.is_none_or(|x| x.track_op());
        !hidden_wanted && (self.act.invertible() || !grad)
    }
}

/// Per node, the fusion that starts at it (Conv and BatchNormalization nodes only).
/// `values` are a probe run's (Clip's bounds may come from Constant nodes).
pub(super) fn plan(
    nodes: &[Node],
    values: &HashMap<String, Tensor>,
    output: &str,
) -> Vec<Option<Fusion>> {
    let readers = readers(nodes);
    let only = |t: &str| -> Option<usize> {
        match readers.get(t).map(Vec::as_slice) {
            Some([j]) if t != output => Some(*j),
            _ => None,
        }
    };
    let producer = producers(nodes);
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            // A standalone BatchNormalization takes its activation too (not a residual).
            let is_conv = n.op == "Conv";
            let conv_out = n
                .outputs
                .first()
                .filter(|_| is_conv || n.op == "BatchNormalization")?;
            let j = readers.get(conv_out.as_str())?;
            let single = |act: Act, j: usize| Fusion {
                act,
                absorbed: vec![j],
                hidden: vec![conv_out.clone()],
                out: nodes[j].outputs[0].clone(),
                residual: None,
            };
            match j.as_slice() {
                [j] if conv_out != output && nodes[*j].op == "Add" => {
                    if !is_conv {
                        return None;
                    }
                    let grouped = n.attrs.get("group").is_some_and(|g| g.i > 1);
                    let add = &nodes[*j];
                    let other = match add.inputs.as_slice() {
                        [a, b] if a == conv_out && b != conv_out => b,
                        [a, b] if b == conv_out && a != conv_out => a,
                        _ => return None,
                    };
                    let shaped = |t: &str| values.get(t).map(|v| v.dims().to_vec());
                    // Computed before the conv runs, so a re-evaluation after a cut
                    // never reads a stale value of it.
                    let ready = producer.get(other.as_str()).is_none_or(|&p| p < i);
                    let same = shaped(other).is_some() && shaped(other) == shaped(conv_out);
                    if grouped || !ready || !same {
                        return None;
                    }
                    let sum = add.outputs.first()?;
                    // A ReLU that alone reads the sum joins the epilogue too.
                    let relu = only(sum).filter(|&r| nodes[r].op == "Relu");
                    Some(match relu {
                        Some(r) => Fusion {
                            act: Act::Relu,
                            absorbed: vec![*j, r],
                            hidden: vec![conv_out.clone(), sum.clone()],
                            out: nodes[r].outputs[0].clone(),
                            residual: Some(other.clone()),
                        },
                        None => Fusion {
                            residual: Some(other.clone()),
                            ..single(Act::Identity, *j)
                        },
                    })
                }
                [j] if conv_out != output => match nodes[*j].op.as_str() {
                    "Relu" => Some(single(Act::Relu, *j)),
                    "Sigmoid" => Some(single(Act::Sigmoid, *j)),
                    "HardSwish" => Some(single(Act::HardSwish, *j)),
                    "Clip" => match clip_bounds(&nodes[*j], values)? {
                        (0.0, 6.0) => Some(single(Act::Relu6, *j)),
                        (0.0, hi) if hi == f32::INFINITY => Some(single(Act::Relu, *j)),
                        _ => None,
                    },
                    _ => None,
                },
                // SiLU as torch exports it: s = Sigmoid(c), Mul(c, s), s read only there.
                [a, b] if conv_out != output => {
                    let (sig, mul) = if nodes[*a].op == "Sigmoid" {
                        (*a, *b)
                    } else {
                        (*b, *a)
                    };
                    let s = nodes[sig].outputs.first()?;
                    let m = &nodes[mul];
                    let pair = [m.inputs.first()?, m.inputs.get(1)?];
                    let silu = nodes[sig].op == "Sigmoid"
                        && m.op == "Mul"
                        && m.inputs.len() == 2
                        && pair.contains(&conv_out)
                        && pair.contains(&s)
                        && only(s) == Some(mul)
                        && sig < mul;
                    silu.then(|| Fusion {
                        act: Act::Silu,
                        absorbed: vec![sig, mul],
                        hidden: vec![conv_out.clone(), s.clone()],
                        out: m.outputs[0].clone(),
                        residual: None,
                    })
                }
                _ => None,
            }
        })
        .collect()
}

/// Squeeze-and-excitation's gate before a dense Conv: `product = Mul(x, scale)`, with
/// `scale` one value per (sample, channel), read only by that Conv. Where the product is
/// not wanted and no gradient flows, the Mul is skipped and the Conv scales `x` as it
/// reads it (`layers::Conv::forward_gated`): no gated copy of the largest tensor of a
/// MobileNetV3 or EfficientNet block.
#[derive(Clone, Debug)]
pub(super) struct Gate {
    pub mul: usize,
    pub x: String,
    pub scale: String,
    pub product: String,
}

impl Gate {
    /// Whether the Mul may be left to the Conv, given the tensors wanted and those
    /// computed so far.
    pub fn allowed(&self, keep: &HashSet<String>, values: &HashMap<String, Tensor>) -> bool {
        let untracked = |t: &String| values.get(t).is_some_and(|v| !v.track_op());
        !keep.contains(&self.product) && untracked(&self.x) && untracked(&self.scale)
    }
}

/// Per node, the gate a Conv node reads through (see [`Gate`]). `values` are a probe
/// run's, for the shapes; `consts` the graph's constants.
pub(super) fn gates(
    nodes: &[Node],
    values: &HashMap<String, Tensor>,
    consts: &HashMap<String, Tensor>,
    output: &str,
) -> Vec<Option<Gate>> {
    let readers = readers(nodes);
    let producer = producers(nodes);
    let dims = |t: &str| values.get(t).map(|v| v.dims().to_vec());
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let dense = n.op == "Conv" && n.attrs.get("group").is_none_or(|g| g.i == 1);
            let product = n.inputs.first().filter(|_| dense)?;
            // Weights computed by the graph could depend on a cut's target.
            let weights_given =
                (n.inputs.iter().skip(1)).all(|w| w.is_empty() || consts.contains_key(w));
            let &mul = producer.get(product.as_str())?;
            let m = &nodes[mul];
            let read_once = readers.get(product.as_str()).map(Vec::as_slice) == Some(&[i]);
            if m.op != "Mul" || !weights_given || !read_once || product == output {
                return None;
            }
            let [a, b] = m.inputs.as_slice() else {
                return None;
            };
            let full = dims(product)?;
            let per_channel = |t: &str| {
                dims(t).is_some_and(|d| {
                    d.len() == 4 && d[..2] == full[..2] && d[2..] == [1, 1] && full[2..] != [1, 1]
                })
            };
            let (x, scale) = match (dims(a) == Some(full.clone()), dims(b) == Some(full.clone())) {
                (true, false) if per_channel(b) => (a, b),
                (false, true) if per_channel(a) => (b, a),
                _ => return None,
            };
            Some(Gate {
                mul,
                x: x.clone(),
                scale: scale.clone(),
                product: product.clone(),
            })
        })
        .collect()
}

/// Clip's bounds: inputs from opset 11, attributes before.
fn clip_bounds(n: &Node, values: &HashMap<String, Tensor>) -> Option<(f32, f32)> {
    let bound = |i: usize, attr: &str, default: f32| -> Option<f32> {
        match n.inputs.get(i).filter(|s| !s.is_empty()) {
            Some(name) => scalar(values.get(name)?).ok(),
            None => Some(n.attrs.get(attr).map_or(default, |a| a.f)),
        }
    };
    Some((
        bound(1, "min", f32::NEG_INFINITY)?,
        bound(2, "max", f32::INFINITY)?,
    ))
}

/// Per tensor, the node that computes it.
fn producers(nodes: &[Node]) -> HashMap<&str, usize> {
    (nodes.iter().enumerate())
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect()
}

/// Per tensor, the nodes that read it.
fn readers(nodes: &[Node]) -> HashMap<&str, Vec<usize>> {
    let mut r: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for input in n.inputs.iter().filter(|s| !s.is_empty()) {
            let v = r.entry(input.as_str()).or_default();
            if v.last() != Some(&i) {
                v.push(i);
            }
        }
    }
    r
}

/// Per tensor, the index of the last node that reads it; a gated Conv reads its gate's
/// `x` and `scale`.
pub(super) fn last_reads(nodes: &[Node], gates: &[Option<Gate>]) -> HashMap<String, usize> {
    let mut last: HashMap<String, usize> = readers(nodes)
        .into_iter()
        .filter_map(|(t, v)| Some((t.to_string(), *v.last()?)))
        .collect();
    for (conv, g) in gates.iter().enumerate() {
        for t in g.iter().flat_map(|g| [&g.x, &g.scale]) {
            let at = last.entry(t.clone()).or_default();
            *at = (*at).max(conv);
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::super::OnnxGraph;
    use super::*;
    use candle_core::Device;

    /// A graph of tests/fixtures, loaded on the CPU.
    fn fixture(path: &str) -> OnnxGraph {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures")
            .join(path);
        OnnxGraph::load(&file, None, &Device::Cpu).unwrap()
    }

    /// The tiny residual fixture (torch.onnx.export of torchvision BasicBlocks): layer1's
    /// second Conv takes the identity shortcut and the ReLU after the Add; in layer2 the
    /// downsample Conv runs after conv2, so it (not conv2) takes the Add, with conv2's
    /// output as the residual. Values are checked by tests/onnx.rs against PyTorch.
    #[test]
    fn residual_adds_join_the_conv_that_runs_last() {
        let g = fixture("tinyres/tinyres.onnx");
        let fused: Vec<_> = g.fusions.iter().flatten().collect();
        let residual: Vec<_> = fused.iter().filter(|f| f.residual.is_some()).collect();
        assert_eq!(residual.len(), 2, "{fused:#?}");
        for f in residual {
            assert_eq!(f.act, crate::model::fastconv::Act::Relu);
            assert_eq!(f.absorbed.len(), 2);
        }
    }

    /// The `se_block` fixture (torchvision's SqueezeExcitation, then a 3x3 conv, twice):
    /// both gates are planned; where the product is not wanted the Mul never runs and the
    /// logits are the probe's (every node run, nothing fused); a wanted product is made.
    /// Values against pytorch-grad-cam: tests/families.rs.
    #[test]
    fn se_gates_are_read_by_the_conv_after_them() {
        let g = fixture("families/se_block/model.onnx");
        let gates: Vec<_> = g.gates.iter().flatten().collect();
        assert_eq!(gates.len(), 2, "{gates:#?}");
        let x = crate::random::test_tensor(&g.shapes[&g.input], 91);
        let probe = g.eval_all(&x, None, None).unwrap();
        for gate in gates {
            assert_eq!(g.nodes[gate.mul].op, "Mul");
            for (wanted, made) in [(&gate.x, false), (&gate.product, true)] {
                let keep = HashSet::from([g.output.clone(), wanted.clone()]);
                let v = g.eval_all(&x, Some(&keep), None).unwrap();
                assert_eq!(v.contains_key(&gate.product), made, "keeping {wanted}");
                let d = (&v[&g.output] - &probe[&g.output]).unwrap().abs().unwrap();
                let d = d.max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(d < 1e-5, "keeping {wanted}: logits differ by {d}");
            }
        }
    }

    /// The `dense_bn` fixture (DenseNet layers, `conv(relu(norm(cat(xs))))`): each
    /// standalone BatchNormalization takes the ReLU after it, and none takes an Add.
    /// Values are checked by tests/families.rs against pytorch-grad-cam.
    #[test]
    fn standalone_batch_norms_take_their_relu() {
        let g = fixture("families/dense_bn/model.onnx");
        let norms: Vec<_> = g
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op == "BatchNormalization")
            .collect();
        assert!(norms.len() >= 3, "{} norms", norms.len());
        for (i, n) in norms {
            let f = g.fusions[i]
                .as_ref()
                .unwrap_or_else(|| panic!("{} unfused", n.name));
            assert_eq!(f.act, crate::model::fastconv::Act::Relu, "{}", n.name);
            assert_eq!(f.residual, None);
            assert_eq!(g.nodes[f.absorbed[0]].op, "Relu");
        }
    }
}
