//! `camstream image` and `camstream signal`: explain files sample by sample, in batches.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::RgbImage;

use camstream_core::cam::Targets;
use camstream_core::metrics::{measure, Measured, MetricsConfig};
use camstream_core::model::Network;
use camstream_core::preprocess::InputKind;
use camstream_core::record::{self, SampleRecord};
use camstream_core::{Error, ExplainOptions, Explainer, Explanation, Input};
use camstream_media::inputs::read_inputs;
use camstream_media::npy::write_npy;
use camstream_media::render::{overlay_like_show_cam_on_image, plot_signal, JET};

use super::ExplainArgs;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Signal,
}

struct Sample {
    file: usize,
    data: Vec<f32>,
    /// (C, spatial...) of this sample.
    shape: Vec<usize>,
    /// What the overlay is drawn on, and which part of the model input it shows.
    view: Option<(RgbImage, [usize; 4])>,
}

struct InputFile {
    path: PathBuf,
    stem: String,
    count: usize,
}

fn load_inputs(paths: &[PathBuf], net: &Network) -> Result<(Vec<InputFile>, Vec<Sample>)> {
    let mut files = Vec::new();
    let mut samples = Vec::new();
    for (fi, path) in paths.iter().enumerate() {
        let read = read_inputs(path, &net.input)?;
        files.push(InputFile {
            path: path.clone(),
            stem: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("input{fi}")),
            count: read.len(),
        });
        samples.extend(read.into_iter().map(|r| Sample {
            file: fi,
            data: r.data,
            shape: r.shape,
            view: r.view,
        }));
    }
    Ok((files, samples))
}

