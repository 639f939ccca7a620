//! The stage threads. Each knows its own config, its input and output channels and the
//! shared shutdown state, nothing else.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use camstream_core::cam::{SourceMap, Targets};
use camstream_core::metrics::{measure, Faithfulness, Measured, MetricsConfig};
use camstream_core::preprocess::{prepare_image, InputSpec, Placement};
use camstream_core::record::{ClipRecord, FrameRecord};
use camstream_core::{ExplainOptions, Explainer, Explanation, Input};
use camstream_media::decode::DecodedFrame;
use camstream_media::frame::{Picture, RgbConverter};
use camstream_media::render::Colormap;

use super::io::{FrameSink, FrameSource};
use crate::norm::{Norm, Normaliser};
use crate::records::RecordSink;
use crate::{inject, Busy, PipelineError, Stage, StageCtl as Ctl};

pub(super) struct Prepared {
    pub frame: DecodedFrame,
    pub input: Vec<f32>,
    /// (H, W) of the model input (the same for every frame of a video).
    pub size: [usize; 2],
    placement: Placement,
}

/// A frame with the map to draw on it.
pub(super) struct Explained {
    frame: DecodedFrame,
    size: [usize; 2],
    placement: Placement,
    map: FrameMap,
    explained: bool,
    metrics: Option<Faithfulness>,
    /// Clips that start at this frame (video models), written before its record.
    clips: Vec<ClipRecord>,
}

impl Explained {
    pub fn new(p: Prepared, map: FrameMap, explained: bool, clips: Vec<ClipRecord>) -> Self {
        Self {
            frame: p.frame,
            size: p.size,
            placement: p.placement,
            map,
            explained,
            metrics: None,
            clips,
        }
    }
}

pub(super) struct Rendered {
    index: u64,
    pts: i64,
    picture: Picture,
    record: FrameRecord,
    clips: Vec<ClipRecord>,
}

pub(super) fn decode(
    source: &mut dyn FrameSource,
    tx: Sender<DecodedFrame>,
    cancel: &AtomicBool,
    ctl: Ctl,
) -> Result<(), PipelineError> {
    loop {
        if cancel.load(Ordering::Relaxed) || ctl.errors.failed() {
            return Ok(());
        }
        let t = Instant::now();
        let Some(frame) = source.next_frame()? else {
            return Ok(());
        };
        ctl.busy.add(t.elapsed(), 1);
        inject(Stage::Decode, frame.index)?;
        if tx.send(frame).is_err() {
            return Ok(()); // downstream stopped; its error (if any) is already recorded
        }
    }
}

pub(super) fn preprocess(
    input: &InputSpec,
    rx: Receiver<DecodedFrame>,
    tx: Sender<Prepared>,
    ctl: Ctl,
) -> Result<(), PipelineError> {
    // A clip model's frames are pictures of its (H, W).
    let frame_spec = input.frame();
    let mut rgb = RgbConverter::default();
    for frame in rx {
        if ctl.errors.failed() {
            break;
        }
        let t = Instant::now();
        inject(Stage::Preprocess, frame.index)?;
        let p = prepare_image(rgb.rgb(&frame.picture)?, &frame_spec);
        ctl.busy.add(t.elapsed(), 1);
        let prepared = Prepared {
            frame,
            input: p.chw,
            size: p.size,
            placement: p.placement,
        };
        if tx.send(prepared).is_err() {
            break;
        }
    }
    Ok(())
}

/// The model stage's part of a video job.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// Explain this class in every frame; default: each frame's top-1.
    pub class: Option<usize>,
    /// Explained frames per forward/backward pass.
    pub batch: usize,
    /// Explain one frame in `every`; the frames between reuse its map.
    pub every: usize,
    pub norm: Norm,
    /// Measure the faithfulness of the maps of explained frames whose index is a
    /// multiple of `metrics_every`.
    pub metrics: Option<MetricsConfig>,
    pub metrics_every: usize,
    /// How clips are cut from the frames, for video models (3D CNNs).
    pub clips: super::clips::ClipSampling,
}

