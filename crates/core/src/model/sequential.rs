//! `arch = "sequential"`: a plain CNN described layer by layer in TOML. Shapes come from
//! the weights; the channel count is tracked through the list so a weight that does not
//! fit names itself with both shapes.

use std::path::Path;

use candle_core::Device;

use crate::error::{Error, Result};
use crate::model::layers::{ChannelAffine, Conv, Dims, Linear, Op, Pool, PoolKind};
use crate::model::{Network, Unit, Weights};
use crate::preprocess::{InputKind, InputSpec};

/// One `[[layer]]` of a model config, in the order of PyTorch's `nn.Sequential`.
#[derive(Debug, serde::Deserialize, Clone)]
pub struct LayerSpec {
    pub name: String,
    pub op: String,
    pub stride: Option<usize>,
    pub padding: Option<usize>,
    pub dilation: Option<usize>,
    pub groups: Option<usize>,
    pub bias: Option<bool>,
    pub eps: Option<f64>,
    pub kernel: Option<usize>,
    pub slope: Option<f64>,
}

pub const OPS: &[&str] = &[
    "conv1d",
    "conv2d",
    "batchnorm1d",
    "batchnorm2d",
    "relu",
    "relu6",
    "leaky_relu",
    "sigmoid",
    "maxpool1d",
    "maxpool2d",
    "avgpool1d",
    "avgpool2d",
    "global_avgpool",
    "flatten",
    "linear",
    "dropout",
];

/// What flows between layers: channels and spatial size, or flat features.
enum Flow {
    Spatial { channels: usize, size: Vec<usize> },
    Flat(usize),
}

fn out_len(inp: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    let span = d * (k - 1) + 1;
    (inp + 2 * p).checked_sub(span).map(|r| r / s + 1)
}

/// `keep` (one layer or several, comma-separated) names `layer`.
fn keeps(keep: Option<&str>, layer: &str) -> bool {
    keep.is_some_and(|k| k.split(',').any(|l| l.trim() == layer))
}

