//! `camstream video IN -o OUT.mp4`: the streaming pipeline on a video file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use camstream_core::preprocess::{InputKind, Resize};
use camstream_core::Explainer;
use camstream_media::codec_threads;
use camstream_media::decode::Section;
use camstream_media::encode::EncodeOptions;
use camstream_media::render::{colormap_by_name, COLORMAPS};
use camstream_pipeline::{
    run_video, ClipSampling, FrameJob, ModelConfig, Norm, OverlayConfig, VideoJob,
};

use super::{MethodArgs, MetricsArgs, ModelArgs};

#[derive(Args)]
pub struct VideoArgs {
    /// Input video (anything FFmpeg reads: MP4, MKV, WebM, AVI, ...)
    pub input: PathBuf,

    /// Output file (.mp4, .mkv or .mov), H.264; written under a temporary name and
    /// renamed when complete
    #[arg(long, short = 'o')]
    pub output: PathBuf,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Target layer (see `camstream layers`); default: the model's
    #[arg(long, short = 'l')]
    pub layer: Option<String>,

    #[command(flatten)]
    pub method: MethodArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// With --metrics, measure only the frames whose index is a multiple of K (each
    /// measured frame runs the network ~120 more times)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub metrics_every: u64,

    /// Explain this class (index or label) in every frame; default: each frame's top-1
    #[arg(long, short = 'c')]
    pub class: Option<String>,

    /// Frames per forward/backward pass (video models: clips per pass) [default: 8
    /// frames, 2 clips]
    #[arg(long, short = 'b', value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: Option<u64>,

    /// Video models (3D CNNs): frames per clip [default: the model's, 16 for
    /// r3d_18/mc3_18/r2plus1d_18]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub clip_len: Option<u64>,

    /// Video models: sampled frames from one clip's start to the next (at most
    /// --clip-len; smaller values overlap clips, whose maps are averaged) [default:
    /// --clip-len]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub clip_stride: Option<u64>,

    /// Video models: sample every K-th frame into clips, as the model was trained;
    /// frames between samples show the map of the sample before them
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub frame_step: u64,

    /// Video models: write one JSON line per clip (clip, first_frame, last_frame,
    /// start_s, end_s, class, label, logit, probability, padded)
    #[arg(long)]
    pub clips_json: Option<PathBuf>,

    /// Explain one frame in K and reuse its map for the frames between (fast preview)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub every: u64,

    /// Heatmap scaling: `frame` (per-frame min-max, as pytorch-grad-cam), `clip` (one
    /// scale for the whole clip, as SlowFast; two passes) or `ema:A` (smoothed over time
    /// with weight A of the past, e.g. ema:0.8; no flicker)
    #[arg(long, default_value = "frame")]
    pub norm: String,

    /// Colormap: jet (as OpenCV), turbo, viridis, inferno
    #[arg(long, default_value = "jet")]
    pub colormap: String,

    /// Heatmap weight in the blend
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,

    /// How frames are fitted to the model input (default: the config's)
    #[arg(long, value_parser = ["letterbox", "stretch", "keep_aspect"])]
    pub fit: Option<String>,

    /// libx264 quality (0-51, lower is better)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=51))]
    pub crf: u8,

    /// libx264 preset (ultrafast ... veryslow)
    #[arg(long, default_value = camstream_media::encode::DEFAULT_PRESET)]
    pub preset: String,

    /// libx264 threads (default: a quarter of the cores, at least 1, so the network
    /// keeps the rest; 0 lets libx264 choose). Raise it when the model runs on a GPU
    /// and encoding becomes the slowest stage
    #[arg(long)]
    pub encode_threads: Option<usize>,

    /// Start of the section to process, in seconds
    #[arg(long)]
    pub start: Option<f64>,

    /// Length of the section to process, in seconds
    #[arg(long)]
    pub duration: Option<f64>,

    /// Write one JSON line per frame (index, pts, seconds, class, label, logit,
    /// probability, peak_x, peak_y, explained, method; metrics with --metrics)
    #[arg(long)]
    pub frames_json: Option<PathBuf>,

    /// Write the run's report (frames, per-stage and end-to-end frames/s, peak memory)
    /// as JSON
    #[arg(long)]
    pub report: Option<PathBuf>,

    /// Overlay worker threads
    #[arg(long, default_value_t = 2)]
    pub workers: usize,

    /// Do not draw the label and score on frames
    #[arg(long)]
    pub no_label: bool,

