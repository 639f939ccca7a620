#!/usr/bin/env python3
"""pytorch-grad-cam's perturbation methods, the peers of `camstream bench --method`.

Not run by CI. In the peers' virtual environment (see torch_peers.py):

    OMP_WAIT_POLICY=PASSIVE /tmp/peers/bin/python benches/peers/method_peers.py --threads 2

On torchvision's ResNet-18 (random weights, seed 0), 224x224, batch --batch, target
layer4[-1] (512 channels, 7x7), top-1 targets, it times forward-only, GradCAM,
AblationCAM (its default batch_size 32: the whole network per 32 ablations) and ScoreCAM
(batch_size 16: one whole-network pass per channel), each in the default layout and in
channels_last; the perturbation methods once each (they take seconds), the others as
the median of --iters after 2 warm-ups. Prints one JSON object.
"""
import argparse
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from torch_peers import timed  # noqa: E402  (same folder)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--scorecam-batch", type=int, nargs="*", default=[16],
                   help="ScoreCAM batch sizes to time (its batch_size attribute; 16 is its default)")
    a = p.parse_args()

    import torch
    import torchvision
    from pytorch_grad_cam import AblationCAM, GradCAM, ScoreCAM

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "batch": a.batch,
           "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": ")}
    for layout in ["default", "channels_last"]:
        model = torchvision.models.resnet18(weights=None).eval()
        x = torch.randn(a.batch, 3, 224, 224)
        if layout == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        layers = [model.layer4[-1]]

        def fwd():
            with torch.inference_mode():
                model(x)

        r = {"forward_ms": timed(fwd, 2, a.iters)["median_ms"]}
        gc = GradCAM(model, layers)
        r["gradcam_ms"] = timed(lambda: gc(x, targets=None), 2, a.iters)["median_ms"]
        ab = AblationCAM(model, layers)
        r["ablationcam_ms"] = timed(lambda: ab(x, targets=None), 0, 1)["median_ms"]
        for b in a.scorecam_batch:
            sc = ScoreCAM(model, layers)
            sc.batch_size = b
            key = "scorecam_ms" if b == 16 else f"scorecam_b{b}_ms"
            r[key] = timed(lambda: sc(x, targets=None), 0, 1)["median_ms"]
        out[layout] = r
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
