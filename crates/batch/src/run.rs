//! One shard's run and its commit protocol. For each input of the shard, in manifest
//! order:
//! 1. a marker `_done/<key>.json` exists: skip it;
//! 2. run the work into a scratch folder;
//! 3. upload every output to `<key>/<name>` (each put atomic, large ones multipart);
//! 4. create the marker, create-only, with the outputs' sizes and hashes. "Already
//!    exists" means a duplicate worker finished first: success.
//!
//! A marker is only ever written after its outputs, so a worker killed at any point
//! leaves either nothing, or outputs without a marker, which the next run redoes.
//! A permanent failure of one input writes `_failed/<key>.json` and the shard goes on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{BatchError, Result};
use crate::manifest::{current_meta, Entry};
use crate::shard::Shard;
use crate::store::{split_object, Store, Stored};
use crate::work::Work;

/// The completion marker of one input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    pub key: String,
    pub uri: String,
    pub config: String,
    pub outputs: Vec<Stored>,
    pub frames: u64,
    pub seconds: f64,
    pub finished: String,
    /// `host:pid` of the worker that wrote it.
    pub worker: String,
}

/// The failure record of one input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub key: String,
    pub uri: String,
    pub config: String,
    pub error: String,
    pub finished: String,
    pub worker: String,
}

/// Where things live under the output URL, for one config.
pub struct Layout<'a> {
    pub config: &'a str,
}

impl Layout<'_> {
    pub fn output(&self, key: &str, name: &str) -> String {
        format!("{}/{key}/{name}", self.config)
    }
    pub fn done(&self, key: &str) -> String {
        format!("{}/_done/{key}.json", self.config)
    }
    pub fn failed(&self, key: &str) -> String {
        format!("{}/_failed/{key}.json", self.config)
    }
    pub fn summary(&self, shard: &Shard) -> String {
        format!("{}/_shards/{}.json", self.config, shard.name())
    }
}

pub struct RunOptions<'a> {
    pub shard: Shard,
    /// Where remote inputs are downloaded and outputs are written before upload.
    pub scratch: PathBuf,
    /// Run inputs that failed before again (default: a `_failed` marker is final).
    pub retry_failed: bool,
    /// Set: take no new input.
    pub stop: &'a AtomicBool,
    /// Set: abort the input in progress (its outputs are never marked done).
    pub cancel: &'a AtomicBool,
}

/// How one input ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done {
        frames: u64,
    },
    /// Its marker was there before this worker looked.
    Skipped,
    /// Another worker with the same shard finished it while this one was working.
    Duplicate,
    Failed(String),
    /// It has a `_failed` marker from an earlier run.
    FailedBefore,
    Stopped,
}

/// What the caller hears, per input: `outcome` is `None` when it starts.
pub struct Progress<'a> {
    pub position: usize,
    pub total: usize,
    pub entry: &'a Entry,
    pub outcome: Option<&'a Outcome>,
    pub seconds: f64,
}

/// A shard's run, as JSON at its end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub shard: u64,
    pub num_shards: u64,
    pub config: String,
    pub inputs: usize,
    pub done: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Inputs not reached because the run was stopped.
    pub not_run: usize,
    pub stopped: bool,
    pub seconds: f64,
    pub frames: u64,
    pub frames_per_s: f64,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

fn worker() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Runs this shard's part of `entries`. Returns `Err` only for faults a retry can fix
/// (storage, scratch disk); an input's own failure is in the summary.
pub fn run_shard(
    entries: &[Entry],
    store: &Store,
    work: &dyn Work,
    opts: &RunOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Summary> {
    let start = Instant::now();
    let config = entries
        .first()
        .map(|e| e.config.clone())
        .unwrap_or_default();
    let mine: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.shard(opts.shard.count) == opts.shard.index)
        .collect();
    let mut s = Summary {
        shard: opts.shard.index,
        num_shards: opts.shard.count,
        config: config.clone(),
        inputs: mine.len(),
        done: 0,
        skipped: 0,
        failed: 0,
        not_run: 0,
        stopped: false,
        seconds: 0.0,
        frames: 0,
        frames_per_s: 0.0,
    };
    let layout = Layout { config: &config };
    std::fs::create_dir_all(&opts.scratch).map_err(BatchError::io(&opts.scratch))?;
    camstream_media::io::sweep_stale(&opts.scratch);
    for (i, entry) in mine.iter().enumerate() {
        if opts.stop.load(Ordering::SeqCst) {
            s.stopped = true;
            s.not_run = mine.len() - i;
            break;
        }
        let t = Instant::now();
        let tell = |outcome: Option<&Outcome>, progress: &mut dyn FnMut(&Progress)| {
            progress(&Progress {
                position: i + 1,
                total: mine.len(),
                entry,
                outcome,
                seconds: t.elapsed().as_secs_f64(),
            })
        };
        let outcome = if store.exists(&layout.done(&entry.key))? {
            Outcome::Skipped
        } else if !opts.retry_failed && store.exists(&layout.failed(&entry.key))? {
            Outcome::FailedBefore
        } else {
            tell(None, progress);
            one(entry, store, work, opts, &layout)?
        };
        tell(Some(&outcome), progress);
        match outcome {
            Outcome::Done { frames } => {
                s.done += 1;
                s.frames += frames;
            }
            Outcome::Skipped | Outcome::Duplicate => s.skipped += 1,
            Outcome::Failed(_) | Outcome::FailedBefore => s.failed += 1,
            Outcome::Stopped => {
                s.stopped = true;
                s.not_run = mine.len() - i;
                break;
            }
        }
    }
    s.seconds = start.elapsed().as_secs_f64();
    s.frames_per_s = if s.seconds > 0.0 {
        s.frames as f64 / s.seconds
    } else {
        0.0
    };
    if !mine.is_empty() {
        let json = serde_json::to_vec_pretty(&s).expect("plain values serialise");
        store.put(&layout.summary(&opts.shard), json)?;
    }
    Ok(s)
}

