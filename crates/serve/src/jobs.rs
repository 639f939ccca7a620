//! Long work as jobs, after Google's AIP-151 operations: `POST /v1/jobs` (a multipart
//! upload, or a path under `allow_paths`) answers 202 at once; the job's status, its
//! Server-Sent Events and its results have their own routes; `DELETE` cancels.
//!
//! A job runs the library's streaming pipelines (video or signal, by the model's input)
//! into its own folder. Events carry the frame index as their id, so a client that
//! reconnects with `Last-Event-ID` resumes where it was.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use camstream_core::record::FrameRecord;
use camstream_core::Explainer;
use camstream_media::decode::signal::{self, OpenOptions};
use camstream_media::decode::Section;
use camstream_media::encode::EncodeOptions;
use camstream_media::frame::Picture;
use camstream_media::render::JET;
use camstream_pipeline::signal::{run_signal, ChannelChoice, SignalJob, SignalOutput, WindowModel};
use camstream_pipeline::{run_video, FrameJob, ModelConfig, Norm, OverlayConfig, VideoJob};
use futures_util::Stream;
use image::RgbImage;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;

use crate::error::{ApiError, ApiResult};
use crate::models::cam_config;
use crate::work::{Admitted, WorkQueue};
use crate::AppState;

/// Events kept per job for reconnecting clients (older ones are dropped).
const EVENT_LOG: usize = 512;
/// Width of the thumbnails in `frame` events.
const THUMB_WIDTH: u32 = 160;

/// What a job was asked to do (multipart fields, or a JSON body with `path`).
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    pub model: Option<String>,
    /// A file under `allow_paths` instead of an upload.
    pub path: Option<String>,
    pub layer: Option<String>,
    pub method: Option<String>,
    /// A class index or label for every frame; default: each frame's top-1.
    pub class: Option<String>,
    pub batch: Option<usize>,
    /// Explain one frame in `every` (video).
    pub every: Option<usize>,
    /// A `frame` event with a thumbnail every this many frames (video; default 10).
    pub thumb_every: Option<u64>,
    pub alpha: Option<f32>,
    /// Sample rate of a signal without one (CSV, arrays).
    pub rate: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video,
    Signal,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }
    fn done(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }
}

struct Logged {
    id: u64,
    kind: &'static str,
    data: String,
}

struct JobState {
    phase: Phase,
    frames_done: u64,
    frames_total: Option<u64>,
    started: Option<Instant>,
    finished: Option<Instant>,
    error: Option<String>,
    response: Option<Value>,
    events: VecDeque<Logged>,
    /// Ids grow strictly, so `Last-Event-ID` resumes exactly.
    last_id: Option<u64>,
    last_progress: Option<Instant>,
}

pub struct Job {
    id: String,
    model: String,
    kind: Kind,
    dir: PathBuf,
    cancel: AtomicBool,
    state: Mutex<JobState>,
    changed: tokio::sync::Notify,
}

impl Job {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs an event with a strictly larger id than the last one (else drops it).
    fn push(&self, id: u64, kind: &'static str, data: Value) {
        let mut s = self.lock();
        if s.last_id.is_some_and(|l| id <= l) && !matches!(kind, "done" | "error") {
            return;
        }
        let id = match s.last_id {
            Some(l) if id <= l => l + 1,
            _ => id,
        };
        s.last_id = Some(id);
        if s.events.len() >= EVENT_LOG {
            s.events.pop_front();
        }
        s.events.push_back(Logged {
            id,
            kind,
            data: data.to_string(),
        });
        drop(s);
        self.changed.notify_waiters();
    }

