//! camstream's HTTP service over the library API: KServe's V1 protocol (`:predict`,
//! `:explain`), the Open Inference Protocol (V2 `infer` with a `cam` output), jobs for
//! videos and long recordings (AIP-151 operations with Server-Sent Events), and a web
//! page. axum on tokio; CPU/GPU work runs on blocking threads behind bounded queues, so
//! the runtime keeps answering (503 with `Retry-After` when a queue is full).
//!
//! ```no_run
//! # async fn run() -> Result<(), camstream_serve::ServeError> {
//! use camstream_core::{ModelRequest, ModelSource};
//! let models = vec![("shapes".to_string(), ModelRequest::new(ModelSource::parse("samples/models/shapes.toml").unwrap()))];
//! let app = camstream_serve::AppState::new(models, camstream_serve::Limits::default(), &candle_core::Device::Cpu)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! camstream_serve::serve(listener, app, std::future::pending()).await
//! # }
//! ```

mod error;
mod infer;
mod jobs;
mod models;
mod page;
mod v1;
mod v2;
mod work;

use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use error::{ApiError, ServeError};
pub use models::{Model, Models};

use jobs::Jobs;
use work::WorkQueue;

/// The service's limits and places.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest job upload (videos), streamed to disk.
    pub max_body: usize,
    /// Largest JSON request (`:predict`, `:explain`, `infer`), held in memory.
    pub max_json: usize,
    /// Explain requests running at once, and waiting beyond them.
    pub workers: usize,
    pub queue: usize,
    /// Jobs running at once, and waiting beyond them.
    pub job_workers: usize,
    pub job_queue: usize,
    /// Time limit of the non-streaming routes.
    pub timeout: Duration,
    /// How long finished jobs and their results are kept.
    pub keep: Duration,
    /// On shutdown, how long in-flight work may still run.
    pub grace: Duration,
    /// Jobs may read server files under this folder (none: uploads only).
    pub allow_paths: Option<PathBuf>,
    /// Where jobs keep their files (default: a temporary folder removed at exit).
    pub jobs_dir: Option<PathBuf>,
    /// Bearer token every API request must carry.
    pub token: Option<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 512 << 20,
            max_json: 64 << 20,
            workers: 1,
            queue: 32,
            job_workers: 1,
            job_queue: 8,
            timeout: Duration::from_secs(300),
            keep: Duration::from_secs(60 * 60),
            grace: Duration::from_secs(30),
            allow_paths: None,
            jobs_dir: None,
            token: None,
        }
    }
}

/// Everything a request can reach.
pub struct AppState {
    models: Models,
    work: WorkQueue,
    jobs: Jobs,
    limits: Limits,
    stop_tx: tokio::sync::watch::Sender<bool>,
    /// When the shutdown began: in-flight work has `grace` from then.
    stopped_at: std::sync::OnceLock<tokio::time::Instant>,
}

impl AppState {
    /// Loads the models (`(name, request)`) and prepares the queues and the jobs' folder.
    pub fn new(
        models: Vec<(String, camstream_core::ModelRequest)>,
        limits: Limits,
        device: &candle_core::Device,
    ) -> Result<Arc<Self>, ServeError> {
        let models = Models::load(models, device)?;
        let jobs = Jobs::new(
            limits.jobs_dir.clone(),
            limits.job_workers,
            limits.job_queue,
            limits.keep,
            limits.allow_paths.clone(),
        )
        .map_err(|source| ServeError::Io {
            what: "jobs folder or allow_paths".into(),
            source,
        })?;
        Ok(Arc::new(Self {
            models,
            work: WorkQueue::new("explain", limits.workers, limits.queue),
            jobs,
            limits,
            stop_tx: tokio::sync::watch::channel(false).0,
            stopped_at: std::sync::OnceLock::new(),
        }))
    }

    pub fn models(&self) -> &Models {
        &self.models
    }

    fn is_shutting_down(&self) -> bool {
        *self.stop_tx.borrow()
    }

