//! The methods that weigh channels by extra forward passes instead of gradients:
//! ScoreCAM masks the input with each channel, AblationCAM removes each channel at the
//! cut. Both run in chunks of `batch` channels, so memory is bounded by the chunk.

use candle_core::{DType, Tensor};

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
    let size = x.dims()[2..].to_vec();
    let p: usize = spatial.iter().product();
    let host = a.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut weights = Vec::with_capacity(n * k);
    for (i, &class) in classes.iter().enumerate().take(n) {
        let xi = x.narrow(0, i, 1)?;
        let score = |logits: Tensor| -> Result<Vec<f32>> {
            Ok(logits
                .narrow(1, class, 1)?
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1()?)
        };
        // A constant channel scales to an all-zero mask: one shared forward of zeros.
        let mut zero_score = None;
        let mut scores = vec![0f32; k];
        let channels: Vec<&[f32]> = (0..k)
            .map(|c| &host[(i * k + c) * p..(i * k + c + 1) * p])
            .collect();
        let (varying, constant): (Vec<usize>, Vec<usize>) =
            (0..k).partition(|&c| channels[c].iter().any(|&v| v != channels[c][0]));
        for c in constant {
            if zero_score.is_none() {
                zero_score = Some(score(body.forward(&xi.zeros_like()?)?)?[0]);
            }
            scores[c] = zero_score.unwrap_or_default();
        }
        for chunk in varying.chunks(batch) {
            let mut masks = Vec::with_capacity(chunk.len() * size.iter().product::<usize>());
            for &c in chunk {
                let mut u = resize_linear_corners(channels[c], &spatial, &size);
                let (lo, hi) = u
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                u.iter_mut().for_each(|v| *v = (*v - lo) / (hi - lo + 1e-8));
                masks.extend(u);
            }
            let mut dims = vec![chunk.len(), 1];
            dims.extend(&size);
            let masks = Tensor::from_vec(masks, dims, x.device())?.to_dtype(x.dtype())?;
            for (&c, s) in chunk
                .iter()
                .zip(score(body.forward(&xi.broadcast_mul(&masks)?)?)?)
            {
                scores[c] = s;
            }
        }
        let top = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = scores.iter().map(|s| (s - top).exp()).collect();
        let sum: f32 = e.iter().sum();
        weights.extend(e.iter().map(|v| v / sum));
    }
    Ok(Tensor::from_vec(weights, (n, k, 1), a.device())?.to_dtype(a.dtype())?)
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