    fn progress(&self, done: u64, total: Option<u64>) {
        let now = Instant::now();
        let (fps, due) = {
            let mut s = self.lock();
            s.frames_done = done;
            if total.is_some() {
                s.frames_total = total;
            }
            let fps = s
                .started
                .map_or(0.0, |t| done as f64 / t.elapsed().as_secs_f64().max(1e-9));
            let due = s
                .last_progress
                .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(100))
                || Some(done) == total;
            if due {
                s.last_progress = Some(now);
            }
            (fps, due)
        };
        if due {
            self.push(
                done.saturating_sub(1),
                "progress",
                json!({"frames_done": done, "frames_total": total, "fps": fps}),
            );
        }
    }

    fn finish(&self, result: Result<Value, String>) {
        let (kind, data, id) = {
            let mut s = self.lock();
            s.finished = Some(Instant::now());
            let id = s.frames_done;
            match result {
                Ok(v) => {
                    s.phase = Phase::Succeeded;
                    s.response = Some(v.clone());
                    ("done", v, id)
                }
                Err(e) => {
                    s.phase = if self.cancel.load(Ordering::Relaxed) {
                        Phase::Cancelled
                    } else {
                        Phase::Failed
                    };
                    s.error = Some(e.clone());
                    ("error", json!({ "message": e }), id)
                }
            }
        };
        self.push(id, kind, data);
    }

    /// The AIP-151 operation.
    fn status(&self) -> Value {
        let s = self.lock();
        let fps = match (s.started, s.finished) {
            (Some(a), Some(b)) => {
                s.frames_done as f64 / b.duration_since(a).as_secs_f64().max(1e-9)
            }
            (Some(a), None) => s.frames_done as f64 / a.elapsed().as_secs_f64().max(1e-9),
            _ => 0.0,
        };
        let mut v = json!({
            "name": format!("jobs/{}", self.id),
            "done": s.phase.done(),
            "metadata": {
                "model": self.model,
                "kind": match self.kind { Kind::Video => "video", Kind::Signal => "signal" },
                "state": s.phase.name(),
                "frames_done": s.frames_done,
                "frames_total": s.frames_total,
                "fps": fps,
            },
        });
        if let Some(r) = &s.response {
            v["response"] = r.clone();
        }
        if let Some(e) = &s.error {
            let code = if s.phase == Phase::Cancelled { 1 } else { 13 };
            v["error"] = json!({ "code": code, "message": e });
        }
        v
    }
}

/// Every job of the service.
pub struct Jobs {
    root: PathBuf,
    /// The default root, removed with everything in it when the service stops.
    _temp: Option<tempfile::TempDir>,
    map: Mutex<HashMap<String, Arc<Job>>>,
    queue: WorkQueue,
    keep: Duration,
    allow: Option<PathBuf>,
    running: AtomicU64,
    ids: std::hash::RandomState,
    next: AtomicU64,
}

impl Jobs {
    /// Jobs in folders under `root` (default: a temporary folder); `workers` at once,
    /// `queue` waiting; finished jobs are removed after `keep`.
    pub fn new(
        root: Option<PathBuf>,
        workers: usize,
        queue: usize,
        keep: Duration,
        allow: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        let (root, temp) = match root {
            Some(r) => {
                std::fs::create_dir_all(&r)?;
                (r, None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("camstream-jobs-")
                    .tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let allow = allow.map(|a| a.canonicalize()).transpose()?;
        Ok(Self {
            root,
            _temp: temp,
            map: Mutex::new(HashMap::new()),
            queue: WorkQueue::new("job", workers, queue),
            keep,
            allow,
            running: AtomicU64::new(0),
            ids: std::hash::RandomState::new(),
            next: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> ApiResult<Arc<Job>> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no job `{id}` (finished jobs expire)")))
    }

    /// An unguessable id: the process's random hasher keys over a counter.
    fn new_id(&self) -> String {
        let mut h = self.ids.build_hasher();
        h.write_u64(self.next.fetch_add(1, Ordering::Relaxed));
        format!("{:016x}", h.finish())
    }

    /// Jobs still queued or running.
    pub fn active(&self) -> u64 {
        self.running.load(Ordering::Relaxed)
    }

    /// Asks every running job to stop at its next frame.
    pub fn cancel_all(&self) {
        for j in self.lock().values() {
            j.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Removes finished jobs older than `keep`, and with `all`, every job not succeeded
    /// (at shutdown: no partial result stays behind).
    pub fn sweep(&self, all: bool) {
        let mut map = self.lock();
        let keep = self.keep;
        map.retain(|_, j| {
            let s = j.lock();
            let expired = s.finished.is_some_and(|t| t.elapsed() >= keep);
            let partial = all && s.phase != Phase::Succeeded;
            drop(s);
            if expired || partial {
                let _ = std::fs::remove_dir_all(&j.dir);
            }
            !(expired || partial)
        });
    }

    /// A path from a request, under `allow_paths` (no `..` escape, no symlink out).
    fn allowed(&self, asked: &str) -> ApiResult<PathBuf> {
        let Some(root) = &self.allow else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "server paths are not allowed here (the service was started without allow_paths); upload the file",
            ));
        };
        let p = Path::new(asked);
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        };
        let real = joined.canonicalize().map_err(|_| {
            ApiError::not_found(format!("`{asked}` does not exist under the allowed folder"))
        })?;
        if !real.starts_with(root) || !real.is_file() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("`{asked}` is not a file under the allowed folder"),
            ));
        }
        Ok(real)
    }
}

