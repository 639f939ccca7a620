//! PyTorch module names from the TorchScript exporter's node names. It names a node
//! `/features/features.16/features.16.2/HardSwish` or
//! `/layer2/layer2.0/downsample/downsample.0/Conv`: one segment per enclosing module,
//! its name relative to an ancestor, then the operator. A module's
//! tensor is the last output of a node inside its scope that is used outside it: what a
//! forward hook on that module sees.

use std::collections::HashMap;

use super::ops::Node;

/// The enclosing modules of a node, outermost first, as full dotted names.
fn module_path(node_name: &str) -> Vec<String> {
    let Some(rest) = node_name.strip_prefix('/') else {
        return Vec::new();
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let mut out: Vec<String> = Vec::new();
    for seg in &segs[..segs.len().saturating_sub(1)] {
        if seg.is_empty() {
            return Vec::new();
        }
        // A segment is relative to some ancestor (the nearest that is not a container
        // such as Sequential): the shortest reading that lies inside the parent.
        let full = match out.last() {
            None => seg.to_string(),
            Some(parent) => std::iter::once("")
                .chain(out.iter().map(String::as_str))
                .map(|a| {
                    if a.is_empty() {
                        seg.to_string()
                    } else {
                        format!("{a}.{seg}")
                    }
                })
                .find(|c| c.starts_with(&format!("{parent}.")))
                .unwrap_or_else(|| format!("{parent}.{seg}")),
        };
        out.push(full);
    }
    out
}

/// (module, tensor) for every module scope, in order of first appearance.
pub(super) fn module_outputs(nodes: &[Node], graph_output: &str) -> Vec<(String, String)> {
    let paths: Vec<Vec<String>> = nodes.iter().map(|n| module_path(&n.name)).collect();
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for inp in &n.inputs {
            consumers.entry(inp.as_str()).or_default().push(i);
        }
    }
    let mut order: Vec<&str> = Vec::new();
    let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in paths.iter().enumerate() {
        for m in p {
            let e = members.entry(m.as_str()).or_default();
            if e.is_empty() {
                order.push(m);
            }
            e.push(i);
        }
    }
    let inside = |i: usize, m: &str| paths[i].iter().any(|p| p == m);
    order
        .into_iter()
        .filter_map(|m| {
            let out = members[m].iter().rev().find_map(|&i| {
                nodes[i].outputs.iter().rev().find(|o| {
                    o.as_str() == graph_output
                        || consumers
                            .get(o.as_str())
                            .is_some_and(|cs| cs.iter().any(|&c| !inside(c, m)))
                })
            })?;
            Some((m.to_string(), out.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::module_path;

    #[test]
    fn scopes_become_dotted_module_names() {
        assert_eq!(
            module_path("/features/features.16/features.16.2/HardSwish"),
            ["features", "features.16", "features.16.2"]
        );
        assert_eq!(
            module_path("/layer2/layer2.0/relu_1/Relu"),
            ["layer2", "layer2.0", "layer2.0.relu_1"]
        );
        assert_eq!(
            module_path("/layer2/layer2.0/downsample/downsample.0/Conv"),
            [
                "layer2",
                "layer2.0",
                "layer2.0.downsample",
                "layer2.0.downsample.0"
            ]
        );
        assert_eq!(module_path("/fc/Gemm"), ["fc"]);
        assert!(module_path("/Flatten").is_empty());
        assert!(module_path("node_Conv_0").is_empty());
    }
}
