//! The methods that weigh channels by extra forward passes instead of gradients:
//! ScoreCAM masks the input with each channel, AblationCAM removes each channel at the
//! cut. Both run in chunks of `batch` channels, so memory is bounded by the chunk.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::resize::resize_linear_corners;
use crate::error::{Error, Result};
use crate::model::{Body, Tail};

/// ScoreCAM's channel weights (N, K, 1) = softmax_k of the target logit of x·u_k, u_k
/// channel k of A upsampled to the input (align_corners) and min-max scaled (eps 1e-8).
pub(crate) fn score_weights(
    body: &dyn Body,
    x: &Tensor,
    a: &Tensor,
    classes: &[usize],
    batch: usize,
) -> Result<Tensor> {
    let (n, k) = (a.dim(0)?, a.dim(1)?);
    let spatial = a.dims()[2..].to_vec();
    let p: usize = spatial.iter().product();
    let host = a.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut weights = Vec::with_capacity(n * k);
    for (i, &class) in classes.iter().enumerate().take(n) {
        let channels: Vec<&[f32]> = (0..k)
            .map(|c| &host[(i * k + c) * p..(i * k + c + 1) * p])
            .collect();
        let xi = x.narrow(0, i, 1)?;
        let masks = Masks::new(&xi, &channels, &spatial, class, batch);
        let scores = masks.scores(body, masks.stem(body))?;
        let top = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = scores.iter().map(|s| (s - top).exp()).collect();
        let sum: f32 = e.iter().sum();
        weights.extend(e.iter().map(|v| v / sum));
    }
    Ok(Tensor::from_vec(weights, (n, k, 1), a.device())?.to_dtype(a.dtype())?)
}

/// One sample's ScoreCAM masks: its input, its activation channels, their spatial shape.
struct Masks<'a> {
    x: &'a Tensor,
    channels: &'a [&'a [f32]],
    spatial: &'a [usize],
    /// The input's spatial dims, the masks' shape.
    size: Vec<usize>,
    class: usize,
    batch: usize,
    /// The channels that vary; the others are constant and scale to an all-zero mask.
    varying: Vec<usize>,
    constant: Vec<usize>,
}

impl<'a> Masks<'a> {
    fn new(
        x: &'a Tensor,
        channels: &'a [&'a [f32]],
        spatial: &'a [usize],
        class: usize,
        batch: usize,
    ) -> Self {
        let (varying, constant) =
            (0..channels.len()).partition(|&c| channels[c].iter().any(|&v| v != channels[c][0]));
        Self {
            x,
            channels,
            spatial,
            size: x.dims()[2..].to_vec(),
            class,
            batch,
            varying,
            constant,
        }
    }

    fn target(&self, logits: Tensor) -> Result<Vec<f32>> {
        Ok(logits
            .narrow(1, self.class, 1)?
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1()?)
    }

    /// Channel `c` upsampled to the input and its (min, max - min + 1e-8), from which
    /// the mask is (u - min) / range.
    fn upsampled(&self, c: usize) -> (Vec<f32>, f32, f32) {
        let u = resize_linear_corners(self.channels[c], self.spatial, &self.size);
        let (lo, hi) = u
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        (u, lo, hi - lo + 1e-8)
    }

    /// The stem to run the masks through by its basis (see [`StemBasis`]), where the
    /// body has one and that is cheaper: the basis costs p + 1 passes of the stem, the
    /// masks one each. Only on the CPU: the basis is combined on the host.
    fn stem(&self, body: &dyn Body) -> Option<String> {
        let p: usize = self.spatial.iter().product();
        (self.x.device().is_cpu() && 2 * (p + 1) <= self.varying.len())
            .then(|| body.affine_stem())
            .flatten()
    }

    /// The target score of x·mask for every channel, through `stem`'s basis or with
    /// every masked input through the whole network.
    fn scores(&self, body: &dyn Body, stem: Option<String>) -> Result<Vec<f32>> {
        // A constant channel scales to an all-zero mask: one shared pass of zeros.
        let mut scores = vec![0f32; self.channels.len()];
        let zero_score = match stem {
            Some(stem) => {
                let basis = StemBasis::new(body, self, &stem)?;
                for chunk in self.varying.chunks(self.batch) {
                    let yk = self.target(basis.logits(self, chunk)?)?;
                    chunk.iter().zip(yk).for_each(|(&c, y)| scores[c] = y);
                }
                basis.zero_score
            }
            None => {
                for chunk in self.varying.chunks(self.batch) {
                    let plane: usize = self.size.iter().product();
                    let mut masks = Vec::with_capacity(chunk.len() * plane);
                    for &c in chunk {
                        let (u, lo, range) = self.upsampled(c);
                        masks.extend(u.iter().map(|v| (v - lo) / range));
                    }
                    let mut dims = vec![chunk.len(), 1];
                    dims.extend(&self.size);
                    let masks =
                        Tensor::from_vec(masks, dims, self.x.device())?.to_dtype(self.x.dtype())?;
                    let yk = self.target(body.forward(&self.x.broadcast_mul(&masks)?)?)?;
                    chunk.iter().zip(yk).for_each(|(&c, y)| scores[c] = y);
                }
                match self.constant.is_empty() {
                    true => 0.0,
                    false => self.target(body.forward(&self.x.zeros_like()?)?)?[0],
                }
            }
        };
        self.constant.iter().for_each(|&c| scores[c] = zero_score);
        Ok(scores)
    }
}

