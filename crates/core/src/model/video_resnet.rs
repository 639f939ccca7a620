//! torchvision's video ResNets (`torchvision.models.video`): r3d_18, mc3_18 and
//! r2plus1d_18, with their state_dict names and Kinetics-400 input. They take clips
//! (N, 3, T, H, W); their `layer4` output is (512, T/8, H/16, W/16).

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::model::layers::{ChannelAffine, Linear, Op, ResidualBlock};
use crate::model::volume::Conv3d;
use crate::model::{Network, Unit, UnitNet, Weights};
use crate::preprocess::{InputKind, InputSpec, Resize};

/// How a block's 3x3x3 convolution is built (torchvision's `conv_makers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Maker {
    /// `Conv3DSimple`: one 3x3x3 convolution.
    Full,
    /// `Conv3DNoTemporal`: 1x3x3 (mc3's layers 2-4), so time is never strided.
    Spatial,
    /// `Conv2Plus1D`: 1x3x3 to `midplanes` channels, BatchNorm, ReLU, then 3x1x1.
    Factored,
}

/// The three architectures: their stems and per-stage conv makers.
fn makers(arch: &str) -> Result<[Maker; 4]> {
    Ok(match arch {
        "r3d_18" => [Maker::Full; 4],
        "mc3_18" => [Maker::Full, Maker::Spatial, Maker::Spatial, Maker::Spatial],
        "r2plus1d_18" => [Maker::Factored; 4],
        other => {
            return Err(Error::Unsupported {
                what: "architecture",
                name: other.into(),
                supported: vec!["r3d_18".into(), "mc3_18".into(), "r2plus1d_18".into()],
            })
        }
    })
}

/// Kinetics-400 as torchvision's video weights expect it: 16 frames of 112x112, the
/// shorter side first brought to 128.
pub fn kinetics_input() -> InputSpec {
    InputSpec {
        kind: InputKind::Clip,
        channels: 3,
        size: vec![16, 112, 112],
        mean: vec![0.43216, 0.394666, 0.37645],
        std: vec![0.22803, 0.22145, 0.216989],
        scale: 255.0,
        resize: Resize::ShorterSideCrop(128),
        sample_rate: None,
        frontend: None,
    }
}

const BLOCKS: usize = 2;
const EPS: f64 = 1e-5;

/// `{conv}.weight` with the BatchNorm `{bn}` folded in.
fn conv_bn(
    w: &Weights,
    conv: &str,
    bn: &str,
    in_ch: usize,
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
) -> Result<Conv3d> {
    let mut c = Conv3d::load(w, conv, in_ch, None, kernel.map(Some))?.with(stride, padding);
    c.fold(&ChannelAffine::load_bn(w, bn, c.out_channels(), EPS)?)?;
    Ok(c)
}

/// The convolutions of one `conv_builder(...)` followed by the BatchNorm `bn`: one for
/// Full and Spatial, two (spatial, then temporal) for Factored.
fn built_conv(
    w: &Weights,
    maker: Maker,
    prefix: &str,
    bn: &str,
    in_ch: usize,
    stride: usize,
) -> Result<Vec<Conv3d>> {
    let s = stride;
    Ok(match maker {
        Maker::Full => vec![conv_bn(w, prefix, bn, in_ch, [3; 3], [s; 3], [1; 3])?],
        Maker::Spatial => vec![conv_bn(
            w,
            prefix,
            bn,
            in_ch,
            [1, 3, 3],
            [1, s, s],
            [0, 1, 1],
        )?],
        Maker::Factored => {
            let sp = conv_bn(
                w,
                &format!("{prefix}.0"),
                &format!("{prefix}.1"),
                in_ch,
                [1, 3, 3],
                [1, s, s],
                [0, 1, 1],
            )?;
            let mid = sp.out_channels();
            let tm = conv_bn(
                w,
                &format!("{prefix}.3"),
                bn,
                mid,
                [3, 1, 1],
                [s, 1, 1],
                [1, 0, 0],
            )?;
            vec![sp, tm]
        }
    })
}

