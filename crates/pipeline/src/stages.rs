//! The stage threads. Each knows only its input and output message types.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};
use image::RgbImage;

use super::norm::{Norm, Normaliser};
use super::{guard, Busy, FirstError, PipelineError, Stage, VideoJob, VideoReport};
use camstream_core::cam::{argmax, upsample_to_source, Targets};
use camstream_core::preprocess::{prepare_image, Placement};
use camstream_core::record::{self, FrameRecord};
use camstream_core::{ExplainOptions, Explainer, Input};
use camstream_media::decode::{DecodedFrame, VideoDecoder, VideoInfo};
use camstream_media::encode::{AudioSource, VideoEncoder};
use camstream_media::io::StreamFile;
use camstream_media::render::{draw_label, overlay};

struct Prepared {
    frame: DecodedFrame,
    input: Vec<f32>,
    /// (H, W) of the model input (the same for every frame of a video).
    size: [usize; 2],
    placement: Placement,
}

/// A frame with the map to draw on it.
struct Explained {
    frame: DecodedFrame,
    size: [usize; 2],
    placement: Placement,
    /// Low-resolution map in [0, 1], shared by the frames that reuse it (`--every`).
    map: Arc<Vec<f32>>,
    spatial: Vec<usize>,
    class: usize,
    label: String,
    logit: f32,
    probability: f32,
    explained: bool,
}

struct Rendered {
    index: u64,
    pts: i64,
    rgb: RgbImage,
    json: String,
}

/// A fault to inject (test builds only): `CAMSTREAM_FAIL_AT=STAGE:N` makes that stage
/// fail at frame N, so tests can check that every stage shuts the pipeline down cleanly.
#[cfg(feature = "fault-injection")]
fn fault() -> Option<(Stage, u64)> {
    let v = std::env::var("CAMSTREAM_FAIL_AT").ok()?;
    let (st, n) = v.split_once(':')?;
    Some((Stage::parse(st)?, n.parse().ok()?))
}

#[cfg(feature = "fault-injection")]
fn inject(stage: Stage, frame: u64) -> Result<(), PipelineError> {
    match fault() {
        Some((s, n)) if s == stage && n == frame => Err(PipelineError::Injected {
            stage: stage.name(),
            frame,
        }),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "fault-injection"))]
fn inject(_stage: Stage, _frame: u64) -> Result<(), PipelineError> {
    Ok(())
}

