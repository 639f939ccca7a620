"""camstream over a dataset with Ray: each row of a Ray Dataset is one shard, and
map_batches runs `camstream batch` on it.

    camstream plan s3://my-bucket/videos/ -o manifest.jsonl --model resnet18 --weights w.safetensors
    python examples/ray_map_batches.py manifest.jsonl s3://my-bucket/cams 16 \
        --model resnet18 --weights w.safetensors

The manifest must be readable at the same path on every node (a shared file system),
and so must the model files. Ray retries a task whose process dies; camstream skips
what is marked done, so a retry redoes only the unfinished input. Exit code 42 (an
input failed for good) is a result, not an error: it is reported and not retried.
"""

import json
import subprocess
import sys

PERMANENT = 42


def run_shards(batch, manifest, out, num_shards, options, camstream="camstream"):
    """One map_batches call: `camstream batch` for each shard index in the batch.

    Returns the shards' summaries as columns. Raises on a retriable failure so that
    Ray runs the task again.
    """
    rows = {"shard": [], "exit_code": [], "done": [], "skipped": [], "failed": [], "summary": []}
    for index in batch["id"]:
        cmd = [
            camstream, "batch", "--manifest", manifest, "--out", out,
            "--shard-index", str(int(index)), "--num-shards", str(num_shards), *options,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode not in (0, PERMANENT):
            raise RuntimeError(f"shard {index}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        rows["shard"].append(int(index))
        rows["exit_code"].append(proc.returncode)
        rows["done"].append(summary["done"])
        rows["skipped"].append(summary["skipped"])
        rows["failed"].append(summary["failed"])
        rows["summary"].append(json.dumps(summary))
    return rows


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    manifest, out, num_shards, options = argv[1], argv[2], int(argv[3]), argv[4:]
    import ray  # only the driver needs Ray; run_shards is plain Python

    ray.init()
    shards = ray.data.range(num_shards).map_batches(
        run_shards,
        batch_size=1,
        fn_kwargs={"manifest": manifest, "out": out, "num_shards": num_shards, "options": options},
        num_cpus=4,
        max_retries=3,
    )
    results = shards.take_all()
    failed = sum(r["failed"] for r in results)
    for r in sorted(results, key=lambda r: r["shard"]):
        print(r["summary"])
    print(f"{len(results)} shards, {sum(r['done'] for r in results)} done, "
          f"{sum(r['skipped'] for r in results)} skipped, {failed} failed")
    sys.exit(PERMANENT if failed else 0)


if __name__ == "__main__":
    main(sys.argv)
