"""The zoo check: torchvision CNNs through both torch ONNX exporters into camstream, each
compared with pytorch-grad-cam on the same weights. Run it through scripts/zoo.sh.

Per model: random weights (seed 0) with BatchNorm statistics calibrated on the photos
and their mirror images; the 4 sample photos (shorter side 256, centre crop 224, ImageNet mean/std);
Grad-CAM at the output of the module pytorch-grad-cam users target (the input of the
classifier's pooling), found in the ONNX graph by value; targets: each photo's top class
and the fixed class 281. Errors are max |camstream - reference| / max |reference| over
the 4 photos and both targets, for the raw map (before ReLU; it checks the gradient that
reached the target) and pytorch-grad-cam's final map; and, to tell a bug from float32
rounding, both camstream and pytorch-grad-cam against the same maps computed by PyTorch
in float64 (the deviation a correct float32 implementation has). Speed: forward only, batch 8, the
same threads, camstream `bench` against PyTorch with channels_last in inference mode.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torchvision
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

# model: the module whose output pytorch-grad-cam targets
MODELS = {
    "resnet18": "layer4",
    "resnext50_32x4d": "layer4",
    "mobilenet_v2": "features",
    "mobilenet_v3_small": "features",
    "mobilenet_v3_large": "features",
    "efficientnet_b0": "features",
    "efficientnet_v2_s": "features",
    "regnet_y_400mf": "trunk_output",
    "shufflenet_v2_x1_0": "conv5",
    "squeezenet1_1": "features",
    "mnasnet1_0": "layers",
    "densenet121": "relu",
    "googlenet": "inception5b",
    "convnext_tiny": "features",
}
FIXED = 281
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]


class DenseNetHooked(nn.Module):
    """densenet121 with its final `F.relu(features, inplace=True)` as a module, cloned:
    a hook on `features` would store the ReLU'd values with the pre-ReLU gradient."""

    def __init__(self, m):
        super().__init__()
        self.m = m
        self.relu = nn.Sequential(nn.ReLU(), Clone())

    def forward(self, x):
        x = self.relu(self.m.features(x))
        return self.m.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Clone(nn.Module):
    def forward(self, x):
        return x.clone()


def photos(root):
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    out = []
    for name in PHOTOS:
        im = Image.open(os.path.join(root, "samples/photos", name)).convert("RGB")
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
        w, h = im.size
        l, t = (w - 224) // 2, (h - 224) // 2
        a = np.asarray(im.crop((l, t, l + 224, t + 224)), np.float32) / 255
        out.append(((a - mean) / std).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out))


def build(name, calibration):
    torch.manual_seed(0)
    kw = {"init_weights": True} if name == "googlenet" else {}
    m = getattr(torchvision.models, name)(weights=None, **kw)
    if name.startswith("convnext"):
        # torchvision starts layer scales at 1e-6, which makes every block an identity
        # (and its LayerNorm, GELU and MatMuls invisible); trained ones are ~0.1-1.
        with torch.no_grad():
            for b in m.modules():
                if isinstance(b, torchvision.models.convnext.CNBlock):
                    b.layer_scale.uniform_(0.1, 1.0)
    bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # a plain average over the calibration batches
    # Only BatchNorm in training mode: stochastic depth and dropout stay off, or the
    # statistics would not fit the eval-mode network.
    m.eval()
    for b in bns:
        b.train()
    # Calibrated on the photos and their mirror images: white-noise statistics do not fit
    # photos, and the mismatch compounds over 40 blocks (EfficientNetV2's activations
    # reach 1e5 and torch and onnxruntime then disagree by a quarter).
    with torch.no_grad():
        if bns:
            m(torch.cat([calibration, calibration.flip(3)]))
    return m.eval()


def module(model, path):
    for p in path.split("."):
        model = getattr(model, p)
    return model


def export(model, x, path, exporter):
    if exporter == "torchscript":
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    else:  # torch's default: dynamo, its own opset, weights in path + ".data"
        torch.onnx.export(model, (x[:1],), path)


