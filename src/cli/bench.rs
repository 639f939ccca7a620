//! `camstream bench`: forward-only vs Grad-CAM on the same batch, warm-up then timed
//! iterations, reported as medians, spread and their ratio.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use clap::Args;

use camstream::cam::{GradCam, Targets};
use camstream::model::{resnet, ModelRequest, Network, BUILTIN};

#[derive(Args)]
pub struct BenchArgs {
    /// A built-in architecture (random weights unless --weights) or a model config
    #[arg(long, short = 'm', default_value = "resnet18")]
    pub model: String,
    #[arg(long, short = 'w')]
    pub weights: Option<std::path::PathBuf>,
    /// Target layer; default: the model's
    #[arg(long, short = 'l')]
    pub layer: Option<String>,
    #[arg(long, short = 'b', default_value_t = 8)]
    pub batch: usize,
    /// Input height and width for built-ins (configs use their own size)
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Timing {
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    frames_per_s: f64,
}

fn time(
    iters: usize,
    warmup: usize,
    batch: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    for _ in 0..warmup {
        f()?;
    }
    let mut ms: Vec<f64> = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    Ok(Timing {
        median_ms: median,
        min_ms: ms[0],
        max_ms: ms[ms.len() - 1],
        frames_per_s: batch as f64 * 1e3 / median,
    })
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let device = Device::Cpu;
    let mut net = if BUILTIN.contains(&a.model.as_str()) && a.weights.is_none() {
        let w = resnet::random_weights(&a.model, 1000, 0, &device)?;
        resnet::build_builtin(&a.model, &w, &device)?
    } else {
        Network::load(
            &ModelRequest {
                model: &a.model,
                weights: a.weights.as_deref(),
                target: a.layer.as_deref(),
                labels_file: None,
            },
            &device,
        )?
    };
    if BUILTIN.contains(&a.model.as_str()) {
        net.input.size = vec![a.size, a.size];
    }
    let layer = a.layer.clone().unwrap_or_else(|| net.default_layer.clone());
    let cam = GradCam::new(&net, &layer)?;
    let mut shape = vec![a.batch, net.input.channels];
    shape.extend(&net.input.size);
    let x = Tensor::randn(0f32, 1.0, shape.clone(), &device)?.to_dtype(DType::F32)?;
    let fwd = time(a.iters, a.warmup, a.batch, || {
        net.forward(&x)?.to_vec2::<f32>()?;
        Ok(())
    })?;
    let gc = time(a.iters, a.warmup, a.batch, || {
        cam.run(&x, &Targets::TopOne)?;
        Ok(())
    })?;
    let ratio = gc.median_ms / fwd.median_ms;
    let threads = candle_core::utils::get_num_threads();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "model": a.model, "layer": layer, "batch": a.batch, "input": &shape[1..],
                "device": "cpu", "threads": threads,
                "forward": fwd, "gradcam": gc, "gradcam_over_forward": ratio,
            })
        );
    } else {
        println!(
            "{} layer {layer}, batch {} x {:?}, cpu, {threads} threads\n  forward : median {:.1} ms (min {:.1}, max {:.1}) = {:.1} frames/s\n  Grad-CAM: median {:.1} ms (min {:.1}, max {:.1}) = {:.1} frames/s\n  Grad-CAM / forward time: {ratio:.2}",
            a.model, a.batch, &shape[1..], fwd.median_ms, fwd.min_ms, fwd.max_ms, fwd.frames_per_s,
            gc.median_ms, gc.min_ms, gc.max_ms, gc.frames_per_s
        );
    }
    Ok(())
}
