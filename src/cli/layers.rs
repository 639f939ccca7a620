use std::io::Write;

use anyhow::Result;

use super::ModelArgs;

pub fn run(args: &ModelArgs) -> Result<()> {
    let net = args.load(None)?;
    // A closed pipe (`| head`) ends the listing quietly instead of panicking.
    let mut out = std::io::stdout().lock();
    // The default layer stays last on the line: scripts read it from there.
    let fixed = net.fixed_batch().map_or(String::new(), |b| {
        format!("; batch fixed at {b} at export (larger batches run in chunks of {b})")
    });
    if writeln!(
        out,
        "{}: {} classes, input {:?} x {:?}{fixed}; default layer {}",
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
        // An ONNX tensor also answers to the PyTorch modules it is the output of.
        let aliases = net.aliases(&name);
        let aka = if aliases.is_empty() {
            String::new()
        } else {
            format!("  = {}", aliases.join(", "))
        };
        if writeln!(out, "{name:<24} {shape:?}{aka}{mark}").is_err() {
            return Ok(());
        }
    }
    Ok(())
}