/// With `scan`, runs decode → preprocess → model only and records the largest map value
/// (the first pass of `--norm clip`); `clip_scale` is that value for the second pass.
pub(super) fn run(
    job: &VideoJob,
    tmp: &Path,
    container: &str,
    cancel: &AtomicBool,
    scan: Option<&AtomicU32>,
    clip_scale: f32,
) -> Result<VideoReport, PipelineError> {
    let errors = FirstError::default();
    let busy: [Busy; 5] = Default::default();
    let corrupt = AtomicU64::new(0);
    let explained = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    let workers = job.overlay_workers.max(1);
    let cap = job.batch.max(1) * job.every.max(1) + 2;
    let (info_tx, info_rx) = bounded::<VideoInfo>(1);
    let (dec_tx, dec_rx) = bounded::<DecodedFrame>(cap);
    let (pre_tx, pre_rx) = bounded::<Prepared>(cap);
    let (cam_tx, cam_rx) = bounded::<Explained>(cap);
    let (ren_tx, ren_rx) = bounded::<Rendered>(cap + workers);

    std::thread::scope(|s| {
        s.spawn(|| {
            guard(Stage::Decode.name(), &errors, || {
                decode(job, info_tx, dec_tx, cancel, &errors, &busy[0], &corrupt)
            })
        });
        s.spawn(|| {
            guard(Stage::Preprocess.name(), &errors, || {
                preprocess(job, dec_rx, pre_tx, &errors, &busy[1])
            })
        });
        s.spawn(|| {
            guard(Stage::Model.name(), &errors, || {
                model(
                    job, pre_rx, cam_tx, &errors, &busy[2], &explained, scan, clip_scale,
                )
            })
        });
        // A scan stops at the model: nothing is drawn or written.
        let workers_now = if scan.is_some() { 0 } else { workers };
        for _ in 0..workers_now {
            let (rx, tx) = (cam_rx.clone(), ren_tx.clone());
            let (errors, busy) = (&errors, &busy[3]);
            s.spawn(move || {
                guard(Stage::Overlay.name(), errors, || {
                    render(job, rx, tx, errors, busy)
                })
            });
        }
        drop(cam_rx);
        drop(ren_tx);
        // The encoder needs the input's size and timing, which only the decoder knows.
        if let (Ok(info), None) = (info_rx.recv(), scan) {
            let (errors, busy, written) = (&errors, &busy[4], &written);
            s.spawn(move || {
                guard(Stage::Encode.name(), errors, || {
                    encode(
                        job, &info, tmp, container, ren_rx, cancel, errors, busy, written,
                    )
                })
            });
        }
    });
    if let Some(e) = errors.take() {
        return Err(e);
    }
    Ok(VideoReport {
        frames: written.load(Ordering::Relaxed),
        explained: explained.load(Ordering::Relaxed),
        corrupt_packets: corrupt.load(Ordering::Relaxed),
        wall_s: 0.0,
        fps: 0.0,
        stages: Stage::ALL
            .iter()
            .zip(&busy)
            .map(|(st, b)| b.stat(*st, if *st == Stage::Overlay { workers } else { 1 }))
            .collect(),
        interrupted: false,
        peak_rss_mb: 0.0,
    })
}

#[allow(clippy::too_many_arguments)]
fn decode(
    job: &VideoJob,
    info_tx: Sender<VideoInfo>,
    tx: Sender<DecodedFrame>,
    cancel: &AtomicBool,
    errors: &FirstError,
    busy: &Busy,
    corrupt: &AtomicU64,
) -> Result<(), PipelineError> {
    let mut dec = VideoDecoder::open(&job.input, job.section)?;
    if info_tx.send(dec.info().clone()).is_err() {
        return Ok(());
    }
    drop(info_tx);
    loop {
        if cancel.load(Ordering::Relaxed) || errors.failed() {
            break;
        }
        let t = Instant::now();
        let Some(frame) = dec.next_frame()? else {
            break;
        };
        busy.add(t.elapsed(), 1);
        inject(Stage::Decode, frame.index)?;
        if tx.send(frame).is_err() {
            break; // downstream stopped; its error (if any) is already recorded
        }
    }
    corrupt.store(dec.corrupt_packets(), Ordering::Relaxed);
    Ok(())
}