/// ScoreCAM through an affine stem. A mask is bilinear in its p activation values, so
/// with b_j the upsampled j-th unit map (the b_j sum to one everywhere) a channel's mask
/// is Σ_j c_j·b_j with c_j = (a_j − min)/range, and a stem S(x) = L(x) + s0 that is
/// affine in its input answers S(x·mask) = s0 + Σ_j c_j·(S(x·b_j) − s0). So the stem
/// runs p + 1 times instead of once per channel (p = 49 against 512 at ResNet's
/// `layer4`), and each b_j's response is zero outside its own neighbourhood: it is kept
/// as the spans of its rows that are not zero, and a channel's stem output costs about
/// one write of that output.
struct StemBasis<'s> {
    /// The stem's output for the zero input: its bias, per position.
    s0: Vec<f32>,
    /// Its dims (batch dim excluded); rows are spans of the last dim.
    dims: Vec<usize>,
    /// Per row of the stem output: (basis index, start, offset into `values`, length).
    spans: Vec<Vec<(usize, usize, usize, usize)>>,
    values: Vec<f32>,
    tail: Tail<'s>,
    zero_score: f32,
}

impl<'s> StemBasis<'s> {
    fn new(body: &'s dyn Body, masks: &Masks, stem: &str) -> Result<Self> {
        let (s0, tail) = body.split(&masks.x.zeros_like()?, stem)?;
        let zero_score = masks.target(tail(&s0)?)?[0];
        let dims = s0.dims()[1..].to_vec();
        let s0 = s0.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let width = *dims.last().unwrap_or(&1);
        let mut basis = Self {
            spans: vec![Vec::new(); s0.len() / width.max(1)],
            s0,
            dims,
            values: Vec::new(),
            tail,
            zero_score,
        };
        let p: usize = masks.spatial.iter().product();
        let size = &masks.size;
        let all: Vec<usize> = (0..p).collect();
        for chunk in all.chunks(masks.batch) {
            let mut unit = vec![0f32; p];
            let mut b = Vec::with_capacity(chunk.len() * size.iter().product::<usize>());
            for &j in chunk {
                unit[j] = 1.0;
                b.extend(resize_linear_corners(&unit, masks.spatial, size));
                unit[j] = 0.0;
            }
            let mut bdims = vec![chunk.len(), 1];
            bdims.extend(size);
            let b = Tensor::from_vec(b, bdims, masks.x.device())?.to_dtype(masks.x.dtype())?;
            let (out, _) = body.split(&masks.x.broadcast_mul(&b)?, stem)?;
            let out = out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            for (&j, response) in chunk.iter().zip(out.chunks(basis.s0.len())) {
                basis.keep(j, response, width);
            }
        }
        Ok(basis)
    }

