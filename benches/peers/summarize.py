"""Ratios from `interleaved.sh`'s JSON lines: camstream's Grad-CAM img/s against the best
PyTorch cut Grad-CAM (channels_last or contiguous) of the same round, per model, batch and
round; and each camstream run's forward against its GEMM ceiling. Then, per model and
batch, the median ratio over the rounds and how many reach issue 15's 1.2: on a shared
host one round can swing by a fifth. Several files read as one. Standard library only:

    python3 benches/peers/summarize.py benches/peers/interleaved-DATE-KIND.jsonl [MORE.jsonl]
"""
import json
import statistics
import sys

TARGET = 1.2


def rows(lines):
    """(model, batch, round) -> {"camstream": line, "torch": line}, in file order."""
    out = {}
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        who = r.get("who")
        if who is None:
            continue
        if who == "torch" and "runs" in r:  # torch_peers.py: one run per line here
            run = r["runs"][0]
            key = (run["arch"], run["batch"], r["round"])
            r = {"best_cut_gradcam": run["best_cut_gradcam"]}
        elif who == "torch":  # mobile_peers.py
            key = (r["arch"], r["batch"], r["round"])
        else:
            name = r.get("arch") or r["model"]
            key = (name, r["batch"], r["round"])
            if "methods" in r and r.get("methods"):
                continue
        out.setdefault(key, {})[who] = r
    return out


def main(paths):
    ratios = {}
    for path in paths:
        with open(path) as f:
            lines = f.readlines()
        head = json.loads(lines[0])
        print(f"{path}: {head.get('date')}  {head.get('cpu')}  {head.get('cores')} cores, {head.get('threads')} threads")
        print("| model | batch | round | camstream Grad-CAM img/s | best cut img/s (layout) | ratio | forward / GEMM ceiling |")
        print("|---|---|---|---|---|---|---|")
        for (model, batch, rnd), r in rows(lines).items():
            cs, pt = r.get("camstream"), r.get("torch")
            if cs is None or pt is None:
                continue
            ours = cs["gradcam"]["frames_per_s"]
            best = pt["best_cut_gradcam"]
            ratio = ours / best["frames_per_s"]
            ratios.setdefault((model, batch), []).append(ratio)
            ceil = cs.get("ceiling") or {}
            frac = ceil.get("forward_gflops", 0) / ceil["gemm_gflops"] if ceil.get("gemm_gflops") else None
            frac = f"{frac:.2f} ({ceil['gemm_gflops']:.0f} GFLOP/s)" if frac else "-"
            print(f"| {model} | {batch} | {rnd} | {ours:.1f} | {best['frames_per_s']:.1f} ({best['layout']}) "
                  f"| {ratio:.2f} | {frac} |")
        print()
    print(f"| model | batch | rounds | median ratio | min - max | rounds at {TARGET} or more |")
    print("|---|---|---|---|---|---|")
    for (model, batch), rs in ratios.items():
        reach = sum(r >= TARGET for r in rs)
        print(f"| {model} | {batch} | {len(rs)} | {statistics.median(rs):.2f} | {min(rs):.2f} - {max(rs):.2f} | {reach} of {len(rs)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
