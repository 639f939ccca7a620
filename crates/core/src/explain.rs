//! The one way from samples to explanations, used by every front end: batch samples of
//! equal shape, cut the network at the target layer(s), run the CAM method, and return
//! one [`Explanation`] per sample (and per rank, with `top_k`).

use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::cam::augment::AUGMENTATIONS;
use crate::cam::{
    aggregate, heatmap, heatmap_on_source, resize_final, upsample_to_source, CamBatch, CamConfig,
    GradCam, Method, Targets,
};
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
    /// The target layer, or the layers comma-separated.
    pub layer: Arc<str>,
    /// The signed map at the target layer's resolution, before ReLU; with `scaled`, the
    /// final map at the input's size.
    pub raw: Vec<f32>,
    /// (h, w) or (l) of `raw`.
    pub spatial: Vec<usize>,
    /// `raw` is already pytorch-grad-cam's final map in [0, 1] (several layers or
    /// aug-smooth combine final maps), so it must not be normalised again.
    pub scaled: bool,
    /// pytorch-grad-cam's final map at the input's size (ReLU, min-max, resize, min-max);
    /// empty when `ExplainOptions::final_map` is off.
    pub map: Vec<f32>,
    /// Every class by descending logit.
    pub ranked: Vec<usize>,
}

impl Explanation {
    /// The final map at `size`: pytorch-grad-cam's normalisation of `raw`, or `raw` itself
    /// (resized) when it is already final.
    pub fn final_map(&self, size: &[usize]) -> Vec<f32> {
        if self.scaled {
            resize_final(&self.raw, &self.spatial, size)
        } else {
            heatmap(&self.raw, &self.spatial, size)
        }
    }

    /// The final map drawn over the source region of a 2D input (see
    /// [`upsample_to_source`]).
    pub fn on_source(&self, model: [usize; 2], rect: [usize; 4], out: [usize; 2]) -> Vec<f32> {
        if self.scaled {
            upsample_to_source(&self.raw, &self.spatial, model, rect, out, false)
        } else {
            heatmap_on_source(&self.raw, &self.spatial, model, rect, out)
        }
    }
}

/// A network cut at its target layers, ready to explain samples.
#[derive(Clone, Debug)]
pub struct Explainer {
    net: Network,
    layers: Vec<Arc<str>>,
    /// `layers` comma-separated, as records name them.
    layer: Arc<str>,
    config: CamConfig,
}

impl Explainer {
    /// Loads a model and checks the layer (default: the model's own target layer).
    pub fn new(source: &ModelRequest, layer: Option<&str>, device: &Device) -> Result<Self> {
        Self::from_network(Network::load(source, device)?, layer)
    }

