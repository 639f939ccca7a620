//! The streaming pipeline for recorded signals: read (+ channel choice, resampling) →
//! window (+ front end) → model (batched Grad-CAM) → write (relevance, windows, plot),
//! one thread per stage joined by bounded channels, so memory stays flat however long
//! the recording is. Relevance is combined where windows overlap and mapped back to the
//! input's sample rate.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::{
    peak_rss_mb, spawn_stage, thread_cpu_seconds, Busy, FirstError, PipelineError, StageCtl,
    StageStat,
};
use camstream_core::cam::relevance::{
    frames_to_samples, window_relevance, window_relevance_tf, Combined, OverlapMean, RateMap,
};
use camstream_core::cam::Targets;
use camstream_core::metrics::{measure, Faithfulness, Measured, MetricsConfig};
use camstream_core::preprocess::melspec::MelConfig;
use camstream_core::preprocess::window::{Cut, Features, Window, Windower};
use camstream_core::record::WindowRecord;
use camstream_core::{ExplainOptions, Explainer, Explanation, Input};
use camstream_media::decode::signal::{SignalError, SignalInfo, SignalReader};
use camstream_media::guard::{check_outputs, Output};
use camstream_media::io::{Staged, StreamFile};

use crate::records::{JsonLines, RecordSink};
use camstream_media::npy::NpyStream;
use camstream_media::render::recording::{plot_recording, Band, Envelope, RecordingPlot};
use camstream_media::render::Colormap;
use camstream_media::resample::Resampler;

/// Which input channels feed a model that takes fewer channels than the file has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelChoice {
    /// The file's channels as they are (their count must match the model's).
    Auto,
    /// The mean of all channels (stereo audio to mono).
    Mix,
    /// One channel, by 0-based index or name.
    Pick(String),
}

impl ChannelChoice {
    /// The choice when the user made none: a one-channel model hears the mean of the
    /// file's channels (stereo audio to mono), any other model the channels as they are.
    pub fn default_for(explainer: &Explainer) -> Self {
        if explainer.network().input.channels == 1 {
            Self::Mix
        } else {
            Self::Auto
        }
    }
}

pub struct SignalJob<'a> {
    pub explainer: &'a Explainer,
    pub model: WindowModel,
    /// Window hop in samples at the model's rate (default: the window).
    pub hop: Option<usize>,
    pub channels: ChannelChoice,
    pub output: SignalOutput,
    /// Called with (input frames read, frames expected).
    pub progress: Option<&'a (dyn Fn(u64, Option<u64>) + Sync)>,
    /// Set, the job stops at the next chunk read and writes nothing
    /// ([`PipelineError::Cancelled`]).
    pub cancel: Option<&'a AtomicBool>,
}

/// The model stage's part of a signal job.
#[derive(Clone, Debug)]
pub struct WindowModel {
    /// Explain this class in every window; default: each window's top-1.
    pub class: Option<usize>,
    /// Windows per forward/backward pass.
    pub batch: usize,
    /// Measure each window's map (into its record).
    pub metrics: Option<MetricsConfig>,
}

/// The writer's part of a signal job: `<stem>.windows.jsonl`, `.relevance.csv/.npy`,
/// `.relevance_tf.npy` (audio), `.cam.npy` and `.png` in `out_dir`.
#[derive(Clone)]
pub struct SignalOutput {
    pub out_dir: PathBuf,
    pub stem: String,
    /// Also write `<stem>.cam.npy`: every window's raw (signed) map.
    pub cam_npy: bool,
    pub plot: bool,
    /// Plot only this section (seconds); the outputs cover the whole recording.
    pub from_s: Option<f64>,
    pub to_s: Option<f64>,
    pub colormap: &'static Colormap,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SignalReport {
    pub input: String,
    pub format: String,
    pub input_rate: f64,
    pub model_rate: f64,
    pub input_frames: u64,
    pub duration_s: f64,
    pub windows: u64,
    pub window_s: f64,
    pub hop_s: f64,
    pub wall_s: f64,
    pub windows_per_s: f64,
    pub stages: Vec<StageStat>,
    pub peak_rss_mb: f64,
    pub outputs: Vec<String>,
    pub notes: Vec<String>,
    /// The explained classes, most windows first.
    pub classes: Vec<ClassCount>,
}