    /// A body extractor's rejection as one line; a body over its limit names the limit.
    fn rejected(&self, status: StatusCode, text: String, upload: bool) -> ApiError {
        if status != StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(status, text);
        }
        let (limit, name) = if upload {
            (self.limits.max_body, "max_body")
        } else {
            (self.limits.max_json, "max_json")
        };
        ApiError::new(
            status,
            format!(
                "the request body is over the limit of {} MB (`{name}`)",
                limit as f64 / (1 << 20) as f64
            ),
        )
    }

    /// Parses a JSON request for model `name` and answers it with `f` on a worker (the
    /// unknown-model check first, on the async side, so it costs no queue place).
    async fn run_json<R, F>(
        self: &Arc<Self>,
        name: String,
        body: axum::body::Bytes,
        f: F,
    ) -> Result<serde_json::Value, ApiError>
    where
        R: serde::de::DeserializeOwned,
        F: FnOnce(&Model, &R) -> Result<serde_json::Value, ApiError> + Send + 'static,
    {
        self.models.get(&name)?;
        let app = self.clone();
        self.work
            .run(move || {
                let model = app.models.get(&name)?;
                let request: R = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("bad JSON: {e}")))?;
                f(model, &request)
            })
            .await
    }

    fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }
}

/// Request ids: a process-wide counter (`x-request-id`, kept when the client sends one).
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

impl MakeRequestId for Counter {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("req-{n}"))
            .ok()
            .map(RequestId::new)
    }
}

/// Every route, with the middleware.
pub fn router(app: Arc<AppState>) -> Router {
    let limits = &app.limits;
    let api = Router::new()
        .route("/v1/models", get(v1::list))
        .route("/v1/models/{target}", get(v1::get).post(v1::post))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models/{name}", get(v2::metadata))
        .route("/v2/models/{name}/ready", get(v2::model_ready))
        .route("/v2/models/{name}/infer", post(v2::infer))
        .layer(DefaultBodyLimit::max(limits.max_json))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.timeout,
        ));
    // Jobs stream (uploads in, events and videos out): no overall time limit. Uploads
    // count `max_body` themselves (jobs.rs), to answer a body over it after reading it.
    let jobs = Router::new()
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::delete))
        .route("/v1/jobs/{id}/events", get(jobs::events))
        .route("/v1/jobs/{id}/result", get(jobs::result))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .merge(api)
        .merge(jobs)
        .merge(page::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(app.clone(), auth))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("the request failed unexpectedly").into_response()
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", id, method = %req.method(), uri = %req.uri())
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(Counter::default()))
        .with_state(app)
}

/// With a token, every route but the page and the health checks needs
/// `Authorization: Bearer TOKEN` (or `?access_token=TOKEN`, for `EventSource` and
/// `<video>`, which cannot set headers).
async fn auth(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(token) = &app.limits.token else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if page::is_public(path) || path.starts_with("/v2/health/") {
        return next.run(req).await;
    }
    let header_ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token);
    let query_ok = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.strip_prefix("access_token=") == Some(token.as_str()))
    });
    if header_ok || query_ok {
        return next.run(req).await;
    }
    let mut r =
        ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Serves until `shutdown` resolves, then stops taking requests, lets in-flight work
/// finish within `grace`, cancels what is left and removes every unfinished job's files.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let sweeper = {
        let app = app.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                app.jobs.sweep(false);
            }
        })
    };
    let stopper = app.clone();
    let server = axum::serve(listener, router(app.clone())).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight work");
        let _ = stopper.stopped_at.set(tokio::time::Instant::now());
        stopper.stop_tx.send_replace(true);
    });
    let grace = app.limits.grace;
    let deadline = |app: &AppState| {
        app.stopped_at
            .get()
            .map_or_else(tokio::time::Instant::now, |t| *t + grace)
    };
    let mut stop = app.stopping();
    let drained = {
        let app = app.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
            tokio::time::sleep_until(deadline(&app)).await;
        }
    };
    let served = tokio::select! {
        r = server.into_future() => r,
        _ = drained => Ok(()),
    };
    // Jobs still running after the connections closed get the rest of the grace.
    while app.jobs.active() > 0 && tokio::time::Instant::now() < deadline(&app) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.jobs.cancel_all();
    let waited = tokio::time::Instant::now();
    while app.jobs.active() > 0 && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.jobs.sweep(true);
    sweeper.abort();
    served.map_err(|source| ServeError::Io {
        what: "serving".into(),
        source,
    })
}
