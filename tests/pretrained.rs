//! Real pretrained models: EfficientNet-Lite0 (ImageNet, shipped in samples/) on real
//! photos and a real video, YAMNet (AudioSet, from CAMSTREAM_ASSETS_DIR) on real speech.

mod common;

use std::path::{Path, PathBuf};

use camstream_core::cam::{GradCam, Targets};
use camstream_core::model::{ModelRequest, Network};
use candle_core::{Device, Tensor};
use common::{assets_dir, camstream, fixtures, npy, ok, s};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn efficientnet() -> PathBuf {
    root().join("samples/models/efficientnet_lite0.toml")
}

fn softmax(l: &[f32]) -> Vec<f32> {
    let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = l.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// The four reference crops (224x224, PIL shorter-side-256 bilinear + centre crop, as the
/// weights' note prescribes) through the network: top-3 classes and probabilities as
/// listed in ../shared/assets/efficientnet_lite0.md (printed to 3 decimals), computed
/// there by the original PyTorch package.
#[test]
fn efficientnet_lite0_matches_the_reference_top3() {
    let net = Network::load(
        &ModelRequest::new(common::source(&efficientnet())),
        &Device::Cpu,
    )
    .unwrap();
    let t = Tensor::read_npy(fixtures().join("overlay/input_rgb_uint8.npy")).unwrap();
    assert_eq!(t.dims(), [4, 224, 224, 3]);
    let rgb: Vec<f32> = t
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    // NHWC uint8 -> NCHW (x - 127) / 128
    let mut x = vec![0f32; rgb.len()];
    for n in 0..4 {
        for i in 0..224 * 224 {
            for c in 0..3 {
                x[n * 3 * 224 * 224 + c * 224 * 224 + i] =
                    (rgb[(n * 224 * 224 + i) * 3 + c] - 127.0) / 128.0;
            }
        }
    }
    let x = Tensor::from_vec(x, (4, 3, 224, 224), &Device::Cpu).unwrap();
    let cam = GradCam::new(&net, "head").unwrap();
    let out = cam.run(&x, &Targets::TopOne).unwrap();
    // astronaut, coffee, chelsea, rocket (the reference folder's order)
    let want: [[(usize, f32); 3]; 4] = [
        [(450, 0.131), (560, 0.124), (573, 0.069)],
        [(967, 0.957), (968, 0.014), (925, 0.007)],
        [(282, 0.383), (285, 0.370), (281, 0.161)],
        [(657, 0.381), (744, 0.253), (540, 0.051)],
    ];
    for (n, w) in want.iter().enumerate() {
        let p = softmax(&out.logits[n]);
        let mut idx: Vec<usize> = (0..p.len()).collect();
        idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        for (k, &(class, prob)) in w.iter().enumerate() {
            assert_eq!(idx[k], class, "photo {n}: rank {k}");
            assert!(
                (p[class] - prob).abs() <= 6e-4,
                "photo {n} class {class}: {} vs {prob}",
                p[class]
            );
        }
        assert_eq!(net.label(idx[0]), net.labels.as_ref().unwrap()[idx[0]]);
    }
    // The map of the head is finite and has a positive part on every photo.
    for n in 0..4 {
        let m = out.raw_map(n);
        assert_eq!(out.spatial, [7, 7]);
        assert!(m.iter().all(|v| v.is_finite()) && m.iter().any(|v| *v > 0.0));
    }
    // Inside the network the gradient goes back through depthwise convs and residuals.
    let inner = GradCam::new(&net, "_blocks.10")
        .unwrap()
        .run(&x, &Targets::All(967))
        .unwrap();
    assert_eq!(inner.spatial, [14, 14]);
    assert!(inner.raw_map(1).iter().any(|v| *v > 0.0));
}

#[test]
fn efficientnet_lite0_names_the_obvious_class_of_real_photos() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = root().join("samples/photos");
    let out = ok(&camstream(&[
        "image",
        "-m",
        s(&efficientnet()),
        s(&photos.join("chelsea.png")),
        s(&photos.join("coffee.png")),
        "-o",
        s(tmp.path()),
        "--json",
    ]));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cat = lines[0]["class"].as_u64().unwrap();
    assert!((281..=285).contains(&cat), "chelsea: {}", lines[0]);
    assert!(lines[0]["label"].as_str().unwrap().contains("cat"));
    assert_eq!(lines[1]["class"], 967, "coffee: {}", lines[1]);
    assert_eq!(lines[1]["label"], "espresso");
    // --top-k: one map per class, ranked by logit.
    let top = ok(&camstream(&[
        "image",
        "-m",
        s(&efficientnet()),
        s(&photos.join("chelsea.png")),
        "--top-k",
        "3",
        "-o",
        s(tmp.path()),
        "--json",
    ]));
    let top: Vec<serde_json::Value> = top
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let classes: Vec<u64> = top.iter().map(|l| l["class"].as_u64().unwrap()).collect();
    assert_eq!(classes, [282, 285, 281]);
    assert_eq!(top[2]["rank"], 3);
    assert!(tmp.path().join("chelsea.top3.png").is_file());
    let img = image::open(tmp.path().join("chelsea.png")).unwrap();
    // The overlay covers the centre crop the model saw: 224 of 256 of the 300 px side.
    assert_eq!((img.width(), img.height()), (263, 263));
}

#[test]
fn efficientnet_lite0_annotates_a_real_video() {
    let tmp = tempfile::tempdir().unwrap();
    let video = root().join("samples/video/bigbuckbunny.mp4");
    let outv = tmp.path().join("bunny.mp4");
    let frames = tmp.path().join("bunny.jsonl");
    ok(&camstream(&[
        "video",
        s(&video),
        "-o",
        s(&outv),
        "-m",
        s(&efficientnet()),
        "--duration",
        "1",
        "--frames-json",
        s(&frames),
        "-q",
    ]));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&frames)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 25);
    let info = camstream_media::decode::VideoDecoder::open(&outv, Default::default())
        .unwrap()
        .info()
        .clone();
    assert_eq!((info.width, info.height), (1280, 720));
}

/// YAMNet on real speech, the simplest command (no hop, no labels): every 0.975 s patch
/// (hop 0.48 s by default, as YAMNet frames a clip) is Speech, by its built-in class
/// names; the mean score is the one the original TF-Hub model gives (0.927, per
/// yamnet.md).
#[test]
fn yamnet_hears_speech() {
    let Some(a) = assets_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let o = camstream(&[
        "signal",
        "-m",
        "yamnet",
        "-w",
        s(&a.join("yamnet.safetensors")),
        s(&a.join("speech_16k.wav")),
        "-o",
        s(tmp.path()),
    ]);
    ok(&o);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("9 windows: Speech (9 of 9)"), "{said}");
    let w: Vec<serde_json::Value> =
        std::fs::read_to_string(tmp.path().join("speech_16k.windows.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(w.len(), 9);
    assert!(w.iter().all(|x| x["label"] == "Speech"));
    let mean: f64 = w
        .iter()
        .map(|x| x["probability"].as_f64().unwrap())
        .sum::<f64>()
        / 9.0;
    assert!((mean - 0.927).abs() < 2e-3, "mean Speech score {mean}");
    let (tf, shape) = npy(tmp.path().join("speech_16k.relevance_tf.npy"));
    assert_eq!(shape[1], 64);
    assert!(tf.iter().any(|v| *v > 0.0));
}
