//! Grad-CAM against pytorch-grad-cam 1.5.7 and Captum 0.9 on the same weights and inputs.
//! The expected arrays were made in Python (../shared/reference, see its README):
//!
//! ```python
//! cam = GradCAM(model, target_layers=[model.features[6]])       # or features[4], layer4, ...
//! final = cam(input_tensor=x, targets=None)                       # "pred"
//! final = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * n)   # "fixed"
//! raw = (grads.mean(spatial)[..., None, None] * acts).sum(1)     # textbook map, pre-ReLU
//! captum = LayerGradCam(model, model.features[6]).attribute(x, target, relu_attributions=True)
//! ```

mod common;

use std::path::Path;

use camstream_core::cam::{heatmap, resize_linear, GradCam, Targets};
use camstream_core::model::Network;
use candle_core::{Device, Tensor};
use common::{fixtures, load, max_abs, npy, npy_usize};

const TOL: f32 = 1e-4;

/// Runs Grad-CAM and checks logits, classes, raw and final maps against `dir`.
#[allow(clippy::too_many_arguments)]
fn check(
    net: &Network,
    dir: &Path,
    layer: &str,
    file_layer: &str,
    target: &str,
    fixed: usize,
    batch: usize,
) -> (f32, f32) {
    let (x, xs) = npy(dir.join("input.npy"));
    let n = xs[0];
    let per = x.len() / n;
    let cam = GradCam::new(net, layer).unwrap();
    let targets = if target == "pred" {
        Targets::TopOne
    } else {
        Targets::All(fixed)
    };
    let (ref_raw, rs) = npy(dir.join(format!("gradcam_{file_layer}_{target}_raw.npy")));
    let (ref_final, fs) = npy(dir.join(format!("gradcam_{file_layer}_{target}_final.npy")));
    let (ref_logits, _) = npy(dir.join("logits.npy"));
    let pred = npy_usize(dir.join("pred.npy"));
    let spatial = rs[1..].to_vec();
    let out_size = fs[1..].to_vec();
    let (mut err_raw, mut err_final) = (0f32, 0f32);
    for start in (0..n).step_by(batch) {
        let b = batch.min(n - start);
        let mut shape = xs.clone();
        shape[0] = b;
        let t =
            Tensor::from_slice(&x[start * per..(start + b) * per], shape, &Device::Cpu).unwrap();
        let out = cam.run(&t, &targets).unwrap();
        assert_eq!(out.spatial, spatial, "target-layer size");
        for i in 0..b {
            let s = start + i;
            let c = ref_logits.len() / n;
            assert!(
                max_abs(&out.logits[i], &ref_logits[s * c..(s + 1) * c]) < TOL,
                "logits of {s}"
            );
            let want_class = if target == "pred" { pred[s] } else { fixed };
            assert_eq!(out.classes[i], want_class, "class of sample {s}");
            let p: usize = spatial.iter().product();
            err_raw = err_raw.max(max_abs(out.raw_map(i), &ref_raw[s * p..(s + 1) * p]));
            let fin = heatmap(out.raw_map(i), &spatial, &out_size);
            let q: usize = out_size.iter().product();
            err_final = err_final.max(max_abs(&fin, &ref_final[s * q..(s + 1) * q]));
        }
    }
    eprintln!(
        "{} {layer} {target}: max|raw err| {err_raw:.2e}, max|final err| {err_final:.2e}",
        dir.display()
    );
    assert!(err_raw <= TOL, "raw map error {err_raw}");
    assert!(err_final <= TOL, "final map error {err_final}");
    (err_raw, err_final)
}

#[test]
fn shapes_cnn_matches_pytorch_grad_cam() {
    let dir = fixtures().join("shapes");
    for (layer, file_layer) in [("features.6", "features6"), ("features.4", "features4")] {
        let net = load(&dir.join("shapes_cnn.toml"), None, layer);
        for target in ["pred", "fixed"] {
            check(&net, &dir, layer, file_layer, target, 1, 16);
        }
    }
}

#[test]
fn shapes_cnn_from_pth_matches_and_batch_size_does_not_matter() {
    let dir = fixtures().join("shapes");
    let pth = dir.join("shapes_cnn.pth");
    let net = load(&dir.join("shapes_cnn.toml"), Some(&pth), "features.4");
    // Batches of 5 leave a tail of 1: results must not depend on batch composition.
    check(&net, &dir, "features.4", "features4", "pred", 1, 5);
}