/// Bytes of an upload read and thrown away after an early answer (a full queue, a body
/// over the limit), so that a client still writing it reads the answer instead of a
/// broken pipe. Beyond this the connection is closed.
const DRAIN: usize = 64 << 20;

async fn drain(body: Body) {
    let _ = axum::body::to_bytes(body, DRAIN).await;
}

/// `POST /v1/jobs`.
pub async fn create(State(app): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    if app.is_shutting_down() {
        drain(req.into_body()).await;
        return Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the service is shutting down",
            )
        });
    }
    // A place first: a full queue is refused before a large upload is stored.
    let place = match app.jobs.queue.admit() {
        Ok(p) => p,
        Err(e) => {
            drain(req.into_body()).await;
            return Err(e);
        }
    };
    let id = app.jobs.new_id();
    let dir = app.jobs.root.join(&id);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal(format!("cannot create the job folder: {e}")))?;
    let received = receive(&app, req, &dir).await;
    let (options, input) = match received {
        Ok(r) => r,
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
    };
    match start(&app, place, id.clone(), dir.clone(), options, input) {
        Ok(()) => {}
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
    }
    let job = app.jobs.get(&id)?;
    let mut r = (StatusCode::ACCEPTED, Json(job.status())).into_response();
    let location = format!("/v1/jobs/{id}");
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// The options and the input file of a new job: a multipart upload (streamed to the
/// job's folder), or JSON naming a server path.
async fn receive(app: &AppState, req: Request, dir: &Path) -> ApiResult<(JobOptions, PathBuf)> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        let body = axum::body::to_bytes(req.into_body(), app.limits.max_json)
            .await
            .map_err(|_| app.rejected(StatusCode::PAYLOAD_TOO_LARGE, String::new(), false))?;
        let options: JobOptions = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("bad JSON: {e}")))?;
        let path = options.path.as_deref().ok_or_else(|| {
            ApiError::bad_request(
                "give `path` (with allow_paths) or upload a file as multipart/form-data",
            )
        })?;
        let input = app.jobs.allowed(path)?;
        return Ok((options, input));
    }
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|e| app.rejected(e.status(), e.body_text(), true))?;
    let mut fields = serde_json::Map::new();
    let mut input = None;
    // The upload limit is counted here (the route has none), so that an upload over it
    // can be read to its end and answered.
    let mut total = 0usize;
    let multipart_err =
        |e: axum::extract::multipart::MultipartError| app.rejected(e.status(), e.body_text(), true);
    while let Some(mut field) = form.next_field().await.map_err(multipart_err)? {
        let name = field.name().unwrap_or("").to_string();
        if name == "file" {
            // The user's name gives only the extension, and only a plain one.
            let ext = field
                .file_name()
                .and_then(|n| Path::new(n).extension())
                .and_then(|e| e.to_str())
                .filter(|e| e.len() <= 5 && e.chars().all(|c| c.is_ascii_alphanumeric()))
                .map(str::to_ascii_lowercase)
                .unwrap_or_else(|| "bin".into());
            let path = dir.join(format!("input.{ext}"));
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?;
            while let Some(chunk) = field.chunk().await.map_err(multipart_err)? {
                total += chunk.len();
                if total > app.limits.max_body {
                    drop(file);
                    // Read the rest (up to DRAIN) so the client gets the answer.
                    while let Ok(Some(c)) = field.chunk().await {
                        total += c.len();
                        if total > app.limits.max_body + DRAIN {
                            break;
                        }
                    }
                    return Err(app.rejected(StatusCode::PAYLOAD_TOO_LARGE, String::new(), true));
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?;
            }
            file.flush()
                .await
                .map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?;
            input = Some(path);
        } else {
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(multipart_err)? {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > 4096 {
                    return Err(ApiError::bad_request(format!("field `{name}` is too long")));
                }
            }
            let text = String::from_utf8(bytes)
                .map_err(|_| ApiError::bad_request(format!("field `{name}` is not UTF-8")))?;
            // Numbers stay numbers for the options' types.
            let v = serde_json::from_str::<f64>(&text)
                .ok()
                .filter(|_| {
                    !matches!(
                        name.as_str(),
                        "class" | "layer" | "method" | "model" | "path"
                    )
                })
                .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
                .map(|v| match v.as_f64() {
                    Some(f) if f.fract() == 0.0 && f >= 0.0 => Value::from(f as u64),
                    _ => v,
                })
                .unwrap_or(Value::String(text));
            fields.insert(name, v);
        }
    }
    let options: JobOptions = serde_json::from_value(Value::Object(fields))
        .map_err(|e| ApiError::bad_request(format!("bad job options: {e}")))?;
    let input = match (input, &options.path) {
        (Some(p), None) => p,
        (None, Some(p)) => app.jobs.allowed(p)?,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either a file or `path`, not both",
            ))
        }
        (None, None) => return Err(ApiError::bad_request("no `file` field in the upload")),
    };
    Ok((options, input))
}

