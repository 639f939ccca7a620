#!/usr/bin/env python3
"""The Python binding's per-call overhead against the Rust explain API, in one process,
and pytorch-grad-cam in the same process when torch is installed (not a dependency).

    python bindings/python/bench/overhead.py --weights ../shared/reference/models/resnet18_seed0.safetensors

ResNet-18 at layer4, a batch of 8 224x224 inputs, `--threads` CPU threads. Both sides
compute the same thing: Grad-CAM and the final maps at the input's size. The Rust side
is `Explainer._time_rust` (the library's `explain` timed inside the module, no numpy);
the Python side is `Explainer.explain` (copying the array in, the maps out). Medians,
interleaved call by call so the machine's load falls on both alike.
"""
import argparse
import json
import statistics
import time

import numpy as np

import camstream


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--weights", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=10)
    a = p.parse_args()

    ex = camstream.Explainer("resnet18", weights=a.weights, layer="layer4", threads=a.threads)
    x = np.random.default_rng(0).standard_normal((a.batch, 3, 224, 224), dtype=np.float32)
    ex.explain(x)
    ex._time_rust(x, 1)
    py_s, rust_s = [], []
    for _ in range(a.iters):
        t = time.perf_counter()
        ex.explain(x, batch=a.batch)
        py_s.append(time.perf_counter() - t)
        rust_s.append(ex._time_rust(x, 1)[0])
    out = {
        "batch": a.batch,
        "threads": a.threads,
        "python_ms": 1e3 * statistics.median(py_s),
        "rust_ms": 1e3 * statistics.median(rust_s),
    }
    out["overhead"] = out["python_ms"] / out["rust_ms"] - 1
    try:
        import torch
        import torchvision
        from pytorch_grad_cam import GradCAM

        torch.set_num_threads(a.threads)
        model = torchvision.models.resnet18(weights=None).eval()
        cam = GradCAM(model, [model.layer4[-1]])
        xt = torch.from_numpy(x)
        cam(input_tensor=xt, targets=None)
        ts = []
        for _ in range(a.iters):
            t = time.perf_counter()
            cam(input_tensor=xt, targets=None)
            ts.append(time.perf_counter() - t)
        out["pytorch_grad_cam_ms"] = 1e3 * statistics.median(ts)
        out["speedup_vs_pytorch_grad_cam"] = out["pytorch_grad_cam_ms"] / out["python_ms"]
        out["torch"] = torch.__version__
    except ImportError:
        out["pytorch_grad_cam_ms"] = None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
