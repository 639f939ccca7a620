//! EfficientNet-Lite0 (TF EfficientNet-Lite, ImageNet-1k) with the state-dict names of
//! lukemelas/EfficientNet-PyTorch: MBConv blocks without squeeze-excitation, ReLU6,
//! BatchNorm eps 1e-3 (folded), and TensorFlow "SAME" padding everywhere — asymmetric at
//! stride 2, which symmetric padding gets wrong by up to 3 logits.

use candle_core::Device;

use crate::error::Result;
use crate::model::layers::{Conv, Linear, Op};
use crate::model::{Network, Unit, Weights};
use crate::preprocess::{InputKind, InputSpec, Resize};

const EPS: f64 = 1e-3;

/// (expand ratio, kernel, stride) of blocks 0..=15 of Lite0.
const BLOCKS: [(usize, usize, usize); 16] = [
    (1, 3, 1),
    (6, 3, 2),
    (6, 3, 1),
    (6, 5, 2),
    (6, 5, 1),
    (6, 3, 2),
    (6, 3, 1),
    (6, 3, 1),
    (6, 5, 1),
    (6, 5, 1),
    (6, 5, 1),
    (6, 5, 2),
    (6, 5, 1),
    (6, 5, 1),
    (6, 5, 1),
    (6, 3, 1),
];

/// The TF EfficientNet-Lite input: RGB 224x224, `(x - 127) / 128`, shorter side to 256
/// then a centre crop.
pub fn input_spec() -> InputSpec {
    InputSpec {
        kind: InputKind::Image,
        channels: 3,
        size: vec![224, 224],
        mean: vec![127.0; 3],
        std: vec![128.0; 3],
        scale: 1.0,
        resize: Resize::ShorterSideCrop(256),
        sample_rate: None,
        frontend: None,
    }
}

fn conv_bn(
    w: &Weights,
    conv: &str,
    bn: &str,
    c: usize,
    k: usize,
    s: usize,
    g: usize,
) -> Result<Conv> {
    Conv::tf_bn(w, conv, bn, c, k, s, g, EPS)
}

pub fn build(w: &Weights, device: &Device) -> Result<Network> {
    let stem = conv_bn(w, "_conv_stem", "_bn0", 3, 3, 2, 1)?;
    let mut ch = stem.out_channels();
    let mut units = vec![Unit::chain("stem", vec![Op::Conv(stem), Op::Relu6], false)];
    for (i, &(e, k, s)) in BLOCKS.iter().enumerate() {
        let p = format!("_blocks.{i}");
        let mut ops = Vec::new();
        let mut mid = ch;
        if e != 1 {
            let c = conv_bn(
                w,
                &format!("{p}._expand_conv"),
                &format!("{p}._bn0"),
                ch,
                1,
                1,
                1,
            )?;
            mid = c.out_channels();
            ops.extend([Op::Conv(c), Op::Relu6]);
        }
        let dw = conv_bn(
            w,
            &format!("{p}._depthwise_conv"),
            &format!("{p}._bn1"),
            mid,
            k,
            s,
            mid,
        )?;
        ops.extend([Op::Conv(dw), Op::Relu6]);
        let proj = conv_bn(
            w,
            &format!("{p}._project_conv"),
            &format!("{p}._bn2"),
            mid,
            1,
            1,
            1,
        )?;
        let out = proj.out_channels();
        ops.push(Op::Conv(proj));
        units.push(Unit::chain(p, ops, s == 1 && out == ch));
        ch = out;
    }
    let head = conv_bn(w, "_conv_head", "_bn1", ch, 1, 1, 1)?;
    ch = head.out_channels();
    units.push(Unit::chain("head", vec![Op::Conv(head), Op::Relu6], false));
    units.push(Unit::new("avgpool", Op::GlobalAvgPool));
    let fc = Linear::load(w, "_fc", ch, true)?;
    let num_classes = fc.out_features();
    units.push(Unit::new("_fc", Op::Linear(fc)));
    Ok(Network {
        name: "efficientnet_lite0".into(),
        body: std::sync::Arc::new(crate::model::UnitNet::new(units)),
        input: input_spec(),
        labels: None,
        num_classes,
        default_layer: "head".into(),
        device: device.clone(),
        multi_label: false,
    })
}
