//! The streaming video pipeline: decode → preprocess → model (batched Grad-CAM) →
//! overlay (a pool of workers) → write, one thread per stage, joined by bounded
//! channels. Memory is bounded by the channel capacities, whatever the input's length;
//! the pipeline runs at the speed of its slowest stage. A stage that fails records its
//! error once and stops; every other stage stops at its next frame.
//!
//! [`run_frames`] takes any [`FrameSource`] and any sinks (a server feeds frames from
//! memory and reads records from a channel); [`run_video`] is the file job on top.

mod clips;
mod io;
mod stages;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::bounded;

use camstream_core::record::FrameRecord;
use camstream_core::Explainer;
use camstream_media::decode::{Section, VideoDecoder};
use camstream_media::encode::{AudioSource, EncodeOptions, VideoEncoder};
use camstream_media::guard::{check_outputs, Output};
use camstream_media::io::{Staged, TempPath};

pub use crate::records::{JsonLines, RecordSink};
pub use clips::ClipSampling;
pub use io::{EncodedVideo, FrameSink, FrameSource, MemoryFrames};
pub use stages::{ModelConfig, Observer, OverlayConfig, Sinks};

use crate::norm::Norm;
use crate::{
    cpu_seconds, peak_rss_mb, spawn_stage, Busy, FirstError, PipelineError, Stage, StageCtl,
    StageStat,
};

/// What to do with each frame, whatever the frames' source and the results' sinks.
pub struct FrameJob<'a> {
    pub explainer: &'a Explainer,
    pub model: ModelConfig,
    pub overlay: OverlayConfig,
    pub overlay_workers: usize,
}

/// A video file in, an annotated video file (and optionally per-frame records) out.
pub struct VideoJob<'a> {
    pub input: PathBuf,
    pub output: PathBuf,
    pub section: Section,
    pub encode: EncodeOptions,
    /// Also write one [`FrameRecord`] per frame as JSON lines here.
    pub frames_json: Option<PathBuf>,
    /// Video models: also write one [`ClipRecord`](camstream_core::record::ClipRecord)
    /// per clip as JSON lines here.
    pub clips_json: Option<PathBuf>,
    /// Also write the [`VideoReport`] as JSON here.
    pub report: Option<PathBuf>,
    pub frames: FrameJob<'a>,
    /// Called with (frames done, frames expected) as frames are written.
    pub progress: Option<&'a (dyn Fn(u64, Option<u64>) + Sync)>,
    /// Sees each drawn frame and its record, in order (see [`Sinks::observe`]).
    pub observe: Option<Observer<'a>>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct VideoReport {
    pub frames: u64,
    pub explained: u64,
    pub corrupt_packets: u64,
    pub wall_s: f64,
    pub fps: f64,
    pub stages: Vec<StageStat>,
    pub interrupted: bool,
    pub peak_rss_mb: f64,
    /// CPU seconds (user + system, all threads) of the process during the run: with
    /// `wall_s` and the core count, how much of the machine the run used.
    pub cpu_s: f64,
    /// What went wrong without stopping the run (a stream shorter than it declares).
    pub warnings: Vec<String>,
}

/// The muxer for an output name, chosen by its extension.
fn container_for(output: &std::path::Path) -> Result<&'static str, PipelineError> {
    let ext = output
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("mp4" | "m4v") => Ok("mp4"),
        Some("mov") => Ok("mov"),
        Some("mkv") => Ok("matroska"),
        other => Err(PipelineError::BadOption {
            name: "output",
            why: format!(
                "{}: unknown container {}; name it .mp4, .mov or .mkv",
                output.display(),
                other.map_or("(no extension)".into(), |e| format!("`.{e}`"))
            ),
        }),
    }
}

/// Refuses, before any work, outputs that would overwrite the input or each other.
fn check_paths(job: &VideoJob) -> Result<(), PipelineError> {
    let mut outputs = vec![Output {
        param: "output",
        path: &job.output,
    }];
    if let Some(p) = &job.frames_json {
        outputs.push(Output {
            param: "frames_json",
            path: p,
        });
    }
    if let Some(p) = &job.report {
        outputs.push(Output {
            param: "report",
            path: p,
        });
    }
    if let Some(p) = &job.clips_json {
        outputs.push(Output {
            param: "clips_json",
            path: p,
        });
    }
    Ok(check_outputs(&[&job.input], &outputs)?)
}