fn preprocess(
    job: &VideoJob,
    rx: Receiver<DecodedFrame>,
    tx: Sender<Prepared>,
    errors: &FirstError,
    busy: &Busy,
) -> Result<(), PipelineError> {
    for frame in rx {
        if errors.failed() {
            break;
        }
        let t = Instant::now();
        inject(Stage::Preprocess, frame.index)?;
        let p = prepare_image(&frame.rgb, &job.net.input);
        busy.add(t.elapsed(), 1);
        if tx
            .send(Prepared {
                frame,
                input: p.chw,
                size: p.size,
                placement: p.placement,
            })
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// The map a frame is drawn with; shared by the frames that reuse it (`--every`).
#[derive(Clone)]
struct FrameMap {
    map: Arc<Vec<f32>>,
    spatial: Vec<usize>,
    class: usize,
    label: String,
    logit: f32,
    probability: f32,
}

struct ModelStage<'a> {
    job: &'a VideoJob<'a>,
    explainer: Explainer,
    normaliser: Normaliser,
    last: Option<FrameMap>,
    /// First pass of `--norm clip`: the running maximum (f32 bits), nothing sent on.
    scan: Option<&'a AtomicU32>,
}

impl ModelStage<'_> {
    /// Explains the chosen frames of `pending` in one batch and sends all of them on.
    /// Returns false when downstream has stopped.
    fn flush(
        &mut self,
        pending: &mut Vec<Prepared>,
        tx: &Sender<Explained>,
        busy: &Busy,
        count: &AtomicU64,
    ) -> Result<bool, PipelineError> {
        let t = Instant::now();
        let net = self.job.net;
        let every = self.job.every.max(1) as u64;
        let chosen: Vec<usize> = (0..pending.len())
            .filter(|&i| pending[i].frame.index.is_multiple_of(every))
            .collect();
        let mut maps: Vec<Option<FrameMap>> = vec![None; pending.len()];
        if !chosen.is_empty() {
            let mut shape = vec![net.input.channels];
            shape.extend(pending[chosen[0]].size);
            let mut inputs = Vec::with_capacity(chosen.len());
            for &i in &chosen {
                inject(Stage::Model, pending[i].frame.index)?;
                inputs.push(Input::new(&pending[i].input, &shape));
            }
            let targets = self.job.class.map_or(Targets::TopOne, Targets::All);
            let options = ExplainOptions {
                batch: chosen.len(),
                top_k: 1,
                final_map: false,
            };
            let out = self.explainer.explain(&inputs, &targets, &options)?;
            if let Some(max) = self.scan {
                let peak = out
                    .iter()
                    .flat_map(|e| e.raw.iter().copied())
                    .fold(0.0f32, f32::max);
                // Non-negative floats order like their bit patterns.
                max.fetch_max(peak.to_bits(), Ordering::Relaxed);
                count.fetch_add(chosen.len() as u64, Ordering::Relaxed);
                busy.add(t.elapsed(), pending.len() as u64);
                pending.clear();
                return Ok(true);
            }
            for (e, &i) in out.into_iter().zip(&chosen) {
                maps[i] = Some(FrameMap {
                    map: Arc::new(self.normaliser.apply(self.job.norm, &e.raw)),
                    spatial: e.spatial,
                    class: e.class,
                    label: e.label,
                    logit: e.logit,
                    probability: e.probability,
                });
            }
            count.fetch_add(chosen.len() as u64, Ordering::Relaxed);
        }
        busy.add(t.elapsed(), pending.len() as u64);
        for (p, m) in pending.drain(..).zip(maps) {
            let explained = m.is_some();
            if m.is_some() {
                self.last = m;
            }
            // Frame 0 is always explained, so every later frame has a map to reuse.
            let Some(fm) = self.last.clone() else {
                continue;
            };
            let e = Explained {
                frame: p.frame,
                size: p.size,
                placement: p.placement,
                map: fm.map,
                spatial: fm.spatial,
                class: fm.class,
                label: fm.label,
                logit: fm.logit,
                probability: fm.probability,
                explained,
            };
            if tx.send(e).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[allow(clippy::too_many_arguments)]
fn model(
    job: &VideoJob,
    rx: Receiver<Prepared>,
    tx: Sender<Explained>,
    errors: &FirstError,
    busy: &Busy,
    count: &AtomicU64,
    scan: Option<&AtomicU32>,
    clip_scale: f32,
) -> Result<(), PipelineError> {
    let mut stage = ModelStage {
        job,
        explainer: Explainer::from_network(job.net.clone(), Some(&job.layer))?,
        normaliser: Normaliser::with_clip_scale(clip_scale),
        last: None,
        scan,
    };
    let every = job.every.max(1) as u64;
    // Frames waiting for the batch that explains them (or holds the map they reuse).
    let mut pending: Vec<Prepared> = Vec::new();
    let mut in_batch = 0usize;
    for p in rx {
        if errors.failed() {
            return Ok(());
        }
        if p.frame.index.is_multiple_of(every) {
            if in_batch == job.batch.max(1) {
                // The batch is full: explain it before this frame starts the next one.
                if !stage.flush(&mut pending, &tx, busy, count)? {
                    return Ok(());
                }
                in_batch = 0;
            }
            in_batch += 1;
        }
        pending.push(p);
    }
    stage.flush(&mut pending, &tx, busy, count)?;
    Ok(())
}

fn render(
    job: &VideoJob,
    rx: Receiver<Explained>,
    tx: Sender<Rendered>,
    errors: &FirstError,
    busy: &Busy,
) -> Result<(), PipelineError> {
    for e in rx {
        if errors.failed() {
            break;
        }
        let t = Instant::now();
        inject(Stage::Overlay, e.frame.index)?;
        let mut rgb = e.frame.rgb;
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let rect = e.placement.model.map(|v| v as usize);
        let mask = upsample_to_source(
            &e.map,
            &e.spatial,
            e.size,
            rect,
            [h, w],
            job.norm == Norm::Frame,
        );
        let peak = argmax(&mask);
        overlay(&mut rgb, &mask, job.colormap, job.alpha);
        let label = e.label;
        if job.label {
            draw_label(&mut rgb, &format!("{label} {:.2}", e.probability));
        }
        let mut json = record::to_line(&FrameRecord {
            class: e.class,
            explained: e.explained,
            index: e.frame.index,
            label,
            logit: e.logit,
            peak_x: peak % w,
            peak_y: peak / w,
            probability: e.probability,
            pts: e.frame.pts,
            seconds: e.frame.seconds,
        });
        json.push('\n');
        busy.add(t.elapsed(), 1);
        let r = Rendered {
            index: e.frame.index,
            pts: e.frame.pts,
            rgb,
            json,
        };
        if tx.send(r).is_err() {
            break;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn encode(
    job: &VideoJob,
    info: &VideoInfo,
    tmp: &Path,
    container: &str,
    rx: Receiver<Rendered>,
    cancel: &AtomicBool,
    errors: &FirstError,
    busy: &Busy,
    written: &AtomicU64,
) -> Result<(), PipelineError> {
    let audio = if info.has_audio {
        let start = job.section.start.unwrap_or(0.0);
        AudioSource::Copy {
            path: job.input.clone(),
            start,
            end: job.section.duration.map(|d| start + d),
        }
    } else {
        AudioSource::None
    };
    let t = Instant::now();
    let mut enc = VideoEncoder::create(tmp, container, info, &job.encode, audio)?;
    busy.add(t.elapsed(), 0);
    let mut json = job
        .frames_json
        .as_deref()
        .map(StreamFile::create)
        .transpose()?;
    let result = (|| {
        // Overlay workers finish out of order; frames leave in order.
        let mut waiting: BTreeMap<u64, Rendered> = BTreeMap::new();
        let mut next = 0u64;
        for r in rx {
            if errors.failed() {
                return Ok(false);
            }
            waiting.insert(r.index, r);
            while let Some(r) = waiting.remove(&next) {
                let t = Instant::now();
                inject(Stage::Encode, r.index)?;
                enc.write(&r.rgb, r.pts)?;
                if let Some(j) = json.as_mut() {
                    j.write(r.json.as_bytes())?;
                }
                busy.add(t.elapsed(), 1);
                next += 1;
                written.store(next, Ordering::Relaxed);
                if let Some(p) = job.progress {
                    p(next, info.frames_hint);
                }
            }
        }
        if errors.failed() {
            return Ok(false);
        }
        let t = Instant::now();
        // Interrupted: the audio ends with the video done so far.
        let end = cancel.load(Ordering::Relaxed).then(|| enc.end_s());
        enc.finish(end)?;
        busy.add(t.elapsed(), 0);
        if let Some(j) = json.take() {
            j.commit()?;
        }
        Ok(true)
    })();
    // Another stage failed (Ok(false)) or this one did: nothing of this run is kept (an
    // uncommitted frames file is removed when dropped); the error is reported once, by
    // the stage that had it.
    result.map(|_| ())
}
