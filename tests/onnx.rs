//! ONNX import: the torch exports of the reference models (BN folded into Conv by the
//! exporter; MaxPool with pads, residual Adds, GlobalAveragePool, Gemm) give the
//! reference Grad-CAM maps, through the graph cut at a tensor name, and agree with the
//! safetensors path.

mod common;

use std::path::Path;

use camstream_core::cam::{GradCam, Targets};
use camstream_core::model::{ModelRequest, Network};
use candle_core::{Device, Tensor};
use common::{camstream, fails, fixtures, max_abs, npy, npy_usize, ok, s};

fn load(model: &Path) -> Network {
    Network::load(&ModelRequest::new(common::source(model)), &Device::Cpu).unwrap()
}

/// (reference layer name, ONNX tensor name, PyTorch module recorded in the node scopes)
type Layers = &'static [(&'static str, &'static str, &'static str)];

/// (model dir, onnx file, layers)
const CASES: &[(&str, &str, Layers)] = &[
    (
        "shapes",
        "shapes_cnn.onnx",
        &[
            (
                "features6",
                "/features/features.6/relu/Relu_output_0",
                "features.6",
            ),
            (
                "features4",
                "/features/features.4/relu/Relu_output_0",
                "features.4",
            ),
        ],
    ),
    (
        "ecg",
        "ecg_cnn.onnx",
        &[
            (
                "features6",
                "/features/features.6/relu/Relu_output_0",
                "features.6",
            ),
            (
                "features4",
                "/features/features.4/relu/Relu_output_0",
                "features.4",
            ),
        ],
    ),
    (
        "tinyres",
        "tinyres.onnx",
        &[
            ("layer2", "/layer2/layer2.0/relu_1/Relu_output_0", "layer2"),
            (
                "layer1",
                "/layer1/layer1.0/relu_1/Relu_output_0",
                "layer1.0",
            ),
        ],
    ),
];

#[test]
fn onnx_exports_reproduce_the_reference_maps() {
    for (dir, file, layers) in CASES {
        let net = load(&fixtures().join(dir).join(file));
        let (x, shape) = npy(fixtures().join(dir).join("input.npy"));
        let x = Tensor::from_vec(x, shape, &Device::Cpu).unwrap();
        // The default target is the global pooling's input.
        assert_eq!(net.default_layer, layers[0].1, "{dir}");
        let logits: Vec<Vec<f32>> = net.forward(&x).unwrap().to_vec2().unwrap();
        let (want, _) = npy(fixtures().join(dir).join("logits.npy"));
        let got: Vec<f32> = logits.concat();
        assert!(max_abs(&got, &want) <= 1e-4, "{dir}: logits");
        let fixed = match *dir {
            "tinyres" => 3,
            _ => 1,
        };
        // A tensor name, and the module name that a forward hook in PyTorch would use.
        for (ref_name, tensor, module) in layers.iter() {
            for layer in [tensor, module] {
                let cam = GradCam::new(&net, layer).unwrap();
                for (target, tg) in [("pred", Targets::TopOne), ("fixed", Targets::All(fixed))] {
                    let out = cam.run(&x, &tg).unwrap();
                    let (r, _) = npy(fixtures()
                        .join(dir)
                        .join(format!("gradcam_{ref_name}_{target}_raw.npy")));
                    let e = max_abs(&out.raw, &r);
                    eprintln!("{dir} {layer} {target}: {e:.2e}");
                    assert!(e <= 1e-4, "{dir} {layer} {target}: {e}");
                }
            }
        }
        let pred = npy_usize(fixtures().join(dir).join("pred.npy"));
        let out = GradCam::new(&net, layers[0].1)
            .unwrap()
            .run(&x, &Targets::TopOne)
            .unwrap();
        assert_eq!(out.classes, pred, "{dir}");
    }
}

