//! The model stage for video models (3D CNNs over clips). Every `step`-th frame is a
//! sample; clips are `len` consecutive samples, one every `stride` samples, explained
//! `batch` clips at a time. Each frame is drawn with the slice of its clip's map at its
//! own time position (the (t, h, w) map resized in time to `len` slices, as
//! pytorch-grad-cam resizes 5-D maps), averaged over the clips that cover it, as the
//! signal pipeline averages overlapping windows; its label is the clip's whose middle is
//! nearest. A frame waits only until no later clip can cover it, so memory holds about
//! `(len + batch * stride) * step` frames, never the video.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use camstream_core::cam::resize_final;
use camstream_core::record::ClipRecord;
use camstream_core::{Explainer, Explanation, Input};

use super::stages::{Explained, Explaining, FrameMap, ModelConfig, Prepared};
use crate::{inject, Busy, PipelineError, Stage, StageCtl as Ctl};

/// How a video model's clips are cut from the frames (`None`: the model's own length;
/// the stride defaults to the length, clips side by side).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClipSampling {
    /// Samples per clip.
    pub len: Option<usize>,
    /// Samples from one clip's start to the next's (at most `len`, so every frame is
    /// covered).
    pub stride: Option<usize>,
    /// Take every `step`-th frame as a sample, as video models are trained (0 = 1).
    pub step: usize,
}

impl ClipSampling {
    /// (len, stride, step), checked, with `model_len` the network's own clip length.
    pub fn resolve(&self, model_len: usize) -> Result<[usize; 3], PipelineError> {
        let len = self.len.unwrap_or(model_len);
        let stride = self.stride.unwrap_or(len);
        let bad = |name, why: String| PipelineError::BadOption { name, why };
        if len == 0 {
            return Err(bad("clip_len", "must be at least 1".into()));
        }
        if stride == 0 || stride > len {
            return Err(bad(
                "clip_stride",
                format!("must be within 1..={len} (the clip length), so that every frame lies in a clip; got {stride}"),
            ));
        }
        Ok([len, stride, self.step.max(1)])
    }
}

/// A frame waiting for the clips that cover it, with the sum of their slices.
struct Slot {
    p: Prepared,
    /// Its sample position: frame index / step.
    q: u64,
    sum: Vec<f32>,
    n: u32,
    /// (distance of the clip's middle, the clip's map) of the nearest clip so far.
    nearest: Option<(u64, FrameMap)>,
    /// Clips that start at this frame.
    clips: Vec<ClipRecord>,
}

pub(super) struct ClipStage<'a> {
    ex: Explaining<'a>,
    len: usize,
    stride: usize,
    step: u64,
    frames: VecDeque<Slot>,
    /// Starts (sample positions) of the clips formed and not yet explained.
    formed: Vec<u64>,
    next_start: u64,
    /// The end (exclusive) of the last clip formed.
    covered_to: u64,
    clips_done: u64,
}

impl<'a> ClipStage<'a> {
    /// (len, stride, step) for this model, or the error of options that do not apply to
    /// clips; checked before a file job opens anything, and by `new`.
    pub fn settings(
        explainer: &Explainer,
        config: &ModelConfig,
    ) -> Result<[usize; 3], PipelineError> {
        let model_len = explainer.network().input.size[0];
        if config.every > 1 {
            return Err(PipelineError::BadOption {
                name: "every",
                why: "is for frame models; a video model explains clips: choose `clip_stride` and `frame_step` instead"
                    .into(),
            });
        }
        if config.metrics.is_some() {
            return Err(PipelineError::BadOption {
                name: "metrics",
                why: "(faithfulness) are for frame models, not clips".into(),
            });
        }
        config.clips.resolve(model_len)
    }

    pub fn new(ex: Explaining<'a>) -> Result<Self, PipelineError> {
        let [len, stride, step] = Self::settings(ex.explainer, ex.config)?;
        Ok(Self {
            ex,
            len,
            stride,
            step: step as u64,
            frames: VecDeque::new(),
            formed: Vec::new(),
            next_start: 0,
            covered_to: 0,
            clips_done: 0,
        })
    }

