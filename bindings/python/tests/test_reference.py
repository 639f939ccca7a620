"""camstream from Python reproduces pytorch-grad-cam 1.5.7 on the shared references
(the same arrays tests/reference.rs checks; made by ../shared/reference's scripts:
cam = GradCAM(model, [layer]); final = cam(x, targets); raw = (grads.mean(spatial) * acts).sum(1))."""
import numpy as np
import pytest

import camstream
from conftest import FIXTURES, reference_dir

TOL = 1e-4


def check(model, directory, layer, file_layer, fixed, weights=None):
    x = np.load(directory / "input.npy")
    logits = np.load(directory / "logits.npy")
    pred = np.load(directory / "pred.npy")
    ex = camstream.Explainer(str(model), weights=weights, layer=layer)
    for target, want in [("pred", pred), ("fixed", np.full(len(x), fixed))]:
        r = ex.explain(x, target=None if target == "pred" else fixed, batch=4)
        assert r.classes == list(want)
        raw = np.load(directory / f"gradcam_{file_layer}_{target}_raw.npy")
        final = np.load(directory / f"gradcam_{file_layer}_{target}_final.npy")
        assert r.raw.shape == raw.shape and r.heatmap.shape == final.shape
        assert np.abs(r.raw - raw).max() <= TOL, f"{layer} {target} raw"
        assert np.abs(r.heatmap - final).max() <= TOL, f"{layer} {target} final"
        assert np.abs(r.logits - logits[np.arange(len(x)), want]).max() <= TOL
        assert r.layer == layer and r.method == "gradcam"


@pytest.mark.parametrize("layer", ["features.4", "features.6"])
def test_shapes_cnn(layer):
    d = FIXTURES / "shapes"
    check(d / "shapes_cnn.toml", d, layer, layer.replace(".", ""), 1)


@pytest.mark.parametrize("layer", ["features.4", "features.6"])
def test_ecg_cnn_1d(layer):
    d = FIXTURES / "ecg"
    check(d / "ecg_cnn.toml", d, layer, layer.replace(".", ""), 1)


@pytest.mark.parametrize("layer", ["layer1", "layer2"])
def test_tiny_resnet_from_onnx(layer):
    d = FIXTURES / "tinyres"
    onnx_layer = {"layer2": "layer2", "layer1": "layer1.0"}[layer]
    x = np.load(d / "input.npy")
    ex = camstream.Explainer(str(d / "tinyres.onnx"), layer=onnx_layer)
    r = ex.explain(x, batch=4)
    assert r.classes == list(np.load(d / "pred.npy"))
    assert np.abs(r.raw - np.load(d / f"gradcam_{layer}_pred_raw.npy")).max() <= TOL
    assert np.abs(r.heatmap - np.load(d / f"gradcam_{layer}_pred_final.npy")).max() <= TOL


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_resnet18(layer):
    r = reference_dir()
    check("resnet18", r / "resnet18", layer, layer, 281, weights=str(r / "models/resnet18_seed0.safetensors"))


@pytest.mark.parametrize("method,file", [("gradcam++", "gradcampp"), ("layercam", "layercam"), ("hirescam", "hirescam")])
def test_other_methods(method, file):
    d = FIXTURES / "shapes"
    x = np.load(d / "input.npy")
    ex = camstream.Explainer(str(d / "shapes_cnn.toml"), layer="features.6", method=method)
    r = ex.explain(x)
    assert r.method == method
    assert np.abs(r.raw - np.load(d / f"{file}_features6_pred_raw.npy")).max() <= TOL
    assert np.abs(r.heatmap - np.load(d / f"{file}_features6_pred_final.npy")).max() <= TOL


def test_overlay_equals_show_cam_on_image_byte_for_byte():
    # overlay = show_cam_on_image(rgb / 255, final, use_rgb=True) (tests/overlay.rs).
    d = FIXTURES / "overlay"
    rgb = np.load(d / "input_rgb_uint8.npy")
    masks = np.load(d / "gradcam_layer4_pred_final.npy")
    want = np.load(d / "overlay_gradcam_layer4_pred.npy")
    for i in range(len(rgb)):
        got = camstream.overlay(rgb[i], masks[i])
        assert got.dtype == np.uint8 and got.shape == want[i].shape
        assert np.array_equal(got, want[i])
    # Any strides: a view of every other column reads as its copy does.
    view = rgb[0][:, ::2]
    assert np.array_equal(camstream.overlay(view, masks[0][:, ::2]),
                          camstream.overlay(np.ascontiguousarray(view), np.ascontiguousarray(masks[0][:, ::2])))


def test_a_3d_cnn_on_clips():
    """(N, C, T, H, W) clips through a video model (the clip3d family's TOML config):
    raw (N, t, h, w) and final (N, T, H, W) maps equal pytorch-grad-cam's, whose 5-D final
    map is scipy's cubic-spline zoom (tests/fixtures/families/make.py)."""
    d = FIXTURES / "families" / "clip3d"
    x = np.load(d / "input.npy")
    ex = camstream.Explainer(str(d / "model.toml"), layer="relu3")
    assert ex.kind == "clip"
    r = ex.explain(x, batch=4)
    raw = np.load(d / "gradcam_pred_raw.npy")
    final = np.load(d / "gradcam_pred_final.npy")
    assert r.raw.shape == raw.shape and r.heatmap.shape == final.shape == x.shape[:1] + x.shape[2:]
    assert np.abs(r.raw - raw).max() <= TOL * np.abs(raw).max()
    assert np.abs(r.heatmap - final).max() <= TOL
