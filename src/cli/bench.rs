//! `camstream bench`: forward-only vs Grad-CAM on the same batch, warm-up then timed
//! iterations, reported as medians, spread and their ratio; the host stages
//! (preprocess, overlay at 720p) alone; and with `--video`, the whole pipeline on a
//! clip with every stage's own rate.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Tensor};
use clap::Args;

use camstream_core::cam::Needs;
use camstream_core::cam::{SourceMap, Targets};
use camstream_core::model::{fastconv, resnet, ModelRequest, ModelSource, Network};
use camstream_core::preprocess::{prepare_image, InputKind};
use camstream_core::{CamConfig, ExplainOptions, Explainer, Input, Method};
use camstream_media::frame::{Picture, RgbConverter, Yuv420};
use camstream_media::render::JET;

#[derive(Args)]
pub struct BenchArgs {
    /// A built-in architecture (random weights unless --weights), an ONNX file or a
    /// model config
    #[arg(long, short = 'm', default_value = "resnet18")]
    pub model: String,
    #[arg(long, short = 'w')]
    pub weights: Option<std::path::PathBuf>,
    /// Target layer; default: the model's
    #[arg(long, short = 'l')]
    pub layer: Option<String>,
    #[arg(long, short = 'b', default_value_t = 8)]
    pub batch: usize,
    /// Input height and width for built-ins (configs use their own size) [default: 224;
    /// 112 for video models, which take clips of 16 frames]
    #[arg(long)]
    pub size: Option<usize>,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Also run the video pipeline on this clip (output discarded) and report each
    /// stage's frames/s and the end-to-end rate
    #[arg(long)]
    pub video: Option<std::path::PathBuf>,
    /// libx264 preset of the `--video` run, as `video --preset`
    #[arg(long, default_value = camstream_media::encode::DEFAULT_PRESET)]
    pub preset: String,
    /// libx264 threads of the `--video` run, as `video --encode-threads`
    #[arg(long)]
    pub encode_threads: Option<usize>,
    /// Also time these CAM methods against forward-only and Grad-CAM on the same batch:
    /// comma-separated names or `all`. Each is timed interleaved with its own forward
    /// and Grad-CAM runs; methods with extra forward passes (scorecam, ablationcam) are
    /// timed once, without warm-up
    #[arg(long)]
    pub method: Option<String>,
    /// Time aug-smooth (six views) too; with several layers (`--layer a,b`) every
    /// timing is of the combined final maps, as `image` computes them
    #[arg(long)]
    pub aug_smooth: bool,
    /// Masked inputs (scorecam) or ablated channels (ablationcam) per forward pass;
    /// default: the method's
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub method_batch: Option<u64>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// One method's time on the bench batch, as multiples of forward-only and Grad-CAM.
#[derive(serde::Serialize)]
struct MethodTiming {
    method: &'static str,
    #[serde(flatten)]
    timing: Timing,
    over_forward: f64,
    over_gradcam: f64,
}

/// The machine's GEMM rate (the `gemm` crate, 2048^2, all threads) and the forward's
/// convolution rate.
#[derive(serde::Serialize)]
struct Ceiling {
    gemm_gflops: f64,
    forward_gflop: f64,
    forward_gflops: f64,
}

#[derive(serde::Serialize)]
struct Timing {
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    frames_per_s: f64,
}

type Job<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

/// Times each job, interleaved (one call of each per iteration), so that a shared
/// machine's changing load falls on all of them alike and their ratios stay honest.
fn time_each(iters: usize, warmup: usize, batch: usize, jobs: &mut [Job]) -> Result<Vec<Timing>> {
    for _ in 0..warmup {
        for f in jobs.iter_mut() {
            f()?;
        }
    }
    let mut ms = vec![Vec::with_capacity(iters); jobs.len()];
    for _ in 0..iters.max(1) {
        for (f, m) in jobs.iter_mut().zip(&mut ms) {
            let t = Instant::now();
            f()?;
            m.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(ms
        .into_iter()
        .map(|mut ms| {
            ms.sort_by(f64::total_cmp);
            let median = ms[ms.len() / 2];
            Timing {
                median_ms: median,
                min_ms: ms[0],
                max_ms: ms[ms.len() - 1],
                frames_per_s: batch as f64 * 1e3 / median,
            }
        })
        .collect())
}

fn time(
    iters: usize,
    warmup: usize,
    batch: usize,
    f: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    let mut jobs: Vec<Job> = vec![Box::new(f)];
    Ok(time_each(iters, warmup, batch, &mut jobs)?.remove(0))
}

/// Preprocessing and overlay of a synthetic 720p frame held in 4:2:0 YUV, as a decoded
/// frame is, one frame per iteration.
fn host_stages(
    a: &BenchArgs,
    net: &Network,
    cam: &Explainer,
    x: &Tensor,
) -> Result<(Timing, Timing)> {
    let frame = image::RgbImage::from_fn(1280, 720, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8])
    });
    // As a file job carries it: the decoder's YUV, converted to RGB for the model and
    // drawn on in YUV.
    let mut yuv = Picture::Yuv(Yuv420::from_rgb(&frame)?);
    let mut to_rgb = RgbConverter::default();
    let pre = time(a.iters, a.warmup, 1, || {
        std::hint::black_box(prepare_image(to_rgb.rgb(&yuv)?, &net.input));
        Ok(())
    })?;
    let out = cam.run(x, &Targets::TopOne)?;
    let p = prepare_image(&frame, &net.input);
    let model = [p.size[0], p.size[1]];
    let ovl = time(a.iters, a.warmup, 1, || {
        // As the video's overlay stage: the map a row at a time, and its peak.
        let map = SourceMap::new(
            out.raw_map(0),
            &out.spatial,
            model,
            p.placement.model.map(|v| v as usize),
            [720, 1280],
            true,
        );
        std::hint::black_box(map.peak());
        yuv.overlay(|y, row| map.row(y, row), &JET, 0.5)?;
        Ok(())
    })?;
    Ok((pre, ovl))
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let device = super::device();
    let source = super::parse_model(&a.model)?;
    let mut net = match (&source, &a.weights) {
        (ModelSource::Builtin(arch), None) if !arch.is_video() => {
            let w = resnet::random_weights(arch.name(), 1000, 0, &device)?;
            resnet::build_builtin(arch.name(), &w, &device)?
        }
        _ => {
            let mut req = ModelRequest::new(source.clone());
            req.weights = a.weights.clone();
            req.target = a.layer.clone();
            Network::load(&req, &device)?
        }
    };
    let clips = net.input.kind == InputKind::Clip;
    if matches!(source, ModelSource::Builtin(_)) {
        let s = a.size.unwrap_or(if clips { 112 } else { 224 });
        net.input.size = if clips {
            vec![net.input.size[0], s, s]
        } else {
            vec![s, s]
        };
    }
    // What one sample is, in the rates printed.
    let unit = if clips { "clips/s" } else { "frames/s" };
    let config = |method| CamConfig {
        aug_smooth: a.aug_smooth,
        method_batch: a.method_batch.map(|b| b as usize),
        ..CamConfig::new(method)
    };
    let cam = Explainer::from_network(net.clone(), a.layer.as_deref())?
        .with_config(config(Method::GradCam));
    let layer = cam.layer().to_string();
    let mut shape = vec![a.batch, net.input.channels];
    shape.extend(&net.input.size);
    let x = Tensor::randn(0f32, 1.0, shape.clone(), &device)?.to_dtype(DType::F32)?;
    let forward = || -> Result<()> {
        net.forward(&x)?.to_vec2::<f32>()?;
        Ok(())
    };
    // Combined maps go through `explain`, on the same values as host inputs.
    let host: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let per: usize = shape[1..].iter().product();
    let inputs: Vec<Input> = host
        .chunks(per)
        .map(|c| Input::new(c, &shape[1..]))
        .collect();
    let options = ExplainOptions {
        batch: a.batch,
        final_map: false,
        ..ExplainOptions::default()
    };
    let run = |e: &Explainer| -> Result<()> {
        if e.combines() {
            e.explain(&inputs, &Targets::TopOne, &options)?;
        } else {
            e.run(&x, &Targets::TopOne)?;
        }
        Ok(())
    };
    let mut jobs: Vec<Job> = vec![Box::new(forward), Box::new(|| run(&cam))];
    let [fwd, gc]: [Timing; 2] = time_each(a.iters, a.warmup, a.batch, &mut jobs)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("two timings"))?;
    let ratio = gc.median_ms / fwd.median_ms;
    // The convolutions' work in one forward, against the GEMM kernels' own rate here
    // (the CPU's: the counter sees only the CPU convolutions).
    let ceiling = if device.is_cpu() {
        let before = fastconv::conv_flops();
        forward()?;
        let gflop = (fastconv::conv_flops() - before) as f64 / 1e9;
        Some(Ceiling {
            gemm_gflops: fastconv::gemm_ceiling(2048, 3),
            forward_gflop: gflop,
            forward_gflops: gflop * 1e3 / fwd.median_ms,
        })
    } else {
        None
    };
    let mut per_method = Vec::new();
    for m in Method::list(a.method.as_deref().unwrap_or("gradcam"))?
        .into_iter()
        .filter(|&m| a.method.is_some() && m != Method::GradCam)
    {
        let e = cam.clone().with_config(config(m));
        let extra = matches!(m.needs(), Needs::MaskedInputs | Needs::Ablations);
        // A cheap method is timed against its own interleaved forward and Grad-CAM.
        let (t, f, g) = if extra {
            let t = time(1, 0, a.batch, || run(&e))?;
            (t, fwd.median_ms, gc.median_ms)
        } else {
            let mut jobs: Vec<Job> = vec![
                Box::new(forward),
                Box::new(|| run(&cam)),
                Box::new(|| run(&e)),
            ];
            let mut t = time_each(a.iters, a.warmup, a.batch, &mut jobs)?;
            let (t, g, f) = (t.remove(2), t.remove(1), t.remove(0));
            (t, f.median_ms, g.median_ms)
        };
        per_method.push(MethodTiming {
            method: m.name(),
            over_forward: t.median_ms / f,
            over_gradcam: t.median_ms / g,
            timing: t,
        });
    }
    let threads = candle_core::utils::get_num_threads();

    let (pre, ovl) = if clips {
        (None, None) // per-frame host stages; clip maps are sliced in time first
    } else {
        let (pre, ovl) = host_stages(a, &net, &cam, &x)?;
        (Some(pre), Some(ovl))
    };
    let video = match &a.video {
        Some(v) => Some(video_run(a, &cam, v, &mut || run(&cam))?),
        None => None,
    };
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "model": a.model, "layer": layer, "aug_smooth": a.aug_smooth, "batch": a.batch, "method_batch": a.method_batch, "input": &shape[1..],
                "device": format!("{:?}", device.location()), "threads": threads,
                "forward": fwd, "gradcam": gc, "ceiling": ceiling, "gradcam_over_forward": ratio,
                "preprocess_720p": pre, "overlay_720p": ovl,
                "video": video.as_ref().map(|v| &v.report),
                "gradcam_after_video": video.as_ref().map(|v| &v.after),
                "model_cpu_ms_per_frame": video.as_ref().map(|v| v.model_cpu_ms),
                "video_over_model": video.as_ref().map(|v| v.over_model(&gc)),
                "video_cpu_bound": video.as_ref().map(|v| v.cpu_bound(&gc)),
                "cores": super::cores(),
                "methods": per_method,
            })
        );
    } else {
        println!(
            "{} layer {layer}{}, batch {} x {:?}, {:?}, {threads} threads\n  forward : median {:.1} ms (min {:.1}, max {:.1}) = {:.1} {unit}\n  Grad-CAM: median {:.1} ms (min {:.1}, max {:.1}) = {:.1} {unit}\n  Grad-CAM / forward time: {ratio:.2}",
            a.model, if a.aug_smooth { " (aug-smooth)" } else { "" }, a.batch, &shape[1..], device.location(), fwd.median_ms, fwd.min_ms, fwd.max_ms, fwd.frames_per_s,
            gc.median_ms, gc.min_ms, gc.max_ms, gc.frames_per_s
        );
        if let Some(c) = &ceiling {
            println!(
                "  convolutions: {:.2} GFLOP per batch, {:.1} GFLOP/s in the forward = {:.2} of the GEMM ceiling ({:.1} GFLOP/s on 2048^2, {threads} threads)",
                c.forward_gflop, c.forward_gflops, c.forward_gflops / c.gemm_gflops, c.gemm_gflops
            );
        }
        if let (Some(pre), Some(ovl)) = (&pre, &ovl) {
            println!(
                "  preprocess 720p: median {:.2} ms = {:.0} frames/s (one thread)\n  overlay 720p   : median {:.2} ms = {:.0} frames/s (one worker)",
                pre.median_ms, pre.frames_per_s, ovl.median_ms, ovl.frames_per_s
            );
        }
        for m in &per_method {
            println!(
                "  {:<12}: median {:.1} ms = {:.1} frames/s; {:.2} x forward, {:.2} x Grad-CAM",
                m.method, m.timing.median_ms, m.timing.frames_per_s, m.over_forward, m.over_gradcam
            );
        }
        if let Some(v) = &video {
            v.print(&gc, a.batch);
        }
    }
    Ok(())
}

