//! Faithfulness metrics of a final map (at the input's size): does the model's score
//! follow what the map points at? Every metric perturbs the model input and runs the
//! whole network again, in batches; 1D signals and 2D inputs share the code.
//!
//! | field | definition (source) |
//! |---|---|
//! | `confidence_change` | target logit of x·map − of x (pytorch-grad-cam `CamMultImageConfidenceChange`) |
//! | `drop_in_confidence`, `increase_in_confidence` | max(−Δ, 0) and Δ > 0 of it (`DropInConfidence`, `IncreaseInConfidence`) |
//! | `avg_drop`, `conf_increase` | ReLU(p − p′)/(p + 1e-7) and p < p′ on probabilities of x and x·map (torchcam `ClassificationMetric`) |
//! | `road_morf`, `road_lerf` | mean over percentiles of the logit change with the most (least) relevant positions imputed (`ROADMostRelevantFirstAverage`, `ROADLeastRelevantFirstAverage`) |
//! | `road_combined` | (lerf − morf)/2 (`ROADCombined`) |
//! | `deletion_auc`, `insertion_auc` | RISE's area under the probability curve, as torchcam's `DeletionInsertionMetric` |

mod causal;
pub mod imputer;

use candle_core::{DType, Tensor};
use rand_distr::{Distribution, Uniform};
use serde::Serialize;

pub use causal::{auc, counts, salient_order, walk, Baseline};

use crate::cam::probability;
use crate::error::{Error, Result};
use crate::model::Network;

/// How the metrics perturb inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsConfig {
    /// ROAD's percentiles of the map that split removed from kept positions.
    pub percentiles: Vec<f64>,
    /// ROAD's imputation noise (absolute, pytorch-grad-cam's 0.01).
    pub noise: f32,
    /// Seeds the imputation noise and the random baseline map.
    pub seed: u64,
    /// Deletion/insertion steps (each moves `ceil(positions / steps)` positions).
    pub steps: usize,
    /// What deletion moves towards and insertion starts from.
    pub baseline: Baseline,
    /// Perturbed inputs per forward pass.
    pub batch: usize,
    /// Also measure a uniformly random map, the baseline a map must beat.
    pub random_baseline: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            percentiles: (1..10).map(|p| f64::from(p) * 10.0).collect(),
            noise: 0.01,
            seed: 0,
            steps: 20,
            baseline: Baseline::Zero,
            batch: 16,
            random_baseline: true,
        }
    }
}

/// The metrics of one map (see the module table).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Faithfulness {
    pub avg_drop: f64,
    pub conf_increase: f64,
    pub confidence_change: f64,
    pub deletion_auc: f64,
    pub drop_in_confidence: f64,
    pub increase_in_confidence: f64,
    pub insertion_auc: f64,
    /// The same metrics of a uniformly random map, with `random_baseline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random: Option<Box<Faithfulness>>,
    pub road_combined: f64,
    pub road_lerf: f64,
    pub road_morf: f64,
}

impl Faithfulness {
    /// Each metric's mean over `all` (the random baseline's too, where every one has it).
    pub fn mean(all: &[Faithfulness]) -> Faithfulness {
        let n = all.len().max(1) as f64;
        let avg = |f: fn(&Faithfulness) -> f64| all.iter().map(f).sum::<f64>() / n;
        let random: Option<Vec<Faithfulness>> =
            all.iter().map(|f| f.random.as_deref().cloned()).collect();
        Faithfulness {
            avg_drop: avg(|f| f.avg_drop),
            conf_increase: avg(|f| f.conf_increase),
            confidence_change: avg(|f| f.confidence_change),
            deletion_auc: avg(|f| f.deletion_auc),
            drop_in_confidence: avg(|f| f.drop_in_confidence),
            increase_in_confidence: avg(|f| f.increase_in_confidence),
            insertion_auc: avg(|f| f.insertion_auc),
            random: random
                .filter(|r| !r.is_empty())
                .map(|r| Box::new(Faithfulness::mean(&r))),
            road_combined: avg(|f| f.road_combined),
            road_lerf: avg(|f| f.road_lerf),
            road_morf: avg(|f| f.road_morf),
        }
    }
}

/// One sample to measure: the model input (C, spatial...) and its final map.
#[derive(Clone, Copy, Debug)]
pub struct Measured<'a> {
    pub input: &'a [f32],
    pub shape: &'a [usize],
    pub map: &'a [f32],
    pub class: usize,
}

/// Runs perturbed inputs through the whole network and reads the target's scores.
struct Scorer<'a> {
    net: &'a Network,
    shape: &'a [usize],
    class: usize,
    batch: usize,
}

