//! The gradient CAM methods against pytorch-grad-cam 1.5.7 on the reference shapes CNN
//! (2D) and ECG CNN (1D; the same formulas over the length), from ../shared/reference:
//!
//! ```python
//! for name, cls in {"gradcampp": GradCAMPlusPlus, "xgradcam": XGradCAM,
//!                   "hirescam": HiResCAM, "layercam": LayerCAM}.items():
//!     final = cls(model, target_layers=[model.features[6]])(input_tensor=x, targets=None)
//! # raw: the textbook map before ReLU, in float64 from the float32 A and G:
//! #   gradcam++: a = G²/(2G² + ΣA·G³ + 1e-6), a = 0 where G == 0; w = Σ relu(G)·a
//! #   xgradcam: w = Σ G·A / (ΣA + 1e-7);  hirescam: Σ_k G·A;  layercam: Σ_k relu(G)·A
//! ```
//!
//! The methods beyond the one backward pass (see tests/fixtures/methods/make.py for the
//! references ../shared/reference lacks):
//!
//! ```python
//! ScoreCAM(model, [model.features[6]])(x, targets=None)      # shared: scorecam_*
//! AblationCAM(model, [model.features[6]])(x, targets=None)   # methods/: ablationcam_*
//! EigenCAM / EigenGradCAM / GradCAM(..., eigen_smooth=True)  # eigencam_*, methods/
//! ```
//!
//! A principal component's sign is LAPACK's accident in those references; camstream
//! fixes it by the activations (see `cam::projection`), so those maps are compared with
//! the sign that fits, per sample.
//!
//! `elementwise` (GradCAMElementWise: Σ_k relu(G·A)) has no stored map; it is checked
//! against the stored activations and gradients (`acts_features6.npy`,
//! `grads_features6_pred.npy`).

mod common;

use std::path::Path;

use camstream_core::cam::{CamConfig, GradCam, Method, Targets};
use camstream_core::model::{ModelRequest, Network};
use camstream_core::{ExplainOptions, Explainer, Input};
use candle_core::{Device, Tensor};
use common::{camstream, fails, fixtures, max_abs, npy, ok, s};

const METHODS: &[(&str, &str)] = &[
    ("gradcam++", "gradcampp"),
    ("xgradcam", "xgradcam"),
    ("hirescam", "hirescam"),
    ("layercam", "layercam"),
];

/// Runs `camstream <command> --method` on a fixture's input; returns (raw, final).
fn run(dir: &str, command: &str, method: &str, layer: &str, out: &Path) -> (Vec<f32>, Vec<f32>) {
    let cfg = fixtures().join(dir).join(format!("{dir}_cnn.toml"));
    let input = fixtures().join(dir).join("input.npy");
    ok(&camstream(&[
        command,
        "-m",
        s(&cfg),
        "-l",
        layer,
        "--method",
        method,
        "--cam-npy",
        "-o",
        s(out),
        s(&input),
    ]));
    (
        npy(out.join("input.cam.npy")).0,
        npy(out.join("input.heatmap.npy")).0,
    )
}

/// A fixture's reference CNN (its TOML config) and its input batch.
fn fixture_net(dir: &str) -> (Network, (Vec<f32>, Vec<usize>)) {
    let cfg = fixtures().join(dir).join(format!("{dir}_cnn.toml"));
    let net = Network::load(&ModelRequest::new(common::source(&cfg)), &Device::Cpu).unwrap();
    (net, npy(fixtures().join(dir).join("input.npy")))
}

fn peak(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12)
}

/// Every method, layer and target through the library (one model load per network).
#[test]
fn gradient_methods_reproduce_pytorch_grad_cam() {
    for dir in ["shapes", "ecg"] {
        let (net, (x, shape)) = fixture_net(dir);
        let x = Tensor::from_vec(x, shape, &Device::Cpu).unwrap();
        for (method, file) in METHODS {
            let m = Method::from_name(method).unwrap();
            for (layer, file_layer) in [("features.6", "features6"), ("features.4", "features4")] {
                let cam = GradCam::new(&net, layer).unwrap().with_method(m);
                for (target, tg) in [("pred", Targets::TopOne), ("fixed", Targets::All(1))] {
                    let raw = cam.run(&x, &tg).unwrap().raw;
                    let name = format!("{file}_{file_layer}_{target}_raw.npy");
                    let (want, _) = npy(fixtures().join(dir).join(name));
                    let e = max_abs(&raw, &want) / peak(&want);
                    eprintln!("{dir} {method} {layer} {target}: raw {e:.1e}");
                    assert!(e <= 1e-4, "{dir} {method} {layer} {target}: raw {e}");
                }
            }
        }
    }
}

