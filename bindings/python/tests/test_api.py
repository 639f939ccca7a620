"""Errors, threads, memory, signals and videos through the Python API."""
import json
import resource
import threading

import numpy as np
import pytest

import camstream
from conftest import FIXTURES, SAMPLES

SHAPES = str(SAMPLES / "models" / "shapes.toml")


@pytest.fixture(scope="module")
def shapes():
    return camstream.Explainer(SHAPES)


@pytest.fixture(scope="module")
def x():
    return np.load(FIXTURES / "shapes" / "input.npy")[:4]


def test_errors_are_camstream_error_with_one_line(shapes, x):
    cases = [
        (lambda: shapes.explain(x.astype(np.float64)), "must be a float32 numpy array, got dtype float64"),
        (lambda: shapes.explain(x[0]), "must be (N,C,H,W)"),
        (lambda: shapes.explain(x[:, :1]), "channels"),
        (lambda: shapes.explain(x, target=7), "class 7 is out of range"),
        (lambda: shapes.explain(x, target="hexagon"), "unknown class label `hexagon`"),
        (lambda: shapes.explain(x, target=[0, 1]), "2 target classes given for a batch of 4"),
        (lambda: camstream.Explainer(SHAPES, layer="features.9"), "valid target layers: features.0.bn"),
        (lambda: camstream.Explainer(SHAPES, method="magic"), "unknown CAM method `magic`"),
        (lambda: camstream.Explainer("missing.onnx"), "missing.onnx"),
        (lambda: camstream.Explainer("resnet18"), "weights"),
        (lambda: camstream.overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), np.float32)), "(H,W,3)"),
        (lambda: shapes.explain_signal(np.zeros(100, np.float32), rate=100.0), "takes pictures"),
    ]
    for call, want in cases:
        with pytest.raises(camstream.Error) as e:
            call()
        assert want in str(e.value), str(e.value)
        assert "\n" not in str(e.value)
    assert issubclass(camstream.Error, Exception)


def test_results_targets_and_non_contiguous_input(shapes, x):
    r = shapes.explain(x)
    assert len(r) == 4 and r.raw.shape == (4, 16, 16) and r.heatmap.shape == (4, 64, 64)
    assert r.raw.dtype == np.float32 and 0.0 <= r.heatmap.min() and r.heatmap.max() <= 1.0
    assert all(l in shapes.labels for l in r.labels)
    assert np.all((0 < r.probabilities) & (r.probabilities <= 1))
    by_label = shapes.explain(x, target="square")
    assert by_label.classes == [1] * 4
    per = shapes.explain(x, target=[0, 1, 2, "circle"])
    assert per.classes == [0, 1, 2, 0]
    # A channels-last view (strides not C order) gives the same maps as its copy.
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    view = nhwc.transpose(0, 3, 1, 2)
    assert not view.flags["C_CONTIGUOUS"]
    assert np.array_equal(shapes.explain(view).raw, r.raw)
    assert [n for n, _ in shapes.layers()][-1] == "features.6"
    assert shapes.input_shape == [3, 64, 64] and shapes.kind == "image"
    assert set(camstream.methods()) >= {"gradcam", "scorecam", "eigencam"}


def test_one_explainer_from_many_threads(shapes, x):
    want = shapes.explain(x).raw
    errors, outputs = [], []

    def work():
        try:
            for _ in range(5):
                outputs.append(shapes.explain(x).raw)
        except Exception as e:  # noqa: BLE001 (collected and asserted below)
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(outputs) == 20
    for o in outputs:
        assert np.array_equal(o, want)


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_memory_stays_flat_over_1000_calls(shapes, x):
    one = x[:1]
    for _ in range(100):
        shapes.explain(one)
    before = rss_mb()
    for _ in range(1000):
        r = shapes.explain(one)
    after = rss_mb()
    assert r.raw.shape == (1, 16, 16)
    assert after - before < 20, f"RSS grew from {before:.1f} to {after:.1f} MB over 1000 calls"


def test_metrics(shapes, x):
    r = shapes.explain(x[:2])
    m = shapes.metrics(x[:2], r)
    assert len(m) == 2
    assert {"confidence_change", "road_combined", "deletion_auc", "insertion_auc", "avg_drop"} <= set(m[0])
    with pytest.raises(camstream.Error):
        shapes.metrics(x[:2], heatmap=r.heatmap[:1], classes=r.classes)


def test_signal_from_a_file_and_from_an_array():
    ecg = camstream.Explainer(str(SAMPLES / "models" / "ecg.toml"))
    assert ecg.kind == "signal"
    a = ecg.explain_signal(str(SAMPLES / "ecg" / "ecg_60s.csv"))
    assert len(a["windows"]) == 8
    assert a["windows"][0]["start_s"] == 0.0 and a["windows"][-1]["end_s"] == 60.0
    assert a["relevance"].shape == (15000,)
    # The same recording as an array with its rate (the CSV rounds to 4 decimals).
    samples = np.load(SAMPLES / "ecg" / "ecg_60s.npy").astype(np.float32)
    b = ecg.explain_signal(samples, rate=250.0)
    assert [w["class"] for w in b["windows"]] == [w["class"] for w in a["windows"]]
    assert np.abs(a["relevance"] - b["relevance"]).max() < 1e-4
    with pytest.raises(camstream.Error, match="give `rate`"):
        ecg.explain_signal(samples)


@pytest.mark.skipif(not camstream.has_video(), reason="built without video (FFmpeg)")
def test_video_round_trip(shapes, tmp_path):
    out = tmp_path / "annotated.mp4"
    records = shapes.explain_video(str(SAMPLES / "video" / "shapes.mp4"), str(out), batch=8)
    assert len(records) == 250
    assert [r["index"] for r in records] == list(range(250))
    assert {r["label"] for r in records} <= set(shapes.labels)
    data = out.read_bytes()
    assert data[4:8] == b"ftyp" and len(data) > 100_000
    json.dumps(records)  # plain data
    with pytest.raises(camstream.Error):
        shapes.explain_video(str(out), str(out))
