//! Trains the sample models with candle-nn: Conv-BN-ReLU blocks, max-pooling with
//! kernel == stride (candle's pool backward needs it), global average pooling and a
//! linear head. The same [`ArchSpec`] writes the `sequential` TOML the inference path
//! loads, so the trained weights and their description can never disagree.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{BatchNorm, ModuleT, Optimizer, VarBuilder, VarMap};
use rand::Rng as _;
use rand_distr::{Distribution, Normal};

use camstream_core::model::layers::{Dims, Pool, PoolKind};
use camstream_media::io::write_atomic;

use crate::arch::ArchSpec;
use crate::error::{Error, Result};
use crate::synth::Rng;
use crate::tasks::Task;

enum ConvT {
    One(candle_nn::Conv1d),
    Two(candle_nn::Conv2d),
}

/// The training-time network (BatchNorm with batch statistics).
pub struct TrainNet {
    spec: ArchSpec,
    blocks: Vec<(ConvT, BatchNorm)>,
    fc: candle_nn::Linear,
}

impl TrainNet {
    pub fn new(spec: &ArchSpec, vb: VarBuilder) -> Result<Self> {
        let mut c = spec.in_channels;
        let mut blocks = Vec::new();
        for (b, (name, _)) in spec.blocks.iter().zip(spec.block_names()) {
            let vbb = vb.pp(&name);
            let conv = match spec.dims {
                Dims::One => ConvT::One(candle_nn::conv1d_no_bias(
                    c,
                    b.out,
                    b.kernel,
                    candle_nn::Conv1dConfig {
                        padding: b.kernel / 2,
                        stride: b.stride,
                        ..Default::default()
                    },
                    vbb.pp("conv"),
                )?),
                Dims::Two => ConvT::Two(candle_nn::conv2d_no_bias(
                    c,
                    b.out,
                    b.kernel,
                    candle_nn::Conv2dConfig {
                        padding: b.kernel / 2,
                        stride: b.stride,
                        ..Default::default()
                    },
                    vbb.pp("conv"),
                )?),
            };
            let bn =
                candle_nn::batch_norm(b.out, candle_nn::BatchNormConfig::default(), vbb.pp("bn"))?;
            blocks.push((conv, bn));
            c = b.out;
        }
        let fc = candle_nn::linear(c, spec.num_classes, vb.pp("fc"))?;
        Ok(Self {
            spec: spec.clone(),
            blocks,
            fc,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for ((conv, bn), b) in self.blocks.iter().zip(&self.spec.blocks) {
            x = match conv {
                ConvT::One(c) => x.apply(c)?,
                ConvT::Two(c) => x.apply(c)?,
            };
            x = bn.forward_t(&x, train)?.relu()?;
            if b.pool {
                // Our pool, not candle's: its backward scales gradients by 1/4 (measured
                // against finite differences); ours routes them to the maximum as torch does.
                x = Pool {
                    kind: PoolKind::Max,
                    dims: self.spec.dims,
                    kernel: 2,
                    stride: 2,
                    padding: 0,
                }
                .forward(&x)?;
            }
        }
        let x = x.flatten_from(2)?.mean(D::Minus1)?;
        Ok(x.apply(&self.fc)?)
    }

    /// Eval-mode logits of the task's labels only, as the saved model gives them.
    pub fn logits(&self, task: &dyn Task, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .forward_t(x, false)?
            .narrow(D::Minus1, 0, task.labels().len())?)
    }
}

fn poisoned() -> Error {
    Error::Training("the variable map lock is poisoned".into())
}

/// Deterministic initialisation from our own RNG (candle's is not seedable): Kaiming
/// normal for convs, PyTorch's uniform for the linear layer, identity BatchNorm.
fn init_vars(varmap: &VarMap, rng: &mut Rng) -> Result<()> {
    let data = varmap.data().lock().map_err(|_| poisoned())?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with("conv.weight") {
            let fan_in: usize = dims[1..].iter().product();
            let nd = Normal::new(0.0f32, (2.0 / fan_in as f32).sqrt()).expect("valid sigma");
            (0..n).map(|_| nd.sample(rng)).collect()
        } else if name == "fc.weight" || name == "fc.bias" {
            let fan_in = if name == "fc.weight" {
                dims[1]
            } else {
                var.dims()[0]
            };
            let b = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| rng.random_range(-b..b)).collect()
        } else if name.ends_with("bn.weight") || name.ends_with("running_var") {
            vec![1.0; n]
        } else {
            vec![0.0; n]
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

pub struct TrainOptions {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

pub struct Trained {
    pub varmap: VarMap,
    pub net: TrainNet,
    pub losses: Vec<f32>,
    /// Accuracy on each training batch (batch statistics), before its update.
    pub batch_accuracy: Vec<f32>,
}

/// A batch of fresh samples as (inputs, labels): training samples (training-only classes
/// included) or held-out ones.
pub fn batch(
    task: &dyn Task,
    rng: &mut Rng,
    n: usize,
    training: bool,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let mut xs = Vec::new();
    let mut ys = Vec::with_capacity(n);
    for _ in 0..n {
        let s = if training {
            task.train_sample(rng)
        } else {
            task.sample(rng)
        };
        xs.extend(s.input);
        ys.push(s.class as u32);
    }
    let mut shape = vec![n, task.arch().in_channels];
    shape.extend(task.input_size());
    Ok((
        Tensor::from_vec(xs, shape, device)?,
        Tensor::new(ys, device)?,
    ))
}

/// Trains on fresh samples every step (no epochs, no overfitting), AdamW with cosine
/// decay. `on_step` sees (step, loss) for progress reporting.
pub fn train(
    task: &dyn Task,
    opt: &TrainOptions,
    mut on_step: impl FnMut(usize, f32),
) -> Result<Trained> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let mut arch = task.arch();
    arch.num_classes = task.train_classes();
    let net = TrainNet::new(&arch, vb)?;
    let mut rng = crate::synth::rng(opt.seed);
    init_vars(&varmap, &mut rng)?;
    let mut adam = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: opt.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let mut losses = Vec::with_capacity(opt.steps);
    let mut batch_accuracy = Vec::with_capacity(opt.steps);
    for step in 0..opt.steps {
        let lr =
            opt.lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / opt.steps as f64).cos());
        adam.set_learning_rate(lr);
        let (x, y) = batch(task, &mut rng, opt.batch, true, &device)?;
        let logits = net.forward_t(&x, true)?;
        let hits = logits
            .argmax(D::Minus1)?
            .eq(&y)?
            .to_dtype(DType::F32)?
            .mean_all()?;
        batch_accuracy.push(hits.to_scalar::<f32>()?);
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        adam.backward_step(&loss)?;
        let l = loss.to_scalar::<f32>()?;
        losses.push(l);
        on_step(step, l);
    }
    Ok(Trained {
        varmap,
        net,
        losses,
        batch_accuracy,
    })
}