/// How many windows were explained for one class.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClassCount {
    pub class: usize,
    pub label: String,
    pub windows: u64,
}

/// A window's explanation, passed from the model stage to the writer.
struct Explained {
    win: Window,
    e: Explanation,
    /// Audio models: the (n_mels, frames) model input, for the spectrogram plot.
    spec: Option<Vec<f32>>,
    method: &'static str,
    metrics: Option<Faithfulness>,
}

/// The window stage's output: trace samples, or a window with its model input (the
/// front end runs here, not in the model stage, so the STFT overlaps the network).
enum Prepared {
    Trace { start: u64, samples: Vec<f32> },
    Window(Window, Vec<f32>),
}

enum Piece {
    Trace { start: u64, samples: Vec<f32> },
    Window(Box<Explained>),
}

/// Channels per frame after the choice, and how to get them from a frame.
fn channel_plan(
    info: &SignalInfo,
    want: usize,
    choice: &ChannelChoice,
    notes: &mut Vec<String>,
) -> Result<Vec<Vec<usize>>, PipelineError> {
    let have = info.channels.len();
    let opt = |msg: String| {
        PipelineError::Signal(SignalError::Options {
            path: info.path.clone(),
            msg,
        })
    };
    let names = || {
        info.channels
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{i}={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match choice {
        ChannelChoice::Pick(c) => {
            if want != 1 {
                return Err(opt(format!(
                    "`channel` picks one channel, but the model takes {want}"
                )));
            }
            let i = info
                .channels
                .iter()
                .position(|n| n.eq_ignore_ascii_case(c))
                .or_else(|| c.parse::<usize>().ok().filter(|&i| i < have))
                .ok_or_else(|| opt(format!("no channel `{c}`; channels: {}", names())))?;
            Ok(vec![vec![i]])
        }
        ChannelChoice::Mix => {
            if want != 1 {
                return Err(opt(format!(
                    "`mix` makes one channel, but the model takes {want}"
                )));
            }
            Ok(vec![(0..have).collect()])
        }
        ChannelChoice::Auto if have == want => Ok((0..have).map(|i| vec![i]).collect()),
        ChannelChoice::Auto if want == 1 => {
            if info.format.starts_with("WAV") {
                notes.push(format!(
                    "mixed the {have} channels to mono (`channel` picks one)"
                ));
                Ok(vec![(0..have).collect()])
            } else {
                notes.push(format!(
                    "used channel 0 ({}) of {have}; `channel` picks another ({})",
                    info.channels[0],
                    names()
                ));
                Ok(vec![vec![0]])
            }
        }
        ChannelChoice::Auto => Err(opt(format!(
            "{have} channels, the model takes {want} ({})",
            names()
        ))),
    }
}

const CHUNK: usize = 8192;

/// The step between windows: the caller's, else one window (signal models) or the
/// model's own patch hop (audio models; else the longest whole number of STFT hops in a
/// window). Audio hops are whole STFT hops: another is rounded to the nearest, with a note.
fn window_hop(
    asked: Option<usize>,
    len: usize,
    mel: Option<&MelConfig>,
    notes: &mut Vec<String>,
) -> Result<usize, PipelineError> {
    if asked == Some(0) {
        return Err(PipelineError::BadOption {
            name: "hop",
            why: "must be positive".into(),
        });
    }
    let Some(m) = mel else {
        return Ok(asked.unwrap_or(len));
    };
    let step = m.hop.max(1);
    let Some(h) = asked else {
        return Ok(m.patch_hop.map_or((len / step).max(1), |p| p.max(1)) * step);
    };
    let rounded = ((h + step / 2) / step).max(1) * step;
    if rounded != h {
        notes.push(format!(
            "hop {h} rounded to {rounded} samples, a whole number of the model's STFT hops ({step})"
        ));
    }
    Ok(rounded)
}

/// Refuses a plot start at or past the end of a recording of `frames` samples.
fn past_end(
    from: Option<f64>,
    frames: u64,
    rate: f64,
    path: &std::path::Path,
) -> Result<(), PipelineError> {
    let duration = frames as f64 / rate;
    match from {
        Some(from) if from >= duration => Err(PipelineError::BadOption {
            name: "from",
            why: format!(
                "({from} s) is past the end of {} ({duration:.2} s)",
                path.display()
            ),
        }),
        _ => Ok(()),
    }
}

pub fn run_signal(
    job: &SignalJob,
    mut reader: Box<dyn SignalReader>,
) -> Result<SignalReport, PipelineError> {
    let started = Instant::now();
    let net = job.explainer.network();
    let info = reader.info().clone();
    let features = Features::new(&net.input);
    let mut notes = Vec::new();
    let plan = channel_plan(&info, features.channels(), &job.channels, &mut notes)?;
    let model_rate = net.input.sample_rate.map(|r| r as f64);
    let input_rate = match (info.rate, model_rate) {
        (Some(r), _) => r,
        (None, Some(m)) => {
            notes.push(format!(
                "{} has no sample rate; assumed the model's {m} Hz (`rate` sets it)",
                info.path.display()
            ));
            m
        }
        (None, None) => 1.0,
    };
    let model_rate = model_rate.unwrap_or(input_rate);
    // Known lengths are checked before the run, streamed ones after it (before any
    // output is renamed into place).
    if let Some(frames) = info.frames {
        past_end(job.output.from_s, frames, input_rate, &info.path)?;
    }
    let resampler = Resampler::new(input_rate, model_rate, plan.len())?;
    if resampler.is_some() {
        notes.push(format!("resampled {input_rate} Hz -> {model_rate} Hz"));
    }
    let len = features.window_len();
    let hop = window_hop(job.hop, len, features.mel().map(|m| m.config()), &mut notes)?;

    let output = &job.output;
    let out = |ext: &str| output.out_dir.join(format!("{}.{ext}", output.stem));
    let names: Vec<PathBuf> = [
        "windows.jsonl",
        "relevance.csv",
        "relevance.npy",
        "relevance_tf.npy",
        "cam.npy",
        "png",
    ]
    .iter()
    .map(|e| out(e))
    .collect();
    let planned: Vec<Output> = names
        .iter()
        .map(|path| Output { param: "out", path })
        .collect();
    check_outputs(&[info.path.as_path()], &planned)?;
    let mut files = Outputs {
        windows: JsonLines::create(&out("windows.jsonl"))?,
        csv: StreamFile::create(&out("relevance.csv"))?,
        npy: NpyStream::create(&out("relevance.npy"), &[])?,
        tf: match &features.mel() {
            Some(m) => Some(NpyStream::create(
                &out("relevance_tf.npy"),
                &[m.config().n_mels],
            )?),
            None => None,
        },
        cam: None,
    };
    files.csv.write(b"time_s,value,class\n")?;

    let errors = FirstError::default();
    let busy: [Busy; 4] = Default::default();
    let frames_read = AtomicU64::new(0);
    let windows_done = AtomicU64::new(0);
    let cap = job.model.batch.max(1) * 2 + 2;
    let (raw_tx, raw_rx) = bounded::<Vec<Vec<f32>>>(4);
    let (cut_tx, cut_rx) = bounded::<Prepared>(cap * 4);
    let (cam_tx, cam_rx) = bounded::<Piece>(cap * 4);
    let reader = &mut reader;
    let mut plot_state = None;
    let mut written_frames = 0u64;
    std::thread::scope(|s| {
        let (errors, busy) = (&errors, &busy);
        let frames_read = &frames_read;
        let plan = &plan;
        let progress = job.progress;
        let cancel = job.cancel;
        let mut resampler = resampler;
        let read_ctl = StageCtl::new(errors, &busy[0]);
        spawn_stage(s, "read", read_ctl, move || {
            read_stage(
                reader.as_mut(),
                plan,
                resampler.as_mut(),
                raw_tx,
                read_ctl,
                frames_read,
                ReadHooks { progress, cancel },
            )
        });
        let features = &features;
        let window_ctl = StageCtl::new(errors, &busy[1]);
        spawn_stage(s, "window", window_ctl, move || {
            window_stage(features, hop, plan.len(), raw_rx, cut_tx, window_ctl)
        });
        let (explainer, model) = (job.explainer, &job.model);
        let model_ctl = StageCtl::new(errors, &busy[2]);
        spawn_stage(s, "model", model_ctl, move || {
            model_stage(explainer, model, features, cut_rx, cam_tx, model_ctl)
        });
        let timing = Timing {
            input_rate,
            model_rate,
            len,
            hop,
        };
        let counts = Counts {
            windows_done: &windows_done,
            frames_read,
        };
        // The writer runs on this thread: its CPU is counted here.
        let cpu = thread_cpu_seconds();
        let r = writer(
            output,
            &timing,
            features,
            cam_rx,
            &mut files,
            StageCtl::new(errors, &busy[3]),
            counts,
        );
        busy[3].add_cpu(thread_cpu_seconds() - cpu);
        match r {
            Ok(Some((p, n))) => {
                plot_state = Some(p);
                written_frames = n;
            }
            // Another stage failed: its error is the one reported.
            Ok(None) => {}
            Err(e) => errors.set(e),
        }
    });
    if let Some(e) = errors.take() {
        return Err(e);
    }
    let input_frames = frames_read.load(Ordering::Relaxed);
    debug_assert_eq!(written_frames, input_frames);
    past_end(job.output.from_s, input_frames, input_rate, &info.path)?;
    let mut classes: Vec<ClassCount> = Vec::new();
    for b in plot_state.iter().flat_map(|(_, _, bands)| bands) {
        match classes.iter_mut().find(|c| c.class == b.class) {
            Some(c) => c.windows += 1,
            None => classes.push(ClassCount {
                class: b.class,
                label: net.label(b.class),
                windows: 1,
            }),
        }
    }
    classes.sort_by(|a, b| b.windows.cmp(&a.windows).then(a.class.cmp(&b.class)));
    // Every output is complete under its temporary name; they are renamed together, last.
    let mut staged = Staged::default();
    staged.push(files.windows.finish_staged()?);
    staged.push(files.csv.finish_staged()?);
    staged.push(files.npy.finish_staged()?);
    if let Some(tf) = files.tf {
        staged.push(tf.finish_staged()?);
    }
    if let Some(c) = files.cam {
        staged.push(c.finish_staged()?);
    }
    if let Some((samples, frames, bands)) = plot_state.filter(|_| output.plot) {
        let labels: Vec<String> = (0..net.num_classes).map(|c| net.label(c)).collect();
        let title = format!(
            "{} — {} window{} of {:.2} s, layer {}, {}",
            output.stem,
            bands.len(),
            if bands.len() == 1 { "" } else { "s" },
            len as f64 / model_rate,
            job.explainer.layer(),
            match job.model.class {
                Some(c) => format!("class {}", net.label(c)),
                None => "top-1 class per window".into(),
            }
        );
        staged.push(plot_recording(
            &out("png"),
            &RecordingPlot {
                title: &title,
                samples: &samples,
                frames: frames.as_ref(),
                bands: &bands,
                labels: &labels,
                cmap: output.colormap,
                y_desc: if features.mel().is_some() {
                    "amplitude"
                } else {
                    "signal"
                },
            },
        )?);
    }
    let outputs = staged.commit()?;
    let wall = started.elapsed().as_secs_f64();
    let windows = windows_done.load(Ordering::Relaxed);
    let names = [
        ("read", "samples"),
        ("window", "windows"),
        ("model", "windows"),
        ("write", "windows"),
    ];
    Ok(SignalReport {
        input: info.path.display().to_string(),
        format: info.format.clone(),
        input_rate,
        model_rate,
        input_frames,
        duration_s: input_frames as f64 / input_rate,
        windows,
        window_s: len as f64 / model_rate,
        hop_s: hop as f64 / model_rate,
        wall_s: wall,
        windows_per_s: windows as f64 / wall.max(1e-9),
        stages: names
            .iter()
            .zip(&busy)
            .map(|((n, unit), b)| b.stat_named(n, unit, 1))
            .collect(),
        peak_rss_mb: peak_rss_mb(),
        outputs: outputs.iter().map(|p| p.display().to_string()).collect(),
        notes,
        classes,
    })
}

struct Outputs {
    windows: JsonLines,
    csv: StreamFile,
    npy: NpyStream,
    tf: Option<NpyStream>,
    cam: Option<NpyStream>,
}

/// What the caller of a signal job hears from and says to the read stage.
struct ReadHooks<'a> {
    progress: Option<&'a (dyn Fn(u64, Option<u64>) + Sync)>,
    cancel: Option<&'a AtomicBool>,
}

fn read_stage(
    reader: &mut dyn SignalReader,
    plan: &[Vec<usize>],
    mut resampler: Option<&mut Resampler>,
    tx: Sender<Vec<Vec<f32>>>,
    ctl: StageCtl,
    frames_read: &AtomicU64,
    hooks: ReadHooks,
) -> Result<(), PipelineError> {
    let ReadHooks { progress, cancel } = hooks;
    let info = reader.info().clone();
    let have = info.channels.len();
    let c = plan.len();
    let mut buf = Vec::new();
    let mut picked = Vec::new();
    let mut resampled = Vec::new();
    let mut done = 0u64;
    loop {
        if ctl.errors.failed() {
            return Ok(());
        }
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(PipelineError::Cancelled);
        }
        let t = Instant::now();
        buf.clear();
        let n = reader.read(CHUNK, &mut buf)?;
        let last = n == 0;
        if let Some((i, _)) = buf.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(SignalError::NotFinite {
                path: info.path.clone(),
                frame: done + (i / have) as u64,
                channel: i % have,
            }
            .into());
        }
        picked.clear();
        for frame in buf.chunks_exact(have) {
            for srcs in plan {
                let v = if srcs.len() == 1 {
                    frame[srcs[0]]
                } else {
                    srcs.iter().map(|&k| frame[k]).sum::<f32>() / srcs.len() as f32
                };
                picked.push(v);
            }
        }
        done += n as u64;
        if done == 0 && last {
            return Err(SignalError::Empty { path: info.path }.into());
        }
        let inter: &[f32] = match resampler.as_deref_mut() {
            Some(r) => {
                resampled.clear();
                r.push(&picked, &mut resampled)?;
                if last {
                    r.finish(&mut resampled)?;
                }
                &resampled
            }
            None => &picked,
        };
        let planar: Vec<Vec<f32>> = (0..c)
            .map(|k| inter.iter().skip(k).step_by(c).copied().collect())
            .collect();
        frames_read.store(done, Ordering::Relaxed);
        ctl.busy.add(t.elapsed(), n as u64);
        if let Some(p) = progress {
            p(done, info.frames);
        }
        if !planar[0].is_empty() && tx.send(planar).is_err() {
            return Ok(());
        }
        if last {
            return Ok(());
        }
    }
}