/// ScoreCAM on ResNet-18 at `layer4`: 512 channels at 7x7, so the stem's response to
/// each masked input is formed from 49 basis masks (`cam::perturb`), against
/// pytorch-grad-cam on the first shared photo (tests/fixtures/resnet18/make_scorecam.py:
/// `ScoreCAM(model, [model.layer4]).get_cam_weights(...)`, raw = Σ_k w_k A_k).
#[test]
fn resnet18_scorecam_through_the_stem_matches_pytorch_grad_cam() {
    let Some(r) = common::reference_dir() else {
        return;
    };
    let weights = r.join("models/resnet18_seed0.safetensors");
    let (x, shape) = npy(r.join("resnet18/input.npy"));
    let per: usize = shape[1..].iter().product();
    let mut one = shape.clone();
    one[0] = 1;
    let x = Tensor::from_vec(x[..per].to_vec(), one, &Device::Cpu).unwrap();
    let net = common::load(Path::new("resnet18"), Some(&weights), "layer4");
    let cam = GradCam::new(&net, "layer4")
        .unwrap()
        .with_method(Method::ScoreCam);
    let raw = cam.run(&x, &Targets::TopOne).unwrap().raw;
    let (want, _) = npy(fixtures().join("resnet18/scorecam_layer4_pred_raw.npy"));
    let e = max_abs(&raw, &want) / peak(&want);
    eprintln!("resnet18 scorecam layer4 pred: raw {e:.1e}");
    assert!(e <= 1e-4, "resnet18 scorecam layer4: raw {e}");
}

