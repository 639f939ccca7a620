//! Command-line parsing; each subcommand lives in its own module.

mod batch;
mod bench;
mod explain;
mod interrupt;
mod layers;
mod samples;
mod serve;
mod signal;
mod train;
mod video;

use std::path::PathBuf;

use anyhow::Result;
use camstream_core::{ModelRequest, ModelSource, Network};
use clap::{Args, Parser, Subcommand};

const ABOUT: &str = "Explain what a convolutional network looks at (Grad-CAM), on pictures, \
video and 1D signals.";

const LONG_ABOUT: &str = "Explain what a convolutional network looks at (Grad-CAM), on pictures, \
video and 1D signals.

Grad-CAM weighs the target layer's activation maps A_k by the spatial mean of the class \
score's gradient (alpha_k), sums them, and keeps the positive part: L = ReLU(sum_k alpha_k A_k). \
The numbers match pytorch-grad-cam 1.5.7 and Captum 0.9 on the same weights.

Examples:
  camstream image --model samples/models/shapes.toml samples/images/square.png --out out/
  camstream image --model resnet18 --weights resnet18.safetensors photo.jpg --class 281 --json
  camstream signal --model samples/models/ecg.toml samples/ecg/ecg_60s.csv --out out/
  camstream signal --model samples/models/ecg.toml record.hea --hop 2s --from 60 --to 90
  camstream signal --model samples/models/audio.toml samples/audio/chirp.wav --out out/
  camstream video samples/video/shapes.mp4 -o out/shapes_cam.mp4 --model samples/models/shapes.toml
  camstream image --model samples/models/efficientnet_lite0.toml samples/photos/coffee.png --top-k 3
  camstream signal --model yamnet --weights yamnet.safetensors speech.wav
  camstream layers --model model.onnx";

#[derive(Parser)]
#[command(name = "camstream", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// CPU threads for the network's maths (default: the physical cores). Threads wait
    /// by sleeping, not spinning, so a shared machine is not slowed down by idle ones
    /// (CANDLE_BARRIER_POOL_SPIN_LIMIT overrides).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,

    /// Where the network runs: auto (CUDA when built with it and a GPU is present, else
    /// the CPU), cpu, cuda or cuda:N
    #[arg(long, global = true, default_value = "auto")]
    device: String,

    #[command(subcommand)]
    command: Command,
}

/// Thread settings must be in place before candle starts its pools.
fn configure_threads(threads: Option<u64>) {
    // candle's element-wise pool spins 25 000 times before parking; on a shared
    // 2-core machine that spinning steals the core the other thread needs.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1");
    }
    if let Some(n) = threads {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    }
    // The maths pool (it reads RAYON_NUM_THREADS), and this thread, which runs the
    // network's serial ops, with subnormals flushed.
    camstream_core::device::init_cpu_pool();
    camstream_core::device::flush_denormals();
}