fn window_stage(
    features: &Features,
    hop: usize,
    channels: usize,
    rx: Receiver<Vec<Vec<f32>>>,
    tx: Sender<Prepared>,
    ctl: StageCtl,
) -> Result<(), PipelineError> {
    let mut w = Windower::new(features.window_len(), hop, channels);
    let mut cuts = Vec::new();
    // Windows get their model input here; returns false when downstream has stopped.
    let send = |cuts: &mut Vec<Cut>| {
        cuts.drain(..).all(|c| {
            let t = Instant::now();
            let (p, windows) = match c {
                Cut::Trace { start, samples } => (Prepared::Trace { start, samples }, 0),
                Cut::Window(w) => {
                    let input = features.compute(&w);
                    (Prepared::Window(w, input), 1)
                }
            };
            ctl.busy.add(t.elapsed(), windows);
            tx.send(p).is_ok()
        })
    };
    for chunk in rx {
        if ctl.errors.failed() {
            return Ok(());
        }
        let t = Instant::now();
        w.push(&chunk, &mut cuts);
        ctl.busy.add(t.elapsed(), 0);
        if !send(&mut cuts) {
            return Ok(());
        }
    }
    if ctl.errors.failed() {
        return Ok(());
    }
    w.finish(&mut cuts);
    send(&mut cuts);
    Ok(())
}