    /// Keeps basis `j`'s response minus the bias, row by row, where it is not zero.
    fn keep(&mut self, j: usize, response: &[f32], width: usize) {
        let rows = response.chunks(width).zip(self.s0.chunks(width));
        for (r, (row, bias)) in rows.enumerate() {
            let live = |(&v, &b): (&f32, &f32)| v != b;
            let Some(first) = row.iter().zip(bias).position(live) else {
                continue;
            };
            let last = width - 1 - row.iter().zip(bias).rev().position(live).unwrap_or(0);
            self.spans[r].push((j, first, self.values.len(), last + 1 - first));
            let delta = row[first..=last].iter().zip(&bias[first..=last]);
            self.values.extend(delta.map(|(v, b)| v - b));
        }
    }

    /// The logits of x·mask_c for the channels in `chunk`, the stem's part formed here.
    fn logits(&self, masks: &Masks, chunk: &[usize]) -> Result<Tensor> {
        let p: usize = masks.spatial.iter().product();
        let mut coefs = Vec::with_capacity(chunk.len() * p);
        for &c in chunk {
            let (_, lo, range) = masks.upsampled(c);
            coefs.extend(masks.channels[c].iter().map(|v| (v - lo) / range));
        }
        let len = self.s0.len();
        let width = len / self.spans.len().max(1);
        // Blocks of rows for all masks at once, so each row's basis spans are read from
        // memory once per chunk, not once per mask.
        const ROWS: usize = 32;
        let mut out = vec![0f32; chunk.len() * len];
        let mut blocks: Vec<Vec<&mut [f32]>> = (0..self.spans.len().div_ceil(ROWS))
            .map(|_| Vec::with_capacity(chunk.len()))
            .collect();
        for dst in out.chunks_mut(len) {
            for (block, part) in blocks.iter_mut().zip(dst.chunks_mut(ROWS * width)) {
                block.push(part);
            }
        }
        let (s0, spans, values) = (&self.s0, &self.spans, &self.values);
        blocks
            .into_par_iter()
            .enumerate()
            .for_each(|(b, mut parts)| {
                let rows = spans[b * ROWS..].iter().take(ROWS);
                for (r, row_spans) in rows.enumerate() {
                    let bias = &s0[(b * ROWS + r) * width..][..width];
                    for (part, c) in parts.iter_mut().zip(coefs.chunks(p)) {
                        let row = &mut part[r * width..][..width];
                        row.copy_from_slice(bias);
                        for &(j, start, at, n) in row_spans {
                            if c[j] != 0.0 {
                                let src = &values[at..at + n];
                                for (d, v) in row[start..start + n].iter_mut().zip(src) {
                                    *d += c[j] * v;
                                }
                            }
                        }
                    }
                }
            });
        let mut dims = vec![chunk.len()];
        dims.extend(&self.dims);
        let stem = Tensor::from_vec(out, dims, masks.x.device())?;
        (self.tail)(&stem.to_dtype(masks.x.dtype())?)
    }
}

