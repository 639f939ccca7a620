#!/usr/bin/env bash
# camstream and the strongest PyTorch peer (channels_last or contiguous, cut Grad-CAM),
# interleaved: per configuration camstream, peer, camstream, peer, so a shared machine's
# changing load falls on both alike. Prints one JSON line per run; compare the medians
# of the two rounds. Needs a release build and the peers' virtualenv (see compare.sh):
#   bash benches/peers/interleaved.sh [THREADS] [PYTHON] [ITERS] > interleaved.jsonl
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${1:-2}
py=${2:-/tmp/peers/bin/python}
iters=${3:-10}
cs=target/release/camstream
export OMP_WAIT_POLICY=PASSIVE
echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%MZ)\", \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\", \"cores\": $(nproc), \"threads\": $threads}"
for arch in resnet18 resnet50; do
  for b in 1 8; do
    for round in 1 2; do
      $cs bench -m "$arch" -b "$b" --threads "$threads" --iters "$iters" --json |
        sed "s/^{/{\"who\": \"camstream\", \"round\": $round, /"
      $py benches/peers/torch_peers.py --threads "$threads" --iters "$iters" --archs "$arch" \
        --batches "$b" --json | $py -c "import json,sys; r=json.load(sys.stdin); r['who']='torch'; r['round']=$round; print(json.dumps(r))"
    done
  done
done
