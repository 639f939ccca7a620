//! `camstream train <task>` and `camstream eval <task> | --data <labelled data>`: the
//! sample models made and checked by the project's own code, and any model checked on
//! a user's labelled folder or manifest.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use camstream_core::{CamConfig, Method};

use super::MetricsArgs;
use camstream_train::dataset::Dataset;
use camstream_train::eval::{evaluate, EvalOptions, Report, TaskSamples};
use camstream_train::synth::shapes;
use camstream_train::tasks::{self, Task};
use camstream_train::train::{self, TrainOptions};

/// Held-out samples come from a seed far from any training seed.
const HELDOUT_SEED: u64 = 1_000_003;

#[derive(Args)]
pub struct TrainArgs {
    /// shapes, ecg or audio
    pub task: String,
    /// Optimiser steps (each on a fresh batch)
    #[arg(long, default_value_t = 1500)]
    pub steps: usize,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Folder for <task>.toml and <task>.safetensors
    #[arg(long, short = 'o', default_value = "samples/models")]
    pub out: PathBuf,
    /// shapes only: the backgrounds to train on (see `eval --backgrounds`); the default
    /// `mix` randomises them, as the sample model learned
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(shapes::Backgrounds::NAMES))]
    pub backgrounds: Option<String>,
    /// Hide the progress bar
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["task", "data"])))]
pub struct EvalArgs {
    /// A sample task (shapes, ecg or audio): fresh held-out samples, regions known by
    /// construction
    pub task: Option<String>,
    /// Labelled data instead of a task: a folder with one subfolder per class (named by
    /// label or index; PNG/JPEG/.npy files), or a manifest, .jsonl
    /// ({"path": "a.png", "label": "cat", "box": [x0, y0, x1, y1]}; "span": [start, end]
    /// for 1D .npy) or .csv (path,label[,x0,y0,x1,y1 | ,start,end]). Paths are relative
    /// to the manifest; a box (in the file's pixels) enables the pointing game. Needs
    /// --model
    #[arg(long, conflicts_with = "task")]
    pub data: Option<PathBuf>,
    /// A model config (.toml), ONNX file or built-in architecture; default
    /// samples/models/<task>.toml
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Weights for a built-in architecture or a config without its own
    #[arg(long, short = 'w')]
    pub weights: Option<PathBuf>,
    /// Class names, one per line (overrides the model's labels)
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Target layer; default: the model's
    #[arg(long, short = 'l')]
    pub layer: Option<String>,
    /// Samples: held-out ones to generate for a task (default 300); the first N of
    /// --data (default all)
    #[arg(long, short = 'n')]
    pub n: Option<usize>,
    /// Seed of a task's held-out samples
    #[arg(long, default_value_t = HELDOUT_SEED)]
    pub seed: u64,
    /// shapes only: the backgrounds to draw on. `mix` (default): noise of every scale,
    /// gradients, stripes, photo crops, under pixel noise, as the sample model learned;
    /// `textured`: soft gratings only, as the first sample model learned;
    /// `held-out`: a generator no training uses (a rotated colour mosaic under strong
    /// noise); `noise`: strong per-pixel colour noise
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(shapes::Backgrounds::NAMES))]
    pub backgrounds: Option<String>,
    /// CAM methods to compare, comma-separated, or `all`: one table row each
    #[arg(long, default_value = "gradcam")]
    pub method: String,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Print each method's report as a JSON line
    #[arg(long)]
    pub json: bool,
}

/// The task `name`, drawn on `backgrounds` (shapes only).
fn task(name: &str, backgrounds: Option<&str>) -> Result<Box<dyn Task>> {
    let t = tasks::by_name(name).ok_or_else(|| {
        anyhow!(
            "unknown task `{name}`; tasks: {}",
            camstream_train::synth::TASKS.join(", ")
        )
    })?;
    match backgrounds.and_then(shapes::Backgrounds::by_name) {
        None => Ok(t),
        Some(backgrounds) if t.name() == "shapes" => Ok(Box::new(tasks::Shapes { backgrounds })),
        Some(_) => bail!("--backgrounds applies to the shapes task only"),
    }
}

