use candle_core::{DType, Tensor, Var};
use rayon::prelude::*;

use super::method::{CamConfig, Method, Needs};
use super::perturb;
use super::projection::first_component;
use crate::model::Tail;

use crate::error::{Error, Result};
use crate::model::Network;

/// Which class each sample is explained for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// The top-1 logit of each sample (first maximum, like `np.argmax`).
    TopOne,
    /// The same class for every sample.
    All(usize),
    /// One class per sample; its length must equal the batch.
    PerSample(Vec<usize>),
}

impl Targets {
    /// The targets of sample `i` alone.
    fn of_sample(&self, i: usize) -> Targets {
        match self {
            Targets::PerSample(v) => Targets::All(v[i]),
            other => other.clone(),
        }
    }

    fn resolve(&self, logits: &[Vec<f32>], num_classes: usize) -> Result<Vec<usize>> {
        let n = logits.len();
        let classes = match self {
            Targets::TopOne => logits.iter().map(|l| argmax(l)).collect(),
            Targets::All(c) => vec![*c; n],
            Targets::PerSample(v) => {
                if v.len() != n {
                    return Err(Error::ClassCount {
                        classes: v.len(),
                        batch: n,
                    });
                }
                v.clone()
            }
        };
        if let Some(&c) = classes.iter().find(|&&c| c >= num_classes) {
            return Err(Error::ClassOutOfRange {
                class: c,
                num_classes,
            });
        }
        Ok(classes)
    }
}

/// Index of the first maximum, like `np.argmax`.
pub fn argmax(v: &[f32]) -> usize {
    let Some(&first) = v.first() else {
        return 0;
    };
    // The maximum over 16 lanes (a loop the compiler vectorises: a 720p map is a million
    // values), then its first position. `x > m` skips NaN as the one-pass scan did.
    let mut lanes = [first; 16];
    let chunks = v.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = lanes
        .iter()
        .chain(rest)
        .fold(first, |m, &x| if x > m { x } else { m });
    v.iter().position(|&x| x == max).unwrap_or(0)
}

/// The result for one batch; only low-resolution maps and logits leave the device.
#[derive(Clone, Debug)]
pub struct CamBatch {
    pub logits: Vec<Vec<f32>>,
    pub classes: Vec<usize>,
    /// Signed map before ReLU, `N * prod(spatial)` values.
    pub raw: Vec<f32>,
    /// (h, w) or (l) of the target layer.
    pub spatial: Vec<usize>,
    /// Scores are independent sigmoids (multi-label models), not a softmax.
    pub multi_label: bool,
}

impl CamBatch {
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    pub fn raw_map(&self, i: usize) -> &[f32] {
        let p: usize = self.spatial.iter().product();
        &self.raw[i * p..(i + 1) * p]
    }

    pub fn logit(&self, i: usize) -> f32 {
        self.logits[i][self.classes[i]]
    }

    /// Softmax probability of the explained class (sigmoid score for multi-label models).
    pub fn probability(&self, i: usize) -> f32 {
        probability(&self.logits[i], self.classes[i], self.multi_label)
    }
}

/// Softmax probability of `class` among `logits`, or its sigmoid for multi-label models.
pub fn probability(logits: &[f32], class: usize, multi_label: bool) -> f32 {
    if multi_label {
        return 1.0 / (1.0 + (-logits[class]).exp());
    }
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|x| (x - m).exp()).sum();
    (logits[class] - m).exp() / sum
}

/// A network cut at its target layer, with a CAM method.
pub struct GradCam<'a> {
    net: &'a Network,
    layer: String,
    config: CamConfig,
}

impl<'a> GradCam<'a> {
    pub fn new(net: &'a Network, layer: &str) -> Result<Self> {
        net.body.check_target(layer)?;
        Ok(Self {
            net,
            layer: layer.to_string(),
            config: CamConfig::default(),
        })
    }

    /// Another method than Grad-CAM, with its default options.
    pub fn with_method(self, method: Method) -> Self {
        self.with_config(CamConfig::new(method))
    }

    pub fn with_config(mut self, config: CamConfig) -> Self {
        self.config = config;
        self
    }

