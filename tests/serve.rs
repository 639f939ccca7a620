//! `camstream serve` against real clients: servers on 127.0.0.1:0 (in this process
//! through the library, or the binary for signals), real HTTP through reqwest, real
//! models and the sample video.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use camstream_core::{ModelRequest, ModelSource};
use camstream_media::decode::{Section, VideoDecoder};
use camstream_serve::{AppState, Limits};
use common::{camstream, npy, ok, s};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shapes() -> (String, ModelRequest) {
    let path = root().join("samples/models/shapes.toml");
    let source = ModelSource::parse(s(&path)).unwrap();
    ("shapes".into(), ModelRequest::new(source))
}

fn ecg() -> (String, ModelRequest) {
    let path = root().join("samples/models/ecg.toml");
    (
        "ecg".into(),
        ModelRequest::new(ModelSource::parse(s(&path)).unwrap()),
    )
}

/// A server in this process; dropping the sender stops it.
struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<(), camstream_serve::ServeError>>>,
}

impl Server {
    async fn start(limits: Limits) -> Self {
        let app = AppState::new(vec![shapes(), ecg()], limits, &candle_core::Device::Cpu).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(camstream_serve::serve(listener, app, async {
            let _ = rx.await;
        }));
        Self {
            url,
            stop: Some(tx),
            done: Some(done),
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().await.unwrap().unwrap();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

fn b64(path: &Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

/// Asserts a 4xx with a one-line JSON error, and returns the line.
async fn client_error(r: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status);
    let v: Value = r.json().await.unwrap();
    let e = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error line: {v}"))
        .to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    e
}

async fn post_json(url: &str, body: &Value) -> reqwest::Response {
    client().post(url).json(body).send().await.unwrap()
}

/// The `cam` of an :explain explanation as a flat list.
fn cam_of(e: &Value) -> Vec<f32> {
    e["cam"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_infer_equal_the_command_line() {
    let server = Server::start(Limits::default()).await;
    let url = &server.url;
    let pictures =
        ["circle.png", "square.png", "triangle.png"].map(|p| root().join("samples/images").join(p));

    // The CLI's raw maps for the three pictures.
    let out = tempfile::tempdir().unwrap();
    ok(&camstream(&[
        "image",
        s(&pictures[0]),
        s(&pictures[1]),
        s(&pictures[2]),
        "-m",
        s(&root().join("samples/models/shapes.toml")),
        "--cam-npy",
        "-o",
        s(out.path()),
    ]));

    let instances: Vec<Value> = pictures.iter().map(|p| json!({ "b64": b64(p) })).collect();
    let r = post_json(
        &format!("{url}/v1/models/shapes:explain"),
        &json!({ "instances": instances }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let explanations = v["explanations"].as_array().unwrap();
    assert_eq!(explanations.len(), 3);
    for ((p, e), want) in pictures
        .iter()
        .zip(explanations)
        .zip(["circle", "square", "triangle"])
    {
        let stem = p.file_stem().unwrap().to_str().unwrap();
        let (cli, shape) = npy(out.path().join(format!("{stem}.cam.npy")));
        assert_eq!(shape, vec![1, 16, 16]);
        assert_eq!(e["shape"], json!([16, 16]));
        assert_eq!(e["label"], want, "{stem}");
        assert_eq!(e["layer"], "features.4");
        assert_eq!(e["method"], "gradcam");
        let served = cam_of(e);
        let diff = common::max_abs(&served, &cli);
        assert!(
            diff < 1e-6,
            "{stem}: served map differs from the CLI's by {diff}"
        );
        // The overlay is a PNG of the picture's size.
        let png = base64::engine::general_purpose::STANDARD
            .decode(e["heatmap_png_b64"].as_str().unwrap())
            .unwrap();
        let img = image::load_from_memory(&png).unwrap();
        let src = image::open(p).unwrap();
        assert_eq!((img.width(), img.height()), (src.width(), src.height()));
    }
    assert_eq!(v["predictions"][1]["label"], "square");

    // The same picture as a nested (C,H,W) list, through the Open Inference Protocol:
    // logits equal :predict's, the cam equals :explain's.
    let square = &pictures[1];
    let predict: Value = post_json(
        &format!("{url}/v1/models/shapes:predict"),
        &json!({ "instances": [{ "b64": b64(square) }] }),
    )
    .await
    .json()
    .await
    .unwrap();
    let net = common::load(
        &root().join("samples/models/shapes.toml"),
        None,
        "features.4",
    );
    let input = camstream_media::inputs::read_inputs(square, &net.input)
        .unwrap()
        .remove(0);
    let r = post_json(
        &format!("{url}/v2/models/shapes/infer"),
        &json!({
            "id": "round-trip",
            "inputs": [{ "name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": input.data }],
            "parameters": { "cam": true },
        }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "round-trip");
    assert_eq!(v["model_name"], "shapes");
    let outputs = v["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["name"], "logits");
    assert_eq!(outputs[0]["shape"], json!([1, 3]));
    let logits: Vec<f64> = outputs[0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let top = logits.iter().cloned().fold(f64::MIN, f64::max);
    assert!((top - predict["predictions"][0]["logit"].as_f64().unwrap()).abs() < 1e-5);
    assert_eq!(outputs[1]["name"], "cam");
    assert_eq!(outputs[1]["shape"], json!([1, 16, 16]));
    let cam: Vec<f32> = outputs[1]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let (cli, _) = npy(out.path().join("square.cam.npy"));
    assert!(common::max_abs(&cam, &cli) < 1e-6);

    // Another layer and method per instance, and a class by label.
    let r = post_json(
        &format!("{url}/v1/models/shapes:explain"),
        &json!({ "instances": [{ "data": { "b64": b64(square) }, "layer": "features.6", "method": "layercam", "target": "circle" }] }),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    let e = &v["explanations"][0];
    assert_eq!(
        (
            e["layer"].as_str(),
            e["method"].as_str(),
            e["label"].as_str()
        ),
        (Some("features.6"), Some("layercam"), Some("circle"))
    );
    assert_eq!(e["shape"], json!([8, 8]));
    assert_eq!(
        v["predictions"][0]["label"], "square",
        "the prediction stays the model's top-1"
    );

    // Metadata and health.
    let meta: Value = client()
        .get(format!("{url}/v2/models/shapes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 3, 64, 64]));
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/shapes/ready",
        "/v1/models/shapes",
        "/",
    ] {
        let r = client().get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let models: Value = client()
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["models"], json!(["shapes", "ecg"]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_one_line_and_the_server_keeps_serving() {
    let server = Server::start(Limits {
        max_json: 1 << 20,
        ..Limits::default()
    })
    .await;
    let url = &server.url;
    let explain = format!("{url}/v1/models/shapes:explain");
    let square = b64(&root().join("samples/images/square.png"));
    let cases: Vec<(reqwest::Response, StatusCode, &str)> = vec![
        (client().post(&explain).body("{not json").send().await.unwrap(), StatusCode::BAD_REQUEST, "bad JSON"),
        (post_json(&explain, &json!({ "instances": [{ "b64": "***" }] })).await, StatusCode::BAD_REQUEST, "bad base64"),
        (post_json(&explain, &json!({ "instances": [{ "b64": "aGVsbG8=" }] })).await, StatusCode::UNPROCESSABLE_ENTITY, "not a picture"),
        (post_json(&format!("{url}/v1/models/nope:explain"), &json!({ "instances": [] })).await, StatusCode::NOT_FOUND, "unknown model `nope`"),
        (post_json(&explain, &json!({ "instances": [{ "data": { "b64": square }, "layer": "features.9" }] })).await, StatusCode::UNPROCESSABLE_ENTITY, "valid target layers: features.0.bn"),
        (post_json(&explain, &json!({ "instances": [{ "data": { "b64": square }, "target": 3 }] })).await, StatusCode::UNPROCESSABLE_ENTITY, "out of range"),
        (post_json(&explain, &json!({ "instances": [{ "data": { "b64": square }, "method": "magic" }] })).await, StatusCode::UNPROCESSABLE_ENTITY, "unknown CAM method `magic`"),
        (post_json(&explain, &json!({ "instances": [[[1.0, 2.0], [3.0]]] })).await, StatusCode::BAD_REQUEST, "ragged"),
        (post_json(&explain, &json!({ "instances": [[[[0.0]]], [[[0.0]]]] })).await, StatusCode::UNPROCESSABLE_ENTITY, "1 channels, the model takes 3"),
        (post_json(&format!("{url}/v1/models/shapes:train"), &json!({})).await, StatusCode::NOT_FOUND, "unknown verb"),
        (post_json(&format!("{url}/v2/models/shapes/infer"), &json!({ "inputs": [{ "name": "x", "shape": [1, 3, 64, 64], "datatype": "INT8", "data": [] }] })).await, StatusCode::BAD_REQUEST, "datatype INT8"),
        (post_json(&format!("{url}/v2/models/shapes/infer"), &json!({ "inputs": [{ "name": "x", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [1.0] }] })).await, StatusCode::UNPROCESSABLE_ENTITY, "do not fill shape"),
        (post_json(&format!("{url}/v2/models/ecg/infer"), &json!({ "inputs": [{ "name": "x", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [] }] })).await, StatusCode::BAD_REQUEST, "[N,C,L]"),
        (post_json(&explain, &json!({ "instances": [{ "b64": "A".repeat(2 << 20) }] })).await, StatusCode::PAYLOAD_TOO_LARGE, "over the limit of 1 MB (`max_json`)"),
        (client().get(format!("{url}/v1/jobs/0123")).send().await.unwrap(), StatusCode::NOT_FOUND, "no job"),
        (client().get(format!("{url}/nowhere")).send().await.unwrap(), StatusCode::NOT_FOUND, "no such route"),
    ];
    for (r, status, want) in cases {
        let e = client_error(r, status).await;
        assert!(e.contains(want), "`{e}` should say `{want}`");
    }
    // Still serving.
    let r = post_json(&explain, &json!({ "instances": [{ "b64": square }] })).await;
    assert_eq!(r.status(), StatusCode::OK);
    server.stop().await;
}

/// Posts a job as a multipart upload.
async fn upload(url: &str, file: &Path, fields: &[(&str, &str)]) -> reqwest::Response {
    let bytes = std::fs::read(file).unwrap();
    let name = file.file_name().unwrap().to_str().unwrap().to_string();
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(name),
    );
    client()
        .post(format!("{url}/v1/jobs"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// Reads a job's Server-Sent Events until the stream ends: (id, event, data) each.
async fn events(url: &str, location: &str, last: Option<u64>) -> Vec<(u64, String, Value)> {
    let mut req = client().get(format!("{url}{location}/events"));
    if let Some(l) = last {
        req = req.header("Last-Event-ID", l.to_string());
    }
    let mut r = req.send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(120), r.chunk())
        .await
        .expect("events stalled")
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.split("\n\n")
        .filter_map(|block| {
            let (mut id, mut event, mut data) = (None, None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                }
            }
            Some((id?, event?, data?))
        })
        .collect()
}

fn frame_count(path: &Path) -> u64 {
    let mut d = VideoDecoder::open(path, Section::default()).unwrap();
    let mut n = 0;
    while d.next_frame().unwrap().is_some() {
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_job_streams_events_and_serves_the_annotated_video() {
    let server = Server::start(Limits::default()).await;
    let url = &server.url;
    let video = root().join("samples/video/shapes.mp4");
    let r = upload(url, &video, &[("model", "shapes"), ("thumb_every", "50")]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/v1/jobs/"));
    let all = events(url, &location, None).await;
    let (last_id, kind, done) = all.last().unwrap().clone();
    assert_eq!(kind, "done", "{all:?}");
    let frames = frame_count(&video);
    assert_eq!(done["frames"], frames);
    assert_eq!(last_id, frames, "the done event's id is the frame count");
    let ids: Vec<u64> = all.iter().map(|e| e.0).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    let thumbs: Vec<&Value> = all
        .iter()
        .filter(|e| e.1 == "frame")
        .map(|e| &e.2)
        .collect();
    assert_eq!(thumbs.len() as u64, frames.div_ceil(50));
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(thumbs[0]["thumbnail_jpeg_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(image::load_from_memory(&jpeg).unwrap().width(), 160);
    assert!(all.iter().any(|e| e.1 == "progress"));

    // Reconnecting with Last-Event-ID resumes after it.
    let resumed = events(url, &location, Some(ids[ids.len() / 2])).await;
    assert_eq!(resumed.first().map(|e| e.0), Some(ids[ids.len() / 2 + 1]));
    assert_eq!(resumed.last().unwrap().1, "done");

    let status: Value = client()
        .get(format!("{url}{location}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["done"], true);
    assert_eq!(status["metadata"]["frames_done"], frames);
    assert_eq!(status["metadata"]["state"], "succeeded");

    // The result has the input's frames; a range request gets part of it.
    let bytes = client()
        .get(format!("{url}{location}/result"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.mp4");
    std::fs::write(&out, &bytes).unwrap();
    assert_eq!(frame_count(&out), frames);
    let part = client()
        .get(format!("{url}{location}/result"))
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap(), bytes.slice(100..200));
    let records = client()
        .get(format!("{url}{location}/result?file=frames"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(records.lines().count() as u64, frames);

    // A finished job is deleted with its files.
    let r = client()
        .delete(format!("{url}{location}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = client()
        .get(format!("{url}{location}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_jobs_server_paths_cancel_full_queues_and_body_limits() {
    let allowed = tempfile::tempdir().unwrap();
    let ecg = root().join("samples/ecg/ecg_60s.csv");
    std::fs::copy(&ecg, allowed.path().join("ecg.csv")).unwrap();
    let server = Server::start(Limits {
        max_body: 1 << 20,
        job_queue: 0,
        allow_paths: Some(allowed.path().to_path_buf()),
        ..Limits::default()
    })
    .await;
    let url = &server.url;

    // A signal from a server path: the plot, the windows and the relevance.
    let r = post_json(
        &format!("{url}/v1/jobs"),
        &json!({ "model": "ecg", "path": "ecg.csv" }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let all = events(url, &location, None).await;
    let done = &all.last().unwrap().2;
    assert_eq!(all.last().unwrap().1, "done", "{all:?}");
    assert_eq!(done["windows"], 8);
    let plot = client()
        .get(format!("{url}{location}/result"))
        .send()
        .await
        .unwrap();
    assert_eq!(plot.headers()["content-type"], "image/png");
    let img = image::load_from_memory(&plot.bytes().await.unwrap()).unwrap();
    assert!(img.width() > 300);
    let windows = client()
        .get(format!("{url}{location}/result?file=windows"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(windows.lines().count(), 8);
    let csv = client()
        .get(format!("{url}{location}/result?file=relevance"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("time_s,"), "{}", &csv[..40.min(csv.len())]);

    // Paths outside the allowed folder are refused.
    for bad in ["../ecg.csv", "/etc/passwd", s(&ecg)] {
        let r = post_json(
            &format!("{url}/v1/jobs"),
            &json!({ "model": "ecg", "path": bad }),
        )
        .await;
        let e = client_error(
            r,
            if bad == "../ecg.csv" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::FORBIDDEN
            },
        )
        .await;
        assert!(e.contains(bad), "{e}");
    }
    std::os::unix::fs::symlink(&ecg, allowed.path().join("link.csv")).unwrap();
    let r = post_json(
        &format!("{url}/v1/jobs"),
        &json!({ "model": "ecg", "path": "link.csv" }),
    )
    .await;
    client_error(r, StatusCode::FORBIDDEN).await;

    // One job at a time and none waiting: a second one is refused with Retry-After,
    // and the first is cancelled.
    let video = root().join("samples/video/shapes.mp4");
    let r = upload(url, &video, &[("model", "shapes"), ("batch", "1")]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let running = r.headers()["location"].to_str().unwrap().to_string();
    let r = upload(url, &video, &[("model", "shapes")]).await;
    assert_eq!(r.headers()["retry-after"], "1");
    let e = client_error(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(e.contains("queue is full"), "{e}");
    let r = client()
        .delete(format!("{url}{running}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let all = events(url, &running, None).await;
    let (_, kind, data) = all.last().unwrap();
    assert_eq!(
        (kind.as_str(), data["message"].as_str()),
        ("error", Some("cancelled"))
    );
    let status: Value = client()
        .get(format!("{url}{running}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["metadata"]["state"], "cancelled");
    let r = client()
        .get(format!("{url}{running}/result"))
        .send()
        .await
        .unwrap();
    client_error(r, StatusCode::CONFLICT).await;

    // An upload over the limit (1 MB here).
    let big = allowed.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 2 << 20]).unwrap();
    let r = upload(url, &big, &[("model", "shapes")]).await;
    let e = client_error(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(e.contains("over the limit of 1 MB (`max_body`)"), "{e}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_explain_queue_answers_503_and_a_load_of_200_has_no_other_5xx() {
    // One worker, nothing waiting: concurrent slow requests overflow.
    let server = Server::start(Limits {
        queue: 0,
        ..Limits::default()
    })
    .await;
    let url = Arc::new(server.url.clone());
    let square = Arc::new(b64(&root().join("samples/images/square.png")));
    let slow = json!({ "instances": [{ "data": { "b64": *square }, "method": "scorecam" }], "parameters": { "aug_smooth": true } });
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (url, body) = (url.clone(), slow.clone());
            tokio::spawn(async move {
                let r = post_json(&format!("{url}/v1/models/shapes:explain"), &body).await;
                (r.status(), r.headers().get("retry-after").cloned())
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let busy = codes
        .iter()
        .filter(|c| c.0 == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert!(busy >= 1, "{codes:?}");
    assert!(codes.iter().any(|c| c.0 == StatusCode::OK), "{codes:?}");
    assert!(codes.iter().all(
        |c| c.0 == StatusCode::OK || (c.0 == StatusCode::SERVICE_UNAVAILABLE && c.1.is_some())
    ));
    server.stop().await;

    // The default queue holds 16 concurrent clients: 200 requests, all answered.
    let server = Server::start(Limits::default()).await;
    let url = Arc::new(server.url.clone());
    let body = Arc::new(json!({ "instances": [{ "b64": *square }] }));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (url, body, next) = (url.clone(), body.clone(), next.clone());
            tokio::spawn(async move {
                let mut codes = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 200 {
                    let r = post_json(&format!("{url}/v1/models/shapes:explain"), &body).await;
                    codes.push(r.status());
                }
                codes
            })
        })
        .collect();
    let mut codes = Vec::new();
    for w in workers {
        codes.extend(w.await.unwrap());
    }
    assert_eq!(codes.len(), 200);
    assert!(codes.iter().all(|c| *c == StatusCode::OK), "{codes:?}");
    eprintln!(
        "200 explains at concurrency 16 in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    server.stop().await;
}

/// The binary, killed when dropped (a failed test leaves no server behind).
struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with its stderr captured to `log`; returns it and its address.
fn spawn_server(args: &[&str], log: &Path) -> (Binary, String) {
    let child = Binary(
        Command::new(env!("CARGO_BIN_EXE_camstream"))
            .arg("serve")
            .args(args)
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(at) = text.find("http://") {
            let url = text[at..].split_whitespace().next().unwrap().to_string();
            return (child, url);
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no address: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_leaves_no_truncated_result() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    let log = dir.path().join("serve.log");
    let (mut child, url) = spawn_server(
        &[
            "--model",
            &format!("shapes={}", s(&root().join("samples/models/shapes.toml"))),
            "--bind",
            "127.0.0.1:0",
            "--jobs-dir",
            s(&jobs),
            "--grace",
            "1",
            "--token",
            "sesame",
        ],
        &log,
    );
    // The token is required everywhere but the page and health.
    let r = client()
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        client()
            .get(format!("{url}/"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth("sesame");

    // A long job (batch 1), still running when SIGTERM comes.
    let bytes = std::fs::read(root().join("samples/video/shapes.mp4")).unwrap();
    let form = reqwest::multipart::Form::new().text("batch", "1").part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name("v.mp4"),
    );
    let r = auth(client().post(format!("{url}/v1/jobs")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let t = Instant::now();
    loop {
        let v: Value = auth(client().get(format!("{url}{location}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["metadata"]["frames_done"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(v["done"], false, "the job must still run at SIGTERM");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGTERM);
    }
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status:?}: {text}");
    assert!(text.contains("camstream serve: stopped"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    // The cancelled job left nothing behind: no video, no records, no temporary file.
    let left: Vec<PathBuf> = walk(&jobs);
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