/// Runs the file job. The outputs (video, records, report) appear under their names
/// together, only when complete (or when interrupted through `cancel`, as a valid file
/// of the frames done so far); a run that writes no frame is an error and leaves none.
pub fn run_video(job: &VideoJob, cancel: &AtomicBool) -> Result<VideoReport, PipelineError> {
    let started = Instant::now();
    let cpu = cpu_seconds();
    check_paths(job)?;
    let container = container_for(&job.output)?;
    job.encode.check()?;
    if job.frames.explainer.network().input.kind == camstream_core::preprocess::InputKind::Clip {
        clips::ClipStage::settings(job.frames.explainer, &job.frames.model)?;
    }
    let clip_scale = if job.frames.model.norm == Norm::Clip {
        // First pass: the clip's largest map value (the model runs twice).
        let mut source = VideoDecoder::open(&job.input, job.section)?.keep_yuv();
        scan_max(&mut source, &job.frames, cancel)?
    } else {
        0.0
    };
    // Frames stay in the decoder's YUV from decode to encode when they can.
    let mut source = VideoDecoder::open(&job.input, job.section)?.keep_yuv();
    let info = source.info().clone();
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
    let video_tmp = TempPath::new(&job.output);
    let encoder = VideoEncoder::create(video_tmp.tmp(), container, &info, &job.encode, audio)?;
    let mut video = EncodedVideo::new(encoder);
    let mut records = job
        .frames_json
        .as_deref()
        .map(JsonLines::create)
        .transpose()?;
    let mut clip_lines = job
        .clips_json
        .as_deref()
        .map(JsonLines::create)
        .transpose()?;
    let sinks = Sinks {
        frames: Some(&mut video),
        records: records
            .as_mut()
            .map(|r| r as &mut dyn RecordSink<FrameRecord>),
        clips: clip_lines
            .as_mut()
            .map(|r| r as &mut dyn RecordSink<camstream_core::record::ClipRecord>),
        progress: job.progress,
        observe: job.observe,
    };
    let mut report = run_stages(&mut source, &job.frames, sinks, cancel, None, clip_scale)?;
    if report.frames == 0 {
        return Err(PipelineError::NoFrames {
            input: job.input.clone(),
            why: if job.section.start.is_some() {
                "nothing at or after `start`".into()
            } else {
                "the stream is empty or unreadable".into()
            },
        });
    }
    if let Some(hint) = info.frames_hint.filter(|_| !report.interrupted) {
        if report.frames < hint && hint - report.frames > (hint / 100).max(2) {
            report.warnings.push(format!(
                "{}: the stream ended after {} of its {hint} declared frames (truncated file?)",
                job.input.display(),
                report.frames
            ));
        }
    }
    report.wall_s = started.elapsed().as_secs_f64();
    report.cpu_s = cpu_seconds() - cpu;
    report.fps = report.frames as f64 / report.wall_s.max(1e-9);
    let mut staged = Staged::default();
    staged.push(video_tmp);
    if let Some(r) = records {
        staged.push(r.finish_staged()?);
    }
    if let Some(r) = clip_lines {
        staged.push(r.finish_staged()?);
    }
    if let Some(p) = &job.report {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        staged.push(camstream_media::io::stage(p, |tmp| {
            std::fs::write(tmp, &json).map_err(|e| camstream_media::Error::io(p, e))
        })?);
    }
    staged.commit()?;
    Ok(report)
}

/// Runs the pipeline from any source into any sinks (`Norm::Clip` needs a second pass
/// over the source, so it is for [`run_video`] only).
pub fn run_frames(
    source: &mut dyn FrameSource,
    job: &FrameJob,
    sinks: Sinks,
    cancel: &AtomicBool,
) -> Result<VideoReport, PipelineError> {
    if job.model.norm == Norm::Clip {
        return Err(PipelineError::BadOption {
            name: "norm",
            why: "`clip` needs two passes over a file; use per-frame or EMA normalisation for streams".into(),
        });
    }
    let started = Instant::now();
    let cpu = cpu_seconds();
    let mut report = run_stages(source, job, sinks, cancel, None, 0.0)?;
    report.wall_s = started.elapsed().as_secs_f64();
    report.cpu_s = cpu_seconds() - cpu;
    report.fps = report.frames as f64 / report.wall_s.max(1e-9);
    Ok(report)
}

/// The first pass of `Norm::Clip`: decode → preprocess → model only, for the clip's
/// largest map value.
fn scan_max(
    source: &mut dyn FrameSource,
    job: &FrameJob,
    cancel: &AtomicBool,
) -> Result<f32, PipelineError> {
    let max = AtomicU32::new(0);
    let sinks = Sinks {
        frames: None,
        records: None,
        clips: None,
        progress: None,
        observe: None,
    };
    run_stages(source, job, sinks, cancel, Some(&max), 0.0)?;
    Ok(f32::from_bits(max.load(Ordering::Relaxed)))
}

/// Bytes of frames the four channels between stages may hold together. Each item
/// carries about one RGB frame, so at 4K (25 MB a frame) the queues shrink to a couple
/// of frames instead of growing memory to gigabytes; small frames keep the full depth.
const CHANNEL_BYTES: usize = 256 << 20;