/// AblationCAM's channel weights (1, K, 1) of one sample: w_k = (y − y_k)/y, y_k the
/// target logit with channel k of `a` (1, K, ...) zeroed, from the tail alone. A channel
/// that is zero already changes nothing: w_k = 0 without a pass.
pub(crate) fn ablation_weights(
    a: &Tensor,
    tail: &Tail,
    y: f32,
    class: usize,
    batch: usize,
) -> Result<Tensor> {
    if y == 0.0 {
        return Err(Error::BadOption {
            name: "method",
            why: format!(
                "ablationcam divides by the target score, and class {class} scores exactly 0"
            ),
        });
    }
    let k = a.dim(1)?;
    let host = a.to_dtype(DType::F32)?.flatten_from(1)?.to_vec2::<f32>()?;
    let p = host[0].len() / k;
    let live: Vec<usize> = (0..k)
        .filter(|&c| host[0][c * p..(c + 1) * p].iter().any(|&v| v != 0.0))
        .collect();
    let mut w = vec![0f32; k];
    for chunk in live.chunks(batch) {
        let mut keep = vec![1f32; chunk.len() * k];
        for (row, &c) in chunk.iter().enumerate() {
            keep[row * k + c] = 0.0;
        }
        let mut dims = vec![chunk.len(), k];
        dims.extend(std::iter::repeat_n(1, a.rank() - 2));
        let keep = Tensor::from_vec(keep, dims, a.device())?.to_dtype(a.dtype())?;
        let logits = tail(&a.broadcast_mul(&keep)?)?;
        let yk = logits
            .narrow(1, class, 1)?
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        for (&c, s) in chunk.iter().zip(yk) {
            w[c] = (y - s) / y;
        }
    }
    Ok(Tensor::from_vec(w, (1, k, 1), a.device())?.to_dtype(a.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::resnet;
    use candle_core::Device;
    use rand::Rng;

    /// Scores of `x`'s masks at `layer` through the stem route equal those of running
    /// every masked input whole (within 1e-5 of the largest), and the masks matter.
    fn assert_stem_route_matches(
        net: &crate::model::Network,
        x: &Tensor,
        layer: &str,
        class: usize,
        chosen: bool,
    ) {
        let stem = net.body.affine_stem().expect("an affine stem");
        let (a, _) = net.body.split(x, layer).unwrap();
        let spatial = a.dims()[2..].to_vec();
        let p: usize = spatial.iter().product();
        let host = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let channels: Vec<&[f32]> = host.chunks(p).collect();
        let masks = Masks::new(x, &channels, &spatial, class, 32);
        // Whether `scores` would take the route by itself (enough channels per basis map).
        assert_eq!(
            masks.stem(net.body.as_ref()).is_some(),
            chosen,
            "route chosen"
        );
        let whole = masks.scores(net.body.as_ref(), None).unwrap();
        let via = masks.scores(net.body.as_ref(), Some(stem)).unwrap();
        let scale = whole.iter().fold(1f32, |m, v| m.max(v.abs()));
        let spread = whole.iter().fold(f32::MIN, |m, &v| m.max(v))
            - whole.iter().fold(f32::MAX, |m, &v| m.min(v));
        assert!(spread > 1e-3 * scale, "masks must change the score");
        for (c, (w, s)) in whole.iter().zip(&via).enumerate() {
            assert!((w - s).abs() <= 1e-5 * scale, "channel {c}: {w} vs {s}");
        }
    }

    fn input(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::random::rng(seed);
        let v: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The stem route gives the scores of running every masked input whole. ResNet-18
    /// (random weights) at `layer3` of a 64x64 input: 256 channels at 4x4, so 16 basis
    /// maps that overlap, on a stem (conv1 7x7/2 with bn1 folded) with zero padding.
    #[test]
    fn stem_basis_matches_whole_passes() {
        let dev = Device::Cpu;
        let w = resnet::random_weights("resnet18", 10, 7, &dev).unwrap();
        let net = resnet::build_builtin("resnet18", &w, &dev).unwrap();
        assert_eq!(net.body.affine_stem().as_deref(), Some("bn1"));
        assert_stem_route_matches(&net, &input(&[1, 3, 64, 64], 3), "layer3", 3, true);
    }

    /// The same for a video model: r3d_18 (portable random weights) on a 4x16x16 clip at
    /// `layer2` (128 channels at 2x4x4: 32 trilinear basis volumes that overlap), the
    /// stem a 3x7x7 Conv3d with its BatchNorm folded.
    #[test]
    fn stem_basis_matches_whole_passes_on_clips() {
        let dev = Device::Cpu;
        let w = crate::model::video_resnet::random_weights("r3d_18", 10, 1, &dev).unwrap();
        let net = crate::model::video_resnet::build("r3d_18", &w, &dev).unwrap();
        assert_eq!(net.body.affine_stem().as_deref(), Some("stem.1"));
        assert_stem_route_matches(&net, &input(&[1, 3, 4, 16, 16], 4), "layer2", 3, true);
    }

    /// The same through an ONNX graph (the shapes CNN, BN folded by the exporter): its
    /// first Conv's output is the stem, and the tail runs from it.
    #[cfg(feature = "onnx")]
    #[test]
    fn onnx_stem_basis_matches_whole_passes() {
        use crate::model::{ModelRequest, ModelSource, Network};
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/shapes/shapes_cnn.onnx");
        let req = ModelRequest::new(ModelSource::Onnx(file));
        let net = Network::load(&req, &Device::Cpu).unwrap();
        let layer = net.default_layer.clone();
        // 64 channels at 8x8: too few for the route to be chosen, forced here.
        assert_stem_route_matches(&net, &input(&[1, 3, 64, 64], 5), &layer, 1, false);
    }
}