#[test]
fn onnx_through_the_cli_and_layer_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = fixtures().join("shapes/shapes_cnn.onnx");
    let out = ok(&camstream(&["layers", "-m", s(&onnx)]));
    // Tensors, and the PyTorch modules they are the outputs of (from the node scopes).
    assert!(
        out.contains(
            "/features/features.4/relu/Relu_output_0 [64, 16, 16]  = features.4, features.4.relu\n"
        ),
        "{out}"
    );
    assert!(out.contains(
        "/features/features.6/relu/Relu_output_0 [64, 8, 8]  = features, features.6, features.6.relu  (default)"
    ), "{out}");
    ok(&camstream(&[
        "image",
        "-m",
        s(&onnx),
        s(&fixtures().join("shapes/input.npy")),
        "--cam-npy",
        "-o",
        s(tmp.path()),
    ]));
    let (fin, _) = npy(tmp.path().join("input.heatmap.npy"));
    let (r, _) = npy(fixtures().join("shapes/gradcam_features6_pred_final.npy"));
    assert!(max_abs(&fin, &r) <= 1e-4);

    let e = fails(&camstream(&[
        "image",
        "-m",
        s(&onnx),
        "-l",
        "/features/features.9/Relu",
        s(&fixtures().join("shapes/input.npy")),
        "-o",
        s(tmp.path()),
    ]));
    assert!(
        e.contains("unknown layer") && e.contains("/features/features.6/relu/Relu_output_0"),
        "{e}"
    );
    let e = fails(&camstream(&[
        "image",
        "-m",
        s(&onnx),
        "-l",
        "logits",
        s(&fixtures().join("shapes/input.npy")),
        "-o",
        s(tmp.path()),
    ]));
    assert!(e.contains("no spatial dimensions"), "{e}");

    let bad = tmp.path().join("bad.onnx");
    std::fs::write(&bad, b"this is not protobuf").unwrap();
    let e = fails(&camstream(&["layers", "-m", s(&bad)]));
    assert!(e.contains("not an ONNX model"), "{e}");
}

/// A graph with an operator the evaluator does not run is refused at load, by name.
#[test]
fn unsupported_operators_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let p = edited(tmp.path(), "selu.onnx", |m| {
        let g = m.graph.as_mut().unwrap();
        let relu = g.node.iter_mut().find(|n| n.op_type == "Relu").unwrap();
        relu.op_type = "Selu".into();
    });
    let e = fails(&camstream(&["layers", "-m", s(&p)]));
    assert!(
        e.contains("node `/relu/Relu`: unknown ONNX operator `Selu`") && e.contains("MaxPool"),
        "{e}"
    );
}

/// tinyres.onnx, changed by `edit`, written to `dir/name`.
fn edited(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut candle_onnx::onnx::ModelProto),
) -> std::path::PathBuf {
    use prost::Message;
    let mut model = candle_onnx::read_file(fixtures().join("tinyres/tinyres.onnx")).unwrap();
    edit(&mut model);
    let p = dir.join(name);
    std::fs::write(&p, model.encode_to_vec()).unwrap();
    p
}

fn input_dims(
    m: &mut candle_onnx::onnx::ModelProto,
) -> &mut Vec<candle_onnx::onnx::tensor_shape_proto::Dimension> {
    use candle_onnx::onnx::type_proto::Value;
    let input = &mut m.graph.as_mut().unwrap().input[0];
    match input.r#type.as_mut().unwrap().value.as_mut().unwrap() {
        Value::TensorType(t) => &mut t.shape.as_mut().unwrap().dim,
        _ => unreachable!(),
    }
}

/// A model whose input is not (N,C,L), (N,C,H,W) or (N,C,T,H,W) is refused, naming the
/// shape; a clip input to a 2D convolution names the disagreement.
#[test]
fn inputs_of_other_ranks_are_refused_with_their_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let p = edited(tmp.path(), "rank6.onnx", |m| {
        let dims = input_dims(m);
        let d = dims[2].clone();
        dims.insert(2, d.clone());
        dims.insert(2, d);
    });
    let e = fails(&camstream(&["layers", "-m", s(&p)]));
    assert!(
        e.contains("input `input` has shape [?, 3, 64, 64, 64, 64]") && e.contains("(N,C,T,H,W)"),
        "{e}"
    );
    let p = edited(tmp.path(), "video.onnx", |m| {
        let dims = input_dims(m);
        let d = dims[2].clone();
        dims.insert(2, d);
    });
    let e = fails(&camstream(&["layers", "-m", s(&p)]));
    assert!(
        e.contains("Conv of input [1, 3, 64, 64, 64], weight [8, 3, 7, 7]")
            && e.contains("shapes disagree"),
        "{e}"
    );
}