fn model_stage(
    explainer: &Explainer,
    config: &WindowModel,
    features: &Features,
    rx: Receiver<Prepared>,
    tx: Sender<Piece>,
    ctl: StageCtl,
) -> Result<(), PipelineError> {
    let net = explainer.network();
    let batch = config.batch.max(1);
    let options = ExplainOptions {
        batch,
        top_k: 1,
        final_map: false,
    };
    let targets = config.class.map_or(Targets::TopOne, Targets::All);
    let mut sample_shape = vec![net.input.channels];
    sample_shape.extend(&net.input.size);
    let mut pending: Vec<Prepared> = Vec::new();
    let mut windows = 0;
    let flush = |pending: &mut Vec<Prepared>| -> Result<bool, PipelineError> {
        let t = Instant::now();
        let inputs: Vec<&[f32]> = pending
            .iter()
            .filter_map(|p| match p {
                Prepared::Window(_, input) => Some(input.as_slice()),
                Prepared::Trace { .. } => None,
            })
            .collect();
        let out = if inputs.is_empty() {
            Vec::new()
        } else {
            let inputs: Vec<Input> = inputs
                .iter()
                .map(|d| Input::new(d, &sample_shape))
                .collect();
            explainer.explain(&inputs, &targets, &options)?
        };
        ctl.busy.add(t.elapsed(), inputs.len() as u64);
        let mut out = out.into_iter();
        for p in pending.drain(..) {
            let piece = match p {
                Prepared::Trace { start, samples } => Piece::Trace { start, samples },
                Prepared::Window(win, input) => {
                    let Some(e) = out.next() else { continue };
                    let metrics = match &config.metrics {
                        Some(m) => {
                            let map = e.final_map(&sample_shape[1..]);
                            let sample = Measured {
                                input: &input,
                                shape: &sample_shape,
                                map: &map,
                                class: e.class,
                            };
                            Some(measure(net, sample, m)?)
                        }
                        None => None,
                    };
                    Piece::Window(Box::new(Explained {
                        win,
                        e,
                        spec: features.mel().map(|_| features.mel_major(&input)),
                        method: explainer.method().name(),
                        metrics,
                    }))
                }
            };
            if tx.send(piece).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    };
    for p in rx {
        if ctl.errors.failed() {
            return Ok(());
        }
        if matches!(p, Prepared::Window(..)) {
            windows += 1;
        }
        pending.push(p);
        if windows == batch {
            windows = 0;
            if !flush(&mut pending)? {
                return Ok(());
            }
        }
    }
    if !ctl.errors.failed() {
        flush(&mut pending)?;
    }
    Ok(())
}

type PlotState = (Envelope, Option<Envelope>, Vec<Band>);

/// The writer's state: relevance streams at the model's rate (overlap-mean), mapped to
/// the input's rate for the CSV/NPY, and binned for the plot.
struct Sink<'a> {
    files: &'a mut Outputs,
    input_rate: f64,
    rel: OverlapMean,
    rate_map: RateMap,
    trace: std::collections::VecDeque<f32>,
    trace_start: u64,
    flushed: u64,
    out_frames: u64,
    samples_env: Envelope,
    frames_env: Option<Envelope>,
    frame_pos: u64,
    drained: Vec<Combined>,
    mapped: Vec<(f32, Option<usize>)>,
}

