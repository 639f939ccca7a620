//! `camstream image` and `camstream signal`: explain files sample by sample, in batches.

use std::collections::VecDeque;
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
use camstream_media::guard::{check_outputs, Output};
use camstream_media::inputs::read_inputs;
use camstream_media::io::Staged;
use camstream_media::npy::stage_npy;
use camstream_media::render::{clip_strip, overlay_like_show_cam_on_image, plot_signal, JET};

use super::ExplainArgs;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Signal,
}

struct Sample {
    data: Vec<f32>,
    /// (C, spatial...) of this sample.
    shape: Vec<usize>,
    /// What the overlay is drawn on, and which part of the model input it shows.
    view: Option<(RgbImage, [usize; 4])>,
}

/// An input file and what it will produce.
struct InputFile {
    path: PathBuf,
    stem: String,
    /// Its samples (1 for a picture, N for an (N,C,...) tensor), known from the header.
    count: usize,
}

/// Samples a file holds, from its header only (the full read checks the rest).
fn sample_count(path: &Path, net: &Network) -> Result<usize> {
    let npy = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !npy {
        return Ok(1);
    }
    let h = camstream_media::npy::header(path)?;
    let rank = net.input.kind.rank();
    Ok(if h.shape.len() == rank + 2 {
        h.shape[0]
    } else {
        1
    })
}

fn plan_inputs(paths: &[PathBuf], net: &Network) -> Result<Vec<InputFile>> {
    super::refuse_clashes(paths)?;
    paths
        .iter()
        .map(|path| {
            Ok(InputFile {
                path: path.clone(),
                stem: path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "input".into()),
                count: sample_count(path, net)?,
            })
        })
        .collect()
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

/// Explains the files of `args` with a loaded model, streamed: a reader thread loads
/// files ahead through a bounded channel, samples are explained in batches, and each
/// file's outputs are written as soon as its last sample is done. Memory holds one
/// batch and the files it spans, however many inputs there are.
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
    let files = plan_inputs(&args.inputs, net)?;
    let total: usize = files.iter().map(|f| f.count).sum();
    let targets = parse_targets(args.class.as_deref(), net, total)?;
    let k = (args.top_k as usize).clamp(1, net.num_classes);
    let outputs = Outputs {
        args,
        kind,
        explainer,
        metrics,
        k,
    };
    outputs.check(&files)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    super::sweep(&args.out);

    let options = ExplainOptions {
        batch: args.batch as usize,
        top_k: k,
        final_map: true,
    };
    let batch = args.batch as usize;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Sample>>>(2);
    std::thread::scope(|s| {
        let spec = &net.input;
        let files = &files;
        s.spawn(move || {
            for f in files {
                let read = read_inputs(&f.path, spec)
                    .map_err(anyhow::Error::from)
                    .and_then(|r| {
                        if r.len() != f.count {
                            bail!("{}: changed while being read", f.path.display());
                        }
                        Ok(r.into_iter()
                            .map(|r| Sample {
                                data: r.data,
                                shape: r.shape,
                                view: r.view,
                            })
                            .collect())
                    });
                let failed = read.is_err();
                // A closed channel means the explaining side stopped: stop too.
                if tx.send(read).is_err() || failed {
                    return;
                }
            }
        });
        let mut open: VecDeque<Pending> = VecDeque::new();
        let mut next_file = 0;
        let mut first_sample = 0;
        let mut queued = 0;
        for read in rx {
            let samples = read?;
            queued += samples.len();
            open.push_back(Pending {
                file: next_file,
                samples,
                explained: Vec::new(),
            });
            next_file += 1;
            // Explain whole batches as soon as they are there, and the rest at the end.
            while queued >= batch || (next_file == files.len() && queued > 0) {
                let n = queued.min(batch);
                explain_next(
                    explainer,
                    files,
                    &mut open,
                    n,
                    first_sample,
                    &targets,
                    &options,
                )?;
                first_sample += n;
                queued -= n;
                while open
                    .front()
                    .is_some_and(|p| p.explained.len() == p.samples.len() * k)
                {
                    let p = open.pop_front().expect("front exists");
                    outputs.write(&files[p.file], &p.samples, &p.explained)?;
                }
            }
        }
        Ok(())
    })
}

/// A file read and not yet written, with the explanations of its samples so far.
struct Pending {
    file: usize,
    samples: Vec<Sample>,
    explained: Vec<Explanation>,
}

/// Explains the next `n` samples waiting in `open` (the first `first` samples of the run
/// are done) and appends the explanations to their files.
fn explain_next(
    explainer: &Explainer,
    files: &[InputFile],
    open: &mut VecDeque<Pending>,
    n: usize,
    first: usize,
    targets: &Targets,
    options: &ExplainOptions,
) -> Result<()> {
    let k = options.top_k;
    // (file slot, sample index in the file) of each sample of this batch.
    let mut at = Vec::with_capacity(n);
    for (slot, p) in open.iter().enumerate() {
        let done = p.explained.len() / k;
        at.extend((done..p.samples.len()).map(|i| (slot, i)));
        if at.len() >= n {
            break;
        }
    }
    at.truncate(n);
    let inputs: Vec<Input> = at
        .iter()
        .map(|&(slot, i)| {
            let s = &open[slot].samples[i];
            Input::new(&s.data, &s.shape)
        })
        .collect();
    let targets = match targets {
        Targets::PerSample(v) => Targets::PerSample(v[first..first + n].to_vec()),
        t => t.clone(),
    };
    let explained = explainer
        .explain(&inputs, &targets, options)
        .map_err(|e| match e {
            Error::InputShape { sample, shape, msg } => anyhow::anyhow!(
                "{}: input of shape {shape:?} does not fit the model: {msg}",
                files[open[at[sample].0].file].path.display(),
            ),
            other => other.into(),
        })?;
    drop(inputs);
    for (&(slot, _), e) in at.iter().zip(explained.chunks(k)) {
        open[slot].explained.extend(e.iter().cloned());
    }
    Ok(())
}

