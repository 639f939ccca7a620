//! Explain a picture and a 1D signal through the library API (no CLI):
//! `cargo run --example explain`.

use camstream_core::preprocess::prepare_image;
use camstream_core::{ExplainOptions, Explainer, Input, ModelRequest, ModelSource, Targets};
use camstream_media::{npy::read_npy, picture::read_image};

fn main() -> anyhow::Result<()> {
    let cpu = candle_core::Device::Cpu;
    let options = ExplainOptions::default();

    // A picture: decode, preprocess to the model's input, explain its top-1 class.
    let shapes = ModelRequest::new(ModelSource::Config("samples/models/shapes.toml".into()));
    let explainer = Explainer::new(&shapes, None, &cpu)?;
    let picture = prepare_image(
        &read_image("samples/images/square.png".as_ref())?,
        &explainer.network().input,
    );
    let shape = [3, picture.size[0], picture.size[1]];
    for e in explainer.explain(
        &[Input::new(&picture.chw, &shape)],
        &Targets::TopOne,
        &options,
    )? {
        println!(
            "square.png: {} p={:.3} at {}, map {:?} -> {} values",
            e.label,
            e.probability,
            e.layer,
            e.spatial,
            e.map.len()
        );
    }

    // A signal: eight ECG windows (N, 1, L) from a .npy, explained for class "ectopic".
    let ecg = ModelRequest::new(ModelSource::Config("samples/models/ecg.toml".into()));
    let explainer = Explainer::new(&ecg, None, &cpu)?;
    let ectopic = explainer.network().parse_class("ectopic")?;
    let (data, dims) = read_npy("samples/ecg/ecg_windows.npy".as_ref())?;
    let len: usize = dims[1..].iter().product();
    let inputs: Vec<Input> = data
        .chunks(len)
        .map(|w| Input::new(w, &dims[1..]))
        .collect();
    for e in explainer.explain(&inputs, &Targets::All(ectopic), &options)? {
        let peak = e
            .map
            .iter()
            .enumerate()
            .fold((0, 0.0), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        println!(
            "window {}: p(ectopic)={:.3}, strongest relevance at sample {}",
            e.sample, e.probability, peak.0
        );
    }
    Ok(())
}