/// The map a frame is drawn with; shared by the frames that reuse it (`every`).
#[derive(Clone)]
pub(super) struct FrameMap {
    /// Low-resolution map in [0, 1].
    pub map: Arc<Vec<f32>>,
    pub spatial: Vec<usize>,
    /// The map is already final (several layers, aug-smooth, clips): never renormalised.
    pub scaled: bool,
    pub class: usize,
    pub label: String,
    pub logit: f32,
    pub probability: f32,
    pub method: &'static str,
    /// The clip whose label the frame shows (video models).
    pub clip: Option<u64>,
}

/// What both model stages (frames, clips) share: the explainer and the job's model
/// config, the map scale, and the counters they report to. With `scan`, batches are
/// explained only to record the largest map value (the first pass of `Norm::Clip`, f32
/// bits); nothing is sent on.
pub(super) struct Explaining<'a> {
    pub explainer: &'a Explainer,
    pub config: &'a ModelConfig,
    normaliser: Normaliser,
    pub scan: Option<&'a AtomicU32>,
    explained: &'a AtomicU64,
}

impl<'a> Explaining<'a> {
    pub fn new(
        explainer: &'a Explainer,
        config: &'a ModelConfig,
        clip_scale: f32,
        scan: Option<&'a AtomicU32>,
        explained: &'a AtomicU64,
    ) -> Self {
        Self {
            explainer,
            config,
            normaliser: Normaliser::with_clip_scale(clip_scale),
            scan,
            explained,
        }
    }

    /// Explains one batch for the configured class (or each input's top-1), without
    /// final maps (the overlay draws at the frame's size), and counts it.
    pub fn explain(&self, inputs: &[Input]) -> Result<Vec<Explanation>, PipelineError> {
        let targets = self.config.class.map_or(Targets::TopOne, Targets::All);
        let options = ExplainOptions {
            batch: inputs.len(),
            top_k: 1,
            final_map: false,
        };
        let out = self.explainer.explain(inputs, &targets, &options)?;
        self.explained
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// In a scan, records the batch's largest map value and says so (the batch goes no
    /// further).
    pub fn scanned(&self, out: &[Explanation]) -> bool {
        let Some(max) = self.scan else {
            return false;
        };
        let peak = out
            .iter()
            .flat_map(|e| e.raw.iter().copied())
            .fold(0.0f32, f32::max);
        // Non-negative floats order like their bit patterns.
        max.fetch_max(peak.to_bits(), Ordering::Relaxed);
        true
    }

    /// The explanation's map as the job's normalisation scales it.
    pub fn map(&mut self, e: &Explanation) -> Vec<f32> {
        self.normaliser.apply(self.config.norm, &e.raw, e.scaled)
    }
}

/// The model stage of frame models.
pub(super) struct ModelStage<'a> {
    ex: Explaining<'a>,
    last: Option<FrameMap>,
}

impl<'a> ModelStage<'a> {
    pub fn new(ex: Explaining<'a>) -> Self {
        Self { ex, last: None }
    }

    pub fn run(
        mut self,
        rx: Receiver<Prepared>,
        tx: Sender<Explained>,
        ctl: Ctl,
    ) -> Result<(), PipelineError> {
        let every = self.ex.config.every.max(1) as u64;
        let batch = self.ex.config.batch.max(1);
        // Frames waiting for the batch that explains them (or holds the map they reuse).
        let mut pending: Vec<Prepared> = Vec::new();
        let mut in_batch = 0usize;
        for p in rx {
            if ctl.errors.failed() {
                return Ok(());
            }
            if p.frame.index.is_multiple_of(every) {
                if in_batch == batch {
                    // The batch is full: explain it before this frame starts the next one.
                    if !self.flush(&mut pending, &tx, ctl.busy)? {
                        return Ok(());
                    }
                    in_batch = 0;
                }
                in_batch += 1;
            }
            pending.push(p);
        }
        self.flush(&mut pending, &tx, ctl.busy)?;
        Ok(())
    }

