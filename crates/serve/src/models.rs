//! The models a service was started with, by name, and the explainers requests ask for.

use std::collections::HashMap;
use std::sync::Mutex;

use camstream_core::model::Network;
use camstream_core::preprocess::InputKind;
use camstream_core::{CamConfig, Explainer, Method, ModelRequest};
use candle_core::Device;
use serde::Serialize;

use crate::error::{ApiError, ApiResult, ServeError};

/// Networks kept per model for other target layers than the default (each is the
/// model loaded so that its layers stay intact); beyond this the oldest is dropped.
const LAYER_CACHE: usize = 8;

/// A served model: its default network, its layers, and networks for other layers.
pub struct Model {
    pub name: String,
    request: ModelRequest,
    device: Device,
    default: Network,
    /// (layer, per-sample shape) of every target layer.
    pub layers: Vec<(String, Vec<usize>)>,
    by_layer: Mutex<Vec<(String, Network)>>,
}

/// What `GET /v1/models/{name}` and the web page show of a model.
#[derive(Serialize)]
pub struct ModelInfo<'a> {
    pub name: &'a str,
    pub ready: bool,
    /// `image`, `signal` or `audio`.
    pub kind: &'static str,
    /// (C, spatial...) of one model input.
    pub input_shape: Vec<usize>,
    pub sample_rate: Option<f32>,
    pub classes: usize,
    pub labels: Vec<String>,
    pub default_layer: &'a str,
    pub layers: Vec<LayerInfo<'a>>,
    pub methods: Vec<&'static str>,
}

#[derive(Serialize)]
pub struct LayerInfo<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
}

impl Model {
    pub fn load(name: &str, request: ModelRequest, device: &Device) -> Result<Self, ServeError> {
        let model_err = |source| ServeError::Model {
            name: name.to_string(),
            source,
        };
        let default = Network::load(&request, device).map_err(model_err)?;
        let layers = default.layer_shapes().map_err(model_err)?;
        Ok(Self {
            name: name.to_string(),
            request,
            device: device.clone(),
            default,
            layers,
            by_layer: Mutex::new(Vec::new()),
        })
    }

    pub fn network(&self) -> &Network {
        &self.default
    }

    pub fn info(&self) -> ModelInfo<'_> {
        let net = &self.default;
        let mut input_shape = vec![net.input.channels];
        input_shape.extend(&net.input.size);
        ModelInfo {
            name: &self.name,
            ready: true,
            kind: kind_name(net.input.kind),
            input_shape,
            sample_rate: net.input.sample_rate,
            classes: net.num_classes,
            labels: (0..net.num_classes).map(|c| net.label(c)).collect(),
            default_layer: &net.default_layer,
            layers: self
                .layers
                .iter()
                .map(|(name, shape)| LayerInfo { name, shape })
                .collect(),
            methods: Method::ALL.iter().map(|m| m.name()).collect(),
        }
    }

    /// An explainer at `layer` (default: the model's) with `config`. Blocking: another
    /// layer may load the model again (kept for the next request).
    pub fn explainer(&self, layer: Option<&str>, config: CamConfig) -> ApiResult<Explainer> {
        let layer = layer.map(str::trim).filter(|l| !l.is_empty());
        let net = match layer {
            None => self.default.clone(),
            Some(l) if l == self.default.default_layer => self.default.clone(),
            Some(l) => self.network_for(l)?,
        };
        Ok(Explainer::from_network(net, layer)?.with_config(config))
    }

    fn network_for(&self, layer: &str) -> ApiResult<Network> {
        let cached = |cache: &Vec<(String, Network)>| {
            cache
                .iter()
                .find(|(l, _)| l == layer)
                .map(|(_, n)| n.clone())
        };
        if let Some(n) = cached(&self.lock()) {
            return Ok(n);
        }
        // Refuse an unknown layer before loading anything.
        for l in layer.split(',') {
            self.default.body.check_target(l.trim())?;
        }
        let request = ModelRequest {
            target: Some(layer.to_string()),
            ..self.request.clone()
        };
        let net = Network::load(&request, &self.device)?;
        let mut cache = self.lock();
        if cache.len() >= LAYER_CACHE {
            cache.remove(0);
        }
        cache.push((layer.to_string(), net.clone()));
        Ok(net)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Network)>> {
        // A panic while holding the lock leaves a valid cache: use it.
        self.by_layer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn kind_name(kind: InputKind) -> &'static str {
    kind.name()
}

/// The served models by name, in the order given (the first is the default).
pub struct Models(Vec<Model>);

impl Models {
    /// Loads every `(name, request)`; names must be unique.
    pub fn load(specs: Vec<(String, ModelRequest)>, device: &Device) -> Result<Self, ServeError> {
        let mut map: Vec<Model> = Vec::new();
        for (name, request) in specs {
            if name.is_empty() || name.contains([':', '/']) {
                return Err(ServeError::BadOption {
                    name: "models",
                    why: format!("model name `{name}` must be non-empty without `:` or `/`"),
                });
            }
            if map.iter().any(|m| m.name == name) {
                return Err(ServeError::BadOption {
                    name: "models",
                    why: format!("model name `{name}` is given twice"),
                });
            }
            map.push(Model::load(&name, request, device)?);
        }
        if map.is_empty() {
            return Err(ServeError::BadOption {
                name: "models",
                why: "no model to serve".into(),
            });
        }
        Ok(Self(map))
    }

    pub fn get(&self, name: &str) -> ApiResult<&Model> {
        self.0.iter().find(|m| m.name == name).ok_or_else(|| {
            ApiError::not_found(format!(
                "unknown model `{name}`; models: {}",
                self.names().join(", ")
            ))
        })
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|m| m.name.as_str()).collect()
    }
}

/// A method and its options by name, as requests give them.
pub fn cam_config(
    method: Option<&str>,
    aug_smooth: bool,
    eigen_smooth: bool,
) -> ApiResult<CamConfig> {
    Ok(CamConfig {
        method: match method {
            Some(m) => Method::from_name(m)?,
            None => Method::default(),
        },
        aug_smooth,
        eigen_smooth,
        method_batch: None,
    })
}

/// A cache of explainers by (layer, config) for the instances of one request.
#[derive(Default)]
pub struct Explainers(HashMap<(Option<String>, CamConfig), Explainer>);

impl Explainers {
    pub fn get(
        &mut self,
        model: &Model,
        layer: Option<&str>,
        config: CamConfig,
    ) -> ApiResult<&Explainer> {
        let key = (layer.map(str::to_string), config);
        if !self.0.contains_key(&key) {
            let e = model.explainer(layer, config)?;
            self.0.insert(key.clone(), e);
        }
        Ok(&self.0[&key])
    }
}
