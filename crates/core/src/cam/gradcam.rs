use candle_core::{DType, Tensor, Var, D};

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
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
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
        let l = &self.logits[i];
        if self.multi_label {
            return 1.0 / (1.0 + (-l[self.classes[i]]).exp());
        }
        let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = l.iter().map(|x| (x - m).exp()).sum();
        (l[self.classes[i]] - m).exp() / sum
    }
}

/// How a gradient CAM combines the activations A and the gradients G = dy_c/dA at the
/// cut, with pytorch-grad-cam 1.5.7's definitions and constants (sums over the spatial
/// positions; the same formulas over a 1D map's length). Every map is then ReLU'd and
/// min-max normalised like Grad-CAM's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// w_k = mean G_k; map = Σ_k w_k A_k.
    #[default]
    GradCam,
    /// α = G² / (2G² + ΣA·G³ + 1e-6); w_k = Σ ReLU(G_k)·α_k; map = Σ_k w_k A_k.
    GradCamPlusPlus,
    /// w_k = Σ G_k·A_k / (ΣA_k + 1e-7); map = Σ_k w_k A_k.
    XGradCam,
    /// map = Σ_k G_k ⊙ A_k.
    HiResCam,
    /// map = Σ_k ReLU(G_k ⊙ A_k) (pytorch-grad-cam's GradCAMElementWise).
    ElementWise,
    /// map = Σ_k ReLU(G_k) ⊙ A_k.
    LayerCam,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::GradCam,
        Method::GradCamPlusPlus,
        Method::XGradCam,
        Method::HiResCam,
        Method::ElementWise,
        Method::LayerCam,
    ];

    /// The name a user types (`gradcam++`, ...), the same in every front end.
    pub fn name(self) -> &'static str {
        match self {
            Method::GradCam => "gradcam",
            Method::GradCamPlusPlus => "gradcam++",
            Method::XGradCam => "xgradcam",
            Method::HiResCam => "hirescam",
            Method::ElementWise => "elementwise",
            Method::LayerCam => "layercam",
        }
    }

    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| Error::Unsupported {
                what: "CAM method",
                name: name.to_string(),
                supported: Self::ALL.iter().map(|m| m.name().to_string()).collect(),
            })
    }

    /// The signed map (N, P) from activations and gradients (N, K, P), on their device.
    fn map(self, a: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        let weighted = |w: Tensor| a.broadcast_mul(&w)?.sum(1);
        match self {
            Method::GradCam => weighted(g.mean_keepdim(D::Minus1)?),
            Method::HiResCam => (a * g)?.sum(1),
            Method::ElementWise => (a * g)?.relu()?.sum(1),
            Method::LayerCam => (g.relu()? * a)?.sum(1),
            Method::XGradCam => {
                let s = (a.sum_keepdim(D::Minus1)? + 1e-7)?;
                weighted((a * g)?.sum_keepdim(D::Minus1)?.broadcast_div(&s)?)
            }
            Method::GradCamPlusPlus => {
                // Where G = 0, α = 0 / 1e-6 = 0: pytorch-grad-cam's `np.where` is implied.
                let (g2, g3) = (g.sqr()?, g.powf(3.0)?);
                let s = a.sum_keepdim(D::Minus1)?;
                let denom = ((&g2 * 2.0)? + g3.broadcast_mul(&s)?)?.affine(1.0, 1e-6)?;
                weighted((g.relu()? * (g2 / denom)?)?.sum_keepdim(D::Minus1)?)
            }
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A network cut at its target layer.
pub struct GradCam<'a> {
    net: &'a Network,
    layer: String,
    method: Method,
}

impl<'a> GradCam<'a> {
    pub fn new(net: &'a Network, layer: &str) -> Result<Self> {
        net.body.check_target(layer)?;
        Ok(Self {
            net,
            layer: layer.to_string(),
            method: Method::GradCam,
        })
    }

    /// Another gradient method than Grad-CAM (same cut, same one backward pass).
    pub fn with_method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Target-layer activations A, computed without any gradient bookkeeping.
    pub fn activations(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.net.body.split(x, &self.layer)?.0)
    }

    /// Forward to the cut, then back-propagate only from the logits to the activations:
    /// A becomes a fresh leaf, so the backward pass never enters the layers before it.
    pub fn run(&self, x: &Tensor, targets: &Targets) -> Result<CamBatch> {
        let (a, tail) = self.net.body.split(x, &self.layer)?;
        let a = a.detach();
        let leaf = Var::from_tensor(&a)?;
        let logits = tail(leaf.as_tensor())?;
        let host_logits: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
        let classes = targets.resolve(&host_logits, self.net.num_classes)?;

        // Score = sum_n logit[n, c_n]: one backward for the whole batch.
        let (n, k) = (host_logits.len(), self.net.num_classes);
        let mut onehot = vec![0f32; n * k];
        for (i, &c) in classes.iter().enumerate() {
            onehot[i * k + c] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (n, k), logits.device())?;
        let score = logits.mul(&onehot)?.sum_all()?;
        let grads = score.backward()?;
        let g = match grads.get(leaf.as_tensor()) {
            Some(g) => g.clone(),
            None => a.zeros_like()?,
        };

        let spatial = a.dims()[2..].to_vec();
        let raw = self.method.map(&a.flatten_from(2)?, &g.flatten_from(2)?)?; // (N, K, P) -> (N, P)
        let raw = raw.flatten_all()?.to_vec1::<f32>()?;
        Ok(CamBatch {
            logits: host_logits,
            classes,
            raw,
            spatial,
            multi_label: self.net.multi_label,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
