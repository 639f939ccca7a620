//! `camstream train <task>` and `camstream eval <task>`: the sample models, made and
//! checked by the project's own code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use candle_core::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use camstream_core::model::{ModelRequest, ModelSource, Network};
use camstream_core::{CamConfig, Method};

use super::MetricsArgs;
use camstream_train::eval::{evaluate, EvalOptions, Report};
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
    /// Hide the progress bar
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    /// shapes, ecg or audio
    pub task: String,
    /// Model config; default samples/models/<task>.toml
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// Target layer; default: the model's
    #[arg(long, short = 'l')]
    pub layer: Option<String>,
    /// Held-out samples to generate
    #[arg(long, short = 'n', default_value_t = 300)]
    pub n: usize,
    #[arg(long, default_value_t = HELDOUT_SEED)]
    pub seed: u64,
    /// CAM methods to compare, comma-separated, or `all`: one table row each
    #[arg(long, default_value = "gradcam")]
    pub method: String,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Print each method's report as a JSON line
    #[arg(long)]
    pub json: bool,
}

fn task(name: &str) -> Result<Box<dyn Task>> {
    tasks::by_name(name).ok_or_else(|| {
        anyhow!(
            "unknown task `{name}`; tasks: {}",
            camstream_train::synth::TASKS.join(", ")
        )
    })
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
    let t = task(&a.task)?;
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
         #   camstream train {} --steps {} --batch {} --lr {} --seed {}\n\
         # ({} fresh samples, {:.0} s on this machine).\n",
        t.name(),
        t.name(),
        a.steps,
        a.batch,
        a.lr,
        a.seed,
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
    let t = task(&a.task)?;
    let cfg = a
        .model
        .clone()
        .unwrap_or_else(|| Path::new("samples/models").join(format!("{}.toml", t.name())));
    let mut req = ModelRequest::new(ModelSource::Config(cfg.clone()));
    req.target = a.layer.clone();
    let net = Network::load(&req, &Device::Cpu)?;
    let layer = a.layer.clone().unwrap_or_else(|| net.default_layer.clone());
    let methods = Method::list(&a.method)?;
    let metrics = a.metrics.config(32)?;
    let mut reports = Vec::new();
    for method in methods {
        let options = EvalOptions {
            n: a.n,
            seed: a.seed,
            batch: 32,
            cam: CamConfig::new(method),
            metrics: metrics.clone(),
        };
        let r: Report = evaluate(t.as_ref(), &net, &layer, &options)?;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        }
        reports.push(r);
    }
    if !a.json {
        let r = &reports[0];
        println!(
            "{} ({}, layer {}): accuracy {:.1} % on {} samples; {} localised samples \
             (pointing chance {:.1} %)\n",
            r.task,
            cfg.display(),
            r.layer,
            r.accuracy * 100.0,
            r.samples,
            r.localised,
            r.chance * 100.0,
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
