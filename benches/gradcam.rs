//! Criterion benchmarks: convolution layers by shape, ResNet-18/50 forward vs Grad-CAM
//! (same batch) at batch 1 and 8, the CAM maths, and the 720p overlay. Compare ratios
//! within one run; absolute times depend on the machine's load.

use camstream_core::cam::{heatmap, upsample_to_source, GradCam, Targets};
use camstream_core::model::layers::{Conv, Dims};
use camstream_core::model::{resnet, Network};
use camstream_media::render::{overlay, JET};
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn resnet(arch: &str) -> Network {
    let w = resnet::random_weights(arch, 1000, 0, &Device::Cpu).expect("weights");
    resnet::build_builtin(arch, &w, &Device::Cpu).expect("network")
}

fn model(c: &mut Criterion) {
    let mut g = c.benchmark_group("model");
    g.sample_size(10);
    for arch in ["resnet18", "resnet50"] {
        let net = resnet(arch);
        let cam = GradCam::new(&net, "layer4").expect("layer");
        for batch in [1usize, 8] {
            let x = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &Device::Cpu).expect("input");
            g.bench_with_input(
                BenchmarkId::new(format!("{arch}/forward"), batch),
                &x,
                |b, x| b.iter(|| net.forward(x).expect("forward")),
            );
            g.bench_with_input(
                BenchmarkId::new(format!("{arch}/gradcam"), batch),
                &x,
                |b, x| b.iter(|| cam.run(x, &Targets::TopOne).expect("gradcam")),
            );
        }
    }
    g.finish();
}

/// ResNet-18's conv shapes at batch 8: (in, out, kernel, stride, input side).
fn convs(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv");
    g.sample_size(10);
    for (cin, cout, k, s, side) in [
        (3, 64, 7, 2, 224),
        (64, 64, 3, 1, 56),
        (128, 128, 3, 1, 28),
        (256, 256, 3, 1, 14),
        (512, 512, 3, 1, 7),
        (256, 512, 1, 2, 14),
    ] {
        let conv = Conv {
            dims: Dims::Two,
            weight: Tensor::randn(0f32, 0.05, (cout, cin, k, k), &Device::Cpu).expect("w"),
            bias: Some(Tensor::zeros(cout, candle_core::DType::F32, &Device::Cpu).expect("b")),
            stride: s,
            padding: k / 2,
            dilation: 1,
            groups: 1,
            tf_same: false,
            packed: Default::default(),
            groups_dense: Default::default(),
        };
        let x = Tensor::randn(0f32, 1.0, (8, cin, side, side), &Device::Cpu).expect("x");
        g.bench_function(format!("{cin}->{cout} {k}x{k}/{s} at {side}x{side}"), |b| {
            b.iter(|| conv.forward(&x).expect("conv"))
        });
    }
    g.finish();
}

fn maths(c: &mut Criterion) {
    let raw: Vec<f32> = (0..49).map(|i| ((i * 37) % 11) as f32 - 3.0).collect();
    c.bench_function("cam/heatmap 7x7->224x224", |b| {
        b.iter(|| heatmap(&raw, &[7, 7], &[224, 224]))
    });
    let map: Vec<f32> = (0..8 * 14).map(|i| (i % 9) as f32 / 8.0).collect();
    let mut frame = vec![90u8; 1280 * 720 * 3];
    c.bench_function("render/upsample+overlay 720p", |b| {
        b.iter(|| {
            let mask = upsample_to_source(
                &map,
                &[8, 14],
                [64, 114],
                [0, 0, 114, 64],
                [720, 1280],
                true,
            );
            overlay(&mut frame, &mask, &JET, 0.5);
        })
    });
}

criterion_group!(benches, convs, model, maths);
criterion_main!(benches);