/// The cores the OS lets this process use.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Subcommand)]
enum Command {
    /// Explain pictures (PNG/JPEG) or preprocessed (C,H,W)/(N,C,H,W) float32 .npy tensors.
    Image(ExplainArgs),
    /// Explain 1D signals (ECG, audio): WAV, CSV, WFDB, .npy, streamed window by window;
    /// writes per-window classes, the relevance over time (CSV/NPY) and a plot.
    Signal(Box<signal::SignalArgs>),
    /// Annotate a video with Grad-CAM heatmaps (streamed; any length, constant memory).
    Video(Box<video::VideoArgs>),
    /// List every valid target layer of a model with its output shape.
    Layers(ModelArgs),
    /// Time forward-only and Grad-CAM on the same batch (frames/s and their ratio).
    Bench(bench::BenchArgs),
    /// Make the sample inputs (pictures, video, ECG, audio) from the synthetic generators.
    Samples(samples::SamplesArgs),
    /// Train a sample model on a synthetic task (shapes, ecg, audio) with candle.
    Train(train::TrainArgs),
    /// Accuracy, localisation (pointing game, energy in region) and, with --metrics,
    /// faithfulness per CAM method: on a sample task's held-out samples, or on a labelled
    /// folder or manifest (--data)
    Eval(train::EvalArgs),
    /// Serve explanations over HTTP: KServe V1 (:predict, :explain), the Open Inference
    /// Protocol (V2 infer with a cam output), video/signal jobs with progress events, and
    /// a web page at /. Example: camstream serve --model shapes=samples/models/shapes.toml
    Serve(Box<serve::ServeArgs>),
    /// Freeze a work list for `batch`: one JSON line per video or recording (uri, size,
    /// mtime, content key, explain-config hash). Example: camstream plan videos/ -o
    /// manifest.jsonl --model samples/models/shapes.toml
    Plan(Box<batch::PlanArgs>),
    /// Run one shard of a manifest as a cluster task (Kubernetes Indexed Job, Slurm
    /// array, Ray): outputs and create-only completion markers under --out (a folder or
    /// s3://, gs://, az://). Exit 0: all done or skipped; 42: some inputs failed for
    /// good; other: retry. Example: JOB_COMPLETION_INDEX=0 CAMSTREAM_NUM_SHARDS=4
    /// camstream batch --manifest manifest.jsonl --out s3://bucket/cams --model ...
    Batch(Box<batch::BatchArgs>),
    /// Across all shards of a manifest: which inputs are done, failed or missing.
    BatchStatus(batch::StatusArgs),
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A built-in architecture (resnet18, resnet34, resnet50, efficientnet_lite0, yamnet;
    /// these need --weights), an ONNX file (.onnx), or a model config (.toml)
    #[arg(long, short = 'm')]
    pub model: String,

    /// Weights: .safetensors or a zip-format PyTorch state_dict (.pth/.pt) with PyTorch's
    /// parameter names. Needed for built-ins; a config may name its own.
    #[arg(long, short = 'w')]
    pub weights: Option<PathBuf>,

    /// Class names, one per line (overrides the config's labels)
    #[arg(long)]
    pub labels: Option<PathBuf>,
}

/// `--model`: a built-in name, or a file whose extension says what it is. Parsed when the
/// command runs (not by clap), so a bad name is a one-line error like any other.
pub(crate) fn parse_model(s: &str) -> Result<ModelSource> {
    Ok(ModelSource::parse(s)?)
}

/// The CAM method and its options, the same in every command.
#[derive(Args, Clone)]
pub struct MethodArgs {
    /// CAM method, with pytorch-grad-cam's definitions. From the one backward pass
    /// (logits to the layer): gradcam, gradcam++, xgradcam, hirescam, elementwise,
    /// layercam, eigengradcam. Forward only: eigencam. With extra forward passes:
    /// scorecam (one whole-network pass per channel; slow), ablationcam (only the part
    /// after the layer runs again, per channel)
    #[arg(long, default_value = "gradcam")]
    pub method: String,

    /// Reduce the weighted activations by their first principal component instead of
    /// summing them (pytorch-grad-cam's eigen_smooth): less noise, sign fixed to agree
    /// with the activations
    #[arg(long)]
    pub eigen_smooth: bool,

    /// Average the maps of six test-time augmentations (horizontal flip × input scaled
    /// by 0.9, 1, 1.1), each for its own top-1 class unless --class is given
    /// (pytorch-grad-cam's aug_smooth): smoother maps, six times the work
    #[arg(long)]
    pub aug_smooth: bool,

