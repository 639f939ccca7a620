//! Localisation checks for heatmaps against ground truth known by construction: the
//! pointing game (is the heatmap's peak inside the region?) and energy-in-region.

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

/// How [`evaluate`] runs.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Held-out samples, and the seed that makes them.
    pub n: usize,
    pub seed: u64,
    /// Samples per pass.
    pub batch: usize,
    pub cam: CamConfig,
    /// Also measure every map's faithfulness (means in [`Report::metrics`]).
    pub metrics: Option<MetricsConfig>,
}

/// Accuracy and localisation of a model on held-out synthetic samples.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
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

/// Runs the inference path (the CAM for the true class) over `n` fresh samples.
pub fn evaluate(
    task: &dyn Task,
    net: &Network,
    layer: &str,
    options: &EvalOptions,
) -> crate::Result<Report> {
    let (n, batch) = (options.n, options.batch.max(1));
    let explainer = Explainer::from_network(net.clone(), Some(layer))?.with_config(options.cam);
    let explain = ExplainOptions {
        batch,
        ..ExplainOptions::default()
    };
    let mut rng = crate::synth::rng(options.seed);
    let size = task.input_size();
    let mut shape = vec![net.input.channels];
    shape.extend(&size);
    let mut loc = Localisation::default();
    let mut measured = Vec::new();
    let mut correct = 0;
    let mut done = 0;
    while done < n {
        let b = batch.min(n - done);
        let samples: Vec<_> = (0..b).map(|_| task.sample(&mut rng)).collect();
        let inputs: Vec<Input> = samples
            .iter()
            .map(|s| Input::new(&s.input, &shape))
            .collect();
        let truth: Vec<usize> = samples.iter().map(|s| s.class).collect();
        let out = explainer.explain(&inputs, &Targets::PerSample(truth), &explain)?;
        for (s, e) in samples.iter().zip(&out) {
            // The model's own top-1 (first maximum), not the explained true class.
            correct += usize::from(e.ranked[0] == s.class);
            if let Some(r) = &s.region {
                loc.add(&e.map, &size, r);
            }
            if let Some(config) = &options.metrics {
                let sample = Measured {
                    input: &s.input,
                    shape: &shape,
                    map: &e.map,
                    class: e.class,
                };
                measured.push(measure(net, sample, config)?);
            }
        }
        done += b;
    }
    Ok(Report {
        task: task.name().into(),
        layer: layer.into(),
        method: options.cam.method.name().into(),
        samples: n,
        accuracy: correct as f32 / n.max(1) as f32,
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