/// Items per channel: enough to keep a batch flowing, bounded by [`CHANNEL_BYTES`].
fn channel_capacity(width: u32, height: u32, batch: usize, every: usize) -> usize {
    let by_count = batch.max(1) * every.max(1) + 2;
    let frame = (width as usize * height as usize * 3).max(1);
    by_count.min((CHANNEL_BYTES / (4 * frame)).max(2))
}

/// The model stage a network takes: frames one by one, or clips of frames (3D CNNs).
enum ModelRun<'a> {
    Frames(stages::ModelStage<'a>),
    Clips(clips::ClipStage<'a>),
}

/// Starts every stage and waits for all of them. With `scan`, runs decode → preprocess
/// → model only and records the largest map value; `clip_scale` is that value for the
/// second pass.
fn run_stages(
    source: &mut dyn FrameSource,
    job: &FrameJob,
    mut sinks: Sinks,
    cancel: &AtomicBool,
    scan: Option<&AtomicU32>,
    clip_scale: f32,
) -> Result<VideoReport, PipelineError> {
    let errors = FirstError::default();
    let busy: [Busy; 5] = Default::default();
    let ctl = |i: usize| StageCtl::new(&errors, &busy[i]);
    let explained = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    let workers = job.overlay_workers.max(1);
    let info = source.info();
    let cap = channel_capacity(info.width, info.height, job.model.batch, job.model.every);
    let (dec_tx, dec_rx) = bounded(cap);
    let (pre_tx, pre_rx) = bounded(cap);
    let (cam_tx, cam_rx) = bounded(cap);
    let (ren_tx, ren_rx) = bounded(cap + workers);
    let expected = source.info().frames_hint;
    let input = &job.explainer.network().input;
    let clip_model = input.kind == camstream_core::preprocess::InputKind::Clip;
    let ex = stages::Explaining::new(job.explainer, &job.model, clip_scale, scan, &explained);
    let model = if clip_model {
        ModelRun::Clips(clips::ClipStage::new(ex)?)
    } else {
        ModelRun::Frames(stages::ModelStage::new(ex))
    };

    std::thread::scope(|s| {
        let decode_ctl = ctl(0);
        let src = &mut *source;
        spawn_stage(s, Stage::Decode.name(), decode_ctl, move || {
            stages::decode(src, dec_tx, cancel, decode_ctl)
        });
        let pre_ctl = ctl(1);
        spawn_stage(s, Stage::Preprocess.name(), pre_ctl, move || {
            stages::preprocess(input, dec_rx, pre_tx, pre_ctl)
        });
        let model_ctl = ctl(2);
        spawn_stage(s, Stage::Model.name(), model_ctl, move || match model {
            ModelRun::Frames(m) => m.run(pre_rx, cam_tx, model_ctl),
            ModelRun::Clips(c) => c.run(pre_rx, cam_tx, model_ctl),
        });
        // A scan stops at the model: nothing is drawn or written.
        if scan.is_none() {
            for _ in 0..workers {
                let (rx, tx, c) = (cam_rx.clone(), ren_tx.clone(), ctl(3));
                let overlay = &job.overlay;
                spawn_stage(s, Stage::Overlay.name(), c, move || {
                    stages::render(overlay, rx, tx, c)
                });
            }
            let (c, written) = (ctl(4), &written);
            let sinks = &mut sinks;
            spawn_stage(s, Stage::Encode.name(), c, move || {
                stages::write(sinks, expected, ren_rx, cancel, written, c)
            });
        }
        drop(cam_rx);
        drop(ren_tx);
    });
    if let Some(e) = errors.take() {
        return Err(e);
    }
    Ok(VideoReport {
        frames: written.load(Ordering::Relaxed),
        explained: explained.load(Ordering::Relaxed),
        corrupt_packets: source.corrupt_packets(),
        wall_s: 0.0,
        fps: 0.0,
        stages: Stage::ALL
            .iter()
            .zip(&busy)
            .map(|(st, b)| {
                let workers = if *st == Stage::Overlay { workers } else { 1 };
                b.stat_named(st.name(), "frames", workers)
            })
            .collect(),
        interrupted: cancel.load(Ordering::Relaxed),
        peak_rss_mb: peak_rss_mb(),
        cpu_s: 0.0,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn queues_hold_a_batch_of_small_frames_and_few_large_ones() {
        // 720p: the full depth (batch 8 + 2); 4K: two frames a queue, 50 MB each.
        assert_eq!(super::channel_capacity(1280, 720, 8, 1), 10);
        assert_eq!(super::channel_capacity(3840, 2160, 8, 1), 2);
        assert_eq!(super::channel_capacity(2560, 1440, 8, 1), 6);
    }
}
