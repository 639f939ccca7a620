//! `arch = "sequential"`: a plain CNN described layer by layer in TOML. Shapes come from
//! the weights; the channel count is tracked through the list so a weight that does not
//! fit names itself with both shapes.

use std::path::Path;

use candle_core::Device;

use crate::error::{Error, Result};
use crate::model::layers::{ceil_extra, ChannelAffine, Conv, Dims, Linear, Op, Pool, PoolKind};
use crate::model::volume::{Conv3d, Pool3d};
use crate::model::{Network, Unit, Weights};
use crate::preprocess::InputSpec;

/// One `[[layer]]` of a model config, in the order of PyTorch's `nn.Sequential`.
#[derive(Debug, serde::Deserialize, Clone)]
pub struct LayerSpec {
    pub name: String,
    pub op: String,
    pub stride: Option<Axes>,
    pub padding: Option<Axes>,
    pub dilation: Option<Axes>,
    pub groups: Option<usize>,
    pub bias: Option<bool>,
    pub eps: Option<f64>,
    pub kernel: Option<Axes>,
    pub slope: Option<f64>,
    /// 3D pooling: PyTorch's `ceil_mode` (the last, partial window counts).
    pub ceil: Option<bool>,
}

/// A size for every spatial axis: one number for all, or (3D layers) `[t, h, w]`.
#[derive(Debug, serde::Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(untagged)]
pub enum Axes {
    All(usize),
    Each([usize; 3]),
}

impl Axes {
    fn each(self) -> [usize; 3] {
        match self {
            Axes::All(v) => [v; 3],
            Axes::Each(v) => v,
        }
    }
}

/// A layer's `field` as one number (1D and 2D layers).
fn one(v: Option<Axes>, field: &str) -> std::result::Result<Option<usize>, String> {
    match v {
        None => Ok(None),
        Some(Axes::All(v)) => Ok(Some(v)),
        Some(Axes::Each(_)) => Err(format!("`{field}` per axis is for 3D layers only")),
    }
}

pub const OPS: &[&str] = &[
    "conv1d",
    "conv2d",
    "batchnorm1d",
    "batchnorm2d",
    "conv3d",
    "batchnorm3d",
    "maxpool3d",
    "avgpool3d",
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
    let in_rank = input.kind.rank();
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
            "conv3d" | "maxpool3d" | "avgpool3d" | "batchnorm3d" => {
                let Flow::Spatial { channels, size } = &mut flow else {
                    return Err(err("comes after flatten/global pooling".into()));
                };
                if in_rank != 3 {
                    return Err(err(format!(
                        "a 3D layer in a model whose input is {in_rank}D"
                    )));
                }
                layer3d(spec, w, channels, size, &mut units, keep).map_err(err)?
            }
            "conv1d" | "conv2d" | "maxpool1d" | "maxpool2d" | "avgpool1d" | "avgpool2d"
            | "batchnorm1d" | "batchnorm2d" => {
                let dims = dims_of(&spec.op);
                let Flow::Spatial { channels, size } = &mut flow else {
                    return Err(err("comes after flatten/global pooling".into()));
                };
                if dims.rank() != in_rank {
                    return Err(err(format!(
                        "a {}D layer in a model whose input is {in_rank}D",
                        dims.rank(),
                    )));
                }
                let stride = one(spec.stride, "stride").map_err(err)?.unwrap_or(1);
                let padding = one(spec.padding, "padding").map_err(err)?.unwrap_or(0);
                let dilation = one(spec.dilation, "dilation").map_err(err)?.unwrap_or(1);
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
                    if spec.ceil == Some(true) {
                        return Err(err("`ceil` is for 3D pooling only".into()));
                    }
                    let kernel = one(spec.kernel, "kernel")
                        .map_err(err)?
                        .ok_or_else(|| err("needs `kernel`".into()))?;
                    let stride = one(spec.stride, "stride").map_err(err)?.unwrap_or(kernel);
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

/// A conv3d, batchnorm3d, maxpool3d or avgpool3d layer; `size` is (T, H, W) and is
/// updated, as `channels`. A batchnorm3d folds into the conv3d before it unless that
/// conv's output is to be kept.
fn layer3d(
    spec: &LayerSpec,
    w: &Weights,
    channels: &mut usize,
    size: &mut [usize],
    units: &mut [Unit],
    keep: Option<&str>,
) -> std::result::Result<Op, String> {
    let name = spec.name.as_str();
    let padding = spec.padding.map_or([0; 3], Axes::each);
    let dilation = spec.dilation.map_or([1; 3], Axes::each);
    let resize = |size: &mut [usize], k: [usize; 3], s: [usize; 3], d: [usize; 3]| {
        if s.contains(&0) || d.contains(&0) || k.contains(&0) {
            return Err("kernel, stride and dilation must be >= 1".to_string());
        }
        for a in 0..3 {
            size[a] = out_len(size[a], k[a], s[a], padding[a], d[a])
                .ok_or_else(|| "input too short for the kernel".to_string())?;
        }
        Ok(())
    };
    match spec.op.as_str() {
        "conv3d" => {
            if spec.groups.is_some_and(|g| g != 1) {
                return Err("grouped 3D convolutions are not supported".into());
            }
            let mut conv = Conv3d::load(w, name, *channels, None, [None; 3])
                .map_err(|e| e.to_string())?
                .with(spec.stride.map_or([1; 3], Axes::each), padding);
            conv.dilation = dilation;
            if spec.bias == Some(true) && conv.bias.is_none() {
                return Err(format!(
                    "`bias = true` but the weights have no `{name}.bias`"
                ));
            }
            let d = conv.weight.dims();
            resize(size, [d[2], d[3], d[4]], conv.stride, dilation)?;
            *channels = conv.out_channels();
            Ok(Op::Conv3d(conv))
        }
        "batchnorm3d" => {
            let bn = ChannelAffine::load_bn(w, name, *channels, spec.eps.unwrap_or(1e-5))
                .map_err(|e| e.to_string())?;
            match units.last_mut() {
                Some(prev) if prev.fused_into.is_none() && !keeps(keep, &prev.name) => {
                    if let Op::Conv3d(c) = &mut prev.op {
                        c.fold(&bn).map_err(|e| e.to_string())?;
                        prev.fused_into = Some(name.to_string());
                        return Ok(Op::Identity);
                    }
                    Ok(Op::Affine(bn))
                }
                _ => Ok(Op::Affine(bn)),
            }
        }
        pool => {
            let kernel = spec.kernel.ok_or("needs `kernel`")?.each();
            let stride = spec.stride.map_or(kernel, Axes::each);
            if dilation != [1; 3] {
                return Err("dilated pooling is not supported".into());
            }
            let max = pool == "maxpool3d";
            let mut sides = padding.map(|p| (p, p));
            if spec.ceil == Some(true) {
                for a in 0..3 {
                    let extra = ceil_extra(size[a], sides[a], kernel[a], stride[a]);
                    if extra > 0 && !max {
                        return Err("avgpool3d with `ceil` over a partial window".into());
                    }
                    sides[a].1 += extra;
                    size[a] += extra;
                }
            }
            resize(size, kernel, stride, dilation)?;
            Ok(Op::Pool3d(Pool3d {
                kind: if max { PoolKind::Max } else { PoolKind::Avg },
                kernel,
                stride,
                padding: sides,
            }))
        }
    }
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
