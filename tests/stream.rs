//! The video pipeline without files: frames from memory, records and drawn frames to
//! channels, as a server would run it.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use camstream_core::cam::Targets;
use camstream_core::preprocess::prepare_image;
use camstream_core::record::FrameRecord;
use camstream_core::{ExplainOptions, Explainer, Input, ModelRequest, ModelSource};
use camstream_media::render::JET;
use camstream_pipeline::video::{MemoryFrames, RecordSink, Sinks};
use camstream_pipeline::{run_frames, FrameJob, ModelConfig, Norm, OverlayConfig};
use camstream_train::synth::{rng, shapes};
use candle_core::Device;

#[test]
fn memory_frames_to_channels_match_the_explainer() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/models/shapes.toml");
    let req = ModelRequest::new(ModelSource::Config(model));
    let explainer = Explainer::new(&req, None, &Device::Cpu).unwrap();
    let mut r = rng(21);
    let pictures: Vec<_> = (0..7).map(|_| shapes::sample(&mut r).image).collect();
    let (w, h) = (pictures[0].width(), pictures[0].height());

    let (rec_tx, rec_rx) = crossbeam_channel::unbounded::<FrameRecord>();
    let (frame_tx, frame_rx) = crossbeam_channel::unbounded();
    let (mut rec_tx, mut frame_tx) = (rec_tx, frame_tx);
    let job = FrameJob {
        explainer: &explainer,
        model: ModelConfig {
            class: None,
            batch: 3,
            every: 1,
            norm: Norm::Frame,
            metrics: None,
            metrics_every: 1,
            clips: Default::default(),
        },
        overlay: OverlayConfig {
            colormap: &JET,
            alpha: 0.5,
            label: true,
            renormalise: true,
        },
        overlay_workers: 2,
    };
    let mut source = MemoryFrames::new(pictures.clone().into_iter(), w, h, 25);
    // The observer sees every drawn frame with its record, in order.
    let seen = std::sync::Mutex::new(Vec::new());
    let observe = |p: &camstream_media::frame::Picture, r: &FrameRecord| {
        seen.lock()
            .unwrap()
            .push((r.index, (p.width(), p.height())));
    };
    let sinks = Sinks {
        frames: Some(&mut frame_tx),
        records: Some(&mut rec_tx as &mut dyn RecordSink<FrameRecord>),
        clips: None,
        progress: None,
        observe: Some(&observe),
    };
    let report = run_frames(&mut source, &job, sinks, &AtomicBool::new(false)).unwrap();
    assert_eq!((report.frames, report.explained), (7, 7));
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen, (0..7).map(|i| (i, (w, h))).collect::<Vec<_>>());
    drop((rec_tx, frame_tx));

    let records: Vec<FrameRecord> = rec_rx.iter().collect();
    let frames: Vec<(i64, image::RgbImage)> = frame_rx.iter().collect();
    assert_eq!(records.len(), 7);
    assert_eq!(frames.len(), 7);
    // The same frames through the explain API directly: same classes and scores, in order.
    let spec = &explainer.network().input;
    let prepared: Vec<_> = pictures.iter().map(|p| prepare_image(p, spec)).collect();
    let shape = [3, prepared[0].size[0], prepared[0].size[1]];
    let inputs: Vec<Input> = prepared
        .iter()
        .map(|p| Input::new(&p.chw, &shape))
        .collect();
    let direct = explainer
        .explain(&inputs, &Targets::TopOne, &ExplainOptions::default())
        .unwrap();
    for (i, (rec, e)) in records.iter().zip(&direct).enumerate() {
        assert_eq!(rec.index, i as u64);
        assert_eq!(frames[i].0, i as i64);
        assert_eq!(frames[i].1.dimensions(), (w, h));
        assert_eq!((rec.class, &rec.label), (e.class, &e.label));
        assert!((rec.probability - e.probability).abs() < 1e-6);
        assert!(rec.explained);
    }
    // A drawn frame is not the input frame.
    assert_ne!(frames[0].1, pictures[0]);

    // Clip normalisation needs a second pass over a file: refused for a stream.
    let job = FrameJob {
        model: ModelConfig {
            norm: Norm::Clip,
            ..job.model.clone()
        },
        overlay: job.overlay.clone(),
        ..job
    };
    let mut source = MemoryFrames::new(pictures.into_iter(), w, h, 25);
    let none = Sinks {
        frames: None,
        records: None,
        clips: None,
        progress: None,
        observe: None,
    };
    let e = run_frames(&mut source, &job, none, &AtomicBool::new(false)).unwrap_err();
    assert!(e.to_string().contains("`norm`"), "{e}");
}
