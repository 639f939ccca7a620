//! The router's handlers called directly with tower's `oneshot` (no socket): routes,
//! protocols' shapes, errors and the token check. tests/serve.rs at the workspace root
//! runs real servers.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use camstream_core::{ModelRequest, ModelSource};
use camstream_serve::{router, AppState, Limits};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../samples")
}

fn app(limits: Limits) -> Arc<AppState> {
    let model = |name: &str, file: &str| {
        let path = samples().join("models").join(file);
        let source = ModelSource::parse(path.to_str().unwrap()).unwrap();
        (name.to_string(), ModelRequest::new(source))
    };
    AppState::new(
        vec![model("shapes", "shapes.toml"), model("ecg", "ecg.toml")],
        limits,
        &candle_core::Device::Cpu,
    )
    .unwrap()
}

async fn call(app: &Arc<AppState>, req: Request<Body>) -> (StatusCode, Value) {
    let r = router(app.clone()).oneshot(req).await.unwrap();
    let status = r.status();
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn models_and_metadata() {
    let app = app(Limits::default());
    let (s, v) = call(&app, get("/v1/models")).await;
    assert_eq!(
        (s, v),
        (StatusCode::OK, json!({"models": ["shapes", "ecg"]}))
    );
    let (s, v) = call(&app, get("/v1/models/ecg")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["kind"], "signal");
    assert_eq!(v["input_shape"], json!([1, 2000]));
    assert_eq!(
        v["labels"].as_array().unwrap().len(),
        v["classes"].as_u64().unwrap() as usize
    );
    assert!(v["methods"]
        .as_array()
        .unwrap()
        .contains(&json!("scorecam")));
    let (s, v) = call(&app, get("/v2/models/ecg")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["inputs"][0]["shape"], json!([-1, 1, 2000]));
    assert_eq!(v["outputs"][1]["name"], "cam");
    let (s, v) = call(&app, get("/v2/models/nope/ready")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("models: shapes, ecg"));
    let (s, _) = call(&app, get("/v2/health/ready")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_1d_signal_explains_over_both_protocols() {
    let app = app(Limits::default());
    // The ECG sample's first window, as a nested (C, L) list.
    let (data, shape) =
        camstream_media::npy::read_npy(&samples().join("ecg/ecg_windows.npy")).unwrap();
    let len = shape[shape.len() - 1];
    let window: Vec<f32> = data[..len].to_vec();
    let (s, v) = call(
        &app,
        post("/v1/models/ecg:explain", &json!({"instances": [[window]]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let e = &v["explanations"][0];
    let cam = e["cam"].as_array().unwrap();
    assert_eq!(e["shape"], json!([cam.len()]));
    assert!(e["heatmap_png_b64"].is_null(), "no picture for a signal");

    let (s, v) = call(
        &app,
        post(
            "/v2/models/ecg/infer",
            &json!({"inputs": [{"name": "ecg", "shape": [1, 1, len], "datatype": "FP32", "data": window}],
                    "outputs": [{"name": "cam"}]}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let outputs = v["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "only the asked output");
    assert_eq!(outputs[0]["shape"], json!([1, cam.len()]));
    let diff = outputs[0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(cam)
        .map(|(a, b)| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs())
        .fold(0.0, f64::max);
    assert!(diff < 1e-6, "V1 and V2 maps differ by {diff}");
}

#[tokio::test]
async fn routes_verbs_and_tokens() {
    let app = app(Limits::default());
    let (s, v) = call(&app, post("/v1/models/shapes", &json!({}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains(":predict or :explain"));
    let (s, v) = call(
        &app,
        post("/v1/models/shapes:explain", &json!({"instances": []})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("1 to 256 instances"));
    let (s, v) = call(&app, post("/v1/jobs", &json!({"path": "x.mp4"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no allow_paths: {v}");
    let (s, _) = call(&app, get("/v1/jobs")).await;
    assert_eq!(s, StatusCode::OK);

    let locked = app_with_token();
    let (s, _) = call(&locked, get("/v1/models")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let with = Request::get("/v1/models")
        .header(header::AUTHORIZATION, "Bearer sesame")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&locked, with).await.0, StatusCode::OK);
    assert_eq!(
        call(&locked, get("/v1/models?access_token=sesame")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&locked, get("/v1/models?access_token=wrong")).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The page and the health checks need none.
    let r = router(locked.clone()).oneshot(get("/")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(
        call(&locked, get("/v2/health/live")).await.0,
        StatusCode::OK
    );
}

fn app_with_token() -> Arc<AppState> {
    app(Limits {
        token: Some("sesame".into()),
        ..Limits::default()
    })
}

#[tokio::test]
async fn every_answer_has_a_request_id() {
    let app = app(Limits::default());
    let r = router(app.clone())
        .oneshot(get("/v1/models"))
        .await
        .unwrap();
    assert!(r.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req-"));
    let mine = Request::get("/v1/models")
        .header("x-request-id", "abc")
        .body(Body::empty())
        .unwrap();
    let r = router(app).oneshot(mine).await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc");
}
