//! `camstream plan`, `camstream batch` and `camstream batch-status`: many inputs on a
//! cluster, as tasks of the user's own scheduler (see camstream-batch).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use camstream_batch::run::Progress;
use camstream_batch::{manifest, run_shard, ExplainWork, Outcome, RunOptions, Shard, Store};
use camstream_batch::{status, WorkConfig};

use super::{MethodArgs, ModelArgs};

/// Exit status of a shard with inputs that failed for good (Kubernetes
/// `podFailurePolicy: FailIndex` on it; retrying the index cannot help).
pub const EXIT_PERMANENT: i32 = 42;

/// The explain settings, the same for `plan` and `batch` (their hash names the output
/// folder, so both must be given the same).
#[derive(Args, Clone)]
pub struct WorkArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Target layer (see `camstream layers`); default: the model's
    #[arg(long, short = 'l')]
    pub layer: Option<String>,

    #[command(flatten)]
    pub method: MethodArgs,

    /// Explain this class (index or label) everywhere; default: each frame's or window's
    /// top-1
    #[arg(long, short = 'c')]
    pub class: Option<String>,

    /// Frames or windows per forward/backward pass
    #[arg(long, short = 'b', default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub batch: u64,

    /// Video: explain one frame in K and reuse its map for the frames between
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub every: u64,

    /// Heatmap weight in the video overlay
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
}

impl WorkArgs {
    fn config(&self) -> Result<WorkConfig> {
        if !(0.0..=1.0).contains(&self.alpha) {
            anyhow::bail!("--alpha must be within 0..1, got {}", self.alpha);
        }
        Ok(WorkConfig {
            model: self.model.model.clone(),
            weights: self.model.weights.clone(),
            labels: self.model.labels.clone(),
            layer: self.layer.clone(),
            method: self.method.method.clone(),
            eigen_smooth: self.method.eigen_smooth,
            aug_smooth: self.method.aug_smooth,
            method_batch: self.method.method_batch.map(|b| b as usize),
            class: self.class.clone(),
            batch: self.batch as usize,
            every: self.every,
            alpha: self.alpha,
        })
    }
}

#[derive(Args)]
pub struct PlanArgs {
    /// Videos or recordings: files, folders (walked for media files), object URLs
    /// (s3://, gs://, az://) or prefixes ending in /
    #[arg(required = true)]
    pub inputs: Vec<String>,

    /// The manifest to write (JSON lines: uri, size, mtime, key, config)
    #[arg(long, short = 'o')]
    pub output: PathBuf,

    #[command(flatten)]
    pub work: WorkArgs,
}

#[derive(Args)]
pub struct BatchArgs {
    /// The manifest `camstream plan` wrote
    #[arg(long)]
    pub manifest: PathBuf,

    /// Where outputs and markers go: a folder, file://, s3://bucket/prefix, gs://...,
    /// az://... (credentials from the usual environment variables)
    #[arg(long)]
    pub out: String,

    /// This worker's shard; default: JOB_COMPLETION_INDEX (Kubernetes), else
    /// (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP
    #[arg(long)]
    pub shard_index: Option<u64>,

    /// The number of shards; default: SLURM_ARRAY_TASK_COUNT, else CAMSTREAM_NUM_SHARDS
    #[arg(long)]
    pub num_shards: Option<u64>,

    /// After SIGTERM, seconds the input in progress may take to finish before it is
    /// aborted (keep it under the scheduler's grace period)
    #[arg(long, default_value_t = 20.0)]
    pub grace: f64,

    /// Scratch folder for downloads and outputs before upload; default: the system's
    #[arg(long)]
    pub scratch: Option<PathBuf>,

    /// Run inputs again that failed in an earlier run (default: a failure is final)
    #[arg(long)]
    pub retry_failed: bool,

    #[command(flatten)]
    pub work: WorkArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The manifest `camstream plan` wrote
    #[arg(long)]
    pub manifest: PathBuf,

    /// The output URL the shards wrote to
    #[arg(long)]
    pub out: String,

    /// The shard count to break the counts down by; default: the shards' summaries'
    #[arg(long)]
    pub num_shards: Option<u64>,