    /// No progress bar or summary
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(a: &VideoArgs) -> Result<()> {
    if a.metrics.metrics && a.frames_json.is_none() {
        bail!("--metrics adds each frame's metrics to its record: add --frames-json FILE");
    }
    let mut net = a.model.load(a.layer.as_deref())?;
    let clip_model = net.input.kind == InputKind::Clip;
    if !matches!(net.input.kind, InputKind::Image | InputKind::Clip) {
        bail!(
            "model {} does not take pictures: video needs an image or a video (clip) model",
            a.model.model
        );
    }
    let frame_opts = [
        ("--clip-len", a.clip_len.is_some()),
        ("--clip-stride", a.clip_stride.is_some()),
        ("--frame-step", a.frame_step > 1),
        ("--clips-json", a.clips_json.is_some()),
    ];
    if let Some((flag, _)) = frame_opts.iter().find(|(_, set)| *set && !clip_model) {
        bail!(
            "{flag} is for video models (3D CNNs over clips); {} explains single frames",
            a.model.model
        );
    }
    let batch = a.batch.unwrap_or(if clip_model { 2 } else { 8 });
    match a.fit.as_deref() {
        Some("letterbox") => net.input.resize = Resize::Letterbox,
        Some("stretch") => net.input.resize = Resize::Stretch,
        Some("keep_aspect") => net.input.resize = Resize::KeepAspect,
        _ => {}
    }
    let class = a.class.as_deref().map(|c| net.parse_class(c)).transpose()?;
    let explainer =
        Explainer::from_network(net, a.layer.as_deref())?.with_config(a.method.config()?);
    let norm = Norm::parse(&a.norm).ok_or_else(|| {
        anyhow!(
            "--norm must be `frame` or `ema:A` with 0 <= A < 1, got `{}`",
            a.norm
        )
    })?;
    let colormap = colormap_by_name(&a.colormap).ok_or_else(|| {
        anyhow!(
            "unknown colormap `{}`; colormaps: {}",
            a.colormap,
            COLORMAPS.join(", ")
        )
    })?;
    if !(0.0..=1.0).contains(&a.alpha) {
        bail!("--alpha must be within 0..1, got {}", a.alpha);
    }
    if a.start.is_some_and(|s| s < 0.0) || a.duration.is_some_and(|d| d <= 0.0) {
        bail!("--start must be >= 0 and --duration > 0");
    }
    if let Some(dir) = a.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    super::sweep(match a.output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    });

    let cancel = super::interrupt::graceful();
    let bar = if a.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{bar:30}] {pos}/{len} frames {per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let progress = |done: u64, total: Option<u64>| {
        if let Some(t) = total {
            bar.set_length(t.max(done));
        }
        bar.set_position(done);
    };
    let job = VideoJob {
        input: a.input.clone(),
        output: a.output.clone(),
        section: Section {
            start: a.start,
            duration: a.duration,
        },
        encode: EncodeOptions {
            crf: a.crf,
            preset: a.preset.clone(),
            threads: a.encode_threads.unwrap_or_else(codec_threads),
        },
        frames_json: a.frames_json.clone(),
        clips_json: a.clips_json.clone(),
        report: a.report.clone(),
        frames: FrameJob {
            explainer: &explainer,
            model: ModelConfig {
                class,
                batch: batch as usize,
                every: a.every as usize,
                norm,
                metrics: a.metrics.config(batch)?,
                metrics_every: a.metrics_every as usize,
                clips: ClipSampling {
                    len: a.clip_len.map(|v| v as usize),
                    stride: a.clip_stride.map(|v| v as usize),
                    step: a.frame_step as usize,
                },
            },
            overlay: OverlayConfig {
                colormap,
                alpha: a.alpha,
                label: !a.no_label,
                renormalise: norm == Norm::Frame,
            },
            overlay_workers: a.workers.max(1),
        },
        progress: Some(&progress),
        observe: None,
    };
    let report = run_video(&job, cancel)?;
    bar.finish_and_clear();
    if !a.quiet {
        let stages: Vec<String> = report
            .stages
            .iter()
            .map(|s| format!("{} {:.0}", s.stage, s.per_s))
            .collect();
        eprintln!(
            "{}{} frames ({} {}) in {:.1} s: {:.1} frames/s end to end; stage frames/s: {}; peak memory {:.0} MB{}",
            if report.interrupted { "interrupted: " } else { "" },
            report.frames,
            report.explained,
            if clip_model { "clips" } else { "explained" },
            report.wall_s,
            report.fps,
            stages.join(", "),
            report.peak_rss_mb,
            if report.corrupt_packets > 0 {
                format!("; {} corrupt packets skipped", report.corrupt_packets)
            } else {
                String::new()
            }
        );
    }
    for w in &report.warnings {
        eprintln!("camstream: warning: {w}");
    }
    if report.interrupted {
        // The file is complete and playable; the exit status still says it was cut short.
        std::process::exit(super::interrupt::exit_code());
    }
    Ok(())
}

/// The pipeline on `input` with defaults (batch as given, one overlay worker per core),
/// writing to a temporary file that is removed: for `camstream bench --video`.
pub fn bench(
    explainer: &Explainer,
    input: &std::path::Path,
    batch: usize,
    preset: &str,
    encode_threads: Option<usize>,
) -> Result<camstream_pipeline::VideoReport> {
    // The file is thrown away: a hidden, per-run name in the temp folder, where what a
    // killed bench left is swept first.
    let tmp = std::env::temp_dir();
    super::sweep(&tmp);
    let output = camstream_media::io::temp_name(&tmp.join("camstream-bench.mp4"));
    let job = VideoJob {
        input: input.to_path_buf(),
        output: output.clone(),
        section: Section::default(),
        encode: EncodeOptions {
            preset: preset.into(),
            threads: encode_threads.unwrap_or_else(codec_threads),
            ..EncodeOptions::default()
        },
        frames_json: None,
        clips_json: None,
        report: None,
        frames: FrameJob {
            explainer,
            model: ModelConfig {
                class: None,
                batch,
                every: 1,
                norm: Norm::Frame,
                metrics: None,
                metrics_every: 1,
                clips: ClipSampling::default(),
            },
            overlay: OverlayConfig {
                colormap: &camstream_media::render::JET,
                alpha: 0.5,
                label: true,
                renormalise: true,
            },
            overlay_workers: super::cores(),
        },
        progress: None,
        observe: None,
    };
    let r = run_video(&job, &AtomicBool::new(false));
    let _ = std::fs::remove_file(&output);
    Ok(r?)
}
