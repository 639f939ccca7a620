//! The manifest: the work list frozen once, one JSON line per input. Workers read it
//! and never list a folder or bucket themselves, so every shard sees the same list.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::hex;
use crate::error::{BatchError, Result};
use crate::store::{scheme, split_object, Meta, Store};

/// One input of the work list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// An absolute local path, or an object URL (`s3://bucket/x.mp4`).
    pub uri: String,
    pub size: u64,
    /// Modification time when planned (RFC 3339, UTC).
    pub mtime: String,
    /// 32 hex digits of SHA-256 over `uri|size|mtime`: the input's name in the outputs.
    pub key: String,
    /// The hash of the explain settings it was planned with ([`crate::WorkConfig::hash`]).
    pub config: String,
}

impl Entry {
    pub fn new(uri: String, meta: Meta, config: &str) -> Self {
        let mut h = Sha256::new();
        h.update(format!("{uri}|{}|{}", meta.size, meta.mtime).as_bytes());
        Self {
            key: hex(&h.finalize())[..32].to_string(),
            uri,
            size: meta.size,
            mtime: meta.mtime,
            config: config.to_string(),
        }
    }

    /// The shard (of `count`) this input belongs to: its key modulo the count.
    pub fn shard(&self, count: u64) -> u64 {
        u64::from_str_radix(&self.key[..16], 16).unwrap_or(0) % count.max(1)
    }

    pub fn is_local(&self) -> bool {
        scheme(&self.uri).is_none()
    }
}

/// File extensions a folder or prefix contributes to a plan: the videos and recordings
/// camstream reads. Files named one by one are always taken.
pub const EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mkv", "webm", "mov", "avi", "wav", "wave", "csv", "tsv", "hea", "npy",
];

fn wanted(name: &str) -> bool {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let hidden = name.rsplit('/').next().is_some_and(|n| n.starts_with('.'));
    !hidden && ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str()))
}

/// Modification time of a local file, as an object store reports it.
fn local_meta(path: &Path) -> Result<Meta> {
    let m = std::fs::metadata(path).map_err(BatchError::io(path))?;
    let mtime = m.modified().map_err(BatchError::io(path))?;
    Ok(Meta {
        size: m.len(),
        mtime: chrono::DateTime::<chrono::Utc>::from(mtime).to_rfc3339(),
    })
}

/// The size and mtime an input has now (`None` when it is gone): a worker compares them
/// with the plan's before it starts.
pub fn current_meta(uri: &str) -> Result<Option<Meta>> {
    if scheme(uri).is_none() {
        return match std::fs::metadata(uri) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => local_meta(Path::new(uri)).map(Some),
        };
    }
    let (dir, name) = split_object(uri);
    Store::open_existing(dir)?.head(name)
}

/// Lists `inputs` (files, folders walked recursively, object URLs, or prefixes ending
/// in `/`) into entries sorted by URI, each once.
pub fn plan(inputs: &[String], config: &str) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for input in inputs {
        if scheme(input).is_some() {
            if input.ends_with('/') {
                let store = Store::open_existing(input)?;
                for (name, meta) in store.list("")? {
                    if wanted(&name) {
                        let uri = format!("{}/{name}", store.url());
                        entries.push(Entry::new(uri, meta, config));
                    }
                }
            } else {
                let meta = current_meta(input)?.ok_or_else(|| BatchError::BadOption {
                    name: "inputs",
                    why: format!("{input}: no such object"),
                })?;
                entries.push(Entry::new(input.clone(), meta, config));
            }
            continue;
        }
        let path = Path::new(input)
            .canonicalize()
            .map_err(BatchError::io(input))?;
        if path.is_dir() {
            for file in walk(&path)? {
                let meta = local_meta(&file)?;
                entries.push(Entry::new(file.display().to_string(), meta, config));
            }
        } else {
            let meta = local_meta(&path)?;
            entries.push(Entry::new(path.display().to_string(), meta, config));
        }
    }
    entries.sort_by(|a, b| a.uri.cmp(&b.uri));
    entries.dedup_by(|a, b| a.uri == b.uri);
    Ok(entries)
}

/// The wanted files under `dir`, recursively, in name order.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(BatchError::io(&d))? {
            let p = e.map_err(BatchError::io(&d))?.path();
            if p.is_dir() {
                todo.push(p);
            } else if wanted(&p.to_string_lossy()) {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Writes the manifest under a temporary name and renames it when complete.
pub fn write(path: &Path, entries: &[Entry]) -> Result<()> {
    camstream_media::io::write_atomic(path, |tmp| {
        let f = std::fs::File::create(tmp).map_err(BatchError::io(tmp))?;
        let mut w = std::io::BufWriter::new(f);
        for e in entries {
            let line = serde_json::to_string(e).expect("plain values serialise");
            writeln!(w, "{line}").map_err(BatchError::io(tmp))?;
        }
        w.flush().map_err(BatchError::io(tmp))
    })
}

/// Reads a manifest; a malformed line is an error that names it. All entries must share
/// one config hash.
pub fn read(path: &Path) -> Result<Vec<Entry>> {
    let f = std::fs::File::open(path).map_err(BatchError::io(path))?;
    let mut entries: Vec<Entry> = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(BatchError::io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| BatchError::Manifest {
            path: path.display().to_string(),
            line: i + 1,
            why,
        };
        let e: Entry = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        if e.key.len() != 32 || !e.key.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(format!("key `{}` is not 32 hex digits", e.key)));
        }
        if let Some(first) = entries.first() {
            if first.config != e.config {
                return Err(bad(format!(
                    "config {} differs from the first line's {}: one manifest, one config",
                    e.config, first.config
                )));
            }
        }
        entries.push(e);
    }
    Ok(entries)
}
