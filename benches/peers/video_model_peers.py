#!/usr/bin/env python3
"""PyTorch peers of `camstream bench --model r3d_18|r2plus1d_18|mc3_18`: torchvision's
video ResNets on clips of 16 frames of 112x112, same threads, random weights.

Not run by CI. In the venv of torch_peers.py:

    /tmp/peers/bin/python benches/peers/video_model_peers.py --threads 2 --json

It times, per architecture and batch (median of --iters after --warmup):
  * forward under torch.inference_mode(), contiguous and channels_last_3d;
  * cut Grad-CAM in both layouts: stem..layer4 under no_grad, then backward only
    through the pooling and the classifier, and the low-resolution (t, h, w) map (what
    `camstream bench` times);
  * pytorch-grad-cam GradCAM(model, [model.layer4]) (5-D input, top-1 targets), which
    back-propagates through the whole network and resizes with scipy's zoom.
"""
import argparse
import copy
import json
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_peers import timed  # noqa: E402


def cut_gradcam(model, x):
    import torch

    with torch.no_grad():
        a = model.layer4(model.layer3(model.layer2(model.layer1(model.stem(x)))))
    a = a.detach().requires_grad_(True)
    logits = model.fc(torch.flatten(model.avgpool(a), 1))
    logits.gather(1, logits.argmax(1)[:, None]).sum().backward()
    w = a.grad.mean((2, 3, 4), keepdim=True)
    return torch.relu((w * a).sum(1)).detach().numpy()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--archs", default="r3d_18,r2plus1d_18")
    p.add_argument("--batches", default="1")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    import torch
    from torchvision.models import video
    from pytorch_grad_cam import GradCAM

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "runs": []}
    for arch in a.archs.split(","):
        model = getattr(video, arch)(weights=None).eval()
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
        for b in [int(v) for v in a.batches.split(",")]:
            x = torch.randn(b, 3, a.frames, a.size, a.size)
            xcl = x.contiguous(memory_format=torch.channels_last_3d)

            def fwd(m, x):
                with torch.inference_mode():
                    m(x)

            f = timed(lambda: fwd(model, x), a.warmup, a.iters)
            fcl = timed(lambda: fwd(cl, xcl), a.warmup, a.iters)
            cut = timed(lambda: cut_gradcam(model, x), a.warmup, a.iters)
            cutcl = timed(lambda: cut_gradcam(cl, xcl), a.warmup, a.iters)
            cam = GradCAM(model=model, target_layers=[model.layer4])
            g = timed(lambda: cam(input_tensor=x, targets=None), a.warmup, a.iters)
            for t in (f, fcl, cut, cutcl, g):
                t["clips_per_s"] = b * 1e3 / t["median_ms"]
            best = min((cut, "contiguous"), (cutcl, "channels_last_3d"), key=lambda c: c[0]["median_ms"])
            results["runs"].append({"arch": arch, "batch": b, "forward": f, "forward_channels_last_3d": fcl,
                                    "cut_gradcam": cut, "cut_gradcam_channels_last_3d": cutcl,
                                    "best_cut_gradcam": dict(best[0], layout=best[1]),
                                    "pytorch_grad_cam": g})
            if not a.json:
                print(f"{arch} b{b}: forward {f['clips_per_s']:.2f}/s (channels_last_3d {fcl['clips_per_s']:.2f}/s), "
                      f"cut Grad-CAM {cut['clips_per_s']:.2f}/s (channels_last_3d {cutcl['clips_per_s']:.2f}/s), "
                      f"pytorch-grad-cam {g['clips_per_s']:.2f}/s", file=sys.stderr)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
