//! torchvision's video ResNets (r3d_18, mc3_18, r2plus1d_18) built in, against
//! pytorch-grad-cam 1.5.7 on the same weights: clips of 8 frames of 56x56, the networks
//! and the clip made on both sides from portable random values
//! (`tests/fixtures/video3d/make.py` holds the PyTorch side). Maps are compared relative
//! to the reference's peak: the raw (t, h, w) map before ReLU, and the final (T, H, W)
//! map, which pytorch-grad-cam resizes with scipy's cubic-spline zoom for 5-D inputs.

mod common;

use camstream_core::cam::Targets;
use camstream_core::model::{Arch, ModelRequest, ModelSource, Network};
use camstream_core::random::portable;
use camstream_core::{ExplainOptions, Explainer, Input};
use candle_core::Device;
use common::{camstream, fixtures, npy, ok, s};

const CLIP: [usize; 4] = [3, 8, 56, 56];

fn clip() -> Vec<f32> {
    portable("clip", 0, CLIP.iter().product())
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "map sizes differ");
    let peak = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / peak
}

fn network(arch: &str) -> Network {
    let arch = Arch::from_name(arch).unwrap();
    Network::load(&ModelRequest::new(ModelSource::Builtin(arch)), &Device::Cpu).unwrap()
}

#[test]
fn video_resnets_match_pytorch_grad_cam() {
    let dir = fixtures().join("video3d");
    let x = clip();
    let cases = [
        ("r3d_18", "layer4"),
        ("r3d_18", "layer3"),
        ("mc3_18", "layer4"),
        ("r2plus1d_18", "layer4"),
    ];
    for (arch, layer) in cases {
        let net = network(arch);
        let t = candle_core::Tensor::from_vec(x.clone(), (1, 3, 8, 56, 56), &Device::Cpu).unwrap();
        let (want, _) = npy(dir.join(format!("{arch}_logits.npy")));
        let got = common::logits(&net, &t);
        assert!(
            rel_err(&got, &want) <= 1e-4,
            "{arch}: logits {}",
            rel_err(&got, &want)
        );
        let explainer = Explainer::from_network(net, Some(layer)).unwrap();
        let e = explainer
            .explain(
                &[Input::new(&x, &CLIP)],
                &Targets::TopOne,
                &ExplainOptions::default(),
            )
            .unwrap()
            .remove(0);
        let (raw, raw_shape) = npy(dir.join(format!("{arch}_{layer}_raw.npy")));
        assert_eq!(e.spatial, raw_shape[1..], "{arch} {layer}: raw shape");
        let err = rel_err(&e.raw, &raw);
        eprintln!("{arch:<12} {layer} raw   {err:.1e}");
        assert!(err <= 1e-4, "{arch} {layer}: raw error {err}");
        let final_ref = dir.join(format!("{arch}_{layer}_final.npy"));
        if final_ref.exists() {
            let (fin, _) = npy(final_ref);
            let err = rel_err(&e.map, &fin);
            eprintln!("{arch:<12} {layer} final {err:.1e}");
            assert!(err <= 1e-4, "{arch} {layer}: final error {err}");
        }
    }
}

/// `camstream image clip.npy` takes an (N,C,T,H,W) array as it is and writes the raw
/// (N,t,h,w) and final (N,T,H,W) maps, and a strip of frames with their heatmaps.
#[test]
fn the_image_command_explains_a_clip() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("clip.npy");
    let x = clip();
    let two: Vec<f32> = x.iter().chain(&x).copied().collect();
    camstream_media::npy::write_npy(&input, &two, &[2, 3, 8, 56, 56]).unwrap();
    let out = tmp.path().join("out");
    ok(&camstream(&[
        "image",
        "-m",
        "r3d_18",
        "--cam-npy",
        "-o",
        s(&out),
        s(&input),
    ]));
    let (raw, raw_shape) = npy(out.join("clip.cam.npy"));
    assert_eq!(raw_shape, [2, 1, 4, 4]);
    let (want, _) = npy(fixtures().join("video3d/r3d_18_layer4_raw.npy"));
    assert!(rel_err(&raw[..16], &want) <= 1e-4);
    assert!(rel_err(&raw[16..], &want) <= 1e-4);
    let (fin, fin_shape) = npy(out.join("clip.heatmap.npy"));
    assert_eq!(fin_shape, [2, 8, 56, 56]);
    let (want, _) = npy(fixtures().join("video3d/r3d_18_layer4_final.npy"));
    assert!(rel_err(&fin[..8 * 56 * 56], &want) <= 1e-4);
    for i in 0..2 {
        let strip = image::open(out.join(format!("clip.{i}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!((strip.width(), strip.height()), (8 * 56, 56));
    }
}

/// The CAM family on a 3D CNN (the clip3d family's model through its TOML config), each
/// method's final (T, H, W) map against pytorch-grad-cam's, where its code takes 5-D
/// activations (`tests/fixtures/video3d/make_methods.py`); EigenCAM's and EigenGradCAM's
/// projections up to their sign.
#[test]
fn methods_on_clips_match_pytorch_grad_cam() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures().join("video3d");
    let model = fixtures().join("families/clip3d/model.toml");
    let input = dir.join("clip3d_input.npy");
    let mut maps: Vec<Vec<f32>> = Vec::new();
    for method in [
        "gradcam++",
        "xgradcam",
        "hirescam",
        "layercam",
        "eigencam",
        "eigengradcam",
    ] {
        let out = tmp.path().join(method);
        ok(&camstream(&[
            "image",
            "-m",
            s(&model),
            "-l",
            "relu3",
            "--method",
            method,
            "--cam-npy",
            "-o",
            s(&out),
            s(&input),
        ]));
        let (got, shape) = npy(out.join("clip3d_input.heatmap.npy"));
        let (want, want_shape) = npy(dir.join(format!("clip3d_{method}_final.npy")));
        assert_eq!(shape, want_shape, "{method}");
        // A projection's sign is the SVD's choice: compare it up to sign, and the final
        // map (ReLU of the projection) where the signs agree.
        let mut flipped = false;
        if method.starts_with("eigen") {
            let (raw, _) = npy(out.join("clip3d_input.cam.npy"));
            let (want_raw, _) = npy(dir.join(format!("clip3d_{method}_raw.npy")));
            let neg: Vec<f32> = raw.iter().map(|v| -v).collect();
            let (same, other) = (rel_err(&raw, &want_raw), rel_err(&neg, &want_raw));
            flipped = other < same;
            let err = same.min(other);
            eprintln!("{method:<13} raw   {err:.1e} (sign flipped: {flipped})");
            assert!(err <= 1e-4, "{method}: raw error {err}");
        }
        if !flipped {
            let err = rel_err(&got, &want);
            eprintln!("{method:<13} final {err:.1e}");
            assert!(err <= 1e-4, "{method}: final error {err}");
        }
        maps.push(got);
    }
    // The methods differ on this model, so each reference checks its own method.
    for (i, a) in maps.iter().enumerate() {
        for b in &maps[i + 1..] {
            assert!(rel_err(a, b) > 1e-3);
        }
    }
}
