//! YAMNet (Google, AudioSet, 521 classes): a MobileNetV1 body over (96 frames x 64 mel)
//! log-mel patches, TensorFlow "SAME" padding, BatchNorm eps 1e-4 (folded), ReLU,
//! independent sigmoid scores. Names as in the converted checkpoint: `layer0.conv`,
//! `layer{i}.dw`/`.pw` with `_bn`, `logits`.

use candle_core::Device;

use crate::error::Result;
use crate::model::layers::{Conv, Linear, Op};
use crate::model::{Network, Unit, Weights};
use crate::preprocess::melspec::{MelConfig, MelFlavour, MelScale};
use crate::preprocess::{InputKind, InputSpec, Resize};

const EPS: f64 = 1e-4;

/// Stride of layers 1..=13 (layer 0, the full conv, has stride 2).
const STRIDES: [usize; 13] = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1];

/// YAMNet's front end (yamnet/features.py): 25 ms Hann frames every 10 ms, |STFT| 512,
/// 64 HTK mel bands 125-7500 Hz by tf.signal's weights, ln(mel + 0.001); patches of 96
/// frames laid out (time, mel).
/// YAMNet's 521 AudioSet class names in index order: the `display_name` column of
/// tensorflow/models' `yamnet_class_map.csv` (Apache-2.0; names from the AudioSet
/// ontology, CC-BY-4.0).
const AUDIOSET_CLASSES: &str = include_str!("yamnet_classes.txt");

pub fn input_spec() -> InputSpec {
    InputSpec {
        kind: InputKind::Audio,
        channels: 1,
        size: vec![96, 64],
        mean: vec![0.0],
        std: vec![1.0],
        scale: 1.0,
        resize: Resize::Stretch,
        sample_rate: Some(16000.0),
        frontend: Some(MelConfig {
            sample_rate: 16000,
            n_fft: 512,
            win_length: 400,
            hop: 160,
            n_mels: 64,
            fmin: 125.0,
            fmax: 7500.0,
            mel_scale: MelScale::Htk,
            log_offset: 0.001,
            flavour: MelFlavour::Tf,
            time_major: true,
            // tf-models' yamnet params: patch_hop_seconds 0.48.
            patch_hop: Some(48),
        }),
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
    let c0 = conv_bn(w, "layer0.conv", "layer0.bn", 1, 3, 2, 1)?;
    let mut ch = c0.out_channels();
    let mut units = vec![Unit::chain("layer0", vec![Op::Conv(c0), Op::Relu], false)];
    for (i, &s) in STRIDES.iter().enumerate() {
        let p = format!("layer{}", i + 1);
        let dw = conv_bn(w, &format!("{p}.dw"), &format!("{p}.dw_bn"), ch, 3, s, ch)?;
        let pw = conv_bn(w, &format!("{p}.pw"), &format!("{p}.pw_bn"), ch, 1, 1, 1)?;
        ch = pw.out_channels();
        let ops = vec![Op::Conv(dw), Op::Relu, Op::Conv(pw), Op::Relu];
        units.push(Unit::chain(p, ops, false));
    }
    units.push(Unit::new("avgpool", Op::GlobalAvgPool));
    let fc = Linear::load(w, "logits", ch, true)?;
    let num_classes = fc.out_features();
    units.push(Unit::new("logits", Op::Linear(fc)));
    Ok(Network {
        name: "yamnet".into(),
        body: std::sync::Arc::new(crate::model::UnitNet::new(units)),
        input: input_spec(),
        // Built in, so the default command reads `Speech`, not `class 0`; weights with
        // another head keep numbers (`labels` overrides).
        labels: (num_classes == AUDIOSET_CLASSES.lines().count())
            .then(|| AUDIOSET_CLASSES.lines().map(String::from).collect()),
        num_classes,
        default_layer: "layer13".into(),
        device: device.clone(),
        multi_label: true,
    })
}
