//! One tiny model per operator family that torchvision's CNNs export to, each against
//! its pytorch-grad-cam 1.5.7 reference on the same weights (made by
//! `tests/fixtures/families/make.py`, which holds every model's PyTorch code). Maps are
//! compared relative to the reference map's peak, through the CLI as a user runs it:
//! the raw map (`.cam.npy`, before ReLU: it checks the gradient that reached the
//! target) and the final map (`.heatmap.npy`).
//!
//! | family | the PyTorch behind it | ONNX operators it brings |
//! |---|---|---|
//! | `se_block` | `torchvision.ops.SqueezeExcitation(..., scale_activation=nn.Hardsigmoid)` and `nn.Sigmoid`, SiLU convs; target `features` (after both SE poolings) | GlobalAveragePool inside the body, HardSigmoid, Sigmoid, Mul broadcast over (N,C,1,1) |
//! | `hardswish` | `Conv2d-BN-nn.Hardswish` blocks, `Linear-Hardswish-Dropout-Linear` classifier | HardSwish |
//! | `channel_shuffle` | two `torchvision.models.shufflenetv2.InvertedResidual`, `x.mean([2, 3])` | Shape, Gather, Slice, Div, Reshape, Transpose, Concat, ReduceMean |
//! | `ceil_pool` | `nn.MaxPool2d(3, 2, ceil_mode=True)` on odd sizes (partial last window), `torch.cat` of branches | MaxPool ceil_mode=1, Concat |
//! | `pool_upstream` | the `ceil_pool` model targeted at `stem` (Conv-BN-ReLU), before its overlapping pools: the gradient crosses MaxPool 3x3/2 windows full of ReLU zeros (ties) | the first-maximum gradient for overlapping windows |
//! | `layernorm` | ConvNeXt blocks: `permute(0,2,3,1)`, `nn.LayerNorm`, `Linear`, `nn.GELU`, layer scale, `permute(0,3,1,2)`; LayerNorm2d in the head | Transpose, LayerNormalization, MatMul, Erf |
//! | `layernorm_opset13` | the same model at opset 13, where LayerNorm is decomposed | ReduceMean, Sub, Pow, Sqrt, Div |
//! | `dense_bn` | DenseNet layers `conv(relu(norm(cat(xs))))`, transition with `nn.AvgPool2d(2, 2)`, final norm + ReLU | standalone BatchNormalization after Concat, AveragePool |
//! | `inception1d` | an InceptionTime-style 1D block pair (bottleneck, `Conv1d` kernels 9/19/39 with 'same' padding, `MaxPool1d(3, 1, 1)` branch, concat, BN, ReLU, residual) through the dynamo exporter (opset 18); Captum's `LayerGradCam` is the reference (raw only: pytorch-grad-cam refuses 1D maps) | 1D Conv, MaxPool via Unsqueeze/Squeeze, standalone BatchNormalization |
//! | `clip3d`, `clip3d_dynamo` | a 3D CNN on (N,3,6,23,23) clips (`Clip3d` in make.py): `Conv3d` (3,5,5) stride (1,2,2), `MaxPool3d` (1,3,3)/(1,2,2) with `ceil_mode`, a (1,3,3) then (3,1,1) stride-(2,1,1) pair, `AvgPool3d((2,1,1))`, `AdaptiveAvgPool3d(1)`, through both exporters; finals are pytorch-grad-cam's cubic-spline zoom | 3D Conv, MaxPool, AveragePool, GlobalAveragePool or ReduceMean |
//! | `clip3d_upstream` | the `clip3d` model targeted at `relu1`: the gradient crosses both 3D convs, the AvgPool3d and the ceil-mode MaxPool3d (ties among ReLU zeros) | 3D input gradients |
//! | `dynamo_external` | `torch.onnx.export(model, (x[:1],), path)` (the default, dynamo exporter, opset 20), `x.reshape(x.shape[0], -1)` | weights in `model.onnx.data`; batch 1 baked into the graph, run here on 4 samples |

mod common;

use std::path::Path;

use camstream_core::model::{ModelRequest, Network};
use candle_core::Device;
use common::{camstream, fixtures, npy, ok, s};

const FAMILIES: &[&str] = &[
    "se_block",
    "hardswish",
    "channel_shuffle",
    "ceil_pool",
    "pool_upstream",
    "layernorm",
    "layernorm_opset13",
    "dense_bn",
    "dynamo_external",
    "inception1d",
    "clip3d",
    "clip3d_dynamo",
    "clip3d_upstream",
];

#[derive(serde::Deserialize)]
struct Case {
    tensor: String,
    module: String,
    fixed: usize,
    exporter: String,
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "map sizes differ");
    let peak = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / peak
}

fn case(dir: &Path) -> Case {
    serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap()
}

#[test]
fn every_family_matches_pytorch_grad_cam() {
    let tmp = tempfile::tempdir().unwrap();
    for fam in FAMILIES {
        let dir = fixtures().join("families").join(fam);
        let c = case(&dir);
        // TorchScript exports record module scopes: the module name must mean the same.
        let mut layers = vec![c.tensor.clone()];
        if c.exporter == "torchscript" {
            layers.push(c.module.clone());
        }
        for layer in &layers {
            matches_references(&dir, &dir.join("model.onnx"), layer, tmp.path());
        }
    }
}