fn progress(n: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(n);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

pub fn run_train(a: &TrainArgs) -> Result<()> {
    let t = task(&a.task, a.backgrounds.as_deref())?;
    let pb = progress(a.steps as u64, a.quiet);
    let started = std::time::Instant::now();
    let trained = train::train(
        t.as_ref(),
        &TrainOptions {
            steps: a.steps,
            batch: a.batch,
            lr: a.lr,
            seed: a.seed,
        },
        |_, loss| {
            pb.set_message(format!("loss {loss:.3}"));
            pb.inc(1);
        },
    )?;
    pb.finish_and_clear();
    let acc = train::accuracy(t.as_ref(), &trained.net, HELDOUT_SEED, 1000)?;
    let secs = started.elapsed().as_secs_f32();
    let header = format!(
        "# Sample model for the synthetic `{}` task, trained by camstream itself:\n\
         #   camstream train {} --steps {} --batch {} --lr {} --seed {}{}\n\
         # ({} fresh samples, {:.0} s on this machine).\n",
        t.name(),
        t.name(),
        a.steps,
        a.batch,
        a.lr,
        a.seed,
        a.backgrounds
            .as_deref()
            .map_or(String::new(), |b| format!(" --backgrounds {b}")),
        a.steps * a.batch,
        secs
    );
    train::save(t.as_ref(), &trained, &a.out, acc, &header)?;
    let tail = trained.losses.len().clamp(1, 100);
    let mean = |v: &[f32]| v[v.len().saturating_sub(tail)..].iter().sum::<f32>() / tail as f32;
    eprintln!(
        "last {tail} steps: mean loss {:.3}, batch accuracy {:.1} %",
        mean(&trained.losses),
        mean(&trained.batch_accuracy) * 100.0
    );
    eprintln!(
        "{}: held-out accuracy {:.1} % on 1000 samples; wrote {}/{}.toml (+ .safetensors) in {secs:.0} s",
        t.name(),
        acc * 100.0,
        a.out.display(),
        t.name()
    );
    Ok(())
}

pub fn run_eval(a: &EvalArgs) -> Result<()> {
    let t = a
        .task
        .as_deref()
        .map(|n| task(n, a.backgrounds.as_deref()))
        .transpose()?;
    let data = a.data.as_deref().map(Dataset::open).transpose()?;
    let model = match (&a.model, &t) {
        (Some(m), _) => m.clone(),
        (None, Some(t)) => format!("samples/models/{}.toml", t.name()),
        (None, None) => bail!("--data needs --model: the model to evaluate"),
    };
    let net = super::ModelArgs {
        model: model.clone(),
        weights: a.weights.clone(),
        labels: a.labels.clone(),
    }
    .load(a.layer.as_deref())?;
    let layer = a.layer.clone().unwrap_or_else(|| net.default_layer.clone());
    let methods = Method::list(&a.method)?;
    let metrics = a.metrics.config(32)?;
    let mut reports = Vec::new();
    for method in methods {
        let options = EvalOptions {
            batch: 32,
            cam: CamConfig::new(method),
            metrics: metrics.clone(),
        };
        let r: Report = match (&t, &data) {
            (Some(t), _) => {
                let mut s = TaskSamples::new(t.as_ref(), &net, a.n.unwrap_or(300), a.seed);
                evaluate(&mut s, &net, &layer, &options)?
            }
            (None, Some(d)) => evaluate(&mut d.samples(&net, a.n)?, &net, &layer, &options)?,
            (None, None) => bail!("give a task or --data"),
        };
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        }
        reports.push(r);
    }
    if !a.json {
        let r = &reports[0];
        let chance = if r.localised > 0 {
            format!(" (pointing chance {:.1} %)", r.chance * 100.0)
        } else {
            " (no regions given: pointing and energy need boxes or spans)".into()
        };
        println!(
            "{} ({model}, layer {}): accuracy {:.1} % on {} samples; {} localised samples{chance}\n",
            r.task,
            r.layer,
            r.accuracy * 100.0,
            r.samples,
            r.localised,
        );
        print!("{}", table(&reports));
    }
    Ok(())
}

/// One Markdown row per method: localisation, then faithfulness when measured.
fn table(reports: &[Report]) -> String {
    let with_metrics = reports.iter().any(|r| r.metrics.is_some());
    let mut out = String::from("| method | pointing | energy in region |");
    if with_metrics {
        out += " ROAD combined (random) | deletion AUC ↓ | insertion AUC ↑ | avg drop ↓ |";
    }
    out += "\n|---|---|---|";
    if with_metrics {
        out += "---|---|---|---|";
    }
    out += "\n";
    for r in reports {
        out += &format!(
            "| {} | {:.1} % | {:.1} % |",
            r.method,
            r.pointing * 100.0,
            r.energy * 100.0
        );
        if let Some(m) = &r.metrics {
            let random = m.random.as_ref().map_or(f64::NAN, |r| r.road_combined);
            out += &format!(
                " {:.3} ({:.3}) | {:.3} | {:.3} | {:.3} |",
                m.road_combined, random, m.deletion_auc, m.insertion_auc, m.avg_drop
            );
        }
        out += "\n";
    }
    out
}
