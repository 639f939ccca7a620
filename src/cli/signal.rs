//! `camstream signal`: explain recorded 1D signals (ECG, audio) window by window, or
//! preprocessed model inputs (`.npy` (N,C,L) / (N,1,M,T)) sample by sample.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use camstream_core::preprocess::InputKind;
use camstream_core::Explainer;
use camstream_media::decode::signal::{self, OpenOptions};
use camstream_media::render::{colormap_by_name, COLORMAPS};
use camstream_pipeline::signal::{run_signal, ChannelChoice, SignalJob, SignalOutput, WindowModel};

use super::{explain, ExplainArgs, MethodArgs, MetricsArgs, ModelArgs};

#[derive(Args, Clone)]
pub struct SignalArgs {
    /// Recordings: .wav (any rate, 8-32 bit), .csv/.tsv (one column per lead), WFDB
    /// records (.hea/.dat, formats 16 and 212), .npy (L,)/(C,L)/(L,C), .f32 (raw
    /// float32). A preprocessed .npy (N,C,L) (or (N,1,M,T) for audio models) is fed to
    /// the model as it is.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Target layer (see `camstream layers`); default: the model's
    #[arg(long, short = 'l')]
    pub layer: Option<String>,

    #[command(flatten)]
    pub method: MethodArgs,

    /// In `<stem>.windows.jsonl`, per window
    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// Class to explain in every window (index or label); default: each window's top-1
    #[arg(long, short = 'c')]
    pub class: Option<String>,

    /// Windows per forward/backward pass
    #[arg(long, short = 'b', default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,

    /// Step between windows: seconds with an `s` suffix (`2s`, `0.5s`) or samples at the
    /// model's rate (`500`). Default: one window (no overlap). Overlapping windows are
    /// averaged in the relevance.
    #[arg(long)]
    pub hop: Option<String>,

    /// Use one channel of a multi-channel file, by 0-based index or name (CSV column,
    /// WFDB signal description). Default: the file's channels if their count fits the
    /// model, else the mix of all channels for WAV and channel 0 otherwise.
    #[arg(long, conflicts_with = "mix")]
    pub channel: Option<String>,

    /// Mix all channels to one (mean)
    #[arg(long)]
    pub mix: bool,

    /// Sample rate of inputs that do not store one (CSV without a time column, .npy,
    /// .f32); default: the model's rate
    #[arg(long)]
    pub rate: Option<f64>,

    /// CSV: read only this column (header name or 0-based index)
    #[arg(long)]
    pub column: Option<String>,

    /// Raw .f32 input: interleaved channels
    #[arg(long, default_value_t = 1)]
    pub raw_channels: usize,

    /// Plot from this time (seconds); the data outputs always cover the whole recording
    #[arg(long)]
    pub from: Option<f64>,

    /// Plot up to this time (seconds)
    #[arg(long)]
    pub to: Option<f64>,

    /// Do not draw <stem>.png
    #[arg(long)]
    pub no_plot: bool,

    /// Colormap of the relevance: jet, turbo, viridis, inferno
    #[arg(long, default_value = "jet")]
    pub colormap: String,

    /// Output folder: <stem>.windows.jsonl, <stem>.relevance.csv/.npy (at the input's
    /// rate), <stem>.relevance_tf.npy (audio: (frames, n_mels)), <stem>.png
    #[arg(long, short = 'o', default_value = "camstream-out")]
    pub out: PathBuf,

    /// Also write <stem>.cam.npy: every window's raw (signed) low-resolution map
    #[arg(long)]
    pub cam_npy: bool,

    /// Print a JSON report per input on stdout (windows/s, stages, outputs)
    #[arg(long)]
    pub json: bool,