/// One input through the commit protocol.
fn one(
    entry: &Entry,
    store: &Store,
    work: &dyn Work,
    opts: &RunOptions,
    layout: &Layout,
) -> Result<Outcome> {
    // A temporary name that says whose it is: the next run on this host removes it if
    // this process dies (SIGKILL, out of memory) before it does.
    let name = camstream_media::io::temp_name(&opts.scratch.join(&entry.key[..8]));
    let scratch = tempfile::Builder::new()
        .prefix(name.file_name().unwrap_or_default())
        .rand_bytes(0)
        .tempdir_in(&opts.scratch)
        .map_err(BatchError::io(&opts.scratch))?;
    let input = match fetch(entry, scratch.path())? {
        Ok(p) => p,
        Err(why) => return fail(entry, store, layout, why),
    };
    let out = scratch.path().join("out");
    std::fs::create_dir(&out).map_err(BatchError::io(&out))?;
    let t = Instant::now();
    let ran = work.run(&input, &out, opts.cancel);
    if opts.cancel.load(Ordering::SeqCst) {
        return Ok(Outcome::Stopped);
    }
    let done = match ran {
        Ok(d) => d,
        Err(why) => return fail(entry, store, layout, why),
    };
    if store.exists(&layout.done(&entry.key))? {
        return Ok(Outcome::Duplicate);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .map_err(BatchError::io(&out))?
        .map(|e| e.map(|e| e.path()).map_err(BatchError::io(&out)))
        .collect::<Result<_>>()?;
    files.sort();
    let mut outputs = Vec::with_capacity(files.len());
    for f in &files {
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        outputs.push(store.upload(&layout.output(&entry.key, &name), f)?);
    }
    if opts.cancel.load(Ordering::SeqCst) {
        return Ok(Outcome::Stopped);
    }
    let marker = Marker {
        key: entry.key.clone(),
        uri: entry.uri.clone(),
        config: entry.config.clone(),
        outputs,
        frames: done.frames,
        seconds: t.elapsed().as_secs_f64(),
        finished: now(),
        worker: worker(),
    };
    let bytes = serde_json::to_vec_pretty(&marker).expect("plain values serialise");
    if !store.create(&layout.done(&entry.key), bytes)? {
        return Ok(Outcome::Duplicate);
    }
    if opts.retry_failed {
        store.delete(&layout.failed(&entry.key))?;
    }
    Ok(Outcome::Done {
        frames: done.frames,
    })
}

/// The input as a local file: a local one in place, an object downloaded into `dir`.
/// `Ok(Err(why))`: the input itself is the problem (gone or changed since the plan).
fn fetch(entry: &Entry, dir: &Path) -> Result<Result<PathBuf, String>> {
    let Some(meta) = current_meta(&entry.uri)? else {
        return Ok(Err(format!("{}: no longer exists", entry.uri)));
    };
    if meta.size != entry.size || meta.mtime != entry.mtime {
        return Ok(Err(format!(
            "{}: changed since it was planned (size {} -> {}, mtime {} -> {}); plan again",
            entry.uri, entry.size, meta.size, entry.mtime, meta.mtime
        )));
    }
    if entry.is_local() {
        return Ok(Ok(PathBuf::from(&entry.uri)));
    }
    let (base, name) = split_object(&entry.uri);
    // Keep the extension: the readers choose the format by it.
    let local = dir.join(format!("input-{}", name.rsplit('/').next().unwrap_or(name)));
    Store::open_existing(base)?.download(name, &local)?;
    Ok(Ok(local))
}

fn fail(entry: &Entry, store: &Store, layout: &Layout, why: String) -> Result<Outcome> {
    let why = why.replace('\n', " ");
    let f = Failure {
        key: entry.key.clone(),
        uri: entry.uri.clone(),
        config: entry.config.clone(),
        error: why.clone(),
        finished: now(),
        worker: worker(),
    };
    let bytes = serde_json::to_vec_pretty(&f).expect("plain values serialise");
    store.put(&layout.failed(&entry.key), bytes)?;
    Ok(Outcome::Failed(why))
}