/// Checks the options against the model and starts the job on the job queue.
fn start(
    app: &Arc<AppState>,
    place: Admitted,
    id: String,
    dir: PathBuf,
    options: JobOptions,
    input: PathBuf,
) -> ApiResult<()> {
    let name = match &options.model {
        Some(m) => m.clone(),
        None => app.models.names()[0].to_string(),
    };
    let model = app.models.get(&name)?;
    let kind = match model.network().input.kind {
        camstream_core::preprocess::InputKind::Image
        | camstream_core::preprocess::InputKind::Clip => Kind::Video,
        _ => Kind::Signal,
    };
    if options.alpha.is_some_and(|a| !(0.0..=1.0).contains(&a)) {
        return Err(ApiError::bad_request("`alpha` must be within 0..1"));
    }
    if options.batch == Some(0) || options.every == Some(0) || options.thumb_every == Some(0) {
        return Err(ApiError::bad_request(
            "`batch`, `every` and `thumb_every` must be at least 1",
        ));
    }
    let job = Arc::new(Job {
        id: id.clone(),
        model: name.clone(),
        kind,
        dir,
        cancel: AtomicBool::new(false),
        state: Mutex::new(JobState {
            phase: Phase::Queued,
            frames_done: 0,
            frames_total: None,
            started: None,
            finished: None,
            error: None,
            response: None,
            events: VecDeque::new(),
            last_id: None,
            last_progress: None,
        }),
        changed: tokio::sync::Notify::new(),
    });
    app.jobs.lock().insert(id, job.clone());
    app.jobs.running.fetch_add(1, Ordering::Relaxed);
    let app = app.clone();
    tokio::spawn(async move {
        let (app2, job2) = (app.clone(), job.clone());
        let result = place
            .run(move || {
                {
                    let mut s = job2.lock();
                    s.phase = Phase::Running;
                    s.started = Some(Instant::now());
                }
                Ok(run_job(&app2, &job2, &options, &input))
            })
            .await
            .unwrap_or_else(|e| Err(e.message));
        if result.is_err() {
            // Nothing partial stays: a failed or cancelled job keeps no outputs.
            remove_outputs(&job.dir);
        }
        job.finish(result);
        app.jobs.running.fetch_sub(1, Ordering::Relaxed);
    });
    Ok(())
}