/// One node of a replacement head: the operator and its constant second input (dims,
/// values).
type HeadOp = (&'static str, Vec<i64>, Vec<i64>);

/// Replaces the tiny ResNet's Flatten by these nodes, in turn, each reading the previous
/// one's output and its own int64 constant.
fn replaced_head(m: &mut candle_onnx::onnx::ModelProto, head: &[HeadOp]) {
    use candle_onnx::onnx::{tensor_proto::DataType, NodeProto, TensorProto};
    let g = m.graph.as_mut().unwrap();
    let at = g.node.iter().position(|n| n.op_type == "Flatten").unwrap();
    let flatten = g.node.remove(at);
    let mut from = flatten.input[0].clone();
    for (i, (op, dims, values)) in head.iter().enumerate() {
        let spec = format!("head_const_{i}");
        g.initializer.push(TensorProto {
            name: spec.clone(),
            dims: dims.clone(),
            data_type: DataType::Int64 as i32,
            int64_data: values.clone(),
            ..Default::default()
        });
        let to = if i + 1 == head.len() {
            flatten.output[0].clone()
        } else {
            format!("head_{i}")
        };
        g.node.insert(
            at + i,
            NodeProto {
                name: format!("head_{op}_{i}"),
                op_type: op.to_string(),
                input: vec![from, spec],
                output: vec![to.clone()],
                ..Default::default()
            },
        );
        from = to;
    }
}

/// A Reshape to this constant shape, for `replaced_head`.
fn reshape(shape: &[i64]) -> HeadOp {
    ("Reshape", vec![shape.len() as i64], shape.to_vec())
}

/// The tiny ResNet with its input batch fixed and the Flatten replaced by `head`.
fn fixed_batch_model(dir: &Path, name: &str, batch: i64, head: &[HeadOp]) -> std::path::PathBuf {
    use candle_onnx::onnx::tensor_shape_proto::dimension::Value;
    edited(dir, name, |m| {
        input_dims(m)[0].value = Some(Value::DimValue(batch));
        replaced_head(m, head);
    })
}

/// Logits and layer2 raw maps of the first 3 reference samples match PyTorch's.
fn three_samples_match(net: &Network) {
    let (x, shape) = npy(fixtures().join("tinyres/input.npy"));
    let x = Tensor::from_vec(x, shape, &Device::Cpu)
        .unwrap()
        .narrow(0, 0, 3)
        .unwrap();
    let (want, _) = npy(fixtures().join("tinyres/logits.npy"));
    let got = common::logits(net, &x);
    assert!(max_abs(&got, &want[..15]) <= 1e-4);
    let out = GradCam::new(net, "layer2")
        .unwrap()
        .run(&x, &Targets::All(3))
        .unwrap();
    let (r, _) = npy(fixtures().join("tinyres/gradcam_layer2_fixed_raw.npy"));
    assert_eq!(out.raw.len(), r.len() / 4 * 3);
    assert!(max_abs(&out.raw, &r[..out.raw.len()]) <= 1e-4);
}

/// A graph whose batch is truly fixed (its head flattens the whole batch to 32 values,
/// then splits them into 2 rows) runs at that batch: 3 samples are two runs, the second
/// padded, and give the reference maps of those samples.
#[test]
fn fixed_batch_graphs_run_in_padded_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let p = fixed_batch_model(
        tmp.path(),
        "batch2.onnx",
        2,
        &[reshape(&[32]), reshape(&[2, 16])],
    );
    let net = load(&p);
    assert_eq!(net.fixed_batch(), Some(2));
    three_samples_match(&net);
    let listing = ok(&camstream(&["layers", "-m", s(&p)]));
    let first = listing.lines().next().unwrap();
    assert!(first.contains("; batch fixed at 2 at export"), "{listing}");
    // Scripts (the zoo's) read the default layer from the end of the first line.
    let default = format!("; default layer {}", net.default_layer);
    assert!(first.ends_with(&default), "{first}");
}