def tensor_by_value(path, x1, want):
    m = onnx.load(path, load_external_data=True)
    m = onnx.shape_inference.infer_shapes(m)
    floats = {v.name for v in m.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    order = [o for n in m.graph.node for o in n.output if o in floats]
    del m.graph.output[:]
    for name in order:
        m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(order, {sess.get_inputs()[0].name: x1})
    # The closest match: tensors a near-identity block apart are nearly equal too.
    peak = max(1e-6, float(np.abs(want).max()))
    errs = [(float(np.abs(v - want).max()), i) for i, v in enumerate(outs) if v.shape == want.shape]
    err, i = min(errs, default=(np.inf, -1))
    return order[i] if err <= 1e-4 * peak else None


def grad_cam(model, target, x, classes):
    """The raw map sum_c mean(G_c) A_c (before ReLU), in float64 from the model's A, G."""
    store = {}
    h = target.register_forward_hook(lambda m, i, o: store.update(a=o))
    dtype = next(model.parameters()).dtype
    logits = model(torch.from_numpy(x).to(dtype))
    store["a"].retain_grad()
    logits[torch.arange(len(classes)), torch.tensor(classes)].sum().backward()
    h.remove()
    a = store["a"].detach().double().numpy()
    g = store["a"].grad.double().numpy()
    return (g.mean(axis=(2, 3), keepdims=True) * a).sum(axis=1)


def reference(model, model64, path, x, classes):
    """pytorch-grad-cam's maps, and float64 PyTorch's (what float32 rounding costs)."""
    target = module(model, path)
    raw = grad_cam(model, target, x, classes).astype(np.float32)
    with GradCAM(model=model, target_layers=[target]) as cam:
        final = cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(c) for c in classes])
    raw64 = grad_cam(model64, module(model64, path), x, classes)
    # pytorch-grad-cam's post-processing: ReLU, min-max, resize, min-max again.
    final64 = scale_cam_image(scale_cam_image(np.maximum(raw64, 0).astype(np.float32), (224, 224)))
    return {"raw": raw, "final": final, "raw64": raw64, "final64": final64}


def torch_fps(model, threads, device="cpu", batch=8, iters=5):
    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    m = model.to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        m(x)
        sync()
        ts = []
        for _ in range(iters):
            t = time.perf_counter()
            m(x)
            sync()
            ts.append(time.perf_counter() - t)
    model.to("cpu", memory_format=torch.contiguous_format)
    return batch / float(np.median(ts))


def rel(a, b):
    return float(np.abs(a - b).max() / max(1e-12, np.abs(b).max()))


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr.strip().splitlines()[-1:] if p.stderr.strip() else []


def check(cs, name, exporter, work, x, threads, refs, model, ref_model, target_module):
    d = os.path.join(work, name, exporter)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model.onnx")
    row = {"model": name, "exporter": exporter}
    try:
        export(model, torch.from_numpy(x), path, exporter)
    except Exception as e:  # noqa: BLE001 - the table says what torch refused
        row["load"] = f"export failed: {str(e).splitlines()[0][:80]}"
        return row
    with torch.no_grad():
        store = {}
        h = target_module.register_forward_hook(lambda m, i, o: store.update(a=o.clone()))
        ref_model(torch.from_numpy(x[:1]))
        h.remove()
    tensor = tensor_by_value(path, x[:1], store["a"].numpy())
    row["tensor"] = tensor
    if tensor is None:
        row["load"] = "no ONNX tensor equals the module output (onnxruntime)"
        return row
    rc, out, err = run([*cs, "layers", "-m", path])
    if rc != 0:
        row["load"] = "refused: " + " ".join(err)
        return row
    row["load"] = "ok"
    row["ops"] = sorted({n.op_type for n in onnx.load(path, load_external_data=False).graph.node})
    default = out.splitlines()[0].rsplit("default layer ", 1)[-1]
    row["default_is_target"] = default == tensor
    line = next((l for l in out.splitlines() if l.startswith(tensor + " ")), "")
    row["module_alias"] = f" {refs['module']}" in line.replace(",", " ")
    np.save(os.path.join(d, "x.npy"), x)
    errs = {}
    for tag, cls in (("pred", None), ("fixed", FIXED)):
        o = os.path.join(d, tag)
        cmd = [*cs, "image", "-m", path, "-l", tensor, "--cam-npy", "-o", o, "-b", "4",
               "--threads", str(threads), os.path.join(d, "x.npy")]
        if cls is not None:
            cmd += ["-c", str(cls)]
        rc, _, err = run(cmd)
        if rc != 0:
            row["load"] = "run failed: " + " ".join(err)
            return row
        raw, final, ref = np.load(os.path.join(o, "x.cam.npy")), np.load(os.path.join(o, "x.heatmap.npy")), refs[tag]
        for k, v in {"err_raw": rel(raw, ref["raw"]), "err_final": rel(final, ref["final"]),
                     "f64_raw": rel(raw, ref["raw64"]), "f64_final": rel(final, ref["final64"]),
                     "torch_f64_raw": rel(ref["raw"], ref["raw64"]),
                     "torch_f64_final": rel(ref["final"], ref["final64"])}.items():
            errs[k] = max(errs.get(k, 0.0), v)
    row.update(errs)
    row["camstream_fps"] = camstream_fps(cs, path, threads)
    return row