fn remove_outputs(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if !e.file_name().to_string_lossy().starts_with("input.") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The job itself, on a worker thread.
fn run_job(app: &AppState, job: &Job, o: &JobOptions, input: &Path) -> Result<Value, String> {
    let model = app.models.get(&job.model).map_err(|e| e.message)?;
    let config = cam_config(o.method.as_deref(), false, false).map_err(|e| e.message)?;
    let explainer = model
        .explainer(o.layer.as_deref(), config)
        .map_err(|e| e.message)?;
    let class = o
        .class
        .as_deref()
        .map(|c| explainer.network().parse_class(c))
        .transpose()
        .map_err(|e| e.to_string())?;
    let out = match job.kind {
        Kind::Video => run_video_job(job, &explainer, o, class, input),
        Kind::Signal => run_signal_job(job, &explainer, o, class, input),
    };
    // A job stopped by its client (or the shutdown) says so, whatever the pipeline saw.
    if job.cancel.load(Ordering::Relaxed) {
        return Err("cancelled".into());
    }
    out
}

fn run_video_job(
    job: &Job,
    explainer: &Explainer,
    o: &JobOptions,
    class: Option<usize>,
    input: &Path,
) -> Result<Value, String> {
    let thumb_every = o.thumb_every.unwrap_or(10);
    let progress = |done: u64, total: Option<u64>| job.progress(done, total);
    let observe = |picture: &Picture, r: &FrameRecord| {
        if r.index.is_multiple_of(thumb_every) {
            // Only thumbnail frames are converted to RGB.
            let thumb = picture
                .to_rgb()
                .map(|rgb| thumbnail_b64(&rgb))
                .unwrap_or_default();
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["thumbnail_jpeg_b64"] = thumb.into();
            job.push(r.index, "frame", v);
        }
    };
    let v = VideoJob {
        input: input.to_path_buf(),
        output: job.dir.join("result.mp4"),
        section: Section::default(),
        encode: EncodeOptions::default(),
        frames_json: Some(job.dir.join("frames.jsonl")),
        clips_json: None,
        report: None,
        frames: FrameJob {
            explainer,
            model: ModelConfig {
                class,
                batch: o.batch.unwrap_or(8).min(64),
                every: o.every.unwrap_or(1),
                norm: Norm::Frame,
                metrics: None,
                metrics_every: 1,
                clips: Default::default(),
            },
            overlay: OverlayConfig {
                colormap: &JET,
                alpha: o.alpha.unwrap_or(0.5),
                label: true,
                renormalise: true,
            },
            overlay_workers: 2,
        },
        progress: Some(&progress),
        observe: Some(&observe),
    };
    let report = run_video(&v, &job.cancel).map_err(|e| e.to_string())?;
    let base = format!("/v1/jobs/{}/result", job.id);
    Ok(json!({
        "frames": report.frames,
        "explained": report.explained,
        "fps": report.fps,
        "warnings": report.warnings,
        "results": {
            "video": base,
            "frames": format!("{base}?file=frames"),
        },
    }))
}

fn run_signal_job(
    job: &Job,
    explainer: &Explainer,
    o: &JobOptions,
    class: Option<usize>,
    input: &Path,
) -> Result<Value, String> {
    let opts = OpenOptions {
        rate: o.rate,
        ..OpenOptions::default()
    };
    let reader = signal::open(input, &opts).map_err(|e| e.to_string())?;
    let progress = |done: u64, total: Option<u64>| job.progress(done, total);
    let s = SignalJob {
        explainer,
        model: WindowModel {
            class,
            batch: o.batch.unwrap_or(8).min(64),
            metrics: None,
        },
        hop: None,
        channels: ChannelChoice::default_for(explainer),
        output: SignalOutput {
            out_dir: job.dir.clone(),
            stem: "result".into(),
            cam_npy: false,
            plot: true,
            from_s: None,
            to_s: None,
            colormap: &JET,
        },
        progress: Some(&progress),
        cancel: Some(&job.cancel),
    };
    let report = run_signal(&s, reader).map_err(|e| e.to_string())?;
    let base = format!("/v1/jobs/{}/result", job.id);
    Ok(json!({
        "windows": report.windows,
        "duration_s": report.duration_s,
        "window_s": report.window_s,
        "hop_s": report.hop_s,
        "classes": report.classes,
        "notes": report.notes,
        "results": {
            "plot": base,
            "windows": format!("{base}?file=windows"),
            "relevance": format!("{base}?file=relevance"),
        },
    }))
}

fn thumbnail_b64(rgb: &RgbImage) -> String {
    let w = THUMB_WIDTH.min(rgb.width()).max(1);
    let h = ((rgb.height() as u64 * w as u64) / rgb.width().max(1) as u64).max(1) as u32;
    let small = image::imageops::thumbnail(rgb, w, h);
    let mut jpeg = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut jpeg), 70);
    if enc.encode_image(&small).is_err() {
        return String::new();
    }
    base64::engine::general_purpose::STANDARD.encode(jpeg)
}

