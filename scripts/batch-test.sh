#!/usr/bin/env bash
# The cluster parts that need more than cargo:
# 1. the batch protocol on S3: starts moto (an S3 server, from PyPI) on 127.0.0.1 and
#    runs tests/batch.rs's ignored S3 test against it, then stops it;
# 2. deploy/k8s/indexed-job.yaml parsed and its policies checked;
# 3. examples/ray_map_batches.py's task function run on two shards with the real
#    binary (Ray itself is not installed: it only schedules that function).
#   bash scripts/batch-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
venv=target/batch-venv
[ -x "$venv/bin/moto_server" ] || {
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet "moto[server]==5.2.6" "pyyaml>=6,<7"
}

# 1. S3 on a free local port.
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true; rm -f "$log"' EXIT
export AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
"$venv/bin/python" - <<'EOF'
import os, time, urllib.request
import boto3
url = os.environ["AWS_ENDPOINT"]
for _ in range(100):
    try:
        urllib.request.urlopen(url, timeout=1)
        break
    except Exception:
        time.sleep(0.1)
else:
    raise SystemExit(f"batch-test: moto did not start on {url}")
boto3.client("s3", endpoint_url=url).create_bucket(Bucket="camstream-test")
EOF
CAMSTREAM_TEST_S3="s3://camstream-test/run-$$" \
  cargo test --locked --test batch -- --ignored --exact the_protocol_on_an_s3_server

# 2. The Kubernetes example says what the README says it does.
"$venv/bin/python" - <<'EOF'
import yaml
job = yaml.safe_load(open("deploy/k8s/indexed-job.yaml"))
spec = job["spec"]
assert job["kind"] == "Job" and spec["completionMode"] == "Indexed", spec
assert spec["backoffLimitPerIndex"] >= 1 and spec["podReplacementPolicy"] == "Failed", spec
rules = spec["podFailurePolicy"]["rules"]
assert any(r["action"] == "FailIndex" and r["onExitCodes"]["values"] == [42]
           and r["onExitCodes"]["operator"] == "In" for r in rules), rules
assert any(r["action"] == "Ignore" and r["onPodConditions"][0]["type"] == "DisruptionTarget"
           for r in rules), rules
c = spec["template"]["spec"]["containers"][0]
assert c["args"][0] == "batch", c["args"]
env = {e["name"]: e.get("value") for e in c["env"]}
assert int(env["CAMSTREAM_NUM_SHARDS"]) == spec["completions"], env
print("batch-test: deploy/k8s/indexed-job.yaml ok")
EOF

# 3. The Ray example's task, on two shards of the sample video and a broken file.
cargo build --locked --quiet
work=$(mktemp -d)
trap 'kill $moto 2>/dev/null || true; rm -f "$log"; rm -rf "$work"' EXIT
cp samples/video/shapes.mp4 "$work/a.mp4"
printf 'not a video' >"$work/broken.mp4"
target/debug/camstream plan "$work" -o "$work/manifest.jsonl" --model samples/models/shapes.toml
PYTHONPATH=examples "$venv/bin/python" - "$work" <<'EOF'
import json, os, sys
from ray_map_batches import run_shards
work = sys.argv[1]
rows = run_shards({"id": [0, 1]}, f"{work}/manifest.jsonl", f"{work}/out", 2,
                  ["--model", "samples/models/shapes.toml"],
                  camstream=os.path.abspath("target/debug/camstream"))
assert rows["shard"] == [0, 1], rows
assert sum(rows["done"]) == 1 and sum(rows["failed"]) == 1, rows
assert all((code == 42) == (failed > 0) for code, failed in zip(rows["exit_code"], rows["failed"])), rows
print("batch-test: examples/ray_map_batches.py ok:", rows["exit_code"], rows["done"], rows["failed"])
EOF