#[test]
fn ecg_cnn_1d_matches_pytorch_grad_cam() {
    let dir = fixtures().join("ecg");
    for (layer, file_layer) in [("features.6", "features6"), ("features.4", "features4")] {
        let net = load(&dir.join("ecg_cnn.toml"), None, layer);
        for target in ["pred", "fixed"] {
            check(&net, &dir, layer, file_layer, target, 1, 16);
        }
    }
}

#[test]
fn ecg_cnn_matches_captum_layer_grad_cam() {
    let dir = fixtures().join("ecg");
    let (x, xs) = npy(dir.join("input.npy"));
    let input = Tensor::from_vec(x, xs, &Device::Cpu).unwrap();
    for (layer, fl) in [("features.6", "features6"), ("features.4", "features4")] {
        let net = load(&dir.join("ecg_cnn.toml"), None, layer);
        let cam = GradCam::new(&net, layer).unwrap();
        for (target, t) in [("pred", Targets::TopOne), ("fixed", Targets::All(1))] {
            let out = cam.run(&input, &t).unwrap();
            let l = out.spatial[0];
            let (captum, _) = npy(dir.join(format!("captum_layergradcam_{fl}_{target}.npy")));
            let (up, _) = npy(dir.join(format!("captum_layergradcam_{fl}_{target}_up_linear.npy")));
            for i in 0..out.len() {
                // LayerGradCam(relu_attributions=True) = ReLU of the raw map, unnormalised.
                let relu: Vec<f32> = out.raw_map(i).iter().map(|v| v.max(0.0)).collect();
                let e = max_abs(&relu, &captum[i * l..(i + 1) * l]);
                assert!(e <= TOL, "captum {fl} {target} sample {i}: {e}");
                // LayerAttribution.interpolate(mode='linear') = linear, half-pixel.
                let u = resize_linear(&relu, &[l], &[2000]);
                let e = max_abs(&u, &up[i * 2000..(i + 1) * 2000]);
                assert!(e <= TOL, "captum up_linear {fl} {target} sample {i}: {e}");
            }
        }
    }
}

#[test]
fn tiny_residual_net_matches_through_residual_blocks() {
    let dir = fixtures().join("tinyres");
    for (layer, fl) in [("layer2", "layer2"), ("layer1", "layer1")] {
        let net = load(&dir.join("tinyres.toml"), None, layer);
        for target in ["pred", "fixed"] {
            check(&net, &dir, layer, fl, target, 3, 4);
        }
    }
}

#[test]
fn resnet18_matches_pytorch_grad_cam() {
    let Some(r) = common::reference_dir() else {
        return;
    };
    let weights = r.join("models/resnet18_seed0.safetensors");
    let dir = r.join("resnet18");
    for layer in ["layer4", "layer3"] {
        let net = load(Path::new("resnet18"), Some(&weights), layer);
        for target in ["pred", "fixed"] {
            check(&net, &dir, layer, layer, target, 281, 4);
        }
    }
}

#[test]
fn configs_folder_describes_the_same_networks() {
    // configs/shapes_cnn.toml with the fixture weights gives the fixture's results.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let w = fixtures().join("shapes/shapes_cnn.safetensors");
    let net = load(
        &root.join("configs/shapes_cnn.toml"),
        Some(&w),
        "features.6",
    );
    check(
        &net,
        &fixtures().join("shapes"),
        "features.6",
        "features6",
        "pred",
        1,
        16,
    );
    // The ResNet configs describe torchvision's layout: random weights of that layout load.
    let rw =
        camstream_core::model::resnet::random_weights("resnet50", 10, 1, &Device::Cpu).unwrap();
    let cfg = camstream_core::model::config::ModelFile::read(&root.join("configs/resnet50.toml"))
        .unwrap();
    let net = cfg.build(&rw, None, &Device::Cpu).unwrap();
    assert_eq!(net.num_classes, 10);
    assert_eq!(net.default_layer, "layer4");
    let shapes = net.layer_shapes().unwrap();
    let l4 = shapes.iter().find(|(n, _)| n == "layer4").unwrap();
    assert_eq!(l4.1, vec![2048, 7, 7]);
}
