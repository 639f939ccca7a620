//! `batch-status`: across all shards, which inputs are done, failed or missing, from
//! the manifest and the markers alone.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::Result;
use crate::manifest::Entry;
use crate::run::{Failure, Layout, Summary};
use crate::store::Store;

#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    pub index: u64,
    pub inputs: usize,
    pub done: usize,
    pub failed: usize,
    pub missing: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub config: String,
    pub num_shards: u64,
    pub inputs: usize,
    pub done: usize,
    pub failed: usize,
    pub missing: usize,
    pub shards: Vec<ShardStatus>,
    /// The failed inputs with their one-line errors.
    pub failures: Vec<Failure>,
    /// URIs of the inputs with neither marker.
    pub missing_uris: Vec<String>,
}

/// The state of every input of `entries` under `store`. `num_shards`: how the run was
/// split; `None` reads it from the shard summaries (one shard when there are none).
pub fn status(entries: &[Entry], store: &Store, num_shards: Option<u64>) -> Result<Status> {
    let config = entries
        .first()
        .map(|e| e.config.clone())
        .unwrap_or_default();
    let layout = Layout { config: &config };
    let names = |dir: &str| -> Result<HashSet<String>> {
        Ok(store
            .list(&format!("{config}/{dir}"))?
            .into_iter()
            .filter_map(|(n, _)| n.strip_suffix(".json").map(str::to_string))
            .collect())
    };
    let done = names("_done")?;
    let failed = names("_failed")?;
    let num_shards = match num_shards {
        Some(n) => n.max(1),
        None => {
            let mut seen = Vec::new();
            for (name, _) in store.list(&format!("{config}/_shards"))? {
                if let Some(bytes) = store.get(&format!("{config}/_shards/{name}"))? {
                    if let Ok(s) = serde_json::from_slice::<Summary>(&bytes) {
                        seen.push(s.num_shards);
                    }
                }
            }
            seen.into_iter().max().unwrap_or(1)
        }
    };
    let mut st = Status {
        config: config.clone(),
        num_shards,
        inputs: entries.len(),
        done: 0,
        failed: 0,
        missing: 0,
        shards: (0..num_shards)
            .map(|index| ShardStatus {
                index,
                inputs: 0,
                done: 0,
                failed: 0,
                missing: 0,
            })
            .collect(),
        failures: Vec::new(),
        missing_uris: Vec::new(),
    };
    for e in entries {
        let shard = &mut st.shards[e.shard(num_shards) as usize];
        shard.inputs += 1;
        if done.contains(&e.key) {
            shard.done += 1;
            st.done += 1;
        } else if failed.contains(&e.key) {
            shard.failed += 1;
            st.failed += 1;
            if let Some(bytes) = store.get(&layout.failed(&e.key))? {
                if let Ok(f) = serde_json::from_slice::<Failure>(&bytes) {
                    st.failures.push(f);
                }
            }
        } else {
            shard.missing += 1;
            st.missing += 1;
            st.missing_uris.push(e.uri.clone());
        }
    }
    Ok(st)
}