def table(rows):
    lines = [
        "| model | exporter | load | default = target | module name | error raw / final "
        "| camstream vs float64 | PyTorch float32 vs float64 "
        "| camstream img/s | PyTorch img/s (channels_last) | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = r.get("load") == "ok" and "err_raw" in r
        pair = lambda a, b: f"{r[a]:.1e} / {r[b]:.1e}" if ok else "—"
        cs, pt = r.get("camstream_fps"), r.get("torch_fps")
        alias = "—" if r["exporter"] == "dynamo" else ("yes" if r.get("module_alias") else "no")
        cells = [
            r["model"], r["exporter"], r.get("load", "?"),
            "yes" if r.get("default_is_target") else "no", alias,
            pair("err_raw", "err_final"), pair("f64_raw", "f64_final"),
            pair("torch_f64_raw", "torch_f64_final"),
            f"{cs:.1f}" if cs else "—", f"{pt:.1f}" if pt else "—",
            f"{cs / pt:.2f}" if cs and pt else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def camstream_fps(cs, path, threads):
    rc, out, _ = run([*cs, "bench", "-m", path, "-b", "8", "--iters", "5", "--warmup", "1",
                      "--threads", str(threads), "--json"])
    return json.loads(out)["forward"]["frames_per_s"] if rc == 0 else None


def write(rows, work):
    md = table(rows)
    with open(os.path.join(work, "zoo.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(work, "zoo.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(md)
    gpu = f"; {torch.cuda.get_device_name()}" if rows[0].get("device", "cpu") != "cpu" else ""
    print(f"\n{rows[0].get('threads')} threads; {cpu()}{gpu}; torch {torch.__version__}")


def cpu():
    """The CPU's name and widest vector unit (the kinds of machine differ)."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return os.uname().machine
    name = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "?")
    flags = next((l for l in info.splitlines() if l.startswith("flags")), "")
    simd = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "no AVX2"
    return f"{name}, {simd}"


def speed_only(a):
    with open(os.path.join(a.work, "zoo.json")) as f:
        rows = json.load(f)
    fps = {}
    for r in rows:
        if r["model"] not in fps:
            fps[r["model"]] = torch_fps(build(r["model"], torch.from_numpy(photos(root_dir()))), a.threads, a.device)
        r["torch_fps"] = fps[r["model"]]
        if r.get("load") == "ok":
            r["camstream_fps"] = camstream_fps(camstream_cmd(a), os.path.join(a.work, r["model"], r["exporter"], "model.onnx"), a.threads)
        r["threads"] = a.threads
        print(json.dumps({k: r.get(k) for k in ("model", "exporter", "camstream_fps", "torch_fps")}), file=sys.stderr, flush=True)
    write(rows, a.work)


def camstream_cmd(a):
    """The camstream command line up to its subcommand."""
    return [a.camstream, "--device", a.device]


def root_dir():
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--camstream", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--exporters", nargs="*", default=["torchscript", "dynamo"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu",
                    help="cuda: camstream runs with --device cuda and the PyTorch speed is on the GPU "
                         "(the references stay PyTorch on the CPU)")
    ap.add_argument("--speed-only", action="store_true",
                    help="re-measure the speeds of an earlier run's exports (on a quiet machine)")
    a = ap.parse_args()
    if a.speed_only:
        return speed_only(a)
    x = photos(root_dir())
    # Rows of models not run now are kept from the last run (zoo.json).
    done = os.path.join(a.work, "zoo.json")
    kept = json.load(open(done)) if os.path.exists(done) else []
    rows = [r for r in kept if r["model"] not in a.models]
    for name in a.models:
        model = build(name, torch.from_numpy(x))
        ref_model = DenseNetHooked(model).eval() if name == "densenet121" else model
        ref64 = copy.deepcopy(ref_model).double()
        target = module(ref_model, MODELS[name])
        refs = {"module": MODELS[name]}
        with torch.no_grad():
            pred = model(torch.from_numpy(x)).argmax(1).tolist()
        for tag, cls in (("pred", None), ("fixed", FIXED)):
            classes = pred if cls is None else [cls] * len(x)
            refs[tag] = reference(ref_model, ref64, MODELS[name], x, classes)
        del ref64
        fps = torch_fps(model, a.threads, a.device)
        for exporter in a.exporters:
            row = check(camstream_cmd(a), name, exporter, a.work, x, a.threads, refs, model, ref_model, target)
            row["torch_fps"] = fps
            row["threads"] = a.threads
            row["device"] = a.device
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            with open(done, "w") as f:
                json.dump(rows, f, indent=1)
    order = list(MODELS)
    rows.sort(key=lambda r: (order.index(r["model"]), r["exporter"] != "torchscript"))
    write(rows, a.work)


if __name__ == "__main__":
    main()
