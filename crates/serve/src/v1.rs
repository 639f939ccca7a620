//! KServe's V1 protocol: `GET /v1/models`, `GET /v1/models/{name}`,
//! `POST /v1/models/{name}:predict` and `POST /v1/models/{name}:explain`.
//!
//! An instance is `{"b64": "<PNG/JPEG>"}`, a nested list (C,H,W) or (C,L) of model-ready
//! values, or `{"data": <either>, "target": class|label, "layer": ..., "method": ...}`.
//! `parameters` gives the same keys for every instance.

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::Json;
use base64::Engine;
use camstream_core::model::Network;
use camstream_core::preprocess::InputKind;
use camstream_media::inputs::{picture_input, tensor_inputs};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::infer::{self, Ask, Sample};
use crate::models::{cam_config, Model};
use crate::AppState;

/// The most instances in one request.
const MAX_INSTANCES: usize = 256;

pub async fn list(State(app): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "models": app.models.names() }))
}

pub async fn get(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let model = app.models.get(&name)?;
    Ok(Json(serde_json::to_value(model.info()).unwrap_or_default()))
}

/// `{name}:predict` and `{name}:explain` (axum cannot route on a `:verb` suffix, so the
/// last `:` splits the segment).
pub async fn post(
    State(app): State<Arc<AppState>>,
    UrlPath(target): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body = body.map_err(|e| app.rejected(e.status(), e.body_text(), false))?;
    let (name, verb) = target.rsplit_once(':').ok_or_else(|| {
        ApiError::not_found(format!(
            "POST /v1/models/{target}: use /v1/models/{target}:predict or :explain"
        ))
    })?;
    let explain = match verb {
        "predict" => false,
        "explain" => true,
        _ => {
            return Err(ApiError::not_found(format!(
                "unknown verb `:{verb}`; use :predict or :explain"
            )))
        }
    };
    let out = app
        .run_json(name.to_string(), body, move |model, request: &V1Request| {
            run(model, request, explain)
        })
        .await?;
    Ok(Json(out))
}

#[derive(Deserialize)]
struct V1Request {
    instances: Vec<Value>,
    #[serde(default)]
    parameters: Params,
}

/// What an instance or the request's `parameters` may ask.
#[derive(Deserialize, Default, Clone)]
struct Params {
    target: Option<Value>,
    layer: Option<String>,
    method: Option<String>,
    aug_smooth: Option<bool>,
    eigen_smooth: Option<bool>,
    /// Heatmap weight in the overlay PNG.
    alpha: Option<f32>,
}

impl Params {
    /// `self` with what `over` sets.
    fn with(&self, over: &Params) -> Params {
        Params {
            target: over.target.clone().or_else(|| self.target.clone()),
            layer: over.layer.clone().or_else(|| self.layer.clone()),
            method: over.method.clone().or_else(|| self.method.clone()),
            aug_smooth: over.aug_smooth.or(self.aug_smooth),
            eigen_smooth: over.eigen_smooth.or(self.eigen_smooth),
            alpha: over.alpha.or(self.alpha),
        }
    }

    fn ask(&self, net: &Network) -> ApiResult<Ask> {
        Ok(Ask {
            layer: self.layer.clone(),
            config: cam_config(
                self.method.as_deref(),
                self.aug_smooth.unwrap_or(false),
                self.eigen_smooth.unwrap_or(false),
            )?,
            target: parse_target(self.target.as_ref(), net)?,
        })
    }
}

/// A class given as an index or a label; null: the top-1.
pub fn parse_target(v: Option<&Value>, net: &Network) -> ApiResult<Option<usize>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(net.parse_class(&n.to_string())?)),
        Some(Value::String(s)) => Ok(Some(net.parse_class(s)?)),
        Some(other) => Err(ApiError::bad_request(format!(
            "target must be a class index or label, got {other}"
        ))),
    }
}

fn run(model: &Model, request: &V1Request, explain: bool) -> ApiResult<Value> {
    let net = model.network();
    if request.instances.is_empty() || request.instances.len() > MAX_INSTANCES {
        return Err(ApiError::bad_request(format!(
            "`instances` must hold 1 to {MAX_INSTANCES} instances, got {}",
            request.instances.len()
        )));
    }
    let mut samples = Vec::with_capacity(request.instances.len());
    let mut asks = Vec::with_capacity(request.instances.len());
    for (i, v) in request.instances.iter().enumerate() {
        let (sample, params) = instance(i, v, net, &request.parameters)?;
        samples.push(sample);
        asks.push(params.ask(net)?);
    }
    if !explain {
        let logits = infer::logits(net, &samples)?;
        let predictions = infer::predictions(net, &logits);
        return Ok(json!({ "predictions": predictions }));
    }
    let explained = infer::explain(model, &samples, &asks)?;
    // A targeted instance's prediction is still the model's own top-1.
    let targeted: Vec<usize> = (0..samples.len())
        .filter(|&i| asks[i].target.is_some())
        .collect();
    let mut predictions: Vec<Value> = explained
        .iter()
        .map(|e| {
            json!({"class": e.class, "label": e.label, "logit": e.logit, "probability": e.probability})
        })
        .collect();
    if !targeted.is_empty() {
        let picked: Vec<Sample> = targeted
            .iter()
            .map(|&i| Sample {
                data: samples[i].data.clone(),
                shape: samples[i].shape.clone(),
                view: None,
            })
            .collect();
        let top = infer::predictions(net, &infer::logits(net, &picked)?);
        for (&i, p) in targeted.iter().zip(top) {
            predictions[i] = serde_json::to_value(p).unwrap_or_default();
        }
    }
    let alpha = request.parameters.alpha.unwrap_or(0.5).clamp(0.0, 1.0);
    let mut explanations = Vec::with_capacity(explained.len());
    for (e, s) in explained.iter().zip(&samples) {
        explanations.push(json!({
            "class": e.class,
            "label": e.label,
            "logit": e.logit,
            "probability": e.probability,
            "layer": &*e.layer,
            "method": asks[e.sample].config.method.name(),
            "shape": e.spatial,
            "cam": infer::nested(&e.raw, &e.spatial),
            "heatmap_png_b64": infer::heatmap_png(e, s, alpha)?,
        }));
    }
    Ok(json!({ "predictions": predictions, "explanations": explanations }))
}

