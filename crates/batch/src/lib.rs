//! Sharded batch runs for clusters: `plan` freezes the work list into a manifest, each
//! worker runs one deterministic shard of it, and create-only completion markers make
//! reruns, retries and duplicate workers safe. The scheduler is the user's own
//! (Kubernetes Indexed Jobs, Slurm arrays, Ray); this crate is the task they run.
//!
//! ```text
//! <out>/<config-hash>/<key>/<output files>   outputs of one input
//! <out>/<config-hash>/_done/<key>.json       its marker: sizes and SHA-256 of the outputs
//! <out>/<config-hash>/_failed/<key>.json     a permanent failure, with its one-line error
//! <out>/<config-hash>/_shards/<i>-of-<n>.json a shard's summary
//! ```

pub mod config;
pub mod error;
pub mod manifest;
pub mod run;
pub mod shard;
pub mod status;
pub mod store;
pub mod work;

pub use config::WorkConfig;
pub use error::{BatchError, Result};
pub use manifest::Entry;
pub use run::{run_shard, Outcome, Progress, RunOptions, Summary};
pub use shard::Shard;
pub use status::{status, Status};
pub use store::Store;
pub use work::{ExplainWork, Work};