    /// Explains an already loaded network at `layer` (default: its own target layer).
    /// Several layers, comma-separated, are combined as pytorch-grad-cam combines them
    /// (see [`aggregate`]); each costs its own pass.
    pub fn from_network(net: Network, layer: Option<&str>) -> Result<Self> {
        let layer = layer.map_or_else(|| net.default_layer.clone(), str::to_string);
        let layers: Vec<Arc<str>> = layer
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(Arc::from)
            .collect();
        if layers.is_empty() {
            return Err(Error::BadOption {
                name: "layer",
                why: format!("`{layer}` names no layer"),
            });
        }
        for l in &layers {
            net.body.check_target(l)?;
        }
        Ok(Self {
            net,
            layer: layers.join(",").into(),
            layers,
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

    /// The target layer, or the layers comma-separated.
    pub fn layer(&self) -> &str {
        &self.layer
    }

    pub fn layers(&self) -> &[Arc<str>] {
        &self.layers
    }

    /// Explanations combine final maps (several layers or aug-smooth), which
    /// [`Explainer::run`] alone does not compute.
    pub fn combines(&self) -> bool {
        self.layers.len() > 1 || self.config.aug_smooth
    }

    fn cam(&self, layer: &str) -> Result<GradCam<'_>> {
        Ok(GradCam::new(&self.net, layer)?.with_config(self.config))
    }

    /// The CAM of one batch tensor `(N, C, spatial...)` at the first target layer,
    /// without aug-smooth: the single pass that [`Explainer::explain`] builds on.
    pub fn run(&self, x: &Tensor, targets: &Targets) -> Result<CamBatch> {
        self.cam(&self.layers[0])?.run(x, targets)
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
            let size = &shape[1..];
            let (b, finals) = self.chunk(&x, &t, size).map_err(|e| match e {
                Error::Candle(c) => Error::InputShape {
                    sample: i,
                    shape: shape.to_vec(),
                    msg: c.to_string(),
                },
                other => other,
            })?;
            let mut finals = finals.map(Vec::into_iter);
            for k in 0..b.len() {
                let mut e = self.explanation(&b, k, i + k, rank);
                if let Some(m) = finals.as_mut().and_then(Iterator::next) {
                    (e.raw, e.spatial, e.scaled) = (m, size.to_vec(), true);
                }
                if options.final_map {
                    e.map = e.final_map(size);
                }
                out.push(e);
            }
            i = j;
        }
        Ok(out)
    }

    /// The first layer's batch for the plain input and, when maps are combined, each
    /// sample's final map at `size`.
    fn chunk(
        &self,
        x: &Tensor,
        targets: &Targets,
        size: &[usize],
    ) -> Result<(CamBatch, Option<Vec<Vec<f32>>>)> {
        let plain = self.run(x, targets)?;
        if !self.combines() {
            return Ok((plain, None));
        }
        if !self.config.aug_smooth {
            let maps = self.layered(x, &plain, size)?;
            return Ok((plain, Some(maps)));
        }
        // pytorch-grad-cam's forward_augmentation_smoothing: each view is explained for
        // the given classes or its own top-1, mapped back, and the final maps averaged.
        let mut sum: Vec<Vec<f32>> = Vec::new();
        for aug in AUGMENTATIONS {
            let mut maps = if aug.is_identity() {
                self.layered(x, &plain, size)?
            } else {
                let xa = aug.apply(x)?;
                self.layered(&xa, &self.run(&xa, targets)?, size)?
            };
            maps.iter_mut().for_each(|m| aug.undo_on_map(m, size));
            if sum.is_empty() {
                sum = maps;
            } else {
                for (s, m) in sum.iter_mut().zip(maps) {
                    s.iter_mut().zip(m).for_each(|(a, v)| *a += v);
                }
            }
        }
        let n = AUGMENTATIONS.len() as f32;
        sum.iter_mut()
            .for_each(|s| s.iter_mut().for_each(|v| *v /= n));
        Ok((plain, Some(sum)))
    }

    /// Every sample's final map at `size`, over all target layers, for the classes the
    /// first layer's batch `first` explained.
    fn layered(&self, x: &Tensor, first: &CamBatch, size: &[usize]) -> Result<Vec<Vec<f32>>> {
        let fixed = Targets::PerSample(first.classes.clone());
        let rest = self.layers[1..]
            .iter()
            .map(|l| self.cam(l)?.run(x, &fixed))
            .collect::<Result<Vec<_>>>()?;
        Ok((0..first.len())
            .map(|k| {
                let maps: Vec<(&[f32], &[usize])> = std::iter::once(first)
                    .chain(&rest)
                    .map(|b| (b.raw_map(k), b.spatial.as_slice()))
                    .collect();
                aggregate(&maps, size)
            })
            .collect())
    }

    /// Sample `k` of `b`; its maps are filled in by the caller.
    fn explanation(&self, b: &CamBatch, k: usize, sample: usize, rank: usize) -> Explanation {
        let l = &b.logits[k];
        let mut ranked: Vec<usize> = (0..l.len()).collect();
        ranked.sort_by(|&x, &y| l[y].total_cmp(&l[x]));
        Explanation {
            sample,
            rank,
            class: b.classes[k],
            label: self.net.label(b.classes[k]),
            logit: b.logit(k),
            probability: b.probability(k),
            layer: self.layer.clone(),
            raw: b.raw_map(k).to_vec(),
            spatial: b.spatial.clone(),
            scaled: false,
            map: Vec::new(),
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