/// One instance as a model input, with the parameters it asks for.
fn instance(i: usize, v: &Value, net: &Network, defaults: &Params) -> ApiResult<(Sample, Params)> {
    let origin = format!("instance {i}");
    let bad = |why: &str| ApiError::bad_request(format!("{origin}: {why}"));
    match v {
        Value::Object(o) if o.contains_key("data") => {
            let own: Params =
                serde_json::from_value(v.clone()).map_err(|e| bad(&format!("bad keys: {e}")))?;
            let sample = match &o["data"] {
                Value::String(b64) => picture(&origin, b64, net)?,
                Value::Object(d) => match d.get("b64") {
                    Some(Value::String(b64)) => picture(&origin, b64, net)?,
                    _ => {
                        return Err(bad(
                            "`data` must be {\"b64\": ...}, a base64 string or a nested list",
                        ))
                    }
                },
                data => tensor(&origin, data, net)?,
            };
            Ok((sample, defaults.with(&own)))
        }
        Value::Object(o) => match o.get("b64") {
            Some(Value::String(b64)) => Ok((picture(&origin, b64, net)?, defaults.clone())),
            _ => Err(bad(
                "expected {\"b64\": ...}, {\"data\": ...} or a nested list",
            )),
        },
        Value::Array(_) => Ok((tensor(&origin, v, net)?, defaults.clone())),
        _ => Err(bad(
            "expected {\"b64\": ...}, {\"data\": ...} or a nested list",
        )),
    }
}

/// A PNG/JPEG in base64, prepared as the model's preprocessing says.
fn picture(origin: &str, b64: &str, net: &Network) -> ApiResult<Sample> {
    if net.input.kind != InputKind::Image {
        return Err(ApiError::bad_request(format!(
            "{origin}: this model takes {} inputs, not pictures: send a nested list",
            crate::models::kind_name(net.input.kind)
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| ApiError::bad_request(format!("{origin}: bad base64: {e}")))?;
    let img = camstream_media::picture::decode_image(&bytes, Path::new(origin))?;
    let p = picture_input(&img, &net.input);
    Ok(Sample {
        data: p.data,
        shape: p.shape,
        view: p.view,
    })
}

/// A nested list of numbers, (C, spatial...) of one sample.
fn tensor(origin: &str, v: &Value, net: &Network) -> ApiResult<Sample> {
    let (data, shape) =
        flatten(v).map_err(|why| ApiError::bad_request(format!("{origin}: {why}")))?;
    let rank = net.input.kind.rank();
    if shape.len() != rank + 1 {
        return Err(ApiError::bad_request(format!(
            "{origin}: a nested list of shape {shape:?}; this model takes {}",
            if rank == 2 { "(C,H,W)" } else { "(C,L)" }
        )));
    }
    let mut s = tensor_inputs(Path::new(origin), data, &shape, &net.input)?;
    let s = s.remove(0);
    Ok(Sample {
        data: s.data,
        shape: s.shape,
        view: s.view,
    })
}

/// The values and shape of a rectangular nested list of numbers.
pub fn flatten(v: &Value) -> Result<(Vec<f32>, Vec<usize>), String> {
    let mut shape = Vec::new();
    let mut at = v;
    while let Value::Array(a) = at {
        shape.push(a.len());
        match a.first() {
            Some(first) => at = first,
            None => break,
        }
        if shape.len() > 5 {
            return Err("nested more than 5 deep".into());
        }
    }
    let mut data = Vec::with_capacity(shape.iter().product());
    fill(v, &shape, &mut data)?;
    Ok((data, shape))
}

fn fill(v: &Value, shape: &[usize], out: &mut Vec<f32>) -> Result<(), String> {
    match (v, shape.split_first()) {
        (Value::Array(a), Some((&n, rest))) => {
            if a.len() != n {
                return Err(format!(
                    "ragged nested list: a row of {} where {n} was expected",
                    a.len()
                ));
            }
            a.iter().try_for_each(|x| fill(x, rest, out))
        }
        (Value::Number(n), None) => {
            out.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        (other, _) => Err(format!(
            "expected {} in a nested list, got {}",
            if shape.is_empty() {
                "a number"
            } else {
                "a list"
            },
            short(other)
        )),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(40).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}