    /// Channels per extra forward pass of scorecam/ablationcam (default 16 and 32, as
    /// pytorch-grad-cam); memory grows with it
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub method_batch: Option<u64>,
}

impl MethodArgs {
    pub fn config(&self) -> camstream_core::Result<camstream_core::CamConfig> {
        Ok(camstream_core::CamConfig {
            method: camstream_core::Method::from_name(&self.method)?,
            eigen_smooth: self.eigen_smooth,
            aug_smooth: self.aug_smooth,
            method_batch: self.method_batch.map(|b| b as usize),
        })
    }
}

/// `--metrics` and how the faithfulness metrics perturb inputs, the same in every command.
#[derive(Args, Clone)]
pub struct MetricsArgs {
    /// Measure each map's faithfulness and add it to the JSON records: confidence
    /// change and drop/increase (pytorch-grad-cam), average drop/increase (torchcam),
    /// ROAD most/least relevant first and combined, deletion/insertion AUC (RISE), each
    /// also for a random map. Runs the network ~120 more times per map
    #[arg(long)]
    pub metrics: bool,

    /// What deletion moves towards and insertion starts from: zero, blur (RISE's) or mean
    #[arg(long, default_value = "zero")]
    pub metrics_baseline: String,

    /// Deletion/insertion steps
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub metrics_steps: u64,

    /// Seed of ROAD's imputation noise and of the random map
    #[arg(long, default_value_t = 0)]
    pub metrics_seed: u64,
}

impl MetricsArgs {
    /// The metrics' settings, or None without `--metrics`.
    pub fn config(&self, batch: u64) -> Result<Option<camstream_core::metrics::MetricsConfig>> {
        if !self.metrics {
            return Ok(None);
        }
        let baseline = self
            .metrics_baseline
            .parse()
            .map_err(|e| anyhow::anyhow!("--metrics-baseline: {e}"))?;
        Ok(Some(camstream_core::metrics::MetricsConfig {
            steps: self.metrics_steps as usize,
            baseline,
            seed: self.metrics_seed,
            batch: batch.max(1) as usize,
            ..Default::default()
        }))
    }
}

impl ModelArgs {
    /// The library's request for this model, keeping `layer` intact when BN is folded.
    pub fn request(&self, layer: Option<&str>) -> Result<ModelRequest> {
        Ok(ModelRequest {
            source: parse_model(&self.model)?,
            weights: self.weights.clone(),
            target: layer.map(str::to_string),
            labels: self.labels.clone(),
        })
    }

    pub fn load(&self, layer: Option<&str>) -> Result<Network> {
        Ok(Network::load(&self.request(layer)?, &device())?)
    }
}

#[derive(Args, Clone)]
pub struct ExplainArgs {
    /// Input files
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,

    #[command(flatten)]
    pub model: ModelArgs,

    /// Target layer (see `camstream layers`); default: the model's (layer4 for ResNets).
    /// A block name such as `features.6` means the block's output.
    #[arg(long, short = 'l')]
    pub layer: Option<String>,

    #[command(flatten)]
    pub method: MethodArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// Class to explain: an index or a label, for every sample; or a comma-separated list
    /// with exactly one class per sample. Default: each sample's top-1 class.
    #[arg(long, short = 'c')]
    pub class: Option<String>,

    /// Explain the K best classes of each sample, one map each (<stem>.top1.png,
    /// <stem>.top2.png, ...; JSON lines carry the rank)
    #[arg(long, default_value_t = 1, conflicts_with = "class", value_parser = clap::value_parser!(u64).range(1..))]
    pub top_k: u64,

    /// Samples per forward/backward pass
    #[arg(long, short = 'b', default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,

    /// Output folder (created if missing): <stem>.png overlays for pictures
    #[arg(long, short = 'o', default_value = "camstream-out")]
    pub out: PathBuf,

    /// Also write <stem>.cam.npy (raw signed low-resolution maps, (N,h,w) or (N,l)) and
    /// <stem>.heatmap.npy (final maps at input size, (N,H,W) or (N,L))
    #[arg(long)]
    pub cam_npy: bool,

    /// Print one JSON line per sample on stdout (input, index, class, label, logit,
    /// probability, layer, method; metrics with --metrics, which implies it)
    #[arg(long)]
    pub json: bool,

