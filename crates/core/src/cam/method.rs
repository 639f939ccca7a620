//! The CAM methods: how each one weighs the activations A at the cut, from the gradients
//! G = dy_c/dA or from extra forward passes, with pytorch-grad-cam 1.5.7's definitions
//! and constants. Sums run over the spatial positions, so every formula is the same on
//! a 1D map's length.

use candle_core::{Tensor, D};

use crate::error::{Error, Result};

/// A CAM method. Every map is then ReLU'd and min-max normalised like Grad-CAM's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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
    /// The first principal component of the centred (positions × channels) A; forward
    /// only and class independent.
    EigenCam,
    /// The first principal component of G ⊙ A.
    EigenGradCam,
    /// w = softmax_k of the target score of the input masked by each channel (upsampled
    /// with align_corners, min-max scaled); one whole-network forward per channel.
    ScoreCam,
    /// w_k = (y − y_k)/y, y_k the target score with channel k zeroed at the cut: only
    /// the network after the cut runs again.
    AblationCam,
}

/// What a method needs besides the activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// One backward pass from the logits to the cut.
    Gradients,
    /// Nothing: the activations alone.
    Activations,
    /// Forward passes of masked inputs through the whole network.
    MaskedInputs,
    /// Forward passes of the tail with one channel zeroed each.
    Ablations,
}

impl Method {
    pub const ALL: [Method; 10] = [
        Method::GradCam,
        Method::GradCamPlusPlus,
        Method::XGradCam,
        Method::HiResCam,
        Method::ElementWise,
        Method::LayerCam,
        Method::EigenCam,
        Method::EigenGradCam,
        Method::ScoreCam,
        Method::AblationCam,
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
            Method::EigenCam => "eigencam",
            Method::EigenGradCam => "eigengradcam",
            Method::ScoreCam => "scorecam",
            Method::AblationCam => "ablationcam",
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

    pub fn needs(self) -> Needs {
        match self {
            Method::EigenCam => Needs::Activations,
            Method::ScoreCam => Needs::MaskedInputs,
            Method::AblationCam => Needs::Ablations,
            _ => Needs::Gradients,
        }
    }

    /// A comma-separated list of names, or `all`.
    pub fn list(names: &str) -> Result<Vec<Method>> {
        if names.trim() == "all" {
            return Ok(Self::ALL.to_vec());
        }
        names
            .split(',')
            .map(|m| Self::from_name(m.trim()))
            .collect()
    }

    /// Reduced by the first principal component rather than a sum over channels.
    pub fn projects(self) -> bool {
        matches!(self, Method::EigenCam | Method::EigenGradCam)
    }

    /// Channels per extra forward pass when the caller gives none: pytorch-grad-cam's.
    pub fn default_batch(self) -> usize {
        match self {
            Method::AblationCam => 32,
            _ => 16,
        }
    }

    /// The weighted activations (N, K, P) of a gradient or activation method, from A and
    /// G (N, K, P) on their device; the map is their sum (or projection) over K.
    pub(crate) fn weighted(self, a: &Tensor, g: Option<&Tensor>) -> Result<Tensor> {
        let Some(g) = g else {
            return Ok(a.clone());
        };
        let w = match self {
            Method::GradCam => g.mean_keepdim(D::Minus1)?,
            Method::HiResCam | Method::EigenGradCam => return Ok((a * g)?),
            Method::ElementWise => return Ok((a * g)?.relu()?),
            Method::LayerCam => return Ok((g.relu()? * a)?),
            Method::XGradCam => {
                let s = (a.sum_keepdim(D::Minus1)? + 1e-7)?;
                (a * g)?.sum_keepdim(D::Minus1)?.broadcast_div(&s)?
            }
            Method::GradCamPlusPlus => {
                // Where G = 0, α = 0 / 1e-6 = 0: pytorch-grad-cam's `np.where` is implied.
                let (g2, g3) = (g.sqr()?, g.powf(3.0)?);
                let s = a.sum_keepdim(D::Minus1)?;
                let denom = ((&g2 * 2.0)? + g3.broadcast_mul(&s)?)?.affine(1.0, 1e-6)?;
                (g.relu()? * (g2 / denom)?)?.sum_keepdim(D::Minus1)?
            }
            Method::EigenCam | Method::ScoreCam | Method::AblationCam => return Ok(a.clone()),
        };
        Ok(a.broadcast_mul(&w)?)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A method with its options, as every front end passes it to the core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CamConfig {
    pub method: Method,
    /// Reduce the weighted activations by their first principal component instead of
    /// summing them (pytorch-grad-cam's `eigen_smooth`).
    pub eigen_smooth: bool,
    /// Average the final maps of six test-time augmentations (flip × input scaled by
    /// 0.9, 1, 1.1), each explained for its own top-1 class unless a class is given
    /// (pytorch-grad-cam's `aug_smooth`). Six times the work.
    pub aug_smooth: bool,
    /// Masked inputs (ScoreCAM) or ablated channels (AblationCAM) per forward pass;
    /// `None`: the method's default. Memory grows with it.
    pub method_batch: Option<usize>,
}

impl CamConfig {
    pub fn new(method: Method) -> Self {
        Self {
            method,
            ..Self::default()
        }
    }

    pub(crate) fn batch(&self) -> usize {
        self.method_batch
            .unwrap_or(self.method.default_batch())
            .max(1)
    }

    pub(crate) fn projects(&self) -> bool {
        self.eigen_smooth || self.method.projects()
    }
}