/// `bench --video`: the pipeline's run, and the model alone timed again after it with its
/// CPU counted, so that a load that moved during the video shows and the frame's CPU
/// budget has the network's own share.
struct VideoBench {
    report: camstream_pipeline::VideoReport,
    after: Timing,
    /// CPU (all threads) a frame of the model alone, after the video.
    model_cpu_ms: f64,
}

fn video_run(
    a: &BenchArgs,
    cam: &Explainer,
    clip: &std::path::Path,
    run: &mut dyn FnMut() -> Result<()>,
) -> Result<VideoBench> {
    let report = super::video::bench(cam, clip, a.batch, &a.preset, a.encode_threads)?;
    let cpu = camstream_pipeline::cpu_seconds();
    let after = time(a.iters, 0, a.batch, run)?;
    let frames = (a.iters.max(1) * a.batch) as f64;
    let model_cpu_ms = (camstream_pipeline::cpu_seconds() - cpu) * 1e3 / frames;
    Ok(VideoBench {
        report,
        after,
        model_cpu_ms,
    })
}

impl VideoBench {
    /// End to end against the model alone: the mean of its rates before and after.
    fn over_model(&self, before: &Timing) -> f64 {
        self.report.fps / (0.5 * (before.frames_per_s + self.after.frames_per_s))
    }

