use anyhow::Result;
use candle_core::Device;

use camstream::model::{ModelRequest, Network};

use super::ModelArgs;

pub fn run(args: &ModelArgs) -> Result<()> {
    let net = Network::load(
        &ModelRequest {
            model: &args.model,
            weights: args.weights.as_deref(),
            target: None,
            labels_file: args.labels.as_deref(),
        },
        &Device::Cpu,
    )?;
    let shapes = net.unit_shapes()?;
    println!(
        "{}: {} classes, input {:?} x {:?}; default layer {}",
        net.name, net.num_classes, net.input.channels, net.input.size, net.default_layer
    );
    for name in net.target_names() {
        let idx = net.resolve_layer(&name)?;
        let shape = &shapes[idx][1..];
        let mark = if name == net.default_layer {
            "  (default)"
        } else {
            ""
        };
        println!("{name:<24} {shape:?}{mark}");
    }
    Ok(())
}
