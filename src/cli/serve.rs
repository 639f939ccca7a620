//! `camstream serve`: the HTTP service (camstream-serve) on a tokio runtime, stopped
//! gracefully by Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use camstream_core::ModelRequest;
use camstream_serve::{AppState, Limits};

#[derive(Args)]
pub struct ServeArgs {
    /// A model to serve as NAME=SOURCE[,weights=FILE][,labels=FILE]; SOURCE is a built-in,
    /// an .onnx file or a .toml config. Repeat for several models; the first is the page's
    /// default. Example: --model shapes=samples/models/shapes.toml
    #[arg(long = "model", short = 'm', required = true)]
    pub models: Vec<String>,

    /// Address to listen on (port 0 picks a free port; the address is printed)
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// Largest job upload, in MB (videos are streamed to disk, not held in memory)
    #[arg(long, default_value_t = 512)]
    pub max_body: u64,

    /// Largest JSON request (:predict, :explain, infer), in MB
    #[arg(long, default_value_t = 64)]
    pub max_json: u64,

    /// Explain requests running at once (each uses the --threads of the network maths)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub workers: u64,

    /// Explain requests that may wait for a worker; beyond, the answer is 503 with Retry-After
    #[arg(long, default_value_t = 32)]
    pub queue: u64,

    /// Video/signal jobs running at once
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub job_workers: u64,

    /// Jobs that may wait; beyond, POST /v1/jobs answers 503
    #[arg(long, default_value_t = 8)]
    pub job_queue: u64,

    /// Jobs may name files on the server under this folder (`path` instead of an upload)
    #[arg(long)]
    pub allow_paths: Option<PathBuf>,

    /// Keep jobs' files here instead of a temporary folder removed at exit
    #[arg(long)]
    pub jobs_dir: Option<PathBuf>,

    /// Require `Authorization: Bearer TOKEN` (or the CAMSTREAM_TOKEN environment variable,
    /// which keeps it out of the process list)
    #[arg(long, env = "CAMSTREAM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Minutes finished jobs and their results are kept
    #[arg(long, default_value_t = 60)]
    pub keep: u64,

    /// Seconds in-flight work may still run after Ctrl-C/SIGTERM
    #[arg(long, default_value_t = 30)]
    pub grace: u64,

    /// Seconds a :predict, :explain or infer request may take
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// `NAME=SOURCE[,weights=FILE][,labels=FILE]`.
fn parse_model(spec: &str) -> Result<(String, ModelRequest)> {
    let Some((name, rest)) = spec.split_once('=') else {
        bail!("--model `{spec}`: give NAME=SOURCE, e.g. shapes=samples/models/shapes.toml");
    };
    let mut parts = rest.split(',');
    let source = parts.next().unwrap_or_default();
    let mut request = ModelRequest::new(super::parse_model(source)?);
    for p in parts {
        match p.split_once('=') {
            Some(("weights", f)) => request.weights = Some(f.into()),
            Some(("labels", f)) => request.labels = Some(f.into()),
            _ => {
                bail!("--model `{spec}`: unknown option `{p}`; options: weights=FILE, labels=FILE")
            }
        }
    }
    Ok((name.trim().to_string(), request))
}

pub fn run(a: &ServeArgs) -> Result<()> {
    let models = a
        .models
        .iter()
        .map(|m| parse_model(m))
        .collect::<Result<Vec<_>>>()?;
    let limits = Limits {
        max_body: (a.max_body as usize) << 20,
        max_json: (a.max_json as usize) << 20,
        workers: a.workers as usize,
        queue: a.queue as usize,
        job_workers: a.job_workers as usize,
        job_queue: a.job_queue as usize,
        timeout: Duration::from_secs(a.timeout.max(1)),
        keep: Duration::from_secs(a.keep * 60),
        grace: Duration::from_secs(a.grace),
        allow_paths: a.allow_paths.clone(),
        jobs_dir: a.jobs_dir.clone(),
        token: a.token.clone().filter(|t| !t.is_empty()),
    };
    let app = AppState::new(models, limits, &super::device())?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAMSTREAM_LOG")
                .unwrap_or_else(|_| "info,tower_http=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cancel = super::interrupt::graceful();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&a.bind)
            .await
            .with_context(|| format!("--bind {}: cannot listen", a.bind))?;
        let addr = listener.local_addr().context("the bound address")?;
        // Scripts and tests read this line for the port.
        eprintln!(
            "camstream serve: listening on http://{addr} (models: {})",
            app.models().names().join(", ")
        );
        let shutdown = async move {
            while !cancel.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        camstream_serve::serve(listener, app, shutdown).await?;
        eprintln!("camstream serve: stopped");
        Ok(())
    })
}