pub fn build(arch: &str, w: &Weights, device: &Device) -> Result<Network> {
    let makers = makers(arch)?;
    let unit = |name: &str, op: Op, fused_into: Option<&str>| Unit {
        name: name.into(),
        op,
        fused_into: fused_into.map(str::to_string),
    };
    let mut units = Vec::new();
    let mut channels = if makers[0] == Maker::Factored {
        let a = conv_bn(w, "stem.0", "stem.1", 3, [1, 7, 7], [1, 2, 2], [0, 3, 3])?;
        let mid = a.out_channels();
        let b = conv_bn(w, "stem.3", "stem.4", mid, [3, 1, 1], [1; 3], [1, 0, 0])?;
        let out = b.out_channels();
        units.extend([
            unit("stem.0", Op::Conv3d(a), Some("stem.1")),
            unit("stem.1", Op::Identity, None),
            unit("stem.2", Op::Relu, None),
            unit("stem.3", Op::Conv3d(b), Some("stem.4")),
            unit("stem.4", Op::Identity, None),
            unit("stem.5", Op::Relu, None),
        ]);
        out
    } else {
        let c = conv_bn(w, "stem.0", "stem.1", 3, [3, 7, 7], [1, 2, 2], [1, 3, 3])?;
        let out = c.out_channels();
        units.extend([
            unit("stem.0", Op::Conv3d(c), Some("stem.1")),
            unit("stem.1", Op::Identity, None),
            unit("stem.2", Op::Relu, None),
        ]);
        out
    };
    for (stage, &maker) in makers.iter().enumerate() {
        for b in 0..BLOCKS {
            let p = format!("layer{}.{}", stage + 1, b);
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            let mut convs = built_conv(
                w,
                maker,
                &format!("{p}.conv1.0"),
                &format!("{p}.conv1.1"),
                channels,
                stride,
            )?;
            let out = convs[convs.len() - 1].out_channels();
            convs.extend(built_conv(
                w,
                maker,
                &format!("{p}.conv2.0"),
                &format!("{p}.conv2.1"),
                out,
                1,
            )?);
            let downsample = if w.contains(&format!("{p}.downsample.0.weight")) {
                // torchvision's `get_downsample_stride`: time too, except for 1x3x3 blocks.
                let st = if maker == Maker::Spatial { 1 } else { stride };
                Some(conv_bn(
                    w,
                    &format!("{p}.downsample.0"),
                    &format!("{p}.downsample.1"),
                    channels,
                    [1; 3],
                    [st, stride, stride],
                    [0; 3],
                )?)
            } else if out != channels || stride != 1 {
                return Err(Error::MissingTensor {
                    file: w.file().to_path_buf(),
                    name: format!("{p}.downsample.0.weight"),
                    hint: format!(
                        "; block {p} changes {channels} -> {out} channels, stride {stride}"
                    ),
                });
            } else {
                None
            };
            channels = out;
            units.push(unit(
                &p,
                Op::Residual3d(Box::new(ResidualBlock { convs, downsample })),
                None,
            ));
        }
    }
    let fc = Linear::load(w, "fc", channels, true)?;
    let num_classes = fc.out_features();
    units.push(unit("avgpool", Op::GlobalAvgPool, None));
    units.push(unit("fc", Op::Linear(fc), None));
    Ok(Network {
        name: arch.to_string(),
        body: std::sync::Arc::new(UnitNet::new(units)),
        input: kinetics_input(),
        labels: None,
        num_classes,
        default_layer: "layer4".into(),
        device: device.clone(),
        multi_label: false,
    })
}

