//! Localisation checks for heatmaps against ground truth: the pointing game (is the
//! heatmap's peak inside the region?) and energy-in-region, with accuracy and the
//! faithfulness metrics, on a synthetic task (regions known by construction) or on
//! labelled data ([`crate::dataset`]).

use camstream_core::metrics::{measure, Faithfulness, Measured, MetricsConfig};
use camstream_core::model::Network;
use camstream_core::{CamConfig, ExplainOptions, Explainer, Input, Targets};

pub use crate::tasks::Region;
use crate::tasks::Task;

#[derive(Default, Clone, Debug)]
pub struct Localisation {
    pub n: usize,
    pub hits: usize,
    energy: f64,
    area: f64,
}

impl Localisation {
    /// Adds one final heatmap (at input size) with its region.
    pub fn add(&mut self, heat: &[f32], shape: &[usize], region: &Region) {
        let peak = heat
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            )
            .0;
        self.n += 1;
        if region.contains(peak, shape) {
            self.hits += 1;
        }
        let total: f64 = heat.iter().map(|&v| v as f64).sum();
        let inside: f64 = heat
            .iter()
            .enumerate()
            .filter(|(i, _)| region.contains(*i, shape))
            .map(|(_, &v)| v as f64)
            .sum();
        self.energy += if total > 0.0 { inside / total } else { 0.0 };
        self.area += region.area_fraction(shape) as f64;
    }

    pub fn pointing(&self) -> f32 {
        self.hits as f32 / self.n.max(1) as f32
    }

    pub fn energy(&self) -> f32 {
        (self.energy / self.n.max(1) as f64) as f32
    }

    /// The pointing rate of a uniformly random peak: the mean area fraction.
    pub fn chance(&self) -> f32 {
        (self.area / self.n.max(1) as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_inside_and_energy() {
        let shape = [4, 4];
        let mut heat = vec![0.0f32; 16];
        heat[5] = 1.0; // (y 1, x 1)
        heat[15] = 0.5;
        let r = Region::Box {
            x0: 0,
            y0: 0,
            x1: 2,
            y1: 2,
        };
        let mut l = Localisation::default();
        l.add(&heat, &shape, &r);
        assert_eq!(l.pointing(), 1.0);
        assert!((l.energy() - 1.0 / 1.5).abs() < 1e-6);
        assert!((l.chance() - 0.25).abs() < 1e-6);
        let mut l = Localisation::default();
        l.add(&heat, &[16], &Region::Span { start: 6, end: 16 });
        assert_eq!(l.pointing(), 0.0);
    }
}

/// One labelled sample as the network takes it.
pub struct Labelled {
    /// (C, spatial...) values, flattened.
    pub input: Vec<f32>,
    pub shape: Vec<usize>,
    pub class: usize,
    /// Where the evidence is, in model-input coordinates; None where it is unknown.
    pub region: Option<Region>,
}

/// Labelled samples for [`evaluate`], taken a batch at a time so memory stays flat.
pub trait Samples {
    /// The task's name or the data's path, for the report.
    fn name(&self) -> String;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The next `n` samples (fewer at the end).
    fn take(&mut self, n: usize) -> crate::Result<Vec<Labelled>>;
}

/// `n` fresh samples of a synthetic task, from `seed`.
pub struct TaskSamples<'a> {
    task: &'a dyn Task,
    rng: crate::synth::Rng,
    shape: Vec<usize>,
    left: usize,
    n: usize,
}

impl<'a> TaskSamples<'a> {
    pub fn new(task: &'a dyn Task, net: &Network, n: usize, seed: u64) -> Self {
        let mut shape = vec![net.input.channels];
        shape.extend(task.input_size());
        Self {
            task,
            rng: crate::synth::rng(seed),
            shape,
            left: n,
            n,
        }
    }
}

impl Samples for TaskSamples<'_> {
    fn name(&self) -> String {
        self.task.name().into()
    }

    fn len(&self) -> usize {
        self.n
    }

    fn take(&mut self, n: usize) -> crate::Result<Vec<Labelled>> {
        let n = n.min(self.left);
        self.left -= n;
        Ok((0..n)
            .map(|_| {
                let s = self.task.sample(&mut self.rng);
                Labelled {
                    input: s.input,
                    shape: self.shape.clone(),
                    class: s.class,
                    region: s.region,
                }
            })
            .collect())
    }
}

/// How [`evaluate`] runs.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Samples per pass.
    pub batch: usize,
    pub cam: CamConfig,
    /// Also measure every map's faithfulness (means in [`Report::metrics`]).
    pub metrics: Option<MetricsConfig>,
}

/// Accuracy and localisation of a model on labelled samples.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// The synthetic task's name, or the labelled data's path.
    pub task: String,
    pub layer: String,
    pub method: String,
    pub samples: usize,
    pub accuracy: f32,
    /// Samples with a ground-truth region (explained for their true class).
    pub localised: usize,
    pub pointing: f32,
    pub energy: f32,
    pub chance: f32,
    /// The mean of each faithfulness metric over the samples (with `metrics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Faithfulness>,
}

/// Runs the inference path (the CAM for the true class) over every sample of `samples`.
pub fn evaluate(
    samples: &mut dyn Samples,
    net: &Network,
    layer: &str,
    options: &EvalOptions,
) -> crate::Result<Report> {
    let batch = options.batch.max(1);
    let explainer = Explainer::from_network(net.clone(), Some(layer))?.with_config(options.cam);
    let explain = ExplainOptions {
        batch,
        ..ExplainOptions::default()
    };
    let mut loc = Localisation::default();
    let mut measured = Vec::new();
    let (mut correct, mut done) = (0, 0);
    loop {
        let group = samples.take(batch)?;
        if group.is_empty() {
            break;
        }
        let inputs: Vec<Input> = group
            .iter()
            .map(|s| Input::new(&s.input, &s.shape))
            .collect();
        let truth: Vec<usize> = group.iter().map(|s| s.class).collect();
        let out = explainer.explain(&inputs, &Targets::PerSample(truth), &explain)?;
        for (s, e) in group.iter().zip(&out) {
            // The model's own top-1 (first maximum), not the explained true class.
            correct += usize::from(e.ranked[0] == s.class);
            if let Some(r) = &s.region {
                loc.add(&e.map, &s.shape[1..], r);
            }
            if let Some(config) = &options.metrics {
                let sample = Measured {
                    input: &s.input,
                    shape: &s.shape,
                    map: &e.map,
                    class: e.class,
                };
                measured.push(measure(net, sample, config)?);
            }
        }
        done += group.len();
    }
    Ok(Report {
        task: samples.name(),
        layer: layer.into(),
        method: options.cam.method.name().into(),
        samples: done,
        accuracy: correct as f32 / done.max(1) as f32,
        localised: loc.n,
        pointing: loc.pointing(),
        energy: loc.energy(),
        chance: loc.chance(),
        metrics: options
            .metrics
            .as_ref()
            .map(|_| Faithfulness::mean(&measured)),
    })
}
