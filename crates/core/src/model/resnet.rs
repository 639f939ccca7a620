//! torchvision ResNets (v1.5: the stride sits on the 3x3 conv of a bottleneck) with their
//! state_dict names. Widths are read from the weights, so narrow variants load too.

use candle_core::Device;

use crate::error::{Error, Result};
use crate::model::layers::{ChannelAffine, Conv, Dims, Linear, Op, Pool, PoolKind, ResidualBlock};
use crate::model::{Network, Unit, Weights};
use crate::preprocess::InputSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    Basic,
    Bottleneck,
}

/// Block type and blocks per stage of a built-in architecture.
fn layout(arch: &str) -> Result<(Block, &'static [usize])> {
    match arch {
        "resnet18" => Ok((Block::Basic, &[2, 2, 2, 2])),
        "resnet34" => Ok((Block::Basic, &[3, 4, 6, 3])),
        "resnet50" => Ok((Block::Bottleneck, &[3, 4, 6, 3])),
        other => Err(Error::Unsupported {
            what: "architecture",
            name: other.into(),
            supported: super::Arch::names(),
        }),
    }
}

pub fn build_builtin(arch: &str, w: &Weights, device: &Device) -> Result<Network> {
    let (block, blocks) = layout(arch)?;
    build(arch, block, blocks, InputSpec::imagenet(), w, device)
}

/// A conv followed by its BatchNorm, folded.
fn conv_bn(
    w: &Weights,
    conv: &str,
    bn: &str,
    in_ch: usize,
    kernel: usize,
    stride: usize,
) -> Result<Conv> {
    let mut c = Conv::load(w, conv, Dims::Two, in_ch, None, Some(kernel), 1, false)?.with(
        stride,
        kernel / 2,
        1,
    );
    let norm = ChannelAffine::load_bn(w, bn, c.out_channels(), 1e-5)?;
    c.fold(&norm)?;
    Ok(c)
}

pub fn build(
    name: &str,
    block: Block,
    blocks: &[usize],
    input: InputSpec,
    w: &Weights,
    device: &Device,
) -> Result<Network> {
    let stem = {
        let c = Conv::load(w, "conv1", Dims::Two, input.channels, None, None, 1, false)?;
        let k = c.weight.dims()[2];
        let mut c = c.with(2, k / 2, 1);
        c.fold(&ChannelAffine::load_bn(w, "bn1", c.out_channels(), 1e-5)?)?;
        c
    };
    let mut channels = stem.out_channels();
    let mut units = vec![
        Unit {
            name: "conv1".into(),
            op: Op::Conv(stem),
            fused_into: Some("bn1".into()),
        },
        Unit {
            name: "bn1".into(),
            op: Op::Identity,
            fused_into: None,
        },
        Unit {
            name: "relu".into(),
            op: Op::Relu,
            fused_into: None,
        },
        Unit {
            name: "maxpool".into(),
            op: Op::Pool(Pool {
                kind: PoolKind::Max,
                dims: Dims::Two,
                kernel: 3,
                stride: 2,
                padding: 1,
            }),
            fused_into: None,
        },
    ];
    for (stage, &n) in blocks.iter().enumerate() {
        for b in 0..n {
            let p = format!("layer{}.{}", stage + 1, b);
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            let convs = match block {
                Block::Basic => {
                    let c1 = conv_bn(
                        w,
                        &format!("{p}.conv1"),
                        &format!("{p}.bn1"),
                        channels,
                        3,
                        stride,
                    )?;
                    let c2 = conv_bn(
                        w,
                        &format!("{p}.conv2"),
                        &format!("{p}.bn2"),
                        c1.out_channels(),
                        3,
                        1,
                    )?;
                    vec![c1, c2]
                }
                Block::Bottleneck => {
                    let c1 = conv_bn(
                        w,
                        &format!("{p}.conv1"),
                        &format!("{p}.bn1"),
                        channels,
                        1,
                        1,
                    )?;
                    let c2 = conv_bn(
                        w,
                        &format!("{p}.conv2"),
                        &format!("{p}.bn2"),
                        c1.out_channels(),
                        3,
                        stride,
                    )?;
                    let c3 = conv_bn(
                        w,
                        &format!("{p}.conv3"),
                        &format!("{p}.bn3"),
                        c2.out_channels(),
                        1,
                        1,
                    )?;
                    vec![c1, c2, c3]
                }
            };
            let out = convs[convs.len() - 1].out_channels();
            let downsample = if w.contains(&format!("{p}.downsample.0.weight")) {
                Some(conv_bn(
                    w,
                    &format!("{p}.downsample.0"),
                    &format!("{p}.downsample.1"),
                    channels,
                    1,
                    stride,
                )?)
            } else {
                None
            };
            if downsample.is_none() && (out != channels || stride != 1) {
                return Err(Error::MissingTensor {
                    file: w.file().to_path_buf(),
                    name: format!("{p}.downsample.0.weight"),
                    hint: format!(
                        "; block {p} changes {channels} -> {out} channels with stride {stride}"
                    ),
                });
            }
            if let Some(d) = &downsample {
                if d.out_channels() != out {
                    return Err(Error::ShapeMismatch {
                        file: w.file().to_path_buf(),
                        name: format!("{p}.downsample.0.weight"),
                        expected: format!("[{out}, {channels}, 1, 1]"),
                        found: d.weight.dims().to_vec(),
                    });
                }
            }
            channels = out;
            units.push(Unit {
                name: p,
                op: Op::Residual(Box::new(ResidualBlock { convs, downsample })),
                fused_into: None,
            });
        }
    }
    let fc = Linear::load(w, "fc", channels, true)?;
    let num_classes = fc.out_features();
    units.push(Unit {
        name: "avgpool".into(),
        op: Op::GlobalAvgPool,
        fused_into: None,
    });
    units.push(Unit {
        name: "fc".into(),
        op: Op::Linear(fc),
        fused_into: None,
    });
    Ok(Network {
        name: name.to_string(),
        body: std::sync::Arc::new(crate::model::UnitNet::new(units)),
        input,
        labels: None,
        num_classes,
        default_layer: format!("layer{}", blocks.len()),
        device: device.clone(),
        multi_label: false,
    })
}