    /// No progress bar or summary on stderr
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// True for `.npy` files holding preprocessed model inputs rather than a recording.
fn is_preprocessed(path: &std::path::Path) -> bool {
    let npy = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !npy {
        return false;
    }
    // Windows (N,C,L) for signal models, spectrograms (C,M,T)/(N,C,M,T) for audio ones;
    // (L,) and (C,L) are recordings.
    camstream_media::npy::header(path).map_or(0, |h| h.shape.len()) >= 3
}

fn parse_hop(s: &str, rate: f64) -> Result<usize> {
    let bad = || anyhow!("--hop `{s}`: give seconds with an `s` suffix (`2s`) or samples (`500`)");
    let v = if let Some(sec) = s.strip_suffix('s') {
        let t: f64 = sec.trim().parse().map_err(|_| bad())?;
        (t * rate).round()
    } else {
        s.trim().parse::<f64>().map_err(|_| bad())?
    };
    if !(v >= 1.0 && v.is_finite()) {
        bail!("--hop must be at least one sample, got `{s}`");
    }
    Ok(v as usize)
}

pub fn run(a: &SignalArgs) -> Result<()> {
    let net = a.model.load(a.layer.as_deref())?;
    if net.input.kind == InputKind::Image {
        bail!(
            "model {} takes pictures: use `camstream image`",
            a.model.model
        );
    }
    let class = a.class.as_deref().map(|c| net.parse_class(c)).transpose()?;
    let explainer =
        Explainer::from_network(net, a.layer.as_deref())?.with_config(a.method.config()?);
    let net = explainer.network();
    let colormap = colormap_by_name(&a.colormap).ok_or_else(|| {
        anyhow!(
            "unknown colormap `{}`; colormaps: {}",
            a.colormap,
            COLORMAPS.join(", ")
        )
    })?;
    if let (Some(f), Some(t)) = (a.from, a.to) {
        if t <= f {
            bail!("--to ({t}) must be after --from ({f})");
        }
    }
    let model_rate = net.input.sample_rate.map(f64::from).unwrap_or(1.0);
    let hop = a
        .hop
        .as_deref()
        .map(|h| parse_hop(h, model_rate))
        .transpose()?;

    let (pre, rec): (Vec<PathBuf>, Vec<PathBuf>) =
        a.inputs.iter().cloned().partition(|p| is_preprocessed(p));
    if !pre.is_empty() {
        explain::run_with(
            &explainer,
            &ExplainArgs {
                inputs: pre,
                model: a.model.clone(),
                layer: a.layer.clone(),
                method: a.method.clone(),
                metrics: a.metrics.clone(),
                class: a.class.clone(),
                batch: a.batch,
                out: a.out.clone(),
                cam_npy: a.cam_npy,
                json: a.json,
                alpha: 0.5,
                top_k: 1,
            },
            explain::Kind::Signal,
        )?;
    }
    if rec.is_empty() {
        return Ok(());
    }
    super::refuse_clashes(&rec)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    super::sweep(&a.out);
    let opts = OpenOptions {
        rate: a.rate,
        column: a.column.clone(),
        raw_channels: a.raw_channels,
    };
    let channels = match (&a.channel, a.mix) {
        (Some(c), _) => ChannelChoice::Pick(c.clone()),
        (None, true) => ChannelChoice::Mix,
        (None, false) => ChannelChoice::Auto,
    };
    for path in &rec {
        let reader = signal::open(path, &opts)?;
        let bar = if a.quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::new(reader.info().frames.unwrap_or(0));
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{bar:30}] {percent}% of {msg} {elapsed} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            b
        };
        let progress = |done: u64, total: Option<u64>| {
            if let Some(t) = total {
                bar.set_length(t.max(done));
            }
            bar.set_position(done);
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "signal".into());
        let job = SignalJob {
            explainer: &explainer,
            model: WindowModel {
                class,
                batch: a.batch as usize,
                metrics: a.metrics.config(a.batch)?,
            },
            hop,
            channels: channels.clone(),
            output: SignalOutput {
                out_dir: a.out.clone(),
                stem,
                cam_npy: a.cam_npy,
                plot: !a.no_plot,
                from_s: a.from,
                to_s: a.to,
                colormap,
            },
            progress: Some(&progress),
            cancel: None,
        };
        let report = run_signal(&job, reader)?;
        bar.finish_and_clear();
        if !a.quiet {
            for n in &report.notes {
                eprintln!("note: {n}");
            }
            let stages: Vec<String> = report
                .stages
                .iter()
                .map(|s| format!("{} {:.1} s", s.stage, s.busy_s))
                .collect();
            let classes: Vec<String> = report
                .classes
                .iter()
                .take(3)
                .map(|c| format!("{} ({} of {})", c.label, c.windows, report.windows))
                .collect();
            eprintln!(
                "{}: {:.1} s of signal, {} windows: {}; in {:.2} s ({:.0} windows/s; busy {}); wrote {}",
                path.display(),
                report.duration_s,
                report.windows,
                classes.join(", "),
                report.wall_s,
                report.windows_per_s,
                stages.join(", "),
                report.outputs.join(", ")
            );
        }
        if a.json {
            let line = serde_json::to_string(&report)?;
            writeln!(std::io::stdout().lock(), "{line}").context("cannot write to stdout")?;
        }
    }
    Ok(())
}