/// A batch baked into a view's shape (as torch's dynamo exporter writes
/// `x.reshape(x.shape[0], -1)` or `flatten(x, 1)`, and ConvNeXt's `as_strided` view as
/// a Gather of every value in order) is freed: the graph runs any batch in one pass,
/// with the same numbers.
#[test]
fn baked_batch_views_run_any_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let in_order = ("Gather", vec![1, 16], (0..16).collect());
    let heads = [
        (1, vec![reshape(&[1, 16])]),
        (2, vec![reshape(&[2, -1])]),
        (1, vec![reshape(&[-1]), in_order]),
    ];
    for (batch, head) in heads {
        let p = fixed_batch_model(tmp.path(), "baked.onnx", batch, &head);
        let net = load(&p);
        assert_eq!(net.fixed_batch(), None, "{head:?}");
        three_samples_match(&net);
        let listing = ok(&camstream(&["layers", "-m", s(&p)]));
        assert!(!listing.contains("batch fixed"), "{listing}");
    }
    let dynamo = fixtures().join("families/dynamo_external/model.onnx");
    assert_eq!(load(&dynamo).fixed_batch(), None);
}

/// torch's default exporter writes the weights to an external file; the model names
/// where, relative to itself. A missing file is an error naming it.
#[test]
fn external_data_is_read_where_the_model_says() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("families/dynamo_external");
    let mut model = candle_onnx::read_file(src.join("model.onnx")).unwrap();
    for t in &mut model.graph.as_mut().unwrap().initializer {
        for kv in &mut t.external_data {
            if kv.key == "location" {
                kv.value = "weights/params.bin".into();
            }
        }
    }
    let moved = tmp.path().join("moved.onnx");
    {
        use prost::Message;
        std::fs::write(&moved, model.encode_to_vec()).unwrap();
    }
    let e = fails(&camstream(&["layers", "-m", s(&moved)]));
    assert!(
        e.contains("external data file") && e.contains("weights/params.bin"),
        "{e}"
    );
    std::fs::create_dir(tmp.path().join("weights")).unwrap();
    std::fs::copy(
        src.join("model.onnx.data"),
        tmp.path().join("weights/params.bin"),
    )
    .unwrap();
    let (x, shape) = npy(src.join("input.npy"));
    let x = Tensor::from_vec(x, shape, &Device::Cpu).unwrap();
    let got = common::logits(&load(&moved), &x);
    let (want, _) = npy(src.join("logits.npy"));
    assert!(max_abs(&got, &want) <= 1e-4);
}

/// README's operator table names every operator the evaluator runs.
#[test]
fn readme_lists_every_operator() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let words: std::collections::HashSet<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| l.split(|c: char| !c.is_ascii_alphanumeric()))
        .collect();
    for op in camstream_core::model::onnx::supported_ops() {
        assert!(words.contains(op), "README's operator table lacks {op}");
    }
}

/// Conv + activation pairs run fused except where a tensor they hide is wanted: cut at
/// every target of graphs with ReLU6, HardSwish, SiLU (Sigmoid + Mul) and SE blocks, the
/// target is computed and the logits from the part after the cut equal the plain
/// forward's, so each cut (each set of fusions left out) is the same network.
#[test]
fn every_cut_of_a_fused_graph_is_the_same_network() {
    for fam in ["hardswish", "se_block", "ceil_pool"] {
        let dir = fixtures().join("families").join(fam);
        let net = load(&dir.join("model.onnx"));
        let (x, shape) = npy(dir.join("input.npy"));
        let x = Tensor::from_vec(x, shape, &Device::Cpu).unwrap();
        let forward: Vec<f32> = net.forward(&x).unwrap().to_vec2::<f32>().unwrap().concat();
        let (want, _) = npy(dir.join("logits.npy"));
        assert!(max_abs(&forward, &want) <= 1e-4, "{fam}: logits");
        let shapes = net.layer_shapes().unwrap();
        assert!(shapes.len() > 3, "{fam}: {} targets", shapes.len());
        for (layer, per_sample) in shapes {
            let out = GradCam::new(&net, &layer)
                .unwrap()
                .run(&x, &Targets::TopOne)
                .unwrap();
            let cut: Vec<f32> = out.logits.concat();
            let e = max_abs(&cut, &forward);
            assert!(e <= 1e-5, "{fam} cut at {layer}: logits differ by {e}");
            let spatial: usize = per_sample[1..].iter().product();
            assert_eq!(out.raw.len(), x.dim(0).unwrap() * spatial, "{fam} {layer}");
        }
    }
}