    /// Explains the chosen frames of `pending` in one batch and sends all of them on.
    /// Returns false when downstream has stopped.
    fn flush(
        &mut self,
        pending: &mut Vec<Prepared>,
        tx: &Sender<Explained>,
        busy: &Busy,
    ) -> Result<bool, PipelineError> {
        let t = Instant::now();
        let every = self.ex.config.every.max(1) as u64;
        let chosen: Vec<usize> = (0..pending.len())
            .filter(|&i| pending[i].frame.index.is_multiple_of(every))
            .collect();
        let mut maps: Vec<Option<FrameMap>> = vec![None; pending.len()];
        let mut metrics: Vec<Option<Faithfulness>> = vec![None; pending.len()];
        if !chosen.is_empty() {
            let mut shape = vec![self.ex.explainer.network().input.channels];
            shape.extend(pending[chosen[0]].size);
            let mut inputs = Vec::with_capacity(chosen.len());
            for &i in &chosen {
                inject(Stage::Model, pending[i].frame.index)?;
                inputs.push(Input::new(&pending[i].input, &shape));
            }
            let out = self.ex.explain(&inputs)?;
            if self.ex.scanned(&out) {
                busy.add(t.elapsed(), pending.len() as u64);
                pending.clear();
                return Ok(true);
            }
            for (e, &i) in out.into_iter().zip(&chosen) {
                metrics[i] = self.measure(&pending[i], &shape, &e)?;
                maps[i] = Some(FrameMap {
                    map: Arc::new(self.ex.map(&e)),
                    spatial: e.spatial,
                    scaled: e.scaled,
                    class: e.class,
                    label: e.label,
                    logit: e.logit,
                    probability: e.probability,
                    method: self.ex.explainer.method().name(),
                    clip: None,
                });
            }
        }
        busy.add(t.elapsed(), pending.len() as u64);
        for ((p, m), metrics) in pending.drain(..).zip(maps).zip(metrics) {
            let explained = m.is_some();
            if m.is_some() {
                self.last = m;
            }
            // Frame 0 is always explained, so every later frame has a map to reuse.
            let Some(map) = self.last.clone() else {
                continue;
            };
            let e = Explained {
                frame: p.frame,
                size: p.size,
                placement: p.placement,
                map,
                explained,
                metrics,
                clips: Vec::new(),
            };
            if tx.send(e).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl ModelStage<'_> {
    /// The faithfulness of an explained frame's map, on the frames `metrics_every` picks.
    fn measure(
        &self,
        p: &Prepared,
        shape: &[usize],
        e: &camstream_core::Explanation,
    ) -> Result<Option<Faithfulness>, PipelineError> {
        let Some(config) = &self.ex.config.metrics else {
            return Ok(None);
        };
        if !p
            .frame
            .index
            .is_multiple_of(self.ex.config.metrics_every.max(1) as u64)
        {
            return Ok(None);
        }
        let map = e.final_map(&p.size);
        let sample = Measured {
            input: &p.input,
            shape,
            map: &map,
            class: e.class,
        };
        Ok(Some(measure(self.ex.explainer.network(), sample, config)?))
    }
}

/// The overlay workers' part of a video job.
#[derive(Clone)]
pub struct OverlayConfig {
    pub colormap: &'static Colormap,
    /// Heatmap weight in the blend.
    pub alpha: f32,
    /// Draw the label and score on each frame.
    pub label: bool,
    /// Apply pytorch-grad-cam's clamp and second min-max after upsampling (per-frame
    /// normalisation only; temporal modes keep their scale).
    pub renormalise: bool,
}

pub(super) fn render(
    config: &OverlayConfig,
    rx: Receiver<Explained>,
    tx: Sender<Rendered>,
    ctl: Ctl,
) -> Result<(), PipelineError> {
    for e in rx {
        if ctl.errors.failed() {
            break;
        }
        let t = Instant::now();
        inject(Stage::Overlay, e.frame.index)?;
        let mut picture = e.frame.picture;
        let (w, h) = (picture.width() as usize, picture.height() as usize);
        let rect = e.placement.model.map(|v| v as usize);
        let m = e.map;
        let renormalise = config.renormalise && !m.scaled;
        let map = SourceMap::new(&m.map, &m.spatial, e.size, rect, [h, w], renormalise);
        let (peak_x, peak_y) = map.peak();
        picture.overlay(|y, row| map.row(y, row), config.colormap, config.alpha)?;
        if config.label {
            picture.draw_label(&format!("{} {:.2}", m.label, m.probability))?;
        }
        let record = FrameRecord {
            class: m.class,
            clip: m.clip,
            explained: e.explained,
            index: e.frame.index,
            label: m.label,
            logit: m.logit,
            method: m.method.to_string(),
            metrics: e.metrics,
            peak_x,
            peak_y,
            probability: m.probability,
            pts: e.frame.pts,
            seconds: e.frame.seconds,
        };
        ctl.busy.add(t.elapsed(), 1);
        let r = Rendered {
            index: e.frame.index,
            pts: e.frame.pts,
            picture,
            record,
            clips: e.clips,
        };
        if tx.send(r).is_err() {
            break;
        }
    }
    Ok(())
}

/// Where the write stage puts frames and records, and whom it tells of progress.
pub struct Sinks<'a> {
    pub frames: Option<&'a mut dyn FrameSink>,
    pub records: Option<&'a mut dyn RecordSink<FrameRecord>>,
    /// One record per clip (video models).
    pub clips: Option<&'a mut dyn RecordSink<ClipRecord>>,
    /// Called with (frames done, frames expected) as frames are written.
    pub progress: Option<&'a (dyn Fn(u64, Option<u64>) + Sync)>,
    /// Sees each drawn frame and its record, in order, before the sinks take them (a
    /// server's thumbnails and live records).
    pub observe: Option<Observer<'a>>,
}

/// Sees a drawn frame and its record (see [`Sinks::observe`]).
pub type Observer<'a> = &'a (dyn Fn(&Picture, &FrameRecord) + Sync);

/// Puts the overlay workers' frames back in order and writes them. Returns false when
/// another stage failed: then nothing is finished.
pub(super) fn write(
    sinks: &mut Sinks,
    expected: Option<u64>,
    rx: Receiver<Rendered>,
    cancel: &AtomicBool,
    written: &AtomicU64,
    ctl: Ctl,
) -> Result<(), PipelineError> {
    // Overlay workers finish out of order; frames leave in order.
    let mut waiting: BTreeMap<u64, Rendered> = BTreeMap::new();
    let mut next = 0u64;
    for r in rx {
        if ctl.errors.failed() {
            return Ok(());
        }
        waiting.insert(r.index, r);
        while let Some(r) = waiting.remove(&next) {
            let t = Instant::now();
            inject(Stage::Encode, r.index)?;
            if let Some(see) = sinks.observe {
                see(&r.picture, &r.record);
            }
            if let Some(f) = sinks.frames.as_deref_mut() {
                f.write(r.picture, r.pts)?;
            }
            if let Some(s) = sinks.clips.as_deref_mut() {
                for c in &r.clips {
                    s.record(c)?;
                }
            }
            if let Some(s) = sinks.records.as_deref_mut() {
                s.record(&r.record)?;
            }
            ctl.busy.add(t.elapsed(), 1);
            next += 1;
            written.store(next, Ordering::Relaxed);
            if let Some(p) = sinks.progress {
                p(next, expected);
            }
        }
    }
    if ctl.errors.failed() {
        return Ok(());
    }
    let t = Instant::now();
    // Interrupted: the audio ends with the video done so far.
    if let Some(f) = sinks.frames.as_deref_mut() {
        f.finish(cancel.load(Ordering::Relaxed))?;
    }
    if let Some(s) = sinks.records.as_deref_mut() {
        s.finish()?;
    }
    if let Some(s) = sinks.clips.as_deref_mut() {
        s.finish()?;
    }
    ctl.busy.add(t.elapsed(), 0);
    Ok(())
}