    pub fn run(
        mut self,
        rx: Receiver<Prepared>,
        tx: Sender<Explained>,
        ctl: Ctl,
    ) -> Result<(), PipelineError> {
        let batch = self.ex.config.batch.max(1);
        let mut last_sample = None;
        for p in rx {
            if ctl.errors.failed() {
                return Ok(());
            }
            let index = p.frame.index;
            let q = index / self.step;
            self.frames.push_back(Slot {
                p,
                q,
                sum: Vec::new(),
                n: 0,
                nearest: None,
                clips: Vec::new(),
            });
            if !index.is_multiple_of(self.step) {
                continue;
            }
            last_sample = Some(q);
            while self.next_start + self.len as u64 - 1 <= q {
                self.formed.push(self.next_start);
                self.covered_to = self.next_start + self.len as u64;
                self.next_start += self.stride as u64;
            }
            if self.formed.len() >= batch && !self.explain_formed(&tx, ctl.busy)? {
                return Ok(());
            }
        }
        // Samples past the last whole clip get one more clip, padded with the last
        // sample (as a video shorter than one clip is).
        if last_sample.is_some_and(|last| last >= self.covered_to) {
            self.formed.push(self.next_start);
        }
        self.next_start = u64::MAX;
        self.explain_formed(&tx, ctl.busy)?;
        Ok(())
    }

    /// Explains the formed clips in one batch, adds their slices to their frames and
    /// sends on every frame no later clip can cover. False when downstream stopped.
    fn explain_formed(
        &mut self,
        tx: &Sender<Explained>,
        busy: &Busy,
    ) -> Result<bool, PipelineError> {
        if self.formed.is_empty() {
            return self.emit(tx);
        }
        let t = Instant::now();
        let starts = std::mem::take(&mut self.formed);
        let clips: Vec<Vec<f32>> = starts
            .iter()
            .map(|&s| self.clip_input(s))
            .collect::<Result<_, _>>()?;
        let size = self.frames[0].p.size;
        let channels = self.ex.explainer.network().input.channels;
        let shape = [channels, self.len, size[0], size[1]];
        let inputs: Vec<Input> = clips.iter().map(|c| Input::new(c, &shape)).collect();
        let out = self.ex.explain(&inputs)?;
        if !self.ex.scanned(&out) {
            for (e, &s) in out.into_iter().zip(&starts) {
                self.spread(e, s)?;
            }
        }
        let sent = self.emit(tx)?;
        busy.add(t.elapsed(), clips.len() as u64 * self.len as u64);
        Ok(sent)
    }

    /// The (C, len, H, W) input of the clip starting at sample `start`, from the waiting
    /// frames; past the last sample, the last one repeats.
    fn clip_input(&self, start: u64) -> Result<Vec<f32>, PipelineError> {
        let samples: Vec<&Prepared> = self
            .frames
            .iter()
            .filter(|s| s.q >= start && s.p.frame.index.is_multiple_of(self.step))
            .map(|s| &s.p)
            .take(self.len)
            .collect();
        let Some(&last) = samples.last() else {
            return Err(PipelineError::BadOption {
                name: "clip_stride",
                why: format!("internal: no frames left for the clip at sample {start}"),
            });
        };
        for p in &samples {
            inject(Stage::Model, p.frame.index)?;
        }
        let plane = last.size[0] * last.size[1];
        let channels = last.input.len() / plane;
        let mut clip = vec![0f32; channels * self.len * plane];
        for t in 0..self.len {
            let p = samples.get(t).copied().unwrap_or(last);
            for c in 0..channels {
                let at = (c * self.len + t) * plane;
                clip[at..at + plane].copy_from_slice(&p.input[c * plane..(c + 1) * plane]);
            }
        }
        Ok(clip)
    }

