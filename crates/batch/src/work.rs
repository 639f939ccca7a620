//! What a worker does to one input: a video through the frame pipeline, or a recording
//! through the signal pipeline, chosen by the model's input. Outputs go to a scratch
//! folder; the runner uploads them.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use camstream_core::model::Network;
use camstream_core::preprocess::InputKind;
use camstream_core::Explainer;
use camstream_media::decode::signal::{self, OpenOptions};
use camstream_media::decode::Section;
use camstream_media::encode::EncodeOptions;
use camstream_media::render::JET;
use camstream_pipeline::signal::{run_signal, ChannelChoice, SignalJob, SignalOutput, WindowModel};
use camstream_pipeline::{run_video, FrameJob, ModelConfig, Norm, OverlayConfig, VideoJob};

use crate::config::WorkConfig;
use crate::error::Result;

/// What one input gave: frames (video) or windows (signal) explained.
#[derive(Debug, Clone, Copy, Default)]
pub struct Done {
    pub frames: u64,
}

/// The work done on each input. `Err` is a permanent failure of that input (it is
/// recorded and the shard goes on); a run stopped through `cancel` must also return
/// `Err`, and the runner tells the two apart by the flag.
pub trait Work {
    fn run(&self, input: &Path, out_dir: &Path, cancel: &AtomicBool) -> Result<Done, String>;
}

/// The explain pipelines as a [`Work`].
pub struct ExplainWork {
    explainer: Explainer,
    class: Option<usize>,
    config: WorkConfig,
}

impl ExplainWork {
    pub fn new(config: &WorkConfig, device: &candle_core::Device) -> Result<Self> {
        let net = Network::load(&config.request()?, device)?;
        let explainer =
            Explainer::from_network(net, config.layer.as_deref())?.with_config(config.cam()?);
        let class = config
            .class
            .as_deref()
            .map(|c| explainer.network().parse_class(c))
            .transpose()?;
        Ok(Self {
            explainer,
            class,
            config: config.clone(),
        })
    }

    fn video(&self, input: &Path, out: &Path, cancel: &AtomicBool) -> Result<Done, String> {
        let v = VideoJob {
            input: input.to_path_buf(),
            output: out.join("annotated.mp4"),
            section: Section::default(),
            encode: EncodeOptions::default(),
            frames_json: Some(out.join("frames.jsonl")),
            clips_json: None,
            report: None,
            frames: FrameJob {
                explainer: &self.explainer,
                model: ModelConfig {
                    class: self.class,
                    batch: self.config.batch,
                    every: self.config.every as usize,
                    norm: Norm::Frame,
                    metrics: None,
                    metrics_every: 1,
                    clips: Default::default(),
                },
                overlay: OverlayConfig {
                    colormap: &JET,
                    alpha: self.config.alpha,
                    label: true,
                    renormalise: true,
                },
                overlay_workers: 2,
            },
            progress: None,
            observe: None,
        };
        let report = run_video(&v, cancel).map_err(|e| e.to_string())?;
        if report.interrupted {
            return Err("stopped".into());
        }
        Ok(Done {
            frames: report.frames,
        })
    }

    fn signal(&self, input: &Path, out: &Path, cancel: &AtomicBool) -> Result<Done, String> {
        let reader = signal::open(input, &OpenOptions::default()).map_err(|e| e.to_string())?;
        let s = SignalJob {
            explainer: &self.explainer,
            model: WindowModel {
                class: self.class,
                batch: self.config.batch,
                metrics: None,
            },
            hop: None,
            channels: ChannelChoice::default_for(&self.explainer),
            output: SignalOutput {
                out_dir: out.to_path_buf(),
                stem: "signal".into(),
                cam_npy: false,
                plot: true,
                from_s: None,
                to_s: None,
                colormap: &JET,
            },
            progress: None,
            cancel: Some(cancel),
        };
        let report = run_signal(&s, reader).map_err(|e| e.to_string())?;
        Ok(Done {
            frames: report.windows,
        })
    }
}

impl Work for ExplainWork {
    fn run(&self, input: &Path, out_dir: &Path, cancel: &AtomicBool) -> Result<Done, String> {
        match self.explainer.network().input.kind {
            InputKind::Image | InputKind::Clip => self.video(input, out_dir, cancel),
            InputKind::Signal | InputKind::Audio => self.signal(input, out_dir, cancel),
        }
    }
}