/// What every input file's outputs are written with.
struct Outputs<'a> {
    args: &'a ExplainArgs,
    kind: Kind,
    explainer: &'a Explainer,
    metrics: Option<MetricsConfig>,
    k: usize,
}

impl Outputs<'_> {
    /// The stem of rank `r`'s outputs: with --top-k, `<stem>.top2` ...
    fn ranked_stem(&self, file: &InputFile, r: usize) -> String {
        if self.k > 1 {
            format!("{}.top{}", file.stem, r + 1)
        } else {
            file.stem.clone()
        }
    }

    fn picture(&self, stem: &str, count: usize, i: usize) -> PathBuf {
        self.args.out.join(if count > 1 {
            format!("{stem}.{i}.png")
        } else {
            format!("{stem}.png")
        })
    }

    /// Every file this run will write.
    fn paths(&self, files: &[InputFile]) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for f in files {
            for r in 0..self.k {
                let stem = self.ranked_stem(f, r);
                v.extend((0..f.count).map(|i| self.picture(&stem, f.count, i)));
                if self.args.cam_npy {
                    v.push(npy_path(&self.args.out, &stem, "cam"));
                    v.push(npy_path(&self.args.out, &stem, "heatmap"));
                }
            }
        }
        v
    }

    /// Refuses, before any work, a run whose outputs would overwrite an input.
    fn check(&self, files: &[InputFile]) -> Result<()> {
        let inputs: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
        let paths = self.paths(files);
        let outputs: Vec<Output> = paths
            .iter()
            .map(|path| Output { param: "out", path })
            .collect();
        Ok(check_outputs(&inputs, &outputs)?)
    }

    /// One input file's outputs, every rank: overlays or plots, `.cam.npy` and
    /// `.heatmap.npy`, renamed together when all are written; JSON lines on stdout.
    fn write(&self, file: &InputFile, samples: &[Sample], explained: &[Explanation]) -> Result<()> {
        let mut staged = Staged::default();
        for r in 0..self.k {
            // Explanations come sample by sample, each sample's ranks in order.
            let ranked: Vec<&Explanation> = explained.iter().skip(r).step_by(self.k).collect();
            let rank = (self.k > 1).then_some(r + 1);
            let stem = self.ranked_stem(file, r);
            self.write_rank(file, &stem, rank, samples, &ranked, &mut staged)?;
        }
        staged.commit()?;
        Ok(())
    }

    fn write_rank(
        &self,
        file: &InputFile,
        stem: &str,
        rank: Option<usize>,
        samples: &[Sample],
        explained: &[&Explanation],
        staged: &mut Staged,
    ) -> Result<()> {
        let (args, kind, net) = (self.args, self.kind, self.explainer.network());
        let out = &args.out;
        let mut heatmaps = Vec::new();
        for (k, (sample, e)) in samples.iter().zip(explained).enumerate() {
            let input_size = &sample.shape[1..];
            let png = self.picture(stem, samples.len(), k);
            if args.cam_npy {
                heatmaps.extend(&e.map);
            }
            if let (Kind::Image, Some((view, rect))) = (kind, &sample.view) {
                let (w, h) = (view.width() as usize, view.height() as usize);
                let model = [input_size[0], input_size[1]];
                let mask = e.on_source(model, *rect, [h, w]);
                let px = overlay_like_show_cam_on_image(view.as_raw(), &mask, &JET, args.alpha);
                let img = RgbImage::from_raw(w as u32, h as u32, px).context("overlay size")?;
                staged.push(camstream_media::io::stage_png(&png, &img)?);
            }
            if let (Kind::Image, &[c, t, h, w]) = (kind, sample.shape.as_slice()) {
                // A clip: its frames side by side with their heatmaps (16 at most).
                let strip = clip_strip(
                    &sample.data,
                    [c, t, h, w],
                    &e.map,
                    &net.input,
                    &JET,
                    args.alpha,
                    16,
                );
                staged.push(camstream_media::io::stage_png(&png, &strip)?);
            }
            if kind == Kind::Signal && net.input.kind == InputKind::Signal && sample.shape[0] >= 1 {
                // The first channel, coloured by the final map.
                let title = format!(
                    "{stem} — {} ({:.2}), layer {}",
                    e.label, e.probability, e.layer
                );
                let first = &sample.data[..input_size[0]];
                staged.push(plot_signal(
                    &png,
                    first,
                    &e.map,
                    net.input.sample_rate,
                    &title,
                    &JET,
                )?);
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
            staged.push(stage_npy(&npy_path(out, stem, "cam"), &raw, &raw_shape)?);
            let mut hm_shape = vec![samples.len()];
            hm_shape.extend(&samples[0].shape[1..]);
            staged.push(stage_npy(
                &npy_path(out, stem, "heatmap"),
                &heatmaps,
                &hm_shape,
            )?);
        }
        Ok(())
    }
}

fn npy_path(out: &Path, stem: &str, what: &str) -> PathBuf {
    out.join(format!("{stem}.{what}.npy"))
}