/// The methods on torchvision's ResNet-18 (residual blocks, BN folded at load) against
/// ../shared/reference/resnet18 (pytorch-grad-cam 1.5.7, 4 photos, `pred` = top-1 and
/// `fixed` = class 281):
///
/// ```python
/// cls(model, target_layers=[model.layer4])(input_tensor=x, targets=None)  # *_layer4_pred_*
/// cls(..., targets=[ClassifierOutputTarget(281)] * 4)                       # *_fixed_*
/// EigenCAM(model, [model.layer4])(x)                                        # eigencam_layer4_raw
/// GradCAM(model, [model.layer3, model.layer4])(x, targets=None, aug_smooth=...) # fixtures/resnet18
/// ```
#[test]
fn resnet18_methods_match_pytorch_grad_cam() {
    let Some(r) = common::reference_dir() else {
        return;
    };
    let weights = r.join("models/resnet18_seed0.safetensors");
    let dir = r.join("resnet18");
    let (x, shape) = npy(dir.join("input.npy"));
    let n = shape[0];
    let x = Tensor::from_vec(x, shape, &Device::Cpu).unwrap();
    for layer in ["layer4", "layer3"] {
        let net = common::load(Path::new("resnet18"), Some(&weights), layer);
        for (method, file) in METHODS.iter().chain(&[("eigencam", "eigencam")]) {
            let cam = GradCam::new(&net, layer)
                .unwrap()
                .with_method(Method::from_name(method).unwrap());
            for (target, tg) in [("pred", Targets::TopOne), ("fixed", Targets::All(281))] {
                let raw = cam.run(&x, &tg).unwrap().raw;
                let e = if *method == "eigencam" {
                    // Class independent; one reference, either sign per sample.
                    let (want, _) = npy(dir.join(format!("eigencam_{layer}_raw.npy")));
                    signless(&raw, &want, n).0
                } else {
                    let (want, _) = npy(dir.join(format!("{file}_{layer}_{target}_raw.npy")));
                    max_abs(&raw, &want) / peak(&want)
                };
                eprintln!("resnet18 {method} {layer} {target}: raw {e:.1e}");
                assert!(e <= 1e-4, "resnet18 {method} {layer} {target}: raw {e}");
            }
        }
    }
    // Final maps through the explain API (upsampled to 224², min-max normalised): one
    // stored in full, and several layers / aug_smooth from tests/fixtures/resnet18/make.py
    // (every 8th pixel of pytorch-grad-cam's output).
    let net = common::load(Path::new("resnet18"), Some(&weights), "layer3,layer4");
    let (xs, shape) = npy(dir.join("input.npy"));
    let per = shape[1..].iter().product::<usize>();
    let inputs: Vec<Input> = xs.chunks(per).map(|c| Input::new(c, &shape[1..])).collect();
    let finals = |method: Method, layers: &str, aug_smooth: bool| -> Vec<f32> {
        let config = CamConfig {
            aug_smooth,
            ..CamConfig::new(method)
        };
        let ex = Explainer::from_network(net.clone(), Some(layers))
            .unwrap()
            .with_config(config);
        let out = ex
            .explain(&inputs, &Targets::TopOne, &ExplainOptions::default())
            .unwrap();
        out.iter().flat_map(|e| e.map.iter().copied()).collect()
    };
    let got = finals(Method::LayerCam, "layer4", false);
    let (want, _) = npy(dir.join("layercam_layer4_pred_final.npy"));
    let e = max_abs(&got, &want);
    eprintln!("resnet18 layercam layer4 pred: final {e:.1e}");
    assert!(e <= 1e-4, "final {e}");
    let every_8th = |m: &[f32]| -> Vec<f32> {
        m.chunks(224 * 224)
            .flat_map(|img| {
                (4..224)
                    .step_by(8)
                    .flat_map(move |y| (4..224).step_by(8).map(move |x| img[y * 224 + x]))
            })
            .collect()
    };
    for (file, method, layers, aug) in [
        (
            "gradcam_layer3+layer4_pred",
            Method::GradCam,
            "layer3,layer4",
            false,
        ),
        ("gradcam_layer4_pred_aug", Method::GradCam, "layer4", true),
        (
            "layercam_layer3+layer4_pred_aug",
            Method::LayerCam,
            "layer3,layer4",
            true,
        ),
    ] {
        let got = every_8th(&finals(method, layers, aug));
        let (want, wshape) = npy(fixtures().join(format!("resnet18/{file}.npy")));
        assert_eq!(wshape, vec![n, 28, 28]);
        let e = max_abs(&got, &want);
        eprintln!("resnet18 {file}: final {e:.1e}");
        assert!(e <= 1e-4, "resnet18 {file}: final {e}");
    }
}

/// Max error relative to the peak, taking each sample's map with the sign that fits.
fn signless(got: &[f32], want: &[f32], n: usize) -> (f32, usize) {
    let p = want.len() / n;
    let mut flipped = 0;
    let mut worst = 0f32;
    for i in 0..n {
        let (g, w) = (&got[i * p..(i + 1) * p], &want[i * p..(i + 1) * p]);
        let same = max_abs(g, w);
        let neg: Vec<f32> = g.iter().map(|v| -v).collect();
        let other = max_abs(&neg, w);
        flipped += usize::from(other < same);
        worst = worst.max(same.min(other));
    }
    (worst / peak(want), flipped)
}