impl Sink<'_> {
    fn trace(&mut self, start: u64, samples: Vec<f32>) {
        if self.trace.is_empty() {
            self.trace_start = start;
        }
        self.trace.extend(samples);
    }

    /// Writes the final relevance of model-rate positions before `end`; with `finish`,
    /// also the input-rate tail up to that many input frames.
    fn flush(&mut self, end: u64, finish: Option<u64>) -> Result<(), PipelineError> {
        self.drained.clear();
        self.rel.drain_to(end, &mut self.drained);
        for (i, c) in self.drained.iter().enumerate() {
            let pos = self.flushed + i as u64;
            let v = pos
                .checked_sub(self.trace_start)
                .and_then(|k| self.trace.get(k as usize).copied())
                .unwrap_or(0.0);
            self.samples_env.push(pos, v, c.values[0]);
        }
        self.flushed = self.flushed.max(end);
        while self.trace_start < end && !self.trace.is_empty() {
            self.trace.pop_front();
            self.trace_start += 1;
        }
        self.mapped.clear();
        self.rate_map.push(&self.drained, &mut self.mapped);
        if let Some(total) = finish {
            self.rate_map.finish(total, &mut self.mapped);
        }
        let mut text = String::with_capacity(self.mapped.len() * 24);
        let mut vals = Vec::with_capacity(self.mapped.len());
        for (v, class) in &self.mapped {
            let t = self.out_frames as f64 / self.input_rate;
            use std::fmt::Write;
            let _ = match class {
                Some(c) => writeln!(text, "{t:.6},{v},{c}"),
                None => writeln!(text, "{t:.6},{v},"),
            };
            vals.push(*v);
            self.out_frames += 1;
        }
        self.files.csv.write(text.as_bytes())?;
        self.files.npy.push(&vals)?;
        Ok(())
    }

    fn frames(&mut self, rel: &[Combined], spec: &[Combined]) -> Result<(), PipelineError> {
        let Some(tf) = &mut self.files.tf else {
            return Ok(());
        };
        let vals: Vec<f32> = rel.iter().flat_map(|c| c.values.iter().copied()).collect();
        tf.push(&vals)?;
        for (r, s) in rel.iter().zip(spec) {
            if let Some(env) = &mut self.frames_env {
                env.push_frame(self.frame_pos, &s.values, &r.values);
            }
            self.frame_pos += 1;
        }
        Ok(())
    }
}

