//! The `camstream` binary end to end: outputs against the references, and the errors a
//! user meets (one line, non-zero exit, no panic).

mod common;

use std::path::PathBuf;

use common::{camstream, fails, fixtures, max_abs, npy, ok, s};

fn shapes_cfg() -> PathBuf {
    fixtures().join("shapes/shapes_cnn.toml")
}

fn ecg_cfg() -> PathBuf {
    fixtures().join("ecg/ecg_cnn.toml")
}

#[test]
fn image_npy_reproduces_reference_maps_and_writes_overlays() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixtures().join("shapes/input.npy");
    let stdout = ok(&camstream(&[
        "image",
        "--model",
        s(&shapes_cfg()),
        s(&input),
        "--layer",
        "features.4",
        "--class",
        "square",
        "--cam-npy",
        "--json",
        "--batch",
        "6",
        "--out",
        s(tmp.path()),
    ]));
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 16);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["index"], i);
        assert_eq!(l["class"], 1);
        assert_eq!(l["label"], "square");
        assert_eq!(l["layer"], "features.4");
        let p = l["probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
    }
    let (raw, rs) = npy(tmp.path().join("input.cam.npy"));
    let (fin, fs) = npy(tmp.path().join("input.heatmap.npy"));
    assert_eq!(rs, vec![16, 16, 16]);
    assert_eq!(fs, vec![16, 64, 64]);
    let (rr, _) = npy(fixtures().join("shapes/gradcam_features4_fixed_raw.npy"));
    let (rf, _) = npy(fixtures().join("shapes/gradcam_features4_fixed_final.npy"));
    assert!(max_abs(&raw, &rr) <= 1e-4);
    assert!(max_abs(&fin, &rf) <= 1e-4);
    for i in 0..16 {
        let img = image::open(tmp.path().join(format!("input.{i}.png"))).unwrap();
        assert_eq!((img.width(), img.height()), (64, 64));
    }
    // Nothing half-written is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn signal_npy_reproduces_reference_maps() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixtures().join("ecg/input.npy");
    ok(&camstream(&[
        "signal",
        "--model",
        s(&ecg_cfg()),
        s(&input),
        "--cam-npy",
        "--out",
        s(tmp.path()),
    ]));
    let (raw, rs) = npy(tmp.path().join("input.cam.npy"));
    let (fin, fs) = npy(tmp.path().join("input.heatmap.npy"));
    assert_eq!((rs, fs), (vec![16, 125], vec![16, 2000]));
    let (rr, _) = npy(fixtures().join("ecg/gradcam_features6_pred_raw.npy"));
    let (rf, _) = npy(fixtures().join("ecg/gradcam_features6_pred_final.npy"));
    assert!(max_abs(&raw, &rr) <= 1e-4);
    assert!(max_abs(&fin, &rf) <= 1e-4);
}

#[test]
fn png_input_gives_an_overlay_at_the_picture_size() {
    let tmp = tempfile::tempdir().unwrap();
    let mut img = image::RgbImage::from_pixel(100, 80, image::Rgb([90, 90, 90]));
    for y in 20..50 {
        for x in 30..70 {
            img.put_pixel(x, y, image::Rgb([230, 40, 40]));
        }
    }
    let input = tmp.path().join("square.png");
    img.save(&input).unwrap();
    let out_dir = tmp.path().join("out/nested");
    let stdout = ok(&camstream(&[
        "image",
        "-m",
        s(&shapes_cfg()),
        s(&input),
        "--json",
        "-o",
        s(&out_dir),
    ]));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(v["label"].is_string());
    let overlay = image::open(out_dir.join("square.png")).unwrap().to_rgb8();
    assert_eq!((overlay.width(), overlay.height()), (100, 80));
    assert_ne!(overlay, img, "overlay must differ from the input");
}

#[test]
fn layers_lists_targets_with_shapes() {
    let stdout = ok(&camstream(&["layers", "--model", s(&shapes_cfg())]));
    assert!(stdout.contains("features.4"));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("features.6 "))
        .unwrap();
    assert!(
        line.contains("[64, 8, 8]") && line.contains("(default)"),
        "{line}"
    );
}