/// Accuracy of the training-time network in eval mode on `n` held-out samples.
pub fn accuracy(task: &dyn Task, net: &TrainNet, seed: u64, n: usize) -> Result<f32> {
    let mut rng = crate::synth::rng(seed);
    let mut correct = 0;
    let mut done = 0;
    while done < n {
        let b = 50.min(n - done);
        let (x, y) = batch(task, &mut rng, b, false, &Device::Cpu)?;
        let pred = net.logits(task, &x)?.argmax(D::Minus1)?;
        let ok = pred
            .eq(&y)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?;
        correct += ok as usize;
        done += b;
    }
    Ok(correct as f32 / n as f32)
}

/// Writes `<dir>/<name>.safetensors` and `<dir>/<name>.toml`.
pub fn save(
    task: &dyn Task,
    trained: &Trained,
    dir: &Path,
    accuracy: f32,
    header: &str,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = task.name();
    let weights = dir.join(format!("{name}.safetensors"));
    let classes = task.labels().len();
    let mut tensors = std::collections::HashMap::new();
    for (k, v) in trained.varmap.data().lock().map_err(|_| poisoned())?.iter() {
        let t = v.as_tensor();
        // Training-only classes are the head's last rows.
        let t = if k.starts_with("fc.") {
            t.narrow(0, 0, classes)?
        } else {
            t.clone()
        };
        tensors.insert(k.clone(), t);
    }
    write_atomic(&weights, |tmp| {
        candle_core::safetensors::save(&tensors, tmp).map_err(Error::from)
    })?;
    let labels: Vec<String> = task.labels().iter().map(|l| format!("\"{l}\"")).collect();
    let arch = task.arch();
    let toml = format!(
        "{header}# Held-out accuracy: {:.1} %.\n\n[model]\narch = \"sequential\"\nlabels = [{}]\ntarget_layer = \"{}\"\nweights = \"{name}.safetensors\"\n\n{}\n{}",
        accuracy * 100.0,
        labels.join(", "),
        arch.target_layer(),
        task.input_toml(),
        arch.layers_toml()
    );
    let cfg = dir.join(format!("{name}.toml"));
    write_atomic(&cfg, |tmp| {
        std::fs::write(tmp, toml).map_err(|e| Error::io(tmp, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks;
    use camstream_core::model::{ModelRequest, ModelSource, Network};

    #[test]
    fn loss_falls_on_a_fixed_batch() {
        let task = tasks::Shapes::default();
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let net = TrainNet::new(
            &task.arch(),
            VarBuilder::from_varmap(&varmap, DType::F32, &device),
        )
        .unwrap();
        let mut rng = crate::synth::rng(5);
        init_vars(&varmap, &mut rng).unwrap();
        let (x, y) = batch(&task, &mut rng, 16, false, &device).unwrap();
        let mut adam = candle_nn::AdamW::new_lr(varmap.all_vars(), 1e-2).unwrap();
        let mut losses = vec![];
        for _ in 0..20 {
            let loss =
                candle_nn::loss::cross_entropy(&net.forward_t(&x, true).unwrap(), &y).unwrap();
            adam.backward_step(&loss).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap());
        }
        assert!(losses[19] < 0.6 * losses[0], "{losses:?}");
    }

    /// ECG, and shapes with its training-only "no shape" class, which the saved head drops.
    #[test]
    fn saved_model_loads_into_the_inference_path_with_equal_logits() {
        let cases: [(&dyn Task, &[&str], &str); 2] = [
            (&tasks::Ecg, &["normal", "ectopic"], "features.6"),
            (
                &tasks::Shapes::default(),
                &["circle", "square", "triangle"],
                "features.4",
            ),
        ];
        for (task, labels, layer) in cases {
            let trained = train(
                task,
                &TrainOptions {
                    steps: 3,
                    batch: 8,
                    lr: 1e-2,
                    seed: 9,
                },
                |_, _| {},
            )
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            save(task, &trained, dir.path(), 0.5, "# test\n").unwrap();
            let cfg = dir.path().join(format!("{}.toml", task.name()));
            let net =
                Network::load(&ModelRequest::new(ModelSource::Config(cfg)), &Device::Cpu).unwrap();
            assert_eq!(net.labels.as_deref().unwrap(), labels);
            assert_eq!(net.default_layer, layer);
            let (x, _) = batch(task, &mut crate::synth::rng(11), 4, false, &Device::Cpu).unwrap();
            let a = trained.net.logits(task, &x).unwrap();
            let b = net.forward(&x).unwrap();
            assert_eq!(b.dims(), [4, labels.len()]);
            let d = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-4, "{}: logits differ by {d}", task.name());
        }
    }

    #[test]
    fn shapes_trains_a_quarter_of_empty_pictures_of_its_own_class() {
        let task = tasks::Shapes::default();
        assert_eq!(task.train_classes(), 4);
        let mut rng = crate::synth::rng(3);
        let samples: Vec<_> = (0..400).map(|_| task.train_sample(&mut rng)).collect();
        let empty: Vec<_> = samples.iter().filter(|s| s.class == 3).collect();
        assert!((70..130).contains(&empty.len()), "{}", empty.len());
        assert!(empty.iter().all(|s| s.region.is_none()));
        assert!(samples
            .iter()
            .filter(|s| s.class < 3)
            .all(|s| s.region.is_some()));
    }
}
