//! The Open Inference Protocol (KServe V2): health, model metadata and `infer` with FP32
//! tensors. `infer` returns `logits` [N, classes] and, when asked (`parameters.cam` or an
//! output named `cam`), `cam` [N, h, w] or [N, l] at the target layer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::Json;
use camstream_media::inputs::tensor_inputs;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::infer::{self, Ask, Sample};
use crate::models::{cam_config, Model};
use crate::v1::{flatten, parse_target};
use crate::AppState;

pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

pub async fn ready(State(app): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let ready = !app.is_shutting_down();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready })))
}

pub async fn model_ready(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    app.models.get(&name)?;
    Ok(Json(json!({ "name": name, "ready": true })))
}

pub async fn metadata(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let model = app.models.get(&name)?;
    let net = model.network();
    let mut input = vec![-1i64, net.input.channels as i64];
    input.extend(net.input.size.iter().map(|&s| s as i64));
    let mut cam = vec![-1i64];
    if let Some((_, shape)) = model.layers.iter().find(|(l, _)| *l == net.default_layer) {
        cam.extend(shape[1..].iter().map(|&s| s as i64));
    }
    Ok(Json(json!({
        "name": name,
        "versions": ["1"],
        "platform": "camstream",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": input}],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [-1, net.num_classes]},
            {"name": "cam", "datatype": "FP32", "shape": cam},
        ],
        "parameters": {"default_layer": net.default_layer, "labels": model.info().labels},
    })))
}

#[derive(Deserialize)]
struct InferRequest {
    id: Option<String>,
    inputs: Vec<TensorIn>,
    #[serde(default)]
    outputs: Vec<OutputAsk>,
    #[serde(default)]
    parameters: InferParams,
}

#[derive(Deserialize)]
struct TensorIn {
    name: String,
    shape: Vec<usize>,
    datatype: String,
    data: Value,
}

#[derive(Deserialize)]
struct OutputAsk {
    name: String,
}

#[derive(Deserialize, Default)]
struct InferParams {
    #[serde(default)]
    cam: bool,
    layer: Option<String>,
    method: Option<String>,
    target: Option<Value>,
}

pub async fn infer(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body = body.map_err(|e| app.rejected(e.status(), e.body_text(), false))?;
    let out = app.run_json(name, body, run).await?;
    Ok(Json(out))
}

fn run(model: &Model, r: &InferRequest) -> ApiResult<Value> {
    let net = model.network();
    let [t] = r.inputs.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "`inputs` must hold exactly one tensor, got {}",
            r.inputs.len()
        )));
    };
    if t.datatype != "FP32" {
        return Err(ApiError::bad_request(format!(
            "input `{}`: datatype {} is not supported; send FP32",
            t.name, t.datatype
        )));
    }
    let rank = net.input.kind.rank();
    if t.shape.len() != rank + 2 {
        return Err(ApiError::bad_request(format!(
            "input `{}`: shape {:?}; this model takes {}",
            t.name,
            t.shape,
            if rank == 2 { "[N,C,H,W]" } else { "[N,C,L]" }
        )));
    }
    let (data, _) = flatten(&t.data)
        .map_err(|why| ApiError::bad_request(format!("input `{}`: {why}", t.name)))?;
    let samples: Vec<Sample> =
        tensor_inputs(std::path::Path::new(&t.name), data, &t.shape, &net.input)?
            .into_iter()
            .map(|s| Sample {
                data: s.data,
                shape: s.shape,
                view: None,
            })
            .collect();
    for o in &r.outputs {
        if o.name != "logits" && o.name != "cam" {
            return Err(ApiError::bad_request(format!(
                "unknown output `{}`; outputs: logits, cam",
                o.name
            )));
        }
    }
    let wants = |n: &str| r.outputs.is_empty() || r.outputs.iter().any(|o| o.name == n);
    let cam = r.parameters.cam || r.outputs.iter().any(|o| o.name == "cam");
    let n = samples.len();
    let mut outputs = Vec::new();
    if wants("logits") {
        let logits = infer::logits(net, &samples)?;
        outputs.push(json!({
            "name": "logits",
            "datatype": "FP32",
            "shape": [n, net.num_classes],
            "data": logits.concat(),
        }));
    }
    if cam {
        let ask = Ask {
            layer: r.parameters.layer.clone(),
            config: cam_config(r.parameters.method.as_deref(), false, false)?,
            target: parse_target(r.parameters.target.as_ref(), net)?,
        };
        let asks = vec![ask; n];
        let explained = infer::explain(model, &samples, &asks)?;
        let mut shape = vec![n];
        shape.extend(&explained[0].spatial);
        let data: Vec<f32> = explained
            .iter()
            .flat_map(|e| e.raw.iter().copied())
            .collect();
        outputs.push(json!({
            "name": "cam",
            "datatype": "FP32",
            "shape": shape,
            "data": data,
            "parameters": {
                "layer": &*explained[0].layer,
                "classes": explained.iter().map(|e| e.class).collect::<Vec<_>>(),
            },
        }));
    }
    let mut out = json!({ "model_name": model.name, "model_version": "1", "outputs": outputs });
    if let Some(id) = &r.id {
        out["id"] = id.clone().into();
    }
    Ok(out)
}