    /// Target-layer activations A, computed without any gradient bookkeeping.
    pub fn activations(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.net.body.split(x, &self.layer)?.0)
    }

    /// Forward to the cut, then what the method needs: a backward pass only from the
    /// logits to the activations (A becomes a fresh leaf, so it never enters the layers
    /// before the cut), nothing, masked whole-network passes, or tail-only ablations.
    pub fn run(&self, x: &Tensor, targets: &Targets) -> Result<CamBatch> {
        let method = self.config.method;
        let (a, scored, weighted) = if method.needs() == Needs::Ablations {
            self.ablated(x, targets)?
        } else {
            let (a, tail) = self.net.body.split(x, &self.layer)?;
            let a = a.detach();
            let (scored, g) = if method.needs() == Needs::Gradients {
                let (scored, g) = self.backward(&a, &tail, targets)?;
                (scored, Some(g))
            } else {
                let logits = tail(&a)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
                (Scored::new(logits, targets, self.net.num_classes)?, None)
            };
            let flat = a.flatten_from(2)?;
            let weighted = if method.needs() == Needs::MaskedInputs {
                let w = perturb::score_weights(
                    self.net.body.as_ref(),
                    x,
                    &a,
                    &scored.classes,
                    self.config.batch(),
                )?;
                flat.broadcast_mul(&w)?
            } else {
                let g = g.map(|g| g.flatten_from(2)).transpose()?;
                method.weighted(&flat, g.as_ref())?
            };
            (a, scored, weighted)
        };

        let spatial = a.dims()[2..].to_vec();
        let raw = if self.config.projects() {
            let (n, k, p) = weighted.dims3()?;
            let host = weighted
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            // Samples are independent, and the cores are idle between passes.
            let maps: Vec<Vec<f32>> = (0..n)
                .into_par_iter()
                .map(|i| first_component(&host[i * k * p..(i + 1) * k * p], k, p))
                .collect();
            maps.concat()
        } else {
            weighted.sum(1)?.flatten_all()?.to_vec1::<f32>()? // (N, K, P) -> (N, P)
        };
        Ok(CamBatch {
            logits: scored.logits,
            classes: scored.classes,
            raw,
            spatial,
            multi_label: self.net.multi_label,
        })
    }

    /// Logits, classes and G = d(Σ_n logit[n, c_n])/dA: one backward for the batch.
    fn backward(&self, a: &Tensor, tail: &Tail, targets: &Targets) -> Result<(Scored, Tensor)> {
        let leaf = Var::from_tensor(a)?;
        let logits = tail(leaf.as_tensor())?;
        let scored = Scored::new(
            logits.to_dtype(DType::F32)?.to_vec2()?,
            targets,
            self.net.num_classes,
        )?;
        let (n, k) = (scored.logits.len(), self.net.num_classes);
        let mut onehot = vec![0f32; n * k];
        for (i, &c) in scored.classes.iter().enumerate() {
            onehot[i * k + c] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (n, k), logits.device())?;
        let grads = logits.mul(&onehot)?.sum_all()?.backward()?;
        let g = match grads.get(leaf.as_tensor()) {
            Some(g) => g.clone(),
            None => a.zeros_like()?,
        };
        Ok((scored, g))
    }

    /// AblationCAM, one sample at a time: each sample's own tail runs its ablations.
    /// Returns the activations, the scores and the weighted activations.
    fn ablated(&self, x: &Tensor, targets: &Targets) -> Result<(Tensor, Scored, Tensor)> {
        let n = x.dim(0)?;
        if let Targets::PerSample(v) = targets {
            if v.len() != n {
                return Err(Error::ClassCount {
                    classes: v.len(),
                    batch: n,
                });
            }
        }
        let (mut acts, mut weighted) = (vec![], vec![]);
        let mut scored = Scored {
            logits: vec![],
            classes: vec![],
        };
        for i in 0..n {
            let (a, tail) = self.net.body.split(&x.narrow(0, i, 1)?, &self.layer)?;
            let a = a.detach();
            let l = tail(&a)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            let one = Scored::new(l, &targets.of_sample(i), self.net.num_classes)?;
            let c = one.classes[0];
            let w = perturb::ablation_weights(&a, &tail, one.logits[0][c], c, self.config.batch())?;
            weighted.push(a.flatten_from(2)?.broadcast_mul(&w)?);
            acts.push(a);
            scored.logits.extend(one.logits);
            scored.classes.push(c);
        }
        Ok((Tensor::cat(&acts, 0)?, scored, Tensor::cat(&weighted, 0)?))
    }
}

