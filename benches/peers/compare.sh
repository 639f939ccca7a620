#!/usr/bin/env bash
# Side-by-side numbers for benches/RESULTS.md: camstream bench and the PyTorch peers,
# in one run, same threads. Needs a release build and the peers' virtualenv:
#   cargo build --release
#   python3 -m venv /tmp/peers && /tmp/peers/bin/pip install torch torchvision grad-cam opencv-python-headless
#   bash benches/peers/compare.sh [THREADS] [PYTHON] > results.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${1:-2}
py=${2:-/tmp/peers/bin/python}
cs=target/release/camstream
clip=samples/video/bigbuckbunny.mp4
date -u +"date: %Y-%m-%dT%H:%MZ"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; threads $threads"
for arch in resnet18 resnet50; do
  for b in 1 8; do
    $cs bench -m "$arch" -b "$b" --threads "$threads" --iters 10 --json
  done
done
$cs bench -m resnet18 -b 8 --threads "$threads" --iters 3 --video "$clip" --json
OMP_WAIT_POLICY=PASSIVE $py benches/peers/torch_peers.py --threads "$threads" --iters 10 --video "$clip" --json
