use std::io::Write;

use anyhow::Result;

use super::ModelArgs;

pub fn run(args: &ModelArgs) -> Result<()> {
    let net = args.load(None)?;
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