/// A torchvision-shaped state dict with random weights (Kaiming-normal convs, identity
/// BatchNorm statistics), for benchmarks that need the architecture, not its knowledge.
pub fn random_weights(arch: &str, classes: usize, seed: u64, device: &Device) -> Result<Weights> {
    use rand::Rng as _;
    use rand_distr::{Distribution, Normal};
    let (block, blocks) = layout(arch)?;
    let mut rng = crate::random::rng(seed);
    let mut t = std::collections::HashMap::new();
    let conv = |t: &mut std::collections::HashMap<String, candle_core::Tensor>,
                rng: &mut crate::random::Rng,
                name: String,
                shape: [usize; 4]|
     -> Result<()> {
        let fan_in = shape[1] * shape[2] * shape[3];
        let nd = Normal::new(0f32, (2.0 / fan_in as f32).sqrt()).expect("valid sigma");
        let v: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| nd.sample(rng))
            .collect();
        t.insert(
            name,
            candle_core::Tensor::from_vec(v, shape.to_vec(), device)?,
        );
        Ok(())
    };
    let bn = |t: &mut std::collections::HashMap<String, candle_core::Tensor>,
              name: String,
              c: usize|
     -> Result<()> {
        for (k, v) in [
            ("weight", 1f32),
            ("bias", 0.0),
            ("running_mean", 0.0),
            ("running_var", 1.0),
        ] {
            t.insert(
                format!("{name}.{k}"),
                candle_core::Tensor::full(v, c, device)?,
            );
        }
        Ok(())
    };
    conv(&mut t, &mut rng, "conv1.weight".into(), [64, 3, 7, 7])?;
    bn(&mut t, "bn1".into(), 64)?;
    let expansion = if block == Block::Basic { 1 } else { 4 };
    let mut c = 64;
    for (stage, &n) in blocks.iter().enumerate() {
        let planes = 64 << stage;
        for b in 0..n {
            let p = format!("layer{}.{}", stage + 1, b);
            match block {
                Block::Basic => {
                    conv(
                        &mut t,
                        &mut rng,
                        format!("{p}.conv1.weight"),
                        [planes, c, 3, 3],
                    )?;
                    conv(
                        &mut t,
                        &mut rng,
                        format!("{p}.conv2.weight"),
                        [planes, planes, 3, 3],
                    )?;
                    bn(&mut t, format!("{p}.bn1"), planes)?;
                    bn(&mut t, format!("{p}.bn2"), planes)?;
                }
                Block::Bottleneck => {
                    conv(
                        &mut t,
                        &mut rng,
                        format!("{p}.conv1.weight"),
                        [planes, c, 1, 1],
                    )?;
                    conv(
                        &mut t,
                        &mut rng,
                        format!("{p}.conv2.weight"),
                        [planes, planes, 3, 3],
                    )?;
                    conv(
                        &mut t,
                        &mut rng,
                        format!("{p}.conv3.weight"),
                        [planes * 4, planes, 1, 1],
                    )?;
                    bn(&mut t, format!("{p}.bn1"), planes)?;
                    bn(&mut t, format!("{p}.bn2"), planes)?;
                    bn(&mut t, format!("{p}.bn3"), planes * 4)?;
                }
            }
            let out = planes * expansion;
            if b == 0 && (stage > 0 || c != out) {
                conv(
                    &mut t,
                    &mut rng,
                    format!("{p}.downsample.0.weight"),
                    [out, c, 1, 1],
                )?;
                bn(&mut t, format!("{p}.downsample.1"), out)?;
            }
            c = out;
        }
    }
    let bound = 1.0 / (c as f32).sqrt();
    let w: Vec<f32> = (0..classes * c)
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    t.insert(
        "fc.weight".into(),
        candle_core::Tensor::from_vec(w, (classes, c), device)?,
    );
    t.insert(
        "fc.bias".into(),
        candle_core::Tensor::zeros(classes, candle_core::DType::F32, device)?,
    );
    Ok(Weights::from_tensors(format!("<random {arch}>"), t))
}