/// ScoreCAM, AblationCAM, EigenCAM, EigenGradCAM and `eigen_smooth` through the
/// library, on the sequential networks and (shapes) on the ONNX graph, whose tail runs
/// the ablations of one sample as a batch.
#[test]
fn perturbation_and_projection_methods_reproduce_the_references() {
    let cases = [
        ("shapes", "shapes/shapes_cnn.toml"),
        ("shapes", "shapes/shapes_cnn.onnx"),
        ("ecg", "ecg/ecg_cnn.toml"),
    ];
    for (dir, model) in cases {
        let net = Network::load(
            &ModelRequest::new(common::source(&fixtures().join(model))),
            &Device::Cpu,
        )
        .unwrap();
        let (x, shape) = npy(fixtures().join(dir).join("input.npy"));
        let n = shape[0];
        let x = Tensor::from_vec(x, shape, &Device::Cpu).unwrap();
        let onnx = model.ends_with(".onnx");
        for (layer, fl) in [("features.6", "features6"), ("features.4", "features4")] {
            let layer = if onnx {
                net.default_layer.clone()
            } else {
                layer.to_string()
            };
            if onnx && fl == "features4" {
                continue;
            }
            for (target, tg) in [("pred", Targets::TopOne), ("fixed", Targets::All(1))] {
                let stem = format!("{fl}_{target}");
                let configs = [
                    (
                        Method::ScoreCam,
                        false,
                        5,
                        format!("{dir}/scorecam_{stem}_raw.npy"),
                        false,
                    ),
                    (
                        Method::AblationCam,
                        false,
                        7,
                        format!("methods/{dir}/ablationcam_{stem}_raw.npy"),
                        false,
                    ),
                    (
                        Method::EigenCam,
                        false,
                        1,
                        format!("{dir}/eigencam_{fl}_raw.npy"),
                        true,
                    ),
                    (
                        Method::EigenGradCam,
                        false,
                        1,
                        format!("methods/{dir}/eigengradcam_{stem}_raw.npy"),
                        true,
                    ),
                    (
                        Method::GradCam,
                        true,
                        1,
                        format!("methods/{dir}/gradcam_eigensmooth_{stem}_raw.npy"),
                        true,
                    ),
                ];
                for (method, eigen_smooth, batch, file, sign_free) in configs {
                    if onnx && method == Method::ScoreCam {
                        continue; // the same whole-network forward as the TOML net
                    }
                    let config = CamConfig {
                        method,
                        eigen_smooth,
                        method_batch: Some(batch),
                        aug_smooth: false,
                    };
                    let cam = GradCam::new(&net, &layer).unwrap().with_config(config);
                    let raw = cam.run(&x, &tg).unwrap().raw;
                    let (want, _) = npy(fixtures().join(&file));
                    let (e, flipped) = if sign_free {
                        signless(&raw, &want, n)
                    } else {
                        (max_abs(&raw, &want) / peak(&want), 0)
                    };
                    eprintln!("{model} {method} smooth={eigen_smooth} {stem}: raw {e:.1e} ({flipped}/{n} signs differ from LAPACK's)");
                    assert!(
                        e <= 1e-4,
                        "{model} {method} smooth={eigen_smooth} {stem}: raw {e}"
                    );
                }
            }
        }
    }
}

/// The final maps, through the CLI as a user runs it (pictures and signals).
#[test]
fn the_method_flag_reaches_the_final_maps() {
    let tmp = tempfile::tempdir().unwrap();
    for (dir, command, method, file) in [
        ("shapes", "image", "gradcam++", "gradcampp"),
        ("shapes", "image", "layercam", "layercam"),
        ("ecg", "signal", "xgradcam", "xgradcam"),
        ("ecg", "signal", "hirescam", "hirescam"),
        ("shapes", "image", "scorecam", "scorecam"),
        (
            "shapes",
            "image",
            "ablationcam",
            "../methods/shapes/ablationcam",
        ),
    ] {
        let out = tmp.path().join(format!("{dir}-{file}"));
        let (raw, fin) = run(dir, command, method, "features.6", &out);
        let (want, _) = npy(fixtures()
            .join(dir)
            .join(format!("{file}_features6_pred_raw.npy")));
        assert!(
            max_abs(&raw, &want) / peak(&want) <= 1e-4,
            "{dir} {method}: raw"
        );
        let (want, _) = npy(fixtures()
            .join(dir)
            .join(format!("{file}_features6_pred_final.npy")));
        let e = max_abs(&fin, &want);
        eprintln!("{dir} {method}: final {e:.1e}");
        assert!(e <= 1e-4, "{dir} {method}: final {e}");
    }
}