/// `--class`: one value for all samples, or exactly one per sample.
fn parse_targets(arg: Option<&str>, net: &Network, n: usize) -> Result<Targets> {
    let Some(arg) = arg else {
        return Ok(Targets::TopOne);
    };
    let classes = arg
        .split(',')
        .map(|p| net.parse_class(p.trim()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    match classes.len() {
        1 => Ok(Targets::All(classes[0])),
        k if k == n => Ok(Targets::PerSample(classes)),
        k => Err(Error::ClassCount {
            classes: k,
            batch: n,
        }
        .into()),
    }
}

pub fn run(args: &ExplainArgs, kind: Kind) -> Result<()> {
    let net = args.model.load(args.layer.as_deref())?;
    let explainer =
        Explainer::from_network(net, args.layer.as_deref())?.with_config(args.method.config()?);
    run_with(&explainer, args, kind)
}

/// Explains the files of `args` with a loaded model.
pub fn run_with(explainer: &Explainer, args: &ExplainArgs, kind: Kind) -> Result<()> {
    let net = explainer.network();
    match (kind, net.input.kind) {
        (Kind::Image, InputKind::Signal) => bail!(
            "model {} takes 1D signals: use `camstream signal`",
            args.model.model
        ),
        (Kind::Signal, InputKind::Image) => bail!(
            "model {} takes pictures: use `camstream image`",
            args.model.model
        ),
        _ => {}
    }
    if !(0.0..=1.0).contains(&args.alpha) {
        bail!("--alpha must be within 0..1, got {}", args.alpha);
    }
    let metrics = args.metrics.config(args.batch)?;
    let (files, samples) = load_inputs(&args.inputs, net)?;
    let targets = parse_targets(args.class.as_deref(), net, samples.len())?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;

    let inputs: Vec<Input> = samples
        .iter()
        .map(|s| Input::new(&s.data, &s.shape))
        .collect();
    let k = (args.top_k as usize).clamp(1, net.num_classes);
    let options = ExplainOptions {
        batch: args.batch as usize,
        top_k: k,
        final_map: true,
    };
    let explained = explainer
        .explain(&inputs, &targets, &options)
        .map_err(|e| match e {
            Error::InputShape { sample, shape, msg } => anyhow::anyhow!(
                "{}: input of shape {shape:?} does not fit the model: {msg}",
                files[samples[sample].file].path.display(),
            ),
            other => other.into(),
        })?;

    let outputs = Outputs {
        args,
        kind,
        explainer,
        metrics,
    };
    for r in 0..k {
        // Explanations come sample by sample, each sample's ranks in order.
        let ranked: Vec<&Explanation> = explained.iter().skip(r).step_by(k).collect();
        let mut start = 0;
        for file in &files {
            let range = start..start + file.count;
            start += file.count;
            // With --top-k, each rank's outputs get their own name: <stem>.top2.png ...
            let named = InputFile {
                path: file.path.clone(),
                stem: if k > 1 {
                    format!("{}.top{}", file.stem, r + 1)
                } else {
                    file.stem.clone()
                },
                count: file.count,
            };
            let rank = (k > 1).then_some(r + 1);
            let (samples, explained) = (&samples[range.clone()], &ranked[range]);
            outputs.write(&named, rank, samples, explained)?;
        }
    }
    Ok(())
}

/// What every input file's outputs are written with.
struct Outputs<'a> {
    args: &'a ExplainArgs,
    kind: Kind,
    explainer: &'a Explainer,
    metrics: Option<MetricsConfig>,
}

impl Outputs<'_> {
    /// One input file's outputs: overlays or plots, `.cam.npy`/`.heatmap.npy`, JSON lines.
    fn write(
        &self,
        file: &InputFile,
        rank: Option<usize>,
        samples: &[Sample],
        explained: &[&Explanation],
    ) -> Result<()> {
        let (args, kind, net) = (self.args, self.kind, self.explainer.network());
        let out = &args.out;
        let mut heatmaps = Vec::new();
        for (k, (sample, e)) in samples.iter().zip(explained).enumerate() {
            let input_size = &sample.shape[1..];
            let png = out.join(if samples.len() > 1 {
                format!("{}.{k}.png", file.stem)
            } else {
                format!("{}.png", file.stem)
            });
            if args.cam_npy {
                heatmaps.extend(&e.map);
            }
            if let (Kind::Image, Some((view, rect))) = (kind, &sample.view) {
                let (w, h) = (view.width() as usize, view.height() as usize);
                let model = [input_size[0], input_size[1]];
                let mask = e.on_source(model, *rect, [h, w]);
                let px = overlay_like_show_cam_on_image(view.as_raw(), &mask, &JET, args.alpha);
                let img = RgbImage::from_raw(w as u32, h as u32, px).context("overlay size")?;
                camstream_media::io::write_png(&png, &img)?;
            }
            if kind == Kind::Signal && net.input.kind == InputKind::Signal && sample.shape[0] >= 1 {
                // The first channel, coloured by the final map.
                let title = format!(
                    "{} — {} ({:.2}), layer {}",
                    file.stem, e.label, e.probability, e.layer
                );
                let first = &sample.data[..input_size[0]];
                plot_signal(&png, first, &e.map, net.input.sample_rate, &title, &JET)?;
            }
            if args.json || self.metrics.is_some() {
                let mut record = SampleRecord::new(
                    e,
                    self.explainer.method().name(),
                    file.path.display().to_string(),
                    k,
                    rank,
                );
                if let Some(config) = &self.metrics {
                    let sample = Measured {
                        input: &sample.data,
                        shape: &sample.shape,
                        map: &e.map,
                        class: e.class,
                    };
                    record.metrics = Some(measure(net, sample, config)?);
                }
                let line = record::to_line(&record);
                // A closed pipe (`| head`) is an error to report, not a panic.
                writeln!(std::io::stdout().lock(), "{line}").context("cannot write to stdout")?;
            }
        }
        if args.cam_npy {
            let mut raw_shape = vec![samples.len()];
            raw_shape.extend(&explained[0].spatial);
            let raw: Vec<f32> = explained
                .iter()
                .flat_map(|e| e.raw.iter().copied())
                .collect();
            write_npy(&npy_path(out, &file.stem, "cam"), &raw, &raw_shape)?;
            let mut hm_shape = vec![samples.len()];
            hm_shape.extend(&samples[0].shape[1..]);
            write_npy(&npy_path(out, &file.stem, "heatmap"), &heatmaps, &hm_shape)?;
        }
        Ok(())
    }
}

fn npy_path(out: &Path, stem: &str, what: &str) -> PathBuf {
    out.join(format!("{stem}.{what}.npy"))
}
