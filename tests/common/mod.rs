#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn npy(path: impl AsRef<Path>) -> (Vec<f32>, Vec<usize>) {
    let path = path.as_ref();
    camstream_media::npy::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Integer arrays (pred.npy, labels.npy) as usize.
pub fn npy_usize(path: impl AsRef<Path>) -> Vec<usize> {
    let t = candle_core::Tensor::read_npy(path.as_ref()).expect("read npy");
    t.to_dtype(candle_core::DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as usize)
        .collect()
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length differs");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The reference folder for large files (ResNet-18 weights): `CAMSTREAM_REFERENCE_DIR`.
/// Under CI it must exist, so a missing folder fails instead of passing silently.
pub fn reference_dir() -> Option<PathBuf> {
    match std::env::var_os("CAMSTREAM_REFERENCE_DIR") {
        Some(d) if Path::new(&d).is_dir() => Some(PathBuf::from(d)),
        other => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but CAMSTREAM_REFERENCE_DIR ({other:?}) is not a folder");
            }
            eprintln!(
                "skipping: set CAMSTREAM_REFERENCE_DIR to ../shared/reference to run this test"
            );
            None
        }
    }
}

/// The folder of real third-party assets (weights, photos, videos, recordings) too large
/// to ship: `CAMSTREAM_ASSETS_DIR`. Under CI it must exist.
pub fn assets_dir() -> Option<PathBuf> {
    match std::env::var_os("CAMSTREAM_ASSETS_DIR") {
        Some(d) if Path::new(&d).is_dir() => Some(PathBuf::from(d)),
        other => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but CAMSTREAM_ASSETS_DIR ({other:?}) is not a folder");
            }
            eprintln!("skipping: set CAMSTREAM_ASSETS_DIR to ../shared/assets to run this test");
            None
        }
    }
}

/// Runs the binary under test.
pub fn camstream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_camstream"))
        .args(args)
        .output()
        .expect("run camstream")
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts a clean failure and returns its message.
pub fn fails(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one-line error expected: {err}"
    );
    err
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "camstream failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The model source a path names: a built-in's name, an `.onnx` file, else a config.
pub fn source(model: &Path) -> camstream_core::ModelSource {
    camstream_core::ModelSource::parse(s(model))
        .unwrap_or_else(|_| camstream_core::ModelSource::Config(model.to_path_buf()))
}

/// A model (built-in name, ONNX or config) on the CPU, optionally with weights, kept
/// intact at `layer` (a comma-separated list for several layers).
pub fn load(model: &Path, weights: Option<&Path>, layer: &str) -> camstream_core::model::Network {
    camstream_core::model::Network::load(
        &camstream_core::ModelRequest {
            source: source(model),
            weights: weights.map(Path::to_path_buf),
            target: Some(layer.to_string()),
            labels: None,
        },
        &candle_core::Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", model.display()))
}

/// A network's logits for `x`, flattened.
pub fn logits(net: &camstream_core::model::Network, x: &candle_core::Tensor) -> Vec<f32> {
    net.forward(x)
        .and_then(|l| Ok(l.flatten_all()?.to_vec1()?))
        .expect("forward")
}

/// The top-1 class of one sample (C, spatial...).
pub fn argmax_of(net: &camstream_core::model::Network, x: &[f32], shape: &[usize]) -> usize {
    let mut dims = vec![1];
    dims.extend(shape);
    let t = candle_core::Tensor::from_vec(x.to_vec(), dims, &candle_core::Device::Cpu).unwrap();
    camstream_core::cam::argmax(&logits(net, &t))
}