/// Every tensor of the architecture's state_dict with its shape, in torchvision's
/// order (BatchNorm as weight, bias, running_mean, running_var).
pub fn state_shapes(arch: &str, classes: usize) -> Result<Vec<(String, Vec<usize>)>> {
    let makers = makers(arch)?;
    let mut out = Vec::new();
    let conv = |name: String, shape: [usize; 5], out: &mut Vec<(String, Vec<usize>)>| {
        let c = shape[0];
        out.push((format!("{name}.weight"), shape.to_vec()));
        c
    };
    fn bn(name: String, c: usize, out: &mut Vec<(String, Vec<usize>)>) {
        for k in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("{name}.{k}"), vec![c]));
        }
    }
    // Conv2Plus1D's hidden width (torchvision's `midplanes`).
    let mid = |i: usize, o: usize| (i * o * 27) / (i * 9 + 3 * o);
    let factored = makers[0] == Maker::Factored;
    if factored {
        conv("stem.0".into(), [45, 3, 1, 7, 7], &mut out);
        bn("stem.1".into(), 45, &mut out);
        conv("stem.3".into(), [64, 45, 3, 1, 1], &mut out);
        bn("stem.4".into(), 64, &mut out);
    } else {
        conv("stem.0".into(), [64, 3, 3, 7, 7], &mut out);
        bn("stem.1".into(), 64, &mut out);
    }
    let mut c = 64;
    for (stage, &maker) in makers.iter().enumerate() {
        let planes = 64 << stage;
        for b in 0..BLOCKS {
            let p = format!("layer{}.{}", stage + 1, b);
            // Both convs of a block share conv1's hidden width (from the block's input).
            let m = mid(c, planes);
            for (k, i) in [(1, c), (2, planes)] {
                let (name, bn_name) = (format!("{p}.conv{k}.0"), format!("{p}.conv{k}.1"));
                match maker {
                    Maker::Full => {
                        conv(name, [planes, i, 3, 3, 3], &mut out);
                    }
                    Maker::Spatial => {
                        conv(name, [planes, i, 1, 3, 3], &mut out);
                    }
                    Maker::Factored => {
                        conv(format!("{name}.0"), [m, i, 1, 3, 3], &mut out);
                        bn(format!("{name}.1"), m, &mut out);
                        conv(format!("{name}.3"), [planes, m, 3, 1, 1], &mut out);
                    }
                }
                bn(bn_name, planes, &mut out);
            }
            if b == 0 && (stage > 0 || c != planes) {
                conv(format!("{p}.downsample.0"), [planes, c, 1, 1, 1], &mut out);
                bn(format!("{p}.downsample.1"), planes, &mut out);
            }
            c = planes;
        }
    }
    out.push(("fc.weight".into(), vec![classes, c]));
    out.push(("fc.bias".into(), vec![classes]));
    Ok(out)
}

/// A state_dict of portable random weights (see [`crate::random::portable`]), so that
/// a Python script can build the very same network for reference maps:
/// - convolutions uniform in ±√(6 / fan_in) (Kaiming's variance for ReLU networks);
/// - BatchNorm weight 1 + 0.1·u, bias 0.1·u, running mean 0.1·u, running variance
///   1 + 0.25·u;
/// - the classifier uniform in ±1/√fan_in, its bias 0.01·u;
///
/// with u each tensor's own portable values in [-1, 1).
pub fn random_weights(arch: &str, classes: usize, seed: u64, device: &Device) -> Result<Weights> {
    let mut t = HashMap::new();
    for (name, shape) in state_shapes(arch, classes)? {
        let n: usize = shape.iter().product();
        let u = crate::random::portable(&name, seed, n);
        let (scale, shift) = match name.rsplit('.').next().unwrap_or("") {
            _ if name.starts_with("fc.") && name.ends_with("weight") => {
                (1.0 / (shape[1] as f32).sqrt(), 0.0)
            }
            "bias" if name.starts_with("fc.") => (0.01, 0.0),
            "weight" if shape.len() == 5 => {
                let fan_in: usize = shape[1..].iter().product();
                ((6.0 / fan_in as f32).sqrt(), 0.0)
            }
            "weight" => (0.1, 1.0),
            "bias" | "running_mean" => (0.1, 0.0),
            "running_var" => (0.25, 1.0),
            _ => (0.1, 0.0),
        };
        let v: Vec<f32> = u.iter().map(|&u| u * scale + shift).collect();
        t.insert(name, Tensor::from_vec(v, shape, device)?);
    }
    Ok(Weights::from_tensors(format!("<random {arch}>"), t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_architectures_build_and_give_layer4_at_an_eighth_of_the_time() {
        let dev = Device::Cpu;
        for arch in ["r3d_18", "mc3_18", "r2plus1d_18"] {
            let w = random_weights(arch, 7, 0, &dev).unwrap();
            let mut net = build(arch, &w, &dev).unwrap();
            net.input.size = vec![8, 32, 32];
            let shapes = net.layer_shapes().unwrap();
            let l4 = &shapes.iter().find(|(n, _)| n == "layer4").unwrap().1;
            // mc3 never strides time after the stem.
            let t = if arch == "mc3_18" { 8 } else { 1 };
            assert_eq!(l4, &vec![512, t, 2, 2], "{arch}");
            let x = Tensor::zeros((2, 3, 8, 32, 32), candle_core::DType::F32, &dev).unwrap();
            assert_eq!(net.forward(&x).unwrap().dims(), [2, 7]);
            assert!(net.target_names().contains(&"stem".to_string()));
        }
    }
}