pub fn build(
    name: &str,
    specs: &[LayerSpec],
    input: InputSpec,
    w: &Weights,
    keep: Option<&str>,
    device: &Device,
    cfg: &Path,
) -> Result<Network> {
    let in_dims = match input.kind {
        InputKind::Image | InputKind::Audio => Dims::Two,
        InputKind::Signal => Dims::One,
    };
    let mut flow = Flow::Spatial {
        channels: input.channels,
        size: input.size.clone(),
    };
    let mut units: Vec<Unit> = Vec::with_capacity(specs.len());
    let mut names = std::collections::HashSet::new();
    for spec in specs {
        let lname = spec.name.as_str();
        if !names.insert(lname) {
            return Err(Error::config(
                cfg,
                format!("layer name `{lname}` is used twice"),
            ));
        }
        let err = |msg: String| Error::config(cfg, format!("layer `{lname}` ({}): {msg}", spec.op));
        let dims_of = |op: &str| {
            if op.ends_with("1d") {
                Dims::One
            } else {
                Dims::Two
            }
        };
        let op = match spec.op.as_str() {
            "conv1d" | "conv2d" | "maxpool1d" | "maxpool2d" | "avgpool1d" | "avgpool2d"
            | "batchnorm1d" | "batchnorm2d" => {
                let dims = dims_of(&spec.op);
                let Flow::Spatial { channels, size } = &mut flow else {
                    return Err(err("comes after flatten/global pooling".into()));
                };
                if dims != in_dims {
                    return Err(err(format!(
                        "a {}D layer in a model whose input is {}D",
                        dims.rank(),
                        in_dims.rank()
                    )));
                }
                let stride = spec.stride.unwrap_or(1);
                let padding = spec.padding.unwrap_or(0);
                let dilation = spec.dilation.unwrap_or(1);
                if stride == 0 || dilation == 0 {
                    return Err(err("stride and dilation must be >= 1".into()));
                }
                if spec.op.starts_with("conv") {
                    let conv = Conv::load(
                        w,
                        lname,
                        dims,
                        *channels,
                        None,
                        None,
                        spec.groups.unwrap_or(1),
                        spec.bias.unwrap_or(true),
                    )?
                    .with(stride, padding, dilation);
                    let k = conv.weight.dims()[2];
                    for s in size.iter_mut() {
                        *s = out_len(*s, k, stride, padding, dilation)
                            .ok_or_else(|| err("input too short for the kernel".into()))?;
                    }
                    *channels = conv.out_channels();
                    Op::Conv(conv)
                } else if spec.op.starts_with("batchnorm") {
                    let bn = ChannelAffine::load_bn(w, lname, *channels, spec.eps.unwrap_or(1e-5))?;
                    match units.last_mut() {
                        Some(prev)
                            if matches!(prev.op, Op::Conv(_))
                                && prev.fused_into.is_none()
                                && !keeps(keep, &prev.name) =>
                        {
                            if let Op::Conv(c) = &mut prev.op {
                                c.fold(&bn)?;
                            }
                            prev.fused_into = Some(lname.to_string());
                            Op::Identity
                        }
                        _ => Op::Affine(bn),
                    }
                } else {
                    let kernel = spec.kernel.ok_or_else(|| err("needs `kernel`".into()))?;
                    let stride = spec.stride.unwrap_or(kernel);
                    if kernel == 0 || stride == 0 {
                        return Err(err("kernel and stride must be >= 1".into()));
                    }
                    for s in size.iter_mut() {
                        *s = out_len(*s, kernel, stride, padding, 1)
                            .ok_or_else(|| err("input too short for the kernel".into()))?;
                    }
                    let kind = if spec.op.starts_with("max") {
                        PoolKind::Max
                    } else {
                        PoolKind::Avg
                    };
                    Op::Pool(Pool {
                        kind,
                        dims,
                        kernel,
                        stride,
                        padding,
                    })
                }
            }
            "relu" => Op::Relu,
            "relu6" => Op::Relu6,
            "leaky_relu" => Op::LeakyRelu(spec.slope.unwrap_or(0.01)),
            "sigmoid" => Op::Sigmoid,
            "dropout" => Op::Identity,
            "global_avgpool" => {
                let Flow::Spatial { channels, .. } = flow else {
                    return Err(err("comes after flatten/global pooling".into()));
                };
                flow = Flow::Flat(channels);
                Op::GlobalAvgPool
            }
            "flatten" => {
                if let Flow::Spatial { channels, size } = &flow {
                    flow = Flow::Flat(channels * size.iter().product::<usize>());
                }
                Op::Flatten
            }
            "linear" => {
                let Flow::Flat(features) = flow else {
                    return Err(err(
                        "needs flat input: add global_avgpool or flatten before it".into(),
                    ));
                };
                let l = Linear::load(w, lname, features, spec.bias.unwrap_or(true))?;
                flow = Flow::Flat(l.out_features());
                Op::Linear(l)
            }
            other => {
                return Err(Error::Unsupported {
                    what: "layer op",
                    name: other.to_string(),
                    supported: OPS.iter().map(|s| s.to_string()).collect(),
                })
            }
        };
        units.push(Unit {
            name: lname.to_string(),
            op,
            fused_into: None,
        });
    }
    let Flow::Flat(num_classes) = flow else {
        return Err(Error::config(
            cfg,
            "the network must end in class scores (global_avgpool/flatten, then linear)",
        ));
    };
    let default_layer = default_target(&units);
    Ok(Network {
        name: name.to_string(),
        body: std::sync::Arc::new(crate::model::UnitNet::new(units)),
        input,
        labels: None,
        num_classes,
        default_layer,
        device: device.clone(),
        multi_label: false,
    })
}

/// The last unit before the spatial dims are pooled away, as pytorch-grad-cam users pick.
fn default_target(units: &[Unit]) -> String {
    units
        .iter()
        .take_while(|u| !matches!(u.op, Op::GlobalAvgPool | Op::Flatten | Op::Linear(_)))
        .filter(|u| u.fused_into.is_none())
        .last()
        .map(|u| u.name.clone())
        .unwrap_or_default()
}