/// `GET /v1/jobs`.
pub async fn list(State(app): State<Arc<AppState>>) -> Json<Value> {
    let jobs: Vec<Value> = app.jobs.lock().values().map(|j| j.status()).collect();
    Json(json!({ "jobs": jobs }))
}

/// `GET /v1/jobs/{id}`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(app.jobs.get(&id)?.status()))
}

/// `DELETE /v1/jobs/{id}`: cancels a running job (202, it stops at its next frame and
/// keeps no output), or removes a finished one (204).
pub async fn delete(
    State(app): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let job = app.jobs.get(&id)?;
    if job.lock().phase.done() {
        app.jobs.lock().remove(&id);
        let _ = tokio::fs::remove_dir_all(&job.dir).await;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    job.cancel.store(true, Ordering::Relaxed);
    Ok((StatusCode::ACCEPTED, Json(job.status())).into_response())
}

/// `GET /v1/jobs/{id}/events`: Server-Sent Events `progress`, `frame`, `done`, `error`.
pub async fn events(
    State(app): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let job = app.jobs.get(&id)?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let stop = app.stopping();
    let stream = futures_util::stream::unfold(
        (job, after, VecDeque::<Event>::new(), false, stop),
        |(job, mut after, mut pending, mut ended, mut stop)| async move {
            loop {
                if let Some(e) = pending.pop_front() {
                    return Some((Ok(e), (job, after, pending, ended, stop)));
                }
                if ended || *stop.borrow() {
                    return None;
                }
                let changed = job.changed.notified();
                {
                    let s = job.lock();
                    let from = after;
                    for l in s.events.iter().filter(|l| from.is_none_or(|a| l.id > a)) {
                        pending.push_back(
                            Event::default()
                                .id(l.id.to_string())
                                .event(l.kind)
                                .data(&l.data),
                        );
                        after = Some(l.id);
                        ended |= matches!(l.kind, "done" | "error");
                    }
                }
                if pending.is_empty() {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
pub struct ResultQuery {
    file: Option<String>,
}

/// `GET /v1/jobs/{id}/result[?file=...]`: the annotated video (with range requests, so
/// a `<video>` can seek) or the frames' JSON lines; for signals the plot, the windows'
/// JSON lines and the relevance CSV.
pub async fn result(
    State(app): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ResultQuery>,
    req: Request,
) -> ApiResult<Response> {
    let job = app.jobs.get(&id)?;
    if job.lock().phase != Phase::Succeeded {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "job `{id}` has no result: it is {}",
                job.lock().phase.name()
            ),
        ));
    }
    let name = match (job.kind, q.file.as_deref()) {
        (Kind::Video, None | Some("video")) => "result.mp4",
        (Kind::Video, Some("frames")) => "frames.jsonl",
        (Kind::Signal, None | Some("plot")) => "result.png",
        (Kind::Signal, Some("windows")) => "result.windows.jsonl",
        (Kind::Signal, Some("relevance")) => "result.relevance.csv",
        (_, Some(other)) => {
            return Err(ApiError::not_found(format!(
                "no result `{other}`; results: {}",
                match job.kind {
                    Kind::Video => "video, frames",
                    Kind::Signal => "plot, windows, relevance",
                }
            )))
        }
    };
    let served = tower_http::services::ServeFile::new(job.dir.join(name))
        .oneshot(req)
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the result: {e}")))?;
    Ok(served.map(Body::new))
}