    /// Print the status as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn plan(a: &PlanArgs) -> Result<()> {
    let config = a.work.config()?.hash()?;
    let entries = manifest::plan(&a.inputs, &config)?;
    if entries.is_empty() {
        anyhow::bail!("no videos or recordings among the inputs");
    }
    manifest::write(&a.output, &entries)?;
    eprintln!(
        "planned {} inputs (config {config}) into {}",
        entries.len(),
        a.output.display()
    );
    Ok(())
}

pub fn batch(a: &BatchArgs) -> Result<()> {
    let entries = manifest::read(&a.manifest)?;
    let config = a.work.config()?;
    let hash = config.hash()?;
    if let Some(e) = entries.first() {
        if e.config != hash {
            anyhow::bail!(
                "{} was planned with explain settings {} but these make {hash}: give `batch` the options `plan` had, or plan again",
                a.manifest.display(),
                e.config
            );
        }
    }
    let shard = Shard::resolve(a.shard_index, a.num_shards, |k| std::env::var(k).ok())?;
    let store = Store::open(&a.out)?;
    let work = ExplainWork::new(&config, &super::device())?;
    let scratch = a.scratch.clone().unwrap_or_else(std::env::temp_dir);

    // The first SIGTERM stops taking inputs and gives the one in progress `--grace`
    // seconds; the second one (or the grace running out) aborts it, unmarked.
    let stop = super::interrupt::graceful();
    static ABORT: AtomicBool = AtomicBool::new(false);
    let grace = Duration::from_secs_f64(a.grace.max(0.0));
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(grace);
        ABORT.store(true, Ordering::SeqCst);
    });
    let opts = RunOptions {
        shard,
        scratch,
        retry_failed: a.retry_failed,
        stop,
        cancel: &ABORT,
    };
    let tag = format!("shard {}/{}", shard.index, shard.count);
    let mut tell = |p: &Progress| eprintln!("{}", progress_line(&tag, p));
    let summary = run_shard(&entries, &store, &work, &opts, &mut tell)?;
    println!("{}", serde_json::to_string(&summary)?);
    if summary.stopped {
        std::process::exit(super::interrupt::exit_code());
    }
    if summary.failed > 0 {
        std::process::exit(EXIT_PERMANENT);
    }
    Ok(())
}

/// One line per input and event: `shard 0/3 [2/4] <key> <uri>: done, 50 frames, 1.2 s`.
fn progress_line(tag: &str, p: &Progress) -> String {
    let head = format!(
        "{tag} [{}/{}] {} {}",
        p.position, p.total, p.entry.key, p.entry.uri
    );
    let what = match p.outcome {
        None => "start".to_string(),
        Some(Outcome::Done { frames }) => {
            format!("done, {frames} frames in {:.1} s", p.seconds)
        }
        Some(Outcome::Skipped) => "skipped (already done)".into(),
        Some(Outcome::Duplicate) => "done by another worker".into(),
        Some(Outcome::Failed(why)) => format!("failed: {why}"),
        Some(Outcome::FailedBefore) => "failed in an earlier run (--retry-failed runs it)".into(),
        Some(Outcome::Stopped) => "stopped, not marked".into(),
    };
    format!("{head}: {what}")
}

pub fn batch_status(a: &StatusArgs) -> Result<()> {
    let entries = manifest::read(&a.manifest)?;
    let store = Store::open_existing(&a.out)?;
    let st = status(&entries, &store, a.num_shards)
        .with_context(|| format!("cannot read the markers under {}", a.out))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    println!(
        "config {}: {} inputs, {} done, {} failed, {} missing",
        st.config, st.inputs, st.done, st.failed, st.missing
    );
    println!(
        "{:>6} {:>7} {:>6} {:>7} {:>8}",
        "shard", "inputs", "done", "failed", "missing"
    );
    for s in &st.shards {
        println!(
            "{:>6} {:>7} {:>6} {:>7} {:>8}",
            s.index, s.inputs, s.done, s.failed, s.missing
        );
    }
    for f in &st.failures {
        // Errors from a reader already start with the input's path.
        if f.error.starts_with(&f.uri) {
            println!("failed: {}", f.error);
        } else {
            println!("failed: {}: {}", f.uri, f.error);
        }
    }
    for m in &st.missing_uris {
        println!("missing: {m}");
    }
    Ok(())
}
