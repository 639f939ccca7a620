//! The streaming video pipeline: decode → preprocess → model (batched Grad-CAM) →
//! overlay (a pool of workers) → encode, one thread per stage, joined by bounded
//! channels. Memory is bounded by the channel capacities, whatever the input's length;
//! the pipeline runs at the speed of its slowest stage. A stage that fails records its
//! error once and drops its channels, which ends every other stage.

mod norm;
pub mod signal;
mod stages;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use norm::Norm;

use camstream_core::model::Network;
use camstream_media::decode::{DecodeError, Section};
use camstream_media::encode::{EncodeError, EncodeOptions};
use camstream_media::render::Colormap;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Model(#[from] camstream_core::Error),
    #[error(transparent)]
    Media(#[from] camstream_media::Error),
    #[error(transparent)]
    Signal(#[from] camstream_media::decode::signal::SignalError),
    /// A job parameter out of its range.
    #[error("`{name}` {why}")]
    BadOption { name: &'static str, why: String },
    #[error("{path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[cfg(feature = "fault-injection")]
    #[error("stage {stage} failed at frame {frame} (injected for testing)")]
    Injected { stage: &'static str, frame: u64 },
    #[error("stage {0} stopped unexpectedly")]
    Panicked(&'static str),
}

/// Runs a stage body, turning its error (or panic) into the pipeline's first error.
pub(crate) fn guard(
    stage: &'static str,
    errors: &FirstError,
    body: impl FnOnce() -> Result<(), PipelineError>,
) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => errors.set(e),
        Err(_) => errors.set(PipelineError::Panicked(stage)),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Decode,
    Preprocess,
    Model,
    Overlay,
    Encode,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Decode,
        Stage::Preprocess,
        Stage::Model,
        Stage::Overlay,
        Stage::Encode,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Preprocess => "preprocess",
            Stage::Model => "model",
            Stage::Overlay => "overlay",
            Stage::Encode => "encode",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.name() == s)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub struct VideoJob<'a> {
    pub input: PathBuf,
    pub output: PathBuf,
    pub net: &'a Network,
    pub layer: String,
    /// Explain this class in every frame; default: each frame's top-1.
    pub class: Option<usize>,
    pub batch: usize,
    /// Explain one frame in `every`; the frames between reuse its map.
    pub every: usize,
    pub norm: Norm,
    pub colormap: &'static Colormap,
    pub alpha: f32,
    pub label: bool,
    pub encode: EncodeOptions,
    pub section: Section,
    pub frames_json: Option<PathBuf>,
    pub overlay_workers: usize,
    /// Called with (frames done, frames expected) as frames are written.
    pub progress: Option<&'a (dyn Fn(u64, Option<u64>) + Sync)>,
}

/// Busy time of one stage (time spent working, not waiting on channels).
#[derive(Clone, Debug, serde::Serialize)]
pub struct StageStat {
    pub stage: &'static str,
    pub frames: u64,
    pub busy_s: f64,
    /// Frames per second of busy time: what this stage alone could sustain.
    pub fps: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct VideoReport {
    pub frames: u64,
    pub explained: u64,
    pub corrupt_packets: u64,
    pub wall_s: f64,
    pub fps: f64,
    pub stages: Vec<StageStat>,
    pub interrupted: bool,
    pub peak_rss_mb: f64,
}

/// The first error of any stage; later ones are consequences and are dropped. Once
/// set, every stage stops at its next frame (a closed channel alone would not stop the
/// other overlay workers, which share theirs).
#[derive(Default)]
pub(crate) struct FirstError(Mutex<Option<PipelineError>>, AtomicBool);

impl FirstError {
    pub(crate) fn set(&self, e: PipelineError) {
        self.1.store(true, Ordering::SeqCst);
        if let Ok(mut g) = self.0.lock() {
            g.get_or_insert(e);
        }
    }
    pub(crate) fn failed(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }
    fn take(&self) -> Option<PipelineError> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
}

/// Accumulated busy time, shared by a stage's workers.
#[derive(Default)]
pub(crate) struct Busy {
    nanos: std::sync::atomic::AtomicU64,
    frames: std::sync::atomic::AtomicU64,
}

impl Busy {
    pub(crate) fn add(&self, d: Duration, frames: u64) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        self.frames.fetch_add(frames, Ordering::Relaxed);
    }
    fn stat(&self, stage: Stage, workers: usize) -> StageStat {
        self.stat_named(stage.name(), workers)
    }
    pub(crate) fn stat_named(&self, stage: &'static str, workers: usize) -> StageStat {
        let busy = self.nanos.load(Ordering::Relaxed) as f64 / 1e9 / workers.max(1) as f64;
        let frames = self.frames.load(Ordering::Relaxed);
        StageStat {
            stage,
            frames,
            busy_s: busy,
            fps: if busy > 0.0 {
                frames as f64 / busy
            } else {
                0.0
            },
        }
    }
}

/// Peak resident memory of this process so far.
pub fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage fills the struct we pass; no other invariants.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) == 0 {
            u.ru_maxrss as f64 / 1024.0
        } else {
            0.0
        }
    }
}

/// The container for an output name (the temporary name hides the extension).
fn container_for(output: &Path) -> &'static str {
    match output
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("mkv") => "matroska",
        Some("mov") => "mov",
        _ => "mp4",
    }
}

/// Runs the whole pipeline. The output appears under its name only when complete (or
/// when interrupted through `cancel`, as a valid file of the frames done so far).
pub fn run_video(job: &VideoJob, cancel: &AtomicBool) -> Result<VideoReport, PipelineError> {
    let tmp = camstream_media::io::temp_name(&job.output);
    let started = Instant::now();
    let container = container_for(&job.output);
    let clip_scale = if job.norm == Norm::Clip {
        // First pass: the clip's largest map value (the model runs twice).
        let max = std::sync::atomic::AtomicU32::new(0);
        stages::run(job, &tmp, container, cancel, Some(&max), 0.0)?;
        f32::from_bits(max.load(Ordering::Relaxed))
    } else {
        0.0
    };
    let result = stages::run(job, &tmp, container, cancel, None, clip_scale);
    match result {
        Ok(mut report) => {
            std::fs::rename(&tmp, &job.output).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                PipelineError::Output {
                    path: job.output.clone(),
                    source: e,
                }
            })?;
            report.wall_s = started.elapsed().as_secs_f64();
            report.fps = report.frames as f64 / report.wall_s.max(1e-9);
            report.interrupted = cancel.load(Ordering::Relaxed);
            report.peak_rss_mb = peak_rss_mb();
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
