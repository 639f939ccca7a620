//! A picture and ECG windows explained through the library API: `cargo run --example explain`.

use camstream_core::preprocess::prepare_image;
use camstream_core::{ExplainOptions, Explainer, Input, ModelRequest, ModelSource, Targets};
use camstream_media::{npy::read_npy, picture::read_image};

fn main() -> anyhow::Result<()> {
    let (cpu, options) = (candle_core::Device::Cpu, ExplainOptions::default());
    let config = |path: &str| ModelRequest::new(ModelSource::Config(path.into()));

    // A picture: decode, preprocess to the model's input, explain its top-1 class.
    let shapes = Explainer::new(&config("samples/models/shapes.toml"), None, &cpu)?;
    let img = read_image("samples/images/square.png".as_ref())?;
    let x = prepare_image(&img, &shapes.network().input);
    let dims = [3, x.size[0], x.size[1]];
    let e = &shapes.explain(&[Input::new(&x.chw, &dims)], &Targets::TopOne, &options)?[0];
    println!(
        "square.png: {} ({:.3}) at {}, map {:?}",
        e.label, e.probability, e.layer, e.spatial
    );

    // A signal: eight ECG windows (N, 1, L) from a .npy, each explained for "ectopic".
    let ecg = Explainer::new(&config("samples/models/ecg.toml"), None, &cpu)?;
    let ectopic = Targets::All(ecg.network().parse_class("ectopic")?);
    let (data, dims) = read_npy("samples/ecg/ecg_windows.npy".as_ref())?;
    let windows: Vec<Input> = data
        .chunks(dims[2])
        .map(|w| Input::new(w, &dims[1..]))
        .collect();
    for e in ecg.explain(&windows, &ectopic, &options)? {
        let peak = e
            .map
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |p| p.0);
        println!(
            "window {}: p(ectopic) {:.3}, most relevant at sample {peak}",
            e.sample, e.probability
        );
    }
    Ok(())
}
