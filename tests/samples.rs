//! The shipped sample models: accuracy and localisation on held-out synthetic samples,
//! through the inference path (Grad-CAM for the true class, pointing game).

use std::path::Path;

use camstream_core::model::{ModelRequest, ModelSource, Network};
use camstream_core::CamConfig;
use camstream_train::eval::{evaluate, EvalOptions, TaskSamples};
use camstream_train::tasks;
use candle_core::Device;

fn check(task: &str, n: usize, min_pointing: f32) {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("samples/models/{task}.toml"));
    let net = Network::load(&ModelRequest::new(ModelSource::Config(cfg)), &Device::Cpu).unwrap();
    let t = tasks::by_name(task).unwrap();
    // The held-out seed of `camstream eval`, far from the training stream.
    let options = EvalOptions {
        batch: 25,
        cam: CamConfig::default(),
        metrics: None,
    };
    let mut samples = TaskSamples::new(t.as_ref(), &net, n, 1_000_003);
    let r = evaluate(&mut samples, &net, &net.default_layer, &options).unwrap();
    eprintln!("{r:?}");
    assert!(r.accuracy >= 0.95, "{task}: accuracy {}", r.accuracy);
    assert!(
        r.localised >= n / 3,
        "{task}: {} localised samples",
        r.localised
    );
    assert!(
        r.pointing >= min_pointing,
        "{task}: pointing {}",
        r.pointing
    );
    assert!(
        r.pointing > 3.0 * r.chance,
        "{task}: pointing {} vs chance {}",
        r.pointing,
        r.chance
    );
}

#[test]
fn shapes_model_points_at_the_shape() {
    check("shapes", 100, 0.85);
}

#[test]
fn ecg_model_points_at_the_ectopic_beat() {
    check("ecg", 100, 0.85);
}

#[test]
fn audio_model_points_at_the_event() {
    check("audio", 60, 0.85);
}
