//! The faithfulness metrics against pytorch-grad-cam 1.5.7 and torchcam 0.5.0 on the
//! shapes (2D) and ECG (1D) CNNs, each sample's Grad-CAM final map given to both sides
//! (tests/fixtures/metrics/make.py made the references):
//!
//! ```python
//! CamMultImageConfidenceChange()(x, cam, [ClassifierOutputTarget(c)], net)  # + Drop/Increase
//! ClassificationMetric(given_map, softmax).update(x)                         # avg_drop, conf_increase
//! ROADCombined([10, ..., 90])(x, cam, targets, net)   # NoisyLinearImputer with noise 0
//! DeletionInsertionMetric(given_map, softmax, steps=20, baseline=None | blur).update(x)
//! ```
//!
//! pytorch-grad-cam's imputer is 2D only; on 1D the reference fills ROAD's gaps with
//! `np.interp` (linear in time).

mod common;

use camstream_core::metrics::{measure, Baseline, Faithfulness, Measured, MetricsConfig};
use camstream_core::model::{ModelRequest, Network};
use candle_core::Device;
use common::{camstream, fixtures, npy, ok, s};

fn columns(f: &Faithfulness) -> [f64; 10] {
    [
        f.confidence_change,
        f.drop_in_confidence,
        f.increase_in_confidence,
        f.avg_drop,
        f.conf_increase,
        f.road_morf,
        f.road_lerf,
        f.road_combined,
        f.deletion_auc,
        f.insertion_auc,
    ]
}

#[test]
fn metrics_reproduce_pytorch_grad_cam_and_torchcam() {
    for dir in ["shapes", "ecg"] {
        let cfg = fixtures().join(dir).join(format!("{dir}_cnn.toml"));
        let net = Network::load(&ModelRequest::new(common::source(&cfg)), &Device::Cpu).unwrap();
        let (x, shape) = npy(fixtures().join(dir).join("input.npy"));
        let (maps, _) = npy(fixtures()
            .join(dir)
            .join("gradcam_features6_pred_final.npy"));
        let (want, _) = npy(fixtures().join("metrics").join(format!("{dir}.npy")));
        let all: Vec<usize> = (0..shape[0]).collect();
        assert_rows(dir, &net, (&x, &shape), &maps, &want, &all);
    }
}

/// Every column of each sample in `which` against the reference rows `want` (N, 12):
/// columns 0-9 with the zero baseline and no ROAD noise, 10-11 with the blur baseline.
fn assert_rows(
    name: &str,
    net: &Network,
    (x, shape): (&[f32], &[usize]),
    maps: &[f32],
    want: &[f32],
    which: &[usize],
) {
    assert_eq!(want.len(), shape[0] * 12);
    let per: usize = shape[1..].iter().product();
    let p: usize = shape[2..].iter().product();
    let zero = MetricsConfig {
        noise: 0.0,
        random_baseline: false,
        ..MetricsConfig::default()
    };
    let blur = MetricsConfig {
        baseline: Baseline::Blur,
        ..zero.clone()
    };
    for &i in which {
        let input = &x[i * per..(i + 1) * per];
        let sample = Measured {
            input,
            shape: &shape[1..],
            map: &maps[i * p..(i + 1) * p],
            class: common::argmax_of(net, input, &shape[1..]),
        };
        let a = measure(net, sample, &zero).unwrap();
        let b = measure(net, sample, &blur).unwrap();
        let mut got = columns(&a).to_vec();
        got.extend([b.deletion_auc, b.insertion_auc]);
        for (k, (g, w)) in got.iter().zip(&want[i * 12..(i + 1) * 12]).enumerate() {
            let w = f64::from(*w);
            assert!(
                (g - w).abs() < 1e-4,
                "{name} sample {i} column {k}: {g} vs {w}"
            );
        }
    }
}

/// The same columns on torchvision's ResNet-18 at 224² (the shared seed-0 weights and
/// photos, their Grad-CAM layer4 maps), by tests/fixtures/resnet18/make.py.
#[test]
fn metrics_match_on_resnet18() {
    let Some(r) = common::reference_dir() else {
        return;
    };
    let weights = r.join("models/resnet18_seed0.safetensors");
    let net = common::load(std::path::Path::new("resnet18"), Some(&weights), "layer4");
    let (x, shape) = npy(r.join("resnet18/input.npy"));
    let (maps, _) = npy(r.join("resnet18/gradcam_layer4_pred_final.npy"));
    let (want, _) = npy(fixtures().join("resnet18/metrics.npy"));
    // One photo: ROAD's imputations at 224² cost ~30 s per map in a debug build.
    assert_rows("resnet18", &net, (&x, &shape), &maps, &want, &[0]);
}

