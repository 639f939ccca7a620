//! The work behind both protocols, on a worker thread: model inputs in, logits and
//! explanations out, through the library's explain API.

use std::io::Cursor;

use base64::Engine;
use camstream_core::model::Network;
use camstream_core::{CamConfig, ExplainOptions, Explanation, Input, Targets};
use camstream_media::render::{overlay_like_show_cam_on_image, JET};
use candle_core::Tensor;
use image::RgbImage;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::models::{Explainers, Model};

/// One model input with what an overlay is drawn on (2D inputs).
pub struct Sample {
    pub data: Vec<f32>,
    /// (C, spatial...).
    pub shape: Vec<usize>,
    pub view: Option<(RgbImage, [usize; 4])>,
}

/// How one sample is explained.
#[derive(Clone, Debug, Default)]
pub struct Ask {
    pub layer: Option<String>,
    pub config: CamConfig,
    /// A class index; `None`: the top-1.
    pub target: Option<usize>,
}

/// A class and its scores.
#[derive(Serialize)]
pub struct Prediction {
    pub class: usize,
    pub label: String,
    pub logit: f32,
    pub probability: f32,
}

/// Logits of every sample, batching consecutive samples of equal shape.
pub fn logits(net: &Network, samples: &[Sample]) -> ApiResult<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(samples.len());
    for group in samples.chunk_by(|a, b| a.shape == b.shape) {
        let mut dims = vec![group.len()];
        dims.extend(&group[0].shape);
        let data: Vec<f32> = group.iter().flat_map(|s| s.data.iter().copied()).collect();
        let x = Tensor::from_vec(data, dims, &net.device).map_err(core_err)?;
        let y = net
            .forward(&x)?
            .to_dtype(candle_core::DType::F32)
            .and_then(|y| y.to_vec2::<f32>())
            .map_err(core_err)?;
        out.extend(y);
    }
    Ok(out)
}

fn core_err(e: candle_core::Error) -> ApiError {
    camstream_core::Error::from(e).into()
}

/// The top-1 class of each row of logits, with its softmax (or, for multi-label models,
/// sigmoid) probability.
pub fn predictions(net: &Network, logits: &[Vec<f32>]) -> Vec<Prediction> {
    logits
        .iter()
        .map(|row| {
            let (class, &logit) = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap_or((0, &0.0));
            let probability = if net.multi_label {
                1.0 / (1.0 + (-logit).exp())
            } else {
                let sum: f32 = row.iter().map(|v| (v - logit).exp()).sum();
                1.0 / sum
            };
            Prediction {
                class,
                label: net.label(class),
                logit,
                probability,
            }
        })
        .collect()
}

/// Explains every sample as asked, batching consecutive samples asked alike.
pub fn explain(model: &Model, samples: &[Sample], asks: &[Ask]) -> ApiResult<Vec<Explanation>> {
    let mut explainers = Explainers::default();
    let mut out = Vec::with_capacity(samples.len());
    let mut start = 0;
    while start < samples.len() {
        let a = &asks[start];
        let end = (start..samples.len())
            .find(|&i| {
                let b = &asks[i];
                (&b.layer, b.config, b.target.is_some()) != (&a.layer, a.config, a.target.is_some())
            })
            .unwrap_or(samples.len());
        let explainer = explainers.get(model, a.layer.as_deref(), a.config)?;
        let targets = if a.target.is_some() {
            Targets::PerSample(asks[start..end].iter().filter_map(|a| a.target).collect())
        } else {
            Targets::TopOne
        };
        let inputs: Vec<Input> = samples[start..end]
            .iter()
            .map(|s| Input::new(&s.data, &s.shape))
            .collect();
        let options = ExplainOptions {
            batch: 8,
            top_k: 1,
            final_map: true,
        };
        let mut done = explainer.explain(&inputs, &targets, &options)?;
        for e in &mut done {
            e.sample += start;
        }
        out.extend(done);
        start = end;
    }
    Ok(out)
}

/// The final map over what the sample shows, coloured as pytorch-grad-cam's
/// `show_cam_on_image`, as a base64 PNG (2D samples only).
pub fn heatmap_png(e: &Explanation, sample: &Sample, alpha: f32) -> ApiResult<Option<String>> {
    let Some((view, rect)) = &sample.view else {
        return Ok(None);
    };
    let model = [sample.shape[1], sample.shape[2]];
    let (w, h) = (view.width() as usize, view.height() as usize);
    let mask = e.on_source(model, *rect, [h, w]);
    let px = overlay_like_show_cam_on_image(view.as_raw(), &mask, &JET, alpha);
    let img = RgbImage::from_raw(w as u32, h as u32, px)
        .ok_or_else(|| ApiError::internal("overlay size"))?;
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| ApiError::internal(format!("cannot encode the heatmap: {e}")))?;
    Ok(Some(base64::engine::general_purpose::STANDARD.encode(png)))
}

/// A flat map as nested rows: (h, w) as a list of rows, (l) as a list.
pub fn nested(map: &[f32], spatial: &[usize]) -> serde_json::Value {
    match spatial {
        [_, w] if *w > 0 => map
            .chunks(*w)
            .map(|r| r.to_vec())
            .collect::<Vec<_>>()
            .into(),
        _ => map.to_vec().into(),
    }
}