/// The clip3d model's PyTorch weights through a TOML sequential config (conv3d,
/// batchnorm3d, maxpool3d with `ceil`, avgpool3d) give the ONNX exports' references.
#[test]
fn a_3d_sequential_config_matches_pytorch_grad_cam() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures().join("families/clip3d");
    let config = dir.join("model.toml");
    matches_references(&dir, &config, "relu3", tmp.path());
    // The same weights (make.py seeds each family alike), cut before the pooling.
    let upstream = fixtures().join("families/clip3d_upstream");
    matches_references(&upstream, &config, "relu1", tmp.path());
}

/// Runs `model` at `layer` on the family's input for its predicted and its fixed class,
/// through the CLI, and compares the raw and final maps with the references.
fn matches_references(dir: &Path, model: &Path, layer: &str, tmp: &Path) {
    let fam = dir.file_name().unwrap().to_string_lossy().into_owned();
    let c = case(dir);
    let input = dir.join("input.npy");
    for (tag, class) in [("pred", None), ("fixed", Some(c.fixed.to_string()))] {
        let file = model.file_name().unwrap().to_string_lossy();
        let out = tmp.join(format!("{fam}-{file}-{tag}-{}", layer.replace('/', "_")));
        // Preprocessed (N,C,L) arrays go to `signal`, (N,C,H,W) and (N,C,T,H,W) to `image`.
        let command = if npy(&input).1.len() == 3 {
            "signal"
        } else {
            "image"
        };
        let mut args = vec![
            command,
            "-m",
            s(model),
            "-l",
            layer,
            "--cam-npy",
            "-o",
            s(&out),
            s(&input),
        ];
        if let Some(k) = &class {
            args.extend(["-c", k]);
        }
        ok(&camstream(&args));
        for (got, want) in [("cam", "raw"), ("heatmap", "final")] {
            let reference = dir.join(format!("gradcam_{tag}_{want}.npy"));
            if want == "final" && !reference.exists() {
                continue; // 1D: Captum gives the raw map only
            }
            let (g, gs) = npy(out.join(format!("input.{got}.npy")));
            let (w, ws) = npy(reference);
            assert_eq!(gs, ws, "{fam} {layer} {tag} {want}: shape");
            let e = rel_err(&g, &w);
            eprintln!("{fam:<18} {tag:<5} {want:<5} {e:.1e}  ({layer}, {file})");
            assert!(
                e <= 1e-4,
                "{fam} {layer} {tag} {want}: error {e} of the peak"
            );
        }
    }
}

#[test]
fn the_default_target_is_the_classifier_pooling_input() {
    for fam in FAMILIES {
        let dir = fixtures().join("families").join(fam);
        let c = case(&dir);
        let net = Network::load(
            &ModelRequest::new(common::source(&dir.join("model.onnx"))),
            &Device::Cpu,
        )
        .unwrap();
        let (want, _) = npy(dir.join("logits.npy"));
        let (x, shape) = npy(dir.join("input.npy"));
        let x = candle_core::Tensor::from_vec(x, shape, &Device::Cpu).unwrap();
        let got = common::logits(&net, &x);
        assert!(rel_err(&got, &want) <= 1e-4, "{fam}: logits");
        if *fam == "pool_upstream" {
            assert_eq!(net.default_layer, "/mix/mix.2/Relu_output_0", "{fam}");
        } else if *fam == "clip3d" || *fam == "clip3d_upstream" {
            // The global pooling's input is the temporal AvgPool's output.
            assert_eq!(net.default_layer, "/pool2/AveragePool_output_0", "{fam}");
        } else if *fam == "clip3d_dynamo" {
            assert_eq!(net.default_layer, "avg_pool3d", "{fam}");
        } else if *fam == "dynamo_external" || *fam == "inception1d" {
            // The module is not the pooling's input (there is no pooling in
            // dynamo_external: flatten + Linear; then the last map before the output).
            assert_eq!(net.default_layer, "relu_2", "{fam}");
        } else {
            assert_eq!(net.default_layer, c.tensor, "{fam}");
        }
    }
}

/// The tensors inside a permute to NHWC and back are not channels-first maps.
#[test]
fn channels_last_tensors_are_not_targets() {
    let model = fixtures().join("families/layernorm/model.onnx");
    let out = ok(&camstream(&["layers", "-m", s(&model)]));
    assert!(out.contains("features.2"), "{out}");
    assert!(!out.contains("LayerNormalization_output_0"), "{out}");
    let e = common::fails(&camstream(&[
        "image",
        "-m",
        s(&model),
        "-l",
        "/features/features.2/norm/LayerNormalization_output_0",
        "-o",
        "/tmp/unused",
        s(&fixtures().join("families/layernorm/input.npy")),
    ]));
    assert!(e.contains("not a channels-first map"), "{e}");
}
