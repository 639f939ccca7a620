//! `eval` on a user's labelled data (folder or manifest): the same samples give the same
//! report as the synthetic task they came from, pictures' boxes follow the resize into
//! the model input, and bad datasets are one-line errors.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use camstream_core::model::{ModelRequest, ModelSource, Network};
use camstream_core::CamConfig;
use camstream_media::npy::write_npy;
use camstream_train::dataset::Dataset;
use camstream_train::eval::{evaluate, EvalOptions, Report, Samples, TaskSamples};
use camstream_train::tasks::{self, Region};
use common::{camstream, fails, ok, s};

const SEED: u64 = 1_000_003;

fn model(task: &str) -> (PathBuf, Network) {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("samples/models/{task}.toml"));
    let net = Network::load(
        &ModelRequest::new(ModelSource::Config(cfg.clone())),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    (cfg, net)
}

fn options() -> EvalOptions {
    EvalOptions {
        batch: 7,
        cam: CamConfig::default(),
        metrics: None,
    }
}

/// Writes `n` task samples as `.npy` tensors under `dir/<label>/` and a JSON-lines
/// manifest with their regions; returns the manifest's path.
fn write_task(task: &str, net: &Network, n: usize, dir: &Path) -> PathBuf {
    let t = tasks::by_name(task).unwrap();
    let mut lines = String::new();
    for (i, s) in TaskSamples::new(t.as_ref(), net, n, SEED)
        .take(n)
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let label = t.labels()[s.class];
        let rel = format!("{label}/{i:03}.npy");
        std::fs::create_dir_all(dir.join(label)).unwrap();
        write_npy(&dir.join(&rel), &s.input, &s.shape).unwrap();
        let region = match s.region {
            Some(Region::Box { x0, y0, x1, y1 }) => format!(", \"box\": [{x0}, {y0}, {x1}, {y1}]"),
            Some(Region::Span { start, end }) => format!(", \"span\": [{start}, {end}]"),
            None => String::new(),
        };
        writeln!(
            lines,
            "{{\"path\": \"{rel}\", \"label\": \"{label}\"{region}}}"
        )
        .unwrap();
    }
    let manifest = dir.join("manifest.jsonl");
    std::fs::write(&manifest, lines).unwrap();
    manifest
}

fn same(a: &Report, b: &Report) {
    assert_eq!(a.samples, b.samples);
    assert_eq!(a.accuracy, b.accuracy);
    assert_eq!(a.localised, b.localised);
    assert_eq!(a.pointing, b.pointing);
    assert!(
        (a.energy - b.energy).abs() < 1e-6,
        "{} vs {}",
        a.energy,
        b.energy
    );
    assert!((a.chance - b.chance).abs() < 1e-6);
}

#[test]
fn a_manifest_of_task_samples_reports_what_the_task_does() {
    for (task, n) in [("shapes", 30), ("ecg", 30)] {
        let tmp = tempfile::tempdir().unwrap();
        let (_, net) = model(task);
        let t = tasks::by_name(task).unwrap();
        let manifest = write_task(task, &net, n, tmp.path());
        let layer = net.default_layer.clone();
        let want = evaluate(
            &mut TaskSamples::new(t.as_ref(), &net, n, SEED),
            &net,
            &layer,
            &options(),
        )
        .unwrap();
        let data = Dataset::open(&manifest).unwrap();
        let got = evaluate(
            &mut data.samples(&net, None).unwrap(),
            &net,
            &layer,
            &options(),
        )
        .unwrap();
        eprintln!("{task}: {got:?}");
        same(&got, &want);
        assert!(got.localised > 0 && got.accuracy > 0.9, "{got:?}");
        // The class folders alone: the same accuracy, nothing to localise.
        let folder = Dataset::open(tmp.path()).unwrap();
        assert_eq!(folder.items.len(), n);
        let got = evaluate(
            &mut folder.samples(&net, Some(10)).unwrap(),
            &net,
            &layer,
            &options(),
        )
        .unwrap();
        assert_eq!((got.samples, got.localised), (10, 0));
    }
}

/// Pictures twice the model's size, with boxes in their own pixels, through the CLI.
#[test]
fn picture_boxes_follow_the_resize_and_bad_data_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, _) = model("shapes");
    let mut rng = camstream_train::synth::rng(SEED);
    let mut csv = String::from("path,label,x0,y0,x1,y1\n");
    let n = 24;
    for i in 0..n {
        let sample = camstream_train::synth::shapes::sample(&mut rng);
        let big = image::imageops::resize(
            &sample.image,
            128,
            128,
            image::imageops::FilterType::Triangle,
        );
        let name = format!("{i}.png");
        big.save(tmp.path().join(&name)).unwrap();
        let [x0, y0, x1, y1] = sample.bbox.map(|v| v * 2);
        let label = camstream_train::synth::shapes::LABELS[sample.class];
        writeln!(csv, "{name},{label},{x0},{y0},{x1},{y1}").unwrap();
    }
    let manifest = tmp.path().join("m.csv");
    std::fs::write(&manifest, &csv).unwrap();
    let out = ok(&camstream(&[
        "eval",
        "--data",
        s(&manifest),
        "--model",
        s(&cfg),
        "--method",
        "gradcam,layercam",
        "--json",
    ]));
    eprintln!("{out}");
    let reports: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert_eq!(r["samples"], n);
        assert_eq!(r["localised"], n);
        assert!(r["accuracy"].as_f64().unwrap() >= 0.9, "{r}");
        // The shapes model points at 93 % on such enlarged pictures (README); chance ~8 %.
        assert!(r["pointing"].as_f64().unwrap() >= 0.8, "{r}");
        assert!(r["chance"].as_f64().unwrap() < 0.2, "{r}");
    }
    // A table by default, one row per method.
    let table = ok(&camstream(&[
        "eval",
        "--data",
        s(&manifest),
        "--model",
        s(&cfg),
        "-n",
        "4",
    ]));
    assert!(
        table.contains("accuracy") && table.contains("| gradcam |"),
        "{table}"
    );

    // Bad datasets: a label the model lacks, a missing file, no model.
    std::fs::write(tmp.path().join("bad.csv"), "path,label\n0.png,hexagon\n").unwrap();
    let e = fails(&camstream(&[
        "eval",
        "--data",
        s(&tmp.path().join("bad.csv")),
        "--model",
        s(&cfg),
    ]));
    assert!(e.contains("line 2") && e.contains("hexagon"), "{e}");
    std::fs::write(
        tmp.path().join("gone.jsonl"),
        "{\"path\": \"nope.png\", \"label\": 0}\n",
    )
    .unwrap();
    let e = fails(&camstream(&[
        "eval",
        "--data",
        s(&tmp.path().join("gone.jsonl")),
        "--model",
        s(&cfg),
    ]));
    assert!(e.contains("line 1: no such file"), "{e}");
    let e = fails(&camstream(&["eval", "--data", s(&manifest)]));
    assert!(e.contains("--data needs --model"), "{e}");
}