/// A batch's logits on the host and the class each sample is explained for.
struct Scored {
    logits: Vec<Vec<f32>>,
    classes: Vec<usize>,
}

impl Scored {
    fn new(logits: Vec<Vec<f32>>, targets: &Targets, num_classes: usize) -> Result<Self> {
        let classes = targets.resolve(&logits, num_classes)?;
        Ok(Self { logits, classes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backward gives the cut its gradient and the constants after it none: the
    /// vendored candle-core skips the arguments no variable flows into (a classifier's
    /// weight gradient cost a product and two matrices of its size per batch, unused;
    /// MobileNetV3-Large's Grad-CAM took 1.22x its forward, 1.06x after).
    #[test]
    fn backward_differentiates_only_what_the_cut_flows_into() {
        let dev = candle_core::Device::Cpu;
        let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let w = Tensor::from_vec(w, (4, 3), &dev).unwrap();
        let b = Tensor::new(&[0.1f32, 0.2, 0.3, 0.4], &dev).unwrap();
        let x = Tensor::new(&[[1f32, 2., 3.], [-1., 0.5, 2.]], &dev).unwrap();
        let x = Var::from_tensor(&x).unwrap();
        // The tensors the ops read (a transposed view, a broadcast), as the backward sees them.
        let wt = w.t().unwrap();
        let bb = b.broadcast_as((2, 4)).unwrap();
        let logits = x
            .as_tensor()
            .matmul(&wt)
            .unwrap()
            .add(&bb)
            .unwrap()
            .mul(&bb)
            .unwrap();
        // d(sum of class 2's logits)/dx = b[2] * w[2] in each row.
        let grads = logits
            .narrow(1, 2, 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward();
        let grads = grads.unwrap();
        let g: Vec<Vec<f32>> = grads.get(x.as_tensor()).unwrap().to_vec2().unwrap();
        let want = [1.0f32, 1.5, 2.0].map(|v| 0.3 * v);
        for row in g {
            for (a, b) in row.iter().zip(&want) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
        }
        assert!(grads.get(&wt).is_none(), "the weight got a gradient");
        assert!(grads.get(&bb).is_none(), "the bias got a gradient");
    }

    #[test]
    fn argmax_is_the_first_maximum_as_numpy_finds_it() {
        // The one-pass scan the lane version replaced.
        let scan = |v: &[f32]| {
            let mut best = 0;
            for (i, x) in v.iter().enumerate() {
                if *x > v[best] {
                    best = i;
                }
            }
            best
        };
        let mut v: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 613) as f32).collect();
        assert_eq!(argmax(&v), scan(&v));
        v[995] = 1e6; // in the remainder after the 16-wide chunks
        assert_eq!(argmax(&v), 995);
        v[17] = 1e6; // a tie: the first one
        assert_eq!(argmax(&v), 17);
        v[3] = f32::NAN; // NaN never wins
        assert_eq!(argmax(&v), 17);
        assert_eq!(argmax(&[f32::NAN, 1.0, 2.0]), scan(&[f32::NAN, 1.0, 2.0]));
        assert_eq!(argmax(&[-1.0, -0.0, 0.0]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn class_list_must_match_the_batch() {
        let logits = vec![vec![0.1, 0.9], vec![0.5, 0.2], vec![0.0, 0.0]];
        assert_eq!(Targets::TopOne.resolve(&logits, 2).unwrap(), vec![1, 0, 0]);
        assert_eq!(Targets::All(1).resolve(&logits, 2).unwrap(), vec![1, 1, 1]);
        for short_or_long in [vec![0, 1], vec![0, 1, 1, 0]] {
            let n = short_or_long.len();
            match Targets::PerSample(short_or_long).resolve(&logits, 2) {
                Err(Error::ClassCount { classes, batch }) => assert_eq!((classes, batch), (n, 3)),
                other => panic!("expected a class-count error, got {other:?}"),
            }
        }
        assert!(matches!(
            Targets::All(2).resolve(&logits, 2),
            Err(Error::ClassOutOfRange {
                class: 2,
                num_classes: 2
            })
        ));
    }
}