    /// Adds the clip's map, one slice per sample position, to the frames it covers.
    /// A target after the network has pooled time away gives (h, w) maps: the same map
    /// for the clip's every frame.
    fn spread(&mut self, e: Explanation, start: u64) -> Result<(), PipelineError> {
        let map = self.ex.map(&e);
        let [t, h, w] = match *e.spatial.as_slice() {
            [t, h, w] => [t, h, w],
            [h, w] => [1, h, w],
            ref other => {
                return Err(PipelineError::BadOption {
                    name: "layer",
                    why: format!(
                        "`{}` gives maps of shape {other:?}; a video model's frames need (t, h, w) or (h, w)",
                        e.layer
                    ),
                })
            }
        };
        let mut slices = resize_final(&map, &[t, h, w], &[self.len, h, w]);
        // The cubic spline overshoots a little between samples.
        slices.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        let middle = 2 * start + self.len as u64 - 1; // twice the middle sample position
        let clip = self.clips_done;
        self.clips_done += 1;
        let meta = FrameMap {
            map: Arc::new(Vec::new()),
            spatial: vec![h, w],
            scaled: true,
            class: e.class,
            label: e.label,
            logit: e.logit,
            probability: e.probability,
            method: self.ex.explainer.method().name(),
            clip: Some(clip),
        };
        let end = start + self.len as u64;
        let sampled: Vec<(u64, f64)> = self
            .frames
            .iter()
            .filter(|s| (start..end).contains(&s.q) && s.p.frame.index.is_multiple_of(self.step))
            .map(|s| (s.p.frame.index, s.p.frame.seconds))
            .collect();
        let (Some(first), Some(last)) = (sampled.first(), sampled.last()) else {
            return Ok(()); // no frame of this clip is waiting (none can be)
        };
        let record = ClipRecord {
            class: meta.class,
            clip,
            end_s: last.1,
            first_frame: first.0,
            label: meta.label.clone(),
            last_frame: last.0,
            logit: meta.logit,
            method: meta.method.to_string(),
            probability: meta.probability,
            padded: sampled.len() < self.len,
            start_s: first.1,
        };
        if let Some(slot) = self.frames.iter_mut().find(|s| s.p.frame.index == first.0) {
            slot.clips.push(record);
        }
        for slot in self
            .frames
            .iter_mut()
            .filter(|s| (start..end).contains(&s.q))
        {
            let k = (slot.q - start) as usize;
            let slice = &slices[k * h * w..(k + 1) * h * w];
            if slot.sum.is_empty() {
                slot.sum = slice.to_vec();
            } else {
                slot.sum.iter_mut().zip(slice).for_each(|(a, b)| *a += b);
            }
            slot.n += 1;
            let d = middle.abs_diff(2 * slot.q);
            if slot.nearest.as_ref().is_none_or(|(best, _)| d < *best) {
                slot.nearest = Some((d, meta.clone()));
            }
        }
        Ok(())
    }

    /// Sends the frames before the next clip's start (no later clip covers them).
    fn emit(&mut self, tx: &Sender<Explained>) -> Result<bool, PipelineError> {
        while self.frames.front().is_some_and(|s| s.q < self.next_start) {
            let slot = self.frames.pop_front().expect("front exists");
            if self.ex.scan.is_some() {
                continue;
            }
            let Some((_, mut map)) = slot.nearest else {
                continue; // not covered (cannot happen with stride <= len)
            };
            let n = slot.n.max(1) as f32;
            map.map = Arc::new(slot.sum.iter().map(|v| v / n).collect());
            let sampled = slot.p.frame.index.is_multiple_of(self.step);
            if tx
                .send(Explained::new(slot.p, map, sampled, slot.clips))
                .is_err()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_defaults_to_the_model_length_side_by_side() {
        let c = ClipSampling::default();
        assert_eq!(c.resolve(16).unwrap(), [16, 16, 1]);
        let c = ClipSampling {
            len: Some(8),
            stride: Some(4),
            step: 2,
        };
        assert_eq!(c.resolve(16).unwrap(), [8, 4, 2]);
        let gap = ClipSampling {
            stride: Some(17),
            ..Default::default()
        };
        let e = gap.resolve(16).unwrap_err().to_string();
        assert!(e.contains("clip_stride") && e.contains("1..=16"), "{e}");
    }
}