    /// The share of all the cores the video's run used.
    fn cores_used(&self) -> f64 {
        let v = &self.report;
        v.cpu_s / (v.wall_s.max(1e-9) * super::cores() as f64)
    }

    /// The most the video could reach against the model alone at the CPU it spent a
    /// frame, were every core busy the whole run: its end-to-end ratio over the share of
    /// the cores it used. Where this is low, the host stages' CPU bounds the video, not
    /// how the stages are scheduled.
    fn cpu_bound(&self, before: &Timing) -> f64 {
        self.over_model(before) / self.cores_used().max(1e-9)
    }

    fn print(&self, before: &Timing, batch: usize) {
        let v = &self.report;
        let cores = super::cores();
        let wall = v.wall_s.max(1e-9);
        println!(
            "  video: {} frames, {:.1} frames/s end to end = {:.2} x the model alone (Grad-CAM at batch {batch}: {:.1} frames/s before the video, {:.1} after); CPU {:.0} % of {cores} cores",
            v.frames,
            v.fps,
            self.over_model(before),
            before.frames_per_s,
            self.after.frames_per_s,
            100.0 * self.cores_used(),
        );
        let stages: Vec<String> = v
            .stages
            .iter()
            .map(|s| {
                format!(
                    "{} {:.1}/s busy {:.0} %",
                    s.stage,
                    s.per_s,
                    100.0 * s.busy_s / wall
                )
            })
            .collect();
        println!(
            "  stages (frames/s while busy, busy share of the wall time): {}",
            stages.join(", ")
        );
        // The frame's CPU budget: each stage's own threads, then the rest (the network's
        // maths pool, codec threads beyond one, start-up), against the model alone's.
        let per_frame = |s: f64| s * 1e3 / v.frames.max(1) as f64;
        let own: f64 = v.stages.iter().map(|s| s.cpu_s).sum();
        let parts: Vec<String> = v
            .stages
            .iter()
            .map(|s| format!("{} {:.1}", s.stage, per_frame(s.cpu_s)))
            .collect();
        println!(
            "  CPU ms a frame: {}, the maths pool and the rest {:.1}; {:.1} in all (the model alone: {:.1})",
            parts.join(", "),
            per_frame(v.cpu_s - own),
            per_frame(v.cpu_s),
            self.model_cpu_ms,
        );
        println!(
            "  so with every core busy the whole run, the video could reach {:.2} x the model alone",
            self.cpu_bound(before)
        );
    }
}