/// Several target layers and aug-smooth (tests/fixtures/methods/combined.py): on 2D,
/// pytorch-grad-cam's own output,
///
/// ```python
/// GradCAM(net, [net.features[4], net.features[6]])(x, targets=None)
/// GradCAM(net, [net.features[6]])(x, targets=None, aug_smooth=True)
/// ```
///
/// on 1D the same steps written out (ttach cannot flip a 3-D tensor).
#[test]
fn several_layers_and_aug_smooth_reproduce_pytorch_grad_cam() {
    for dir in ["shapes", "ecg"] {
        let (net, (x, shape)) = fixture_net(dir);
        let per: usize = shape[1..].iter().product();
        let inputs: Vec<Input> = (0..4)
            .map(|i| Input::new(&x[i * per..(i + 1) * per], &shape[1..]))
            .collect();
        for (method, layers, target, aug) in [
            ("gradcam", "4+6", "pred", false),
            ("gradcam++", "4+6", "fixed", false),
            ("gradcam", "6", "pred", true),
            ("layercam", "4+6", "fixed", true),
        ] {
            let layer = if layers == "6" {
                "features.6"
            } else {
                "features.4,features.6"
            };
            let config = CamConfig {
                aug_smooth: aug,
                ..CamConfig::new(Method::from_name(method).unwrap())
            };
            let ex = Explainer::from_network(net.clone(), Some(layer))
                .unwrap()
                .with_config(config);
            let tg = if target == "pred" {
                Targets::TopOne
            } else {
                Targets::All(1)
            };
            let out = ex
                .explain(&inputs, &tg, &ExplainOptions::default())
                .unwrap();
            let got: Vec<f32> = out.iter().flat_map(|e| e.map.iter().copied()).collect();
            assert!(out.iter().all(|e| e.scaled && e.spatial == shape[2..]));
            assert_eq!(&*out[0].layer, layer);
            let aug = if aug { "_aug" } else { "" };
            let file = format!("methods/{dir}/combined_{method}_{layers}_{target}{aug}_final.npy");
            let (want, _) = npy(fixtures().join(&file));
            let e = max_abs(&got, &want);
            eprintln!("{file}: {e:.1e}");
            assert!(e <= 1e-4, "{file}: {e}");
        }
    }
}

/// The same through the CLI's `--layer a,b --aug-smooth`.
#[test]
fn layer_lists_and_aug_smooth_reach_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = fixtures().join("shapes/shapes_cnn.toml");
    ok(&camstream(&[
        "image",
        "-m",
        s(&cfg),
        "-l",
        "features.4,features.6",
        "--method",
        "layercam",
        "--aug-smooth",
        "--class",
        "1",
        "--cam-npy",
        "-o",
        s(tmp.path()),
        s(&fixtures().join("shapes/input.npy")),
    ]));
    let (fin, shape) = npy(tmp.path().join("input.heatmap.npy"));
    assert_eq!(shape, [16, 64, 64]);
    let (want, _) =
        npy(fixtures().join("methods/shapes/combined_layercam_4+6_fixed_aug_final.npy"));
    let e = max_abs(&fin[..want.len()], &want);
    assert!(e <= 1e-4, "cli: {e}");
    let e = fails(&camstream(&[
        "image",
        "-m",
        s(&cfg),
        "-l",
        "features.6,nope",
        "-o",
        s(tmp.path()),
        s(&fixtures().join("shapes/input.npy")),
    ]));
    assert!(e.contains("unknown layer `nope`"), "{e}");
}

#[test]
fn elementwise_is_the_sum_of_relu_g_times_a() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, _) = run("shapes", "image", "elementwise", "features.6", tmp.path());
    let (a, shape) = npy(fixtures().join("shapes/acts_features6.npy"));
    let (g, _) = npy(fixtures().join("shapes/grads_features6_pred.npy"));
    let (n, k, p) = (shape[0], shape[1], shape[2] * shape[3]);
    let mut want = vec![0f32; n * p];
    for i in 0..n {
        for j in 0..p {
            let sum: f64 = (0..k)
                .map(|c| {
                    let at = (i * k + c) * p + j;
                    (a[at] as f64 * g[at] as f64).max(0.0)
                })
                .sum();
            want[i * p + j] = sum as f32;
        }
    }
    let e = max_abs(&raw, &want) / peak(&want);
    assert!(e <= 1e-4, "elementwise: {e}");
}

#[test]
fn an_unknown_method_is_a_one_line_error() {
    let e = fails(&camstream(&[
        "image",
        "-m",
        s(&fixtures().join("shapes/shapes_cnn.toml")),
        "--method",
        "gradcam+",
        "-o",
        "/tmp/unused",
        s(&fixtures().join("shapes/input.npy")),
    ]));
    assert!(
        e.contains("unknown CAM method `gradcam+`") && e.contains("ablationcam"),
        "{e}"
    );
}
