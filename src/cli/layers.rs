use std::io::Write;

use anyhow::Result;

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
        &super::device(),
    )?;
    // A closed pipe (`| head`) ends the listing quietly instead of panicking.
    let mut out = std::io::stdout().lock();
    if writeln!(
        out,
        "{}: {} classes, input {:?} x {:?}; default layer {}",
        net.name, net.num_classes, net.input.channels, net.input.size, net.default_layer
    )
    .is_err()
    {
        return Ok(());
    }
    for (name, shape) in net.layer_shapes()? {
        let mark = if name == net.default_layer {
            "  (default)"
        } else {
            ""
        };
        if writeln!(out, "{name:<24} {shape:?}{mark}").is_err() {
            return Ok(());
        }
    }
    Ok(())
}
