//! camstream's streaming pipelines, video and recorded signals: one thread per stage,
//! joined by bounded channels, so memory stays flat however long the input is. Every
//! stage knows its own config and channels; the first error of any stage stops all of
//! them, and outputs appear under their names only when complete.

mod norm;
pub mod records;
pub mod signal;
#[cfg(feature = "video")]
pub mod video;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub use norm::Norm;
pub use records::{JsonLines, RecordSink};
#[cfg(feature = "video")]
pub use video::{
    run_frames, run_video, ClipSampling, FrameJob, ModelConfig, OverlayConfig, VideoJob,
    VideoReport,
};

#[cfg(feature = "video")]
use camstream_media::decode::DecodeError;
#[cfg(feature = "video")]
use camstream_media::encode::EncodeError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[cfg(feature = "video")]
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[cfg(feature = "video")]
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[cfg(feature = "video")]
    #[error(transparent)]
    Frame(#[from] camstream_media::frame::FrameError),
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
    /// A run that produced nothing to write.
    #[error("{input}: no frames to write ({why})")]
    NoFrames { input: PathBuf, why: String },
    /// The caller asked the job to stop; nothing was written.
    #[error("cancelled")]
    Cancelled,
    /// The caller dropped the receiving end of a channel sink.
    #[error("the receiver of {0} went away")]
    ReceiverGone(&'static str),
}

/// Runs a stage body on its own thread, named after the stage (so `top -H` and profilers
/// show each stage's CPU), turning its error (or panic) into the pipeline's first error.
/// The thread's CPU time goes to the stage's busy clock when it ends.
pub(crate) fn spawn_stage<'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    stage: &'static str,
    ctl: StageCtl<'scope>,
    body: impl FnOnce() -> Result<(), PipelineError> + Send + 'scope,
) {
    let run = move || {
        let cpu = thread_cpu_seconds();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => ctl.errors.set(e),
            Err(_) => ctl.errors.set(PipelineError::Panicked(stage)),
        }
        ctl.busy.add_cpu(thread_cpu_seconds() - cpu);
    };
    if std::thread::Builder::new()
        .name(stage.into())
        .spawn_scoped(s, run)
        .is_err()
    {
        // The closure (and the channel ends it owns) is dropped: the other stages stop.
        ctl.errors.set(PipelineError::Panicked(stage));
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

/// Busy time of one stage (time spent working, not waiting on channels) and what it
/// handled.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StageStat {
    pub stage: &'static str,
    /// How many `unit`s the stage handled.
    pub count: u64,
    /// What `count` counts: "frames" (video), "samples" (a signal's input frames) or
    /// "windows".
    pub unit: &'static str,
    pub busy_s: f64,
    /// `count` per second of busy time: what this stage alone could sustain.
    pub per_s: f64,
    /// CPU seconds of the stage's own threads (all its workers). Not of threads it hands
    /// work to: the network's maths pool (the model stage's own share is its driving)
    /// and any codec threads beyond one; the process's CPU less the stages' is theirs.
    pub cpu_s: f64,
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
    pub(crate) fn take(&self) -> Option<PipelineError> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
}

/// What every stage thread shares: the first error (and so when to stop) and its own
/// busy clock.
#[derive(Clone, Copy)]
pub(crate) struct StageCtl<'a> {
    pub errors: &'a FirstError,
    pub busy: &'a Busy,
}

impl<'a> StageCtl<'a> {
    pub(crate) fn new(errors: &'a FirstError, busy: &'a Busy) -> Self {
        Self { errors, busy }
    }
}

/// Accumulated busy time and CPU time, shared by a stage's workers.
#[derive(Default)]
pub(crate) struct Busy {
    nanos: std::sync::atomic::AtomicU64,
    frames: std::sync::atomic::AtomicU64,
    cpu_nanos: std::sync::atomic::AtomicU64,
}

impl Busy {
    pub(crate) fn add(&self, d: Duration, frames: u64) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        self.frames.fetch_add(frames, Ordering::Relaxed);
    }
    pub(crate) fn add_cpu(&self, seconds: f64) {
        let nanos = (seconds.max(0.0) * 1e9) as u64;
        self.cpu_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
    pub(crate) fn stat_named(
        &self,
        stage: &'static str,
        unit: &'static str,
        workers: usize,
    ) -> StageStat {
        let busy = self.nanos.load(Ordering::Relaxed) as f64 / 1e9 / workers.max(1) as f64;
        let count = self.frames.load(Ordering::Relaxed);
        StageStat {
            stage,
            count,
            unit,
            busy_s: busy,
            per_s: if busy > 0.0 { count as f64 / busy } else { 0.0 },
            cpu_s: self.cpu_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// This process's resource use so far (zeroed if the call fails).
fn usage() -> libc::rusage {
    // SAFETY: getrusage fills the struct we pass; no other invariants.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            u = std::mem::zeroed();
        }
        u
    }
}

/// Peak resident memory of this process so far: `VmHWM`, which exec resets. Not
/// `ru_maxrss`: the kernel folds into it the peak of the process that spawned this one
/// (a test harness, a Python caller), so a small run inherits a big parent's figure.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| vm_hwm_kb(&s))
        .map_or_else(|| usage().ru_maxrss as f64, |kb| kb as f64)
        / 1024.0
}

/// The `VmHWM:` line of a `/proc/<pid>/status` text, in kB.
fn vm_hwm_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system, all threads) of this process so far.
pub fn cpu_seconds() -> f64 {
    let u = usage();
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// CPU seconds (user + system) of the calling thread so far; 0 if the clock fails.
pub(crate) fn thread_cpu_seconds() -> f64 {
    // SAFETY: clock_gettime fills the struct we pass; no other invariants.
    unsafe {
        let mut t: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) != 0 {
            return 0.0;
        }
        t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
    }
}

/// A fault to inject (test builds only): `CAMSTREAM_FAIL_AT=STAGE:N` makes that stage
/// fail at frame N, so tests can check that every stage shuts the pipeline down cleanly.
#[cfg(feature = "fault-injection")]
fn fault() -> Option<(Stage, u64)> {
    let v = std::env::var("CAMSTREAM_FAIL_AT").ok()?;
    let (st, n) = v.split_once(':')?;
    Some((Stage::parse(st)?, n.parse().ok()?))
}

#[cfg(all(feature = "video", feature = "fault-injection"))]
pub(crate) fn inject(stage: Stage, frame: u64) -> Result<(), PipelineError> {
    match fault() {
        Some((s, n)) if s == stage && n == frame => Err(PipelineError::Injected {
            stage: stage.name(),
            frame,
        }),
        _ => Ok(()),
    }
}

#[cfg(all(feature = "video", not(feature = "fault-injection")))]
pub(crate) fn inject(_stage: Stage, _frame: u64) -> Result<(), PipelineError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_from_proc_status() {
        let status = "Name:\tcamstream\nVmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(vm_hwm_kb(status), Some(123456));
        assert_eq!(vm_hwm_kb("Name:\tx\n"), None);
        // This process has touched memory: its own peak is there and positive.
        let own = peak_rss_mb();
        assert!(own > 1.0 && own < 1e6, "{own}");
    }
}