#[test]
fn bad_inputs_fail_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let shapes = shapes_cfg();
    let input = fixtures().join("shapes/input.npy");

    let e = fails(&camstream(&[
        "image",
        "-m",
        s(&shapes),
        "/no/such/file.npy",
        "-o",
        s(t),
    ]));
    assert!(e.contains("/no/such/file.npy"), "{e}");

    let bytes = std::fs::read(&input).unwrap();
    let truncated = t.join("truncated.npy");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let e = fails(&camstream(&[
        "image",
        "-m",
        s(&shapes),
        s(&truncated),
        "-o",
        s(t),
    ]));
    assert!(e.contains("truncated.npy"), "{e}");

    let fake = t.join("fake.png");
    std::fs::write(&fake, b"this is not a picture").unwrap();
    let e = fails(&camstream(&[
        "image",
        "-m",
        s(&shapes),
        s(&fake),
        "-o",
        s(t),
    ]));
    assert!(e.contains("fake.png"), "{e}");

    let e = fails(&camstream(&[
        "image",
        "-m",
        s(&shapes),
        s(&input),
        "--layer",
        "features.9",
        "-o",
        s(t),
    ]));
    assert!(
        e.contains("unknown layer `features.9`") && e.contains("features.6"),
        "{e}"
    );

    let e = fails(&camstream(&[
        "image",
        "-m",
        s(&shapes),
        s(&input),
        "--layer",
        "fc",
        "-o",
        s(t),
    ]));
    assert!(e.contains("no spatial dimensions"), "{e}");

    let e = fails(&camstream(&[
        "image",
        "-m",
        s(&shapes),
        s(&input),
        "--class",
        "7",
        "-o",
        s(t),
    ]));
    assert!(
        e.contains("class 7 is out of range") && e.contains("3 classes"),
        "{e}"
    );

    let e = fails(&camstream(&[
        "image",
        "-m",
        s(&shapes),
        s(&input),
        "--class",
        "hexagon",
        "-o",
        s(t),
    ]));
    assert!(e.contains("hexagon") && e.contains("triangle"), "{e}");

    let e = fails(&camstream(&[
        "image",
        "-m",
        s(&shapes),
        s(&input),
        "--class",
        "0,1",
        "-o",
        s(t),
    ]));
    assert!(
        e.contains("2 target classes given for a batch of 16"),
        "{e}"
    );

    let e = fails(&camstream(&[
        "signal",
        "-m",
        s(&shapes),
        s(&input),
        "-o",
        s(t),
    ]));
    assert!(e.contains("camstream image"), "{e}");

    let e = fails(&camstream(&["image", "-m", "vgg16", s(&input), "-o", s(t)]));
    assert!(e.contains("vgg16") && e.contains("resnet50"), "{e}");

    let e = fails(&camstream(&[
        "signal",
        "-m",
        s(&ecg_cfg()),
        s(&input),
        "-o",
        s(t),
    ]));
    assert!(e.contains("expected (C,L) or (N,C,L)"), "{e}");
}

#[test]
fn mismatched_weights_and_configs_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ecg_input = fixtures().join("ecg/input.npy");
    let shapes_weights = fixtures().join("shapes/shapes_cnn.safetensors");

    // The ECG architecture with the shapes weights: the first conv has 3 input channels.
    let e = fails(&camstream(&[
        "signal",
        "-m",
        s(&ecg_cfg()),
        "-w",
        s(&shapes_weights),
        s(&ecg_input),
        "-o",
        s(t),
    ]));
    assert!(
        e.contains("`features.0.conv.weight` has shape [16, 3, 3, 3]") && e.contains("[_, 1, _]"),
        "{e}"
    );

    let text = std::fs::read_to_string(ecg_cfg()).unwrap();
    let cfg = t.join("bad_op.toml");
    std::fs::write(
        &cfg,
        text.replace("op = \"maxpool1d\"", "op = \"maxpool4d\""),
    )
    .unwrap();
    let w = fixtures().join("ecg/ecg_cnn.safetensors");
    let signal = |cfg: &std::path::Path| {
        fails(&camstream(&[
            "signal",
            "-m",
            s(cfg),
            "-w",
            s(&w),
            s(&ecg_input),
            "-o",
            s(t),
        ]))
    };
    let e = signal(&cfg);
    assert!(e.contains("maxpool4d") && e.contains("maxpool1d"), "{e}");
    // A known op of the wrong rank says so.
    std::fs::write(
        &cfg,
        text.replace("op = \"maxpool1d\"", "op = \"maxpool3d\""),
    )
    .unwrap();
    let e = signal(&cfg);
    assert!(e.contains("a 3D layer in a model whose input is 1D"), "{e}");

    let cfg = t.join("missing.toml");
    std::fs::write(&cfg, text.replace("name = \"fc\"", "name = \"head\"")).unwrap();
    let e = fails(&camstream(&[
        "signal",
        "-m",
        s(&cfg),
        "-w",
        s(&w),
        s(&ecg_input),
        "-o",
        s(t),
    ]));
    assert!(e.contains("`head.weight` is missing"), "{e}");

    let e = fails(&camstream(&[
        "signal",
        "-m",
        s(&ecg_cfg()),
        "-w",
        s(&ecg_input),
        s(&ecg_input),
        "-o",
        s(t),
    ]));
    assert!(e.contains(".npy"), "{e}");
}

/// `--device cuda` on a build without CUDA is one clear line; `auto` and `cpu` run on the
/// CPU; `--threads` is accepted by every command.
#[test]
fn device_and_threads_options() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixtures().join("shapes/input.npy");
    let cfg = fixtures().join("shapes/shapes_cnn.toml");
    if !camstream_core::device::cuda_built() {
        let e = fails(&camstream(&[
            "--device",
            "cuda",
            "image",
            "-m",
            s(&cfg),
            s(&input),
            "-o",
            s(tmp.path()),
        ]));
        assert!(e.contains("built without CUDA"), "{e}");
    }
    let e = fails(&camstream(&["--device", "tpu", "layers", "-m", s(&cfg)]));
    assert!(e.contains("auto, cpu, cuda"), "{e}");
    for dev in ["auto", "cpu"] {
        ok(&camstream(&[
            "image",
            "-m",
            s(&cfg),
            s(&input),
            "-o",
            s(tmp.path()),
            "--device",
            dev,
            "--threads",
            "1",
        ]));
    }
    assert!(tmp.path().join("input.0.png").is_file());
}

/// An array with no samples is refused up front, not left to crash the writer.
#[test]
fn an_empty_array_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.npy");
    camstream_media::npy::write_npy(&empty, &[], &[0, 3, 64, 64]).unwrap();
    let e = fails(&camstream(&[
        "image",
        "-m",
        s(&shapes_cfg()),
        s(&empty),
        "--cam-npy",
        "-o",
        s(tmp.path()),
    ]));
    assert!(e.contains("holds no samples"), "{e}");
}
