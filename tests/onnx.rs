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

/// (reference layer name, ONNX tensor name)
type Layers = &'static [(&'static str, &'static str)];

/// (model dir, onnx file, layers)
const CASES: &[(&str, &str, Layers)] = &[
    (
        "shapes",
        "shapes_cnn.onnx",
        &[
            ("features6", "/features/features.6/relu/Relu_output_0"),
            ("features4", "/features/features.4/relu/Relu_output_0"),
        ],
    ),
    (
        "ecg",
        "ecg_cnn.onnx",
        &[
            ("features6", "/features/features.6/relu/Relu_output_0"),
            ("features4", "/features/features.4/relu/Relu_output_0"),
        ],
    ),
    (
        "tinyres",
        "tinyres.onnx",
        &[
            ("layer2", "/layer2/layer2.0/relu_1/Relu_output_0"),
            ("layer1", "/layer1/layer1.0/relu_1/Relu_output_0"),
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
        for (ref_name, tensor) in layers.iter() {
            let cam = GradCam::new(&net, tensor).unwrap();
            for (target, tg) in [("pred", Targets::TopOne), ("fixed", Targets::All(fixed))] {
                let out = cam.run(&x, &tg).unwrap();
                let (r, _) = npy(fixtures()
                    .join(dir)
                    .join(format!("gradcam_{ref_name}_{target}_raw.npy")));
                let e = max_abs(&out.raw, &r);
                eprintln!("{dir} {ref_name} {target}: {e:.2e}");
                assert!(e <= 1e-4, "{dir} {ref_name} {target}: {e}");
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
    assert!(
        out.contains("/features/features.4/relu/Relu_output_0 [64, 16, 16]"),
        "{out}"
    );
    assert!(out.contains("/features/features.6/relu/Relu_output_0 [64, 8, 8]  (default)"));
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
    use candle_onnx::onnx;
    use prost::Message;
    let tmp = tempfile::tempdir().unwrap();
    let mut model = candle_onnx::read_file(fixtures().join("tinyres/tinyres.onnx")).unwrap();
    let g = model.graph.as_mut().unwrap();
    let relu = g.node.iter_mut().find(|n| n.op_type == "Relu").unwrap();
    relu.op_type = "Selu".into();
    let p = tmp.path().join("selu.onnx");
    std::fs::write(&p, model.encode_to_vec()).unwrap();
    let e = fails(&camstream(&["layers", "-m", s(&p)]));
    assert!(
        e.contains("unknown ONNX operator `Selu") && e.contains("MaxPool"),
        "{e}"
    );
    let _ = onnx::NodeProto::default();
}
