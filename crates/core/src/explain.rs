//! The one way from samples to explanations, used by every front end: batch samples of
//! equal shape, cut the network at the target layer, run Grad-CAM, and return one
//! [`Explanation`] per sample (and per rank, with `top_k`).

use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::cam::{heatmap, CamBatch, CamConfig, GradCam, Method, Targets};
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
    config: CamConfig,
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
            config: CamConfig::default(),
        })
    }

    /// Explains with another method than Grad-CAM, with its default options.
    pub fn with_method(self, method: Method) -> Self {
        self.with_config(CamConfig::new(method))
    }

    /// Explains with a method and its options.
    pub fn with_config(mut self, config: CamConfig) -> Self {
        self.config = config;
        self
    }

    pub fn method(&self) -> Method {
        self.config.method
    }

    pub fn config(&self) -> &CamConfig {
        &self.config
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    pub fn layer(&self) -> &str {
        &self.layer
    }

    fn cam(&self) -> Result<GradCam<'_>> {
        Ok(GradCam::new(&self.net, &self.layer)?.with_config(self.config))
    }

    /// The CAM of one batch tensor `(N, C, spatial...)`, for front ends that build
    /// their batches themselves.
    pub fn run(&self, x: &Tensor, targets: &Targets) -> Result<CamBatch> {
        self.cam()?.run(x, targets)
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
        let cam = self.cam()?;
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
            let mut data = Vec::with_capacity(chunk.len() * shape.iter().product::<usize>());
            for s in chunk {
                data.extend_from_slice(s.data);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::resnet;

    fn explainer() -> Explainer {
        let cpu = Device::Cpu;
        let w = resnet::random_weights("resnet18", 5, 3, &cpu).unwrap();
        let net = resnet::build_builtin("resnet18", &w, &cpu).unwrap();
        Explainer::from_network(net, Some("layer3")).unwrap()
    }

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000)
            .map(|v| v as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn batches_by_shape_keeps_order_and_equals_one_tensor_runs() {
        let ex = explainer();
        let (a, b) = ([3, 64, 64], [3, 32, 48]);
        let data = [
            noise(3 * 64 * 64, 1),
            noise(3 * 32 * 48, 2),
            noise(3 * 64 * 64, 3),
        ];
        let inputs = [
            Input::new(&data[0], &a),
            Input::new(&data[1], &b),
            Input::new(&data[2], &a),
        ];
        let opts = ExplainOptions {
            batch: 8,
            top_k: 2,
            final_map: true,
        };
        let out = ex.explain(&inputs, &Targets::TopOne, &opts).unwrap();
        let order: Vec<(usize, usize)> = out.iter().map(|e| (e.sample, e.rank)).collect();
        assert_eq!(order, [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]);
        for (i, e) in out.iter().enumerate().filter(|(_, e)| e.rank == 1) {
            // The same sample alone, as a batch of one, through the cut network.
            let shape = inputs[e.sample].shape;
            let mut dims = vec![1];
            dims.extend(shape);
            let x = Tensor::from_vec(inputs[e.sample].data.to_vec(), dims, &Device::Cpu).unwrap();
            let one = ex.run(&x, &Targets::TopOne).unwrap();
            assert_eq!(e.class, one.classes[0]);
            let d = e
                .raw
                .iter()
                .zip(one.raw_map(0))
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max);
            assert!(d < 1e-4, "sample {}: raw maps differ by {d}", e.sample);
            assert_eq!(e.map.len(), shape[1] * shape[2]);
            assert_eq!(&*e.layer, "layer3");
            // Rank 2 explains the second-best class of the same sample.
            assert_eq!(out[i + 1].class, e.ranked[1]);
        }
    }

    #[test]
    fn class_lists_and_top_k_are_checked() {
        let ex = explainer();
        let d = noise(3 * 32 * 32, 9);
        let inputs = [Input::new(&d, &[3, 32, 32]), Input::new(&d, &[3, 32, 32])];
        let opts = ExplainOptions::default();
        let e = ex.explain(&inputs, &Targets::PerSample(vec![1]), &opts);
        assert!(matches!(
            e,
            Err(Error::ClassCount {
                classes: 1,
                batch: 2
            })
        ));
        let top = ExplainOptions { top_k: 2, ..opts };
        let e = ex.explain(&inputs, &Targets::All(1), &top).unwrap_err();
        assert!(e.to_string().starts_with("`top_k`"), "{e}");
        let short = [Input::new(&d[1..], &[3, 32, 32])];
        let e = ex.explain(&short, &Targets::TopOne, &ExplainOptions::default());
        assert!(
            matches!(e, Err(Error::InputShape { sample: 0, .. })),
            "{e:?}"
        );
    }
}
