//! The one way from samples to explanations, used by every front end: batch samples of
//! equal shape, cut the network at the target layer, run Grad-CAM, and return one
//! [`Explanation`] per sample (and per rank, with `top_k`).

use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::cam::{heatmap, CamBatch, GradCam, Targets};
use crate::error::{Error, Result};
use crate::model::{ModelRequest, Network};

/// One model input: `(C, spatial...)` values, as the network takes them.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub data: &'a [f32],
    pub shape: &'a [usize],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [f32], shape: &'a [usize]) -> Self {
        Self { data, shape }
    }
}

/// How [`Explainer::explain`] runs.
#[derive(Clone, Debug)]
pub struct ExplainOptions {
    /// Samples per forward/backward pass.
    pub batch: usize,
    /// Explain each sample's `top_k` best classes (needs `Targets::TopOne`).
    pub top_k: usize,
    /// Compute [`Explanation::map`], the final map at the input's size. Streaming front
    /// ends that draw at another size leave it off.
    pub final_map: bool,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        Self {
            batch: 8,
            top_k: 1,
            final_map: true,
        }
    }
}

/// One sample explained for one class.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// Which input this explains (its position in the slice given to `explain`).
    pub sample: usize,
    /// 1 for the explained (or top-1) class, 2 for the second best, ... with `top_k`.
    pub rank: usize,
    pub class: usize,
    pub label: String,
    pub logit: f32,
    /// Softmax probability (sigmoid score for multi-label models) of `class`.
    pub probability: f32,
    pub layer: Arc<str>,
    /// The signed map at the target layer's resolution, before ReLU.
    pub raw: Vec<f32>,
    /// (h, w) or (l) of `raw`.
    pub spatial: Vec<usize>,
    /// pytorch-grad-cam's final map at the input's size (ReLU, min-max, resize, min-max);
    /// empty when `ExplainOptions::final_map` is off.
    pub map: Vec<f32>,
    /// Every class by descending logit.
    pub ranked: Vec<usize>,
}

/// A network cut at one target layer, ready to explain samples.
#[derive(Clone, Debug)]
pub struct Explainer {
    net: Network,
    layer: Arc<str>,
}

impl Explainer {
    /// Loads a model and checks the layer (default: the model's own target layer).
    pub fn new(source: &ModelRequest, layer: Option<&str>, device: &Device) -> Result<Self> {
        Self::from_network(Network::load(source, device)?, layer)
    }

    /// Explains an already loaded network at `layer` (default: its own target layer).
    pub fn from_network(net: Network, layer: Option<&str>) -> Result<Self> {
        let layer = layer.map_or_else(|| net.default_layer.clone(), str::to_string);
        net.body.check_target(&layer)?;
        Ok(Self {
            net,
            layer: layer.into(),
        })
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    pub fn layer(&self) -> &str {
        &self.layer
    }

    /// The Grad-CAM of one batch tensor `(N, C, spatial...)`, for front ends that build
    /// their batches themselves.
    pub fn run(&self, x: &Tensor, targets: &Targets) -> Result<CamBatch> {
        GradCam::new(&self.net, &self.layer)?.run(x, targets)
    }

    /// Explains `inputs`, batching consecutive inputs of equal shape. The result is in
    /// input order; with `top_k` > 1, each input's explanations follow by rank.
    pub fn explain(
        &self,
        inputs: &[Input],
        targets: &Targets,
        options: &ExplainOptions,
    ) -> Result<Vec<Explanation>> {
        let top_k = options.top_k.clamp(1, self.net.num_classes.max(1));
        if top_k > 1 && *targets != Targets::TopOne {
            return Err(Error::BadOption {
                name: "top_k",
                why: "ranks the model's own classes; it cannot be combined with given classes"
                    .into(),
            });
        }
        if let Targets::PerSample(v) = targets {
            if v.len() != inputs.len() {
                return Err(Error::ClassCount {
                    classes: v.len(),
                    batch: inputs.len(),
                });
            }
        }
        let first = self.pass(inputs, targets, options, 1)?;
        if top_k == 1 {
            return Ok(first);
        }
        let mut ranks = vec![first];
        for r in 1..top_k {
            let t = Targets::PerSample(ranks[0].iter().map(|e| e.ranked[r]).collect());
            ranks.push(self.pass(inputs, &t, options, r + 1)?);
        }
        let mut out = Vec::with_capacity(inputs.len() * top_k);
        let mut iters: Vec<_> = ranks.into_iter().map(Vec::into_iter).collect();
        for _ in 0..inputs.len() {
            out.extend(iters.iter_mut().filter_map(Iterator::next));
        }
        Ok(out)
    }

    /// One pass over every input for the given targets.
    fn pass(
        &self,
        inputs: &[Input],
        targets: &Targets,
        options: &ExplainOptions,
        rank: usize,
    ) -> Result<Vec<Explanation>> {
        let cam = GradCam::new(&self.net, &self.layer)?;
        let batch = options.batch.max(1);
        let mut out = Vec::with_capacity(inputs.len());
        let mut i = 0;
        while i < inputs.len() {
            let mut j = i + 1;
            while j < inputs.len() && j - i < batch && inputs[j].shape == inputs[i].shape {
                j += 1;
            }
            let chunk = &inputs[i..j];
            let shape = chunk[0].shape;
            for (k, s) in chunk.iter().enumerate() {
                if s.data.len() != shape.iter().product::<usize>() {
                    return Err(Error::InputShape {
                        sample: i + k,
                        shape: shape.to_vec(),
                        msg: format!("{} values for that shape", s.data.len()),
                    });
                }
            }
            let mut dims = vec![chunk.len()];
            dims.extend(shape);
            let data: Vec<f32> = chunk.iter().flat_map(|s| s.data.iter().copied()).collect();
            let x = Tensor::from_vec(data, dims, &self.net.device)?;
            let t = match targets {
                Targets::PerSample(v) => Targets::PerSample(v[i..j].to_vec()),
                other => other.clone(),
            };
            let b = cam.run(&x, &t).map_err(|e| match e {
                Error::Candle(c) => Error::InputShape {
                    sample: i,
                    shape: shape.to_vec(),
                    msg: c.to_string(),
                },
                other => other,
            })?;
            for k in 0..b.len() {
                out.push(self.explanation(&b, k, i + k, rank, &shape[1..], options));
            }
            i = j;
        }
        Ok(out)
    }

    fn explanation(
        &self,
        b: &CamBatch,
        k: usize,
        sample: usize,
        rank: usize,
        input_size: &[usize],
        options: &ExplainOptions,
    ) -> Explanation {
        let l = &b.logits[k];
        let mut ranked: Vec<usize> = (0..l.len()).collect();
        ranked.sort_by(|&x, &y| l[y].total_cmp(&l[x]));
        let raw = b.raw_map(k).to_vec();
        let map = if options.final_map {
            heatmap(&raw, &b.spatial, input_size)
        } else {
            Vec::new()
        };
        Explanation {
            sample,
            rank,
            class: b.classes[k],
            label: self.net.label(b.classes[k]),
            logit: b.logit(k),
            probability: b.probability(k),
            layer: self.layer.clone(),
            raw,
            spatial: b.spatial.clone(),
            map,
            ranked,
        }
    }
}