/// Rates and window geometry, as the writer maps windows back to time.
#[derive(Clone, Copy)]
struct Timing {
    input_rate: f64,
    model_rate: f64,
    /// Window length and hop, in samples at the model's rate.
    len: usize,
    hop: usize,
}

/// Counters the writer shares with the read stage and the report.
struct Counts<'a> {
    windows_done: &'a AtomicU64,
    frames_read: &'a AtomicU64,
}

fn writer(
    output: &SignalOutput,
    timing: &Timing,
    features: &Features,
    rx: Receiver<Piece>,
    files: &mut Outputs,
    ctl: StageCtl,
    counts: Counts,
) -> Result<Option<(PlotState, u64)>, PipelineError> {
    let Timing {
        input_rate,
        model_rate,
        len,
        hop,
    } = *timing;
    let Counts {
        windows_done,
        frames_read,
    } = counts;
    let from = output
        .from_s
        .map_or(0, |s| (s * model_rate).round().max(0.0) as u64);
    let to = output
        .to_s
        .map(|s| (s * model_rate).round().max(0.0) as u64);
    let mel = features.mel().map(|m| m.config().clone());
    let frames_env = mel.as_ref().map(|m| {
        let h = m.hop as f64;
        Envelope::new(
            model_rate / h,
            (from as f64 / h).round() as u64,
            to.map(|t| (t as f64 / h).round() as u64),
            m.n_mels,
        )
    });
    let mut sink = Sink {
        files,
        input_rate,
        rel: OverlapMean::new(1),
        rate_map: RateMap::new(model_rate, input_rate),
        trace: Default::default(),
        trace_start: 0,
        flushed: 0,
        out_frames: 0,
        samples_env: Envelope::new(model_rate, from, to, 0),
        frames_env,
        frame_pos: 0,
        drained: Vec::new(),
        mapped: Vec::new(),
    };
    let mut bands = Vec::new();
    let mut tf_rel = mel.as_ref().map(|m| OverlapMean::new(m.n_mels));
    let mut tf_spec = mel.as_ref().map(|m| OverlapMean::new(m.n_mels));
    let mut cam_rows: Option<NpyStream> = None;

    for piece in rx {
        if ctl.errors.failed() {
            return Ok(None);
        }
        let t = Instant::now();
        let windows = u64::from(matches!(piece, Piece::Window(_)));
        match piece {
            Piece::Trace { start, samples } => sink.trace(start, samples),
            Piece::Window(x) => {
                let (w, e) = (&x.win, &x.e);
                // Everything before this window's start is final.
                sink.flush(w.start, None)?;
                let start_s = w.start as f64 / model_rate;
                let end_s = (w.start + w.valid as u64) as f64 / model_rate;
                sink.files.windows.record(&WindowRecord {
                    class: e.class,
                    end_s,
                    label: e.label.clone(),
                    logit: e.logit,
                    method: x.method.to_string(),
                    metrics: x.metrics.clone(),
                    padded: w.valid < len,
                    probability: e.probability,
                    start_s,
                    window: w.index,
                })?;
                bands.push(Band {
                    start_s,
                    end_s: (w.start + w.valid.min(hop) as u64) as f64 / model_rate,
                    class: e.class,
                });
                if output.cam_npy {
                    if cam_rows.is_none() {
                        let p = output.out_dir.join(format!("{}.cam.npy", output.stem));
                        cam_rows = Some(NpyStream::create(&p, &e.spatial)?);
                    }
                    if let Some(c) = &mut cam_rows {
                        c.push(&e.raw)?;
                    }
                }
                match (&mel, &mut tf_rel, &mut tf_spec, &x.spec) {
                    (Some(m), Some(tr), Some(ts), Some(spec)) => {
                        let frames = features.frames();
                        let dims = if m.time_major {
                            [frames, m.n_mels]
                        } else {
                            [m.n_mels, frames]
                        };
                        let tf = features.mel_major(&window_relevance_tf(&e.raw, &e.spatial, dims));
                        let lm = features.mel().map_or(0.0, |l| l.frame_centre());
                        let r = frames_to_samples(&tf, m.n_mels, frames, m.hop, lm, len);
                        sink.rel.add(w.start, &r, w.valid, e.class);
                        // Frame-major rows for the streamed (frames, n_mels) outputs.
                        let f0 = w.start / m.hop as u64;
                        let valid_frames = features
                            .mel()
                            .map_or(1, |l| l.frames(w.valid))
                            .clamp(1, frames);
                        let rows = |map: &[f32]| -> Vec<f32> {
                            (0..frames)
                                .flat_map(|t| (0..m.n_mels).map(move |b| map[b * frames + t]))
                                .collect()
                        };
                        let (mut a, mut b) = (Vec::new(), Vec::new());
                        tr.drain_to(f0, &mut a);
                        ts.drain_to(f0, &mut b);
                        sink.frames(&a, &b)?;
                        tr.add(f0, &rows(&tf), valid_frames, e.class);
                        ts.add(f0, &rows(spec), valid_frames, e.class);
                    }
                    _ => {
                        let r = window_relevance(&e.raw, len);
                        sink.rel.add(w.start, &r, w.valid, e.class);
                    }
                }
                windows_done.fetch_add(1, Ordering::Relaxed);
            }
        }
        ctl.busy.add(t.elapsed(), windows);
    }
    if ctl.errors.failed() {
        return Ok(None);
    }
    let t = Instant::now();
    // Every sample has been traced by now: the trace's end is the model-rate length.
    let total_model = sink.flushed.max(sink.trace_start + sink.trace.len() as u64);
    let input_total = frames_read.load(Ordering::Relaxed);
    sink.flush(total_model, Some(input_total))?;
    if let (Some(m), Some(tr), Some(ts)) = (&mel, &mut tf_rel, &mut tf_spec) {
        let _ = m;
        let total_frames = features
            .mel()
            .map_or(0, |l| l.frames(total_model as usize))
            .max(1) as u64;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        tr.drain_to(total_frames, &mut a);
        ts.drain_to(total_frames, &mut b);
        sink.frames(&a, &b)?;
    }
    let out_frames = sink.out_frames;
    let state = (sink.samples_env, sink.frames_env, bands);
    sink.files.cam = cam_rows;
    ctl.busy.add(t.elapsed(), 0);
    Ok(Some((state, out_frames)))
}
