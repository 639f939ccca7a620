#!/usr/bin/env python3
"""The strongest PyTorch peer on the mobile-class CNNs of issue 15, against camstream on
the same network: torchvision's MobileNetV2, MobileNetV3-Large and EfficientNet-B0
exported to ONNX (TorchScript exporter), and EfficientNet-Lite0 (timm's, against the
bundled `samples/models/efficientnet_lite0.toml`). Not run by CI; needs the peers'
virtualenv (see torch_peers.py) plus `onnx` and, for EfficientNet-Lite0, `timm`:

    python benches/peers/mobile_peers.py --arch mobilenet_v2 --export /tmp/mobilenet_v2.onnx  # once
    target/release/camstream bench -m /tmp/mobilenet_v2.onnx -b 8 --json                       # camstream
    python benches/peers/mobile_peers.py --arch mobilenet_v2 --batch 8 --json                  # the peer

The peer times forward (inference_mode) and cut Grad-CAM at the last feature map (the
ONNX graph's default target; for EfficientNet-Lite0 the `head` output, the TOML's
target), each contiguous and channels_last, and reports the faster cut Grad-CAM.
Weights are random (seed 0): speed does not depend on them.
"""
import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ARCHS = ["mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_lite0"]


def timed(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ms)


def build(arch):
    """(model, features(x), head(a) -> logits)."""
    import torch

    torch.manual_seed(0)
    if arch == "efficientnet_lite0":
        import timm

        m = timm.create_model("efficientnet_lite0", pretrained=False).eval()
        return m, m.forward_features, m.forward_head
    import torchvision

    m = getattr(torchvision.models, arch)(weights=None).eval()
    pool = torch.nn.functional.adaptive_avg_pool2d  # MobileNetV2 has no avgpool module
    return m, m.features, lambda a: m.classifier(torch.flatten(pool(a, 1), 1))


def cut_gradcam(features, head, x):
    import torch

    with torch.no_grad():
        a = features(x)
    a = a.detach().requires_grad_(True)
    logits = head(a)
    logits.gather(1, logits.argmax(1)[:, None]).sum().backward()
    w = a.grad.mean((2, 3), keepdim=True)
    return torch.relu((w * a).sum(1)).detach()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=ARCHS, default="mobilenet_v2")
    p.add_argument("--export", help="write the ONNX file here (TorchScript exporter, dynamic batch) and stop")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    import torch

    model, features, head = build(a.arch)
    if a.export:
        torch.onnx.export(model, torch.randn(1, 3, 224, 224), a.export, dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
        return
    torch.set_num_threads(a.threads)
    x = torch.randn(a.batch, 3, 224, 224)
    r = {"arch": a.arch, "batch": a.batch, "threads": torch.get_num_threads()}
    for layout, fmt in [("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)]:
        m = model.to(memory_format=fmt)
        xx = x.contiguous(memory_format=fmt)

        def fwd():
            with torch.inference_mode():
                m(xx)

        r[f"forward_{layout}_ms"] = timed(fwd, a.warmup, a.iters)
        r[f"cut_gradcam_{layout}_ms"] = timed(lambda: cut_gradcam(features, head, xx), a.warmup, a.iters)
    best = min(("contiguous", "channels_last"), key=lambda l: r[f"cut_gradcam_{l}_ms"])
    r["best_cut_gradcam"] = {"layout": best, "frames_per_s": a.batch * 1e3 / r[f"cut_gradcam_{best}_ms"]}
    fbest = min(("contiguous", "channels_last"), key=lambda l: r[f"forward_{l}_ms"])
    r["best_forward"] = {"layout": fbest, "frames_per_s": a.batch * 1e3 / r[f"forward_{fbest}_ms"]}
    print(json.dumps(r) if a.json else r)


if __name__ == "__main__":
    main()
