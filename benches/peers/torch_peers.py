#!/usr/bin/env python3
"""PyTorch peers of `camstream bench`, on the same architectures, input and threads.

Not run by CI and no dependency of camstream. Install the peers in a virtual
environment first:

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install torch torchvision grad-cam opencv-python-headless
    /tmp/peers/bin/python benches/peers/torch_peers.py --threads 2 --json > peers.json

It times, per architecture and batch (median of --iters after --warmup):
  * forward       : torchvision model(x) under torch.inference_mode(), in the default
    (contiguous) layout and in channels_last
  * cut Grad-CAM  : what a careful engineer writes for speed, in both layouts: the
    backbone up to layer4 under no_grad, then backward only through the pooling and
    the classifier, and the low-resolution map (what `camstream bench` times)
  * pytorch-grad-cam GradCAM(model, [model.layer4[-1]])(x) (top-1 targets), which
    back-propagates through the whole network
and, with --video, an OpenCV + pytorch-grad-cam video loop (decode with cv2, resize,
normalise, GradCAM in batches, show_cam_on_image, encode with cv2.VideoWriter mp4v).

OMP_WAIT_POLICY=PASSIVE is set before torch loads: with the default (active) policy
OpenMP threads spin and torch collapses on a machine shared with other work.
Weights are random (seed 0), as in `camstream bench`: speed does not depend on them.
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def timed(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(max(iters, 1)):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "max_ms": ms[-1]}


def backbone(model, x):
    """torchvision ResNet up to layer4's output."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def cut_gradcam(model, x):
    """Grad-CAM at layer4 with the backward from the logits to the cut only."""
    import torch

    with torch.no_grad():
        a = backbone(model, x)
    a = a.detach().requires_grad_(True)
    logits = model.fc(torch.flatten(model.avgpool(a), 1))
    target = logits.argmax(1)
    logits.gather(1, target[:, None]).sum().backward()
    w = a.grad.mean((2, 3), keepdim=True)
    return torch.relu((w * a).sum(1)).detach().numpy()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--archs", default="resnet18,resnet50")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--video", help="a clip for the OpenCV + pytorch-grad-cam loop")
    p.add_argument("--video-arch", default="resnet18")
    p.add_argument("--video-batch", type=int, default=8)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    import torch
    import torchvision
    from pytorch_grad_cam import GradCAM

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    results = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": ")
        if os.path.exists("/proc/cpuinfo") else "",
        "runs": [],
    }
    for arch in a.archs.split(","):
        model = getattr(torchvision.models, arch)(weights=None).eval()
        for b in [int(x) for x in a.batches.split(",")]:
            x = torch.randn(b, 3, a.size, a.size)

            def fwd():
                with torch.inference_mode():
                    model(x)

            cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
            xcl = x.contiguous(memory_format=torch.channels_last)

            def fwd_cl():
                with torch.inference_mode():
                    cl(xcl)

            f = timed(fwd, a.warmup, a.iters)
            fcl = timed(fwd_cl, a.warmup, a.iters)
            cut = timed(lambda: cut_gradcam(model, x), a.warmup, a.iters)
            cutcl = timed(lambda: cut_gradcam(cl, xcl), a.warmup, a.iters)
            cam = GradCAM(model=model, target_layers=[model.layer4[-1]])
            g = timed(lambda: cam(input_tensor=x, targets=None), a.warmup, a.iters)
            for t in (f, fcl, cut, cutcl, g):
                t["frames_per_s"] = b * 1e3 / t["median_ms"]
            best = min((cut, "contiguous"), (cutcl, "channels_last"), key=lambda c: c[0]["median_ms"])
            results["runs"].append({"arch": arch, "batch": b, "forward": f, "forward_channels_last": fcl,
                                    "cut_gradcam": cut, "cut_gradcam_channels_last": cutcl,
                                    "best_cut_gradcam": dict(best[0], layout=best[1]),
                                    "pytorch_grad_cam": g,
                                    "gradcam_over_forward": g["median_ms"] / f["median_ms"]})
            if not a.json:
                print(f"{arch} b{b}: forward {f['frames_per_s']:.1f}/s (channels_last {fcl['frames_per_s']:.1f}/s), "
                      f"cut Grad-CAM {cut['frames_per_s']:.1f}/s (channels_last {cutcl['frames_per_s']:.1f}/s), "
                      f"pytorch-grad-cam {g['frames_per_s']:.1f}/s", file=sys.stderr)

    if a.video:
        import cv2
        import numpy as np
        from pytorch_grad_cam.utils.image import show_cam_on_image

        model = getattr(torchvision.models, a.video_arch)(weights=None).eval()
        cam = GradCAM(model=model, target_layers=[model.layer4[-1]])
        mean = np.array([0.485, 0.456, 0.406], np.float32)
        std = np.array([0.229, 0.224, 0.225], np.float32)
        cap = cv2.VideoCapture(a.video)
        fps = cap.get(cv2.CAP_PROP_FPS) or 25
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        out = cv2.VideoWriter("/tmp/peers_video.mp4", cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        t0 = time.perf_counter()
        frames = 0
        batch = []

        def flush(batch):
            rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in batch]
            x = np.stack([(cv2.resize(r, (a.size, a.size)).astype(np.float32) / 255 - mean) / std for r in rgb])
            maps = cam(input_tensor=torch.from_numpy(x.transpose(0, 3, 1, 2)).contiguous(), targets=None)
            for r, m in zip(rgb, maps):
                vis = show_cam_on_image(r.astype(np.float32) / 255, cv2.resize(m, (w, h)), use_rgb=True)
                out.write(cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))

        while True:
            ok, f = cap.read()
            if not ok:
                break
            batch.append(f)
            frames += 1
            if len(batch) == a.video_batch:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        out.release()
        wall = time.perf_counter() - t0
        results["video"] = {"file": a.video, "arch": a.video_arch, "batch": a.video_batch,
                            "frames": frames, "wall_s": wall, "frames_per_s": frames / wall}
        if not a.json:
            print(f"video {a.video}: {frames} frames in {wall:.1f} s = {frames / wall:.1f} frames/s", file=sys.stderr)

    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