impl Scorer<'_> {
    /// (logit, probability) of the class for each input, `batch` inputs per pass.
    fn scores(&self, inputs: impl Iterator<Item = Vec<f32>>) -> Result<Vec<(f32, f32)>> {
        let mut out = Vec::new();
        let mut chunk: Vec<Vec<f32>> = Vec::with_capacity(self.batch);
        let mut inputs = inputs.peekable();
        while let Some(x) = inputs.next() {
            chunk.push(x);
            if chunk.len() == self.batch || inputs.peek().is_none() {
                let mut dims = vec![chunk.len()];
                dims.extend(self.shape);
                let data: Vec<f32> = chunk.drain(..).flatten().collect();
                let x = Tensor::from_vec(data, dims, &self.net.device)?;
                let logits = self.net.body.forward(&x)?.to_dtype(DType::F32)?;
                for row in logits.to_vec2::<f32>()? {
                    let p = probability(&row, self.class, self.net.multi_label);
                    out.push((row[self.class], p));
                }
            }
        }
        Ok(out)
    }
}

/// Measures one map of `sample` on `net`.
pub fn measure(net: &Network, sample: Measured, config: &MetricsConfig) -> Result<Faithfulness> {
    let spatial = &sample.shape[1..];
    let p: usize = spatial.iter().product();
    if sample.map.len() != p || sample.input.len() != p * sample.shape[0] {
        return Err(Error::BadOption {
            name: "map",
            why: format!(
                "{} map values and {} input values for an input of shape {:?}",
                sample.map.len(),
                sample.input.len(),
                sample.shape
            ),
        });
    }
    // Each map's noise starts from the seed, and the random map has its own stream, so
    // the random baseline of a sample is the same whatever map it is compared with.
    let mut f = measure_map(net, sample, config, &mut crate::random::rng(config.seed))?;
    if config.random_baseline {
        let u = Uniform::new(0f32, 1.0).expect("0 < 1");
        let mut draw = crate::random::rng(config.seed ^ 0x5eed_0f7a_4d0b_1a5e);
        let map: Vec<f32> = (0..p).map(|_| u.sample(&mut draw)).collect();
        let random = Measured {
            map: &map,
            ..sample
        };
        let mut rng = crate::random::rng(config.seed);
        f.random = Some(Box::new(measure_map(net, random, config, &mut rng)?));
    }
    Ok(f)
}

fn measure_map(
    net: &Network,
    s: Measured,
    config: &MetricsConfig,
    rng: &mut crate::random::Rng,
) -> Result<Faithfulness> {
    let spatial = &s.shape[1..];
    let p = s.map.len();
    let scorer = Scorer {
        net,
        shape: s.shape,
        class: s.class,
        batch: config.batch.max(1),
    };
    let times_map: Vec<f32> = s
        .input
        .iter()
        .enumerate()
        .map(|(i, v)| v * s.map[i % p])
        .collect();
    let both = scorer.scores([s.input.to_vec(), times_map].into_iter())?;
    let ((y, prob), (y_map, prob_map)) = (both[0], both[1]);
    let change = f64::from(y_map - y);

    // ROAD: positions at or above the percentile are imputed (most relevant first);
    // least relevant first does the same on 1 − map.
    let inverted: Vec<f32> = s.map.iter().map(|v| 1.0 - v).collect();
    let mut road = |order: &[f32]| -> Result<f64> {
        let mut imputed = Vec::with_capacity(config.percentiles.len());
        for &q in &config.percentiles {
            let t = imputer::percentile(order, q);
            let keep: Vec<bool> = order.iter().map(|&v| f64::from(v) < t).collect();
            imputed.push(imputer::impute(s.input, spatial, &keep, config.noise, rng));
        }
        let n = imputed.len().max(1) as f64;
        let scores = scorer.scores(imputed.into_iter())?;
        // pytorch-grad-cam averages the float32 differences.
        Ok(scores.iter().map(|&(v, _)| f64::from(v - y)).sum::<f64>() / n)
    };
    let road_morf = road(s.map)?;
    let road_lerf = road(&inverted)?;

    let order = salient_order(s.map);
    let counts = counts(p, config.steps);
    let causal = |start: Vec<f32>, finish: &[f32]| -> Result<f64> {
        let probs: Vec<f32> = scorer
            .scores(walk(start, finish, &order, &counts))?
            .iter()
            .map(|&(_, p)| p)
            .collect();
        Ok(auc(&probs, &counts))
    };
    let baseline = config.baseline.of(s.input, spatial);
    let deletion_auc = causal(s.input.to_vec(), &baseline)?;
    let insertion_auc = causal(baseline.clone(), s.input)?;

    Ok(Faithfulness {
        avg_drop: f64::from((prob - prob_map).max(0.0) / (prob + 1e-7)),
        conf_increase: f64::from(u8::from(prob < prob_map)),
        confidence_change: change,
        deletion_auc,
        drop_in_confidence: (-change).max(0.0),
        increase_in_confidence: f64::from(u8::from(change > 0.0)),
        insertion_auc,
        random: None,
        road_combined: (road_lerf - road_morf) / 2.0,
        road_lerf,
        road_morf,
    })
}