/// The random-map baseline and the imputation noise are seeded: the same config gives
/// the same numbers, and a map that follows the model beats a random one on ROAD.
#[test]
fn the_random_baseline_is_seeded_and_worse_than_grad_cam() {
    let cfg = fixtures().join("shapes").join("shapes_cnn.toml");
    let net = Network::load(&ModelRequest::new(common::source(&cfg)), &Device::Cpu).unwrap();
    let (x, shape) = npy(fixtures().join("shapes").join("input.npy"));
    let (maps, _) = npy(fixtures().join("shapes/gradcam_features6_pred_final.npy"));
    let per: usize = shape[1..].iter().product();
    let p: usize = shape[2..].iter().product();
    let config = MetricsConfig::default();
    let (mut cam, mut random) = (0.0, 0.0);
    for i in 0..4 {
        let input = &x[i * per..(i + 1) * per];
        let sample = Measured {
            input,
            shape: &shape[1..],
            map: &maps[i * p..(i + 1) * p],
            class: common::argmax_of(&net, input, &shape[1..]),
        };
        let a = measure(&net, sample, &config).unwrap();
        assert_eq!(a, measure(&net, sample, &config).unwrap());
        let r = a.random.as_ref().expect("random baseline on by default");
        assert!(r.random.is_none());
        cam += a.road_combined;
        random += r.road_combined;
    }
    assert!(cam > random, "Grad-CAM {cam} vs random {random}");
}

/// `--metrics` adds each sample's metrics to its JSON record.
#[test]
fn image_records_carry_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&camstream(&[
        "image",
        "-m",
        s(&fixtures().join("shapes/shapes_cnn.toml")),
        "--metrics",
        "--json",
        "-o",
        s(dir.path()),
        s(&fixtures().join("../../samples/images/circle.png")),
    ]));
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let m = &line["metrics"];
    for key in [
        "avg_drop",
        "confidence_change",
        "deletion_auc",
        "insertion_auc",
        "road_combined",
    ] {
        assert!(m[key].is_f64(), "{key} in {line}");
        assert!(m["random"][key].is_f64(), "random {key} in {line}");
    }
    assert_eq!(line["method"], "gradcam");
}

fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Signals: every window's record carries its metrics (the 1D imputer is linear in time).
#[test]
fn signal_windows_carry_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let root = fixtures().join("../..");
    ok(&camstream(&[
        "signal",
        "-m",
        s(&root.join("samples/models/ecg.toml")),
        "--method",
        "layercam",
        "--metrics",
        "--to",
        "16",
        "-o",
        s(dir.path()),
        s(&root.join("samples/ecg/ecg_60s.csv")),
    ]));
    let lines = records(&dir.path().join("ecg_60s.windows.jsonl"));
    assert!(lines.len() >= 7, "{} windows", lines.len());
    for l in &lines {
        assert_eq!(l["method"], "layercam");
        let m = &l["metrics"];
        assert!(
            (0.0..=1.0).contains(&m["deletion_auc"].as_f64().unwrap()),
            "{l}"
        );
        assert!(m["road_combined"].is_f64() && m["random"]["road_combined"].is_f64());
    }
}

/// Video: only the frames `--metrics-every` picks are measured; the rest have none.
#[test]
fn video_frames_carry_the_metrics_every_kth_frame() {
    let dir = tempfile::tempdir().unwrap();
    let root = fixtures().join("../..");
    let json = dir.path().join("frames.jsonl");
    ok(&camstream(&[
        "video",
        s(&root.join("samples/video/shapes.mp4")),
        "-o",
        s(&dir.path().join("out.mp4")),
        "-m",
        s(&root.join("samples/models/shapes.toml")),
        "--duration",
        "0.5",
        "--metrics",
        "--metrics-every",
        "4",
        "--frames-json",
        s(&json),
        "-q",
    ]));
    let lines = records(&json);
    assert!(lines.len() >= 8, "{} frames", lines.len());
    for l in &lines {
        let measured = l["index"].as_u64().unwrap() % 4 == 0;
        assert_eq!(l["metrics"].is_object(), measured, "{l}");
    }
    // Without a place for the records, --metrics is refused.
    let out = camstream(&[
        "video",
        s(&root.join("samples/video/shapes.mp4")),
        "-o",
        s(&dir.path().join("out2.mp4")),
        "-m",
        s(&root.join("samples/models/shapes.toml")),
        "--metrics",
    ]);
    assert!(common::fails(&out).contains("--frames-json"));
}

/// `eval --metrics`: one report per method, the random baseline the same for each.
#[test]
fn eval_compares_methods_on_the_sample_task() {
    let out = ok(&camstream(&[
        "eval",
        "shapes",
        "-m",
        s(&fixtures().join("../../samples/models/shapes.toml")),
        "-n",
        "3",
        "--method",
        "gradcam,ablationcam",
        "--metrics",
        "--json",
    ]));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["method"], "gradcam");
    assert_eq!(lines[1]["method"], "ablationcam");
    for l in &lines {
        assert_eq!(l["samples"], 3);
        assert!(l["metrics"]["insertion_auc"].is_f64(), "{l}");
    }
    assert_eq!(lines[0]["metrics"]["random"], lines[1]["metrics"]["random"]);
}