    /// Heatmap weight in the overlay (pytorch-grad-cam's 1 - image_weight)
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
}

/// Library parameters (named in messages as `` `rate` ``) and the flags that set them.
const FLAGS: &[(&str, &str)] = &[
    ("channel", "--channel"),
    ("clip_len", "--clip-len"),
    ("clip_stride", "--clip-stride"),
    ("clips_json", "--clips-json"),
    ("crf", "--crf"),
    ("device", "--device"),
    ("frames_json", "--frames-json"),
    ("every", "--every"),
    ("frame_step", "--frame-step"),
    ("from", "--from"),
    ("hop", "--hop"),
    ("layer", "--layer"),
    ("metrics", "--metrics"),
    ("mix", "--mix"),
    ("num_shards", "--num-shards"),
    ("norm", "--norm"),
    ("out", "--out"),
    ("output", "--output"),
    ("preset", "--preset"),
    ("rate", "--rate"),
    ("report", "--report"),
    ("shard_index", "--shard-index"),
    ("start", "--start"),
    ("top_k", "--top-k"),
    ("weights", "--weights"),
];

/// An error message in the user's terms: the library names its parameters, the user
/// typed flags.
pub fn in_flags(msg: &str) -> String {
    FLAGS.iter().fold(msg.to_string(), |m, (param, flag)| {
        m.replace(&format!("`{param}`"), flag)
    })
}

static DEVICE: std::sync::OnceLock<candle_core::Device> = std::sync::OnceLock::new();

/// The device `--device` chose (the CPU until `run` has chosen).
pub fn device() -> candle_core::Device {
    DEVICE.get().cloned().unwrap_or(candle_core::Device::Cpu)
}

/// Refuses inputs whose outputs would share a name in the output folder, listing them.
pub(crate) fn refuse_clashes(paths: &[PathBuf]) -> Result<()> {
    let clashes = camstream_media::guard::stem_clashes(paths);
    if clashes.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = clashes
        .iter()
        .map(|(stem, files)| {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            format!("{stem}: {}", names.join(" "))
        })
        .collect();
    anyhow::bail!(
        "inputs with the same name would overwrite each other's outputs ({}); give them distinct names or run them separately",
        list.join("; ")
    )
}

/// Removes what killed earlier runs left in `dir`, and says so.
pub(crate) fn sweep(dir: &std::path::Path) {
    let n = camstream_media::io::sweep_stale(dir);
    if n > 0 {
        eprintln!(
            "note: removed {n} temporary file{} left in {} by an earlier run that was killed",
            if n == 1 { "" } else { "s" },
            dir.display()
        );
    }
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    configure_threads(cli.threads);
    let choice = camstream_core::device::DeviceChoice::parse(&cli.device).ok_or_else(|| {
        anyhow::anyhow!("--device `{}`: use auto, cpu, cuda or cuda:N", cli.device)
    })?;
    let (dev, said) = camstream_core::device::select(choice)?;
    // Only a CUDA build has a choice worth reporting.
    if camstream_core::device::cuda_built() {
        eprintln!("{said}");
    }
    let _ = DEVICE.set(dev);
    interrupt::install();
    match cli.command {
        Command::Image(a) => explain::run(&a, explain::Kind::Image),
        Command::Signal(a) => signal::run(&a),
        Command::Layers(a) => layers::run(&a),
        Command::Video(a) => video::run(&a),
        Command::Samples(a) => samples::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Train(a) => train::run_train(&a),
        Command::Eval(a) => train::run_eval(&a),
        Command::Serve(a) => serve::run(&a),
        Command::Plan(a) => batch::plan(&a),
        Command::Batch(a) => batch::batch(&a),
        Command::BatchStatus(a) => batch::batch_status(&a),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn library_parameters_become_flags() {
        assert_eq!(
            super::in_flags("the file says 250 Hz but `rate` says 360 Hz; drop `rate`"),
            "the file says 250 Hz but --rate says 360 Hz; drop --rate"
        );
        assert_eq!(super::in_flags("`top_k` ranks"), "--top-k ranks");
        // Values in backticks that are not parameters stay as they are.
        assert_eq!(super::in_flags("no channel `V2`"), "no channel `V2`");
    }
}
