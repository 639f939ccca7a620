#!/usr/bin/env bash
# The GPU checks of issue 8, for a machine with an NVIDIA GPU (driver >= 580) and
# PyTorch's CUDA 13 libraries, but no Rust: build here with scripts/build-cuda.sh, then
# shrink the binary for the trip (62 MB stripped, 8 MB with xz: it is mostly kernels)
#   strip -o camstream.cuda target/cuda/release/camstream && xz -f camstream.cuda
# and carry camstream.cuda.xz with the working tree (samples/, tests/fixtures/).
#
#   bash scripts/gpu-check.sh [camstream binary or .xz] > gpu-results.txt
#
# 1. correctness: Grad-CAM raw maps on CUDA vs CPU (<= 1e-3 relative) for the shapes,
#    ECG and tiny-ResNet references and EfficientNet-Lite0 on the real photos;
# 2. speed: ResNet-18/50 forward and Grad-CAM at batch 1, 8, 64;
# 3. the 720p clip end to end, with each stage's rate.
set -euo pipefail
cd "$(dirname "$0")/.."
cs=${1:-target/cuda/release/camstream}
py=${PYTHON:-python3}
if [[ "$cs" == *.xz ]]; then
  xz -dc "$cs" > /tmp/camstream.cuda && chmod +x /tmp/camstream.cuda
  cs=/tmp/camstream.cuda
fi
if [ -z "${LD_LIBRARY_PATH:-}" ]; then
  LD_LIBRARY_PATH=$("$py" -c 'import nvidia, os; print(":".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null || true)
  export LD_LIBRARY_PATH
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
out=$(mktemp -d)

echo "== correctness: CUDA vs CPU raw maps"
run() { # device name model input [args]
  local dev=$1 name=$2 model=$3 input=$4; shift 4
  "$cs" --device "$dev" image -m "$model" "$input" --cam-npy -o "$out/$name.$dev" "$@" >/dev/null
}
for d in cpu cuda; do
  run $d shapes tests/fixtures/shapes/shapes_cnn.toml tests/fixtures/shapes/input.npy
  run $d tinyres tests/fixtures/tinyres/tinyres.toml tests/fixtures/tinyres/input.npy -l layer1
  run $d effnet samples/models/efficientnet_lite0.toml samples/photos/coffee.png -l _blocks.10
  "$cs" --device $d signal -m tests/fixtures/ecg/ecg_cnn.toml tests/fixtures/ecg/input.npy --cam-npy -o "$out/ecg.$d" -l features.4 >/dev/null
done
"$py" - "$out" <<'EOF'
import glob, os, sys
import numpy as np
out = sys.argv[1]
worst = 0.0
for cpu in sorted(glob.glob(os.path.join(out, "*.cpu", "*.cam.npy"))):
    gpu = cpu.replace(".cpu" + os.sep, ".cuda" + os.sep)
    a, b = np.load(cpu), np.load(gpu)
    rel = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))
    worst = max(worst, rel)
    print(f"{os.path.relpath(cpu, out)}: max |cuda - cpu| / max |cpu| = {rel:.2e}")
print("PASS" if worst <= 1e-3 else "FAIL", f"worst {worst:.2e} (limit 1e-3)")
EOF

echo "== speed (model stage)"
for arch in resnet18 resnet50; do
  for b in 1 8 64; do
    "$cs" --device cuda bench -m "$arch" -b "$b" --iters 20 --json
  done
done

echo "== 720p clip end to end (ResNet-18, batch 64)"
"$cs" --device cuda bench -m resnet18 -b 64 --iters 3 --video samples/video/bigbuckbunny.mp4 --json
rm -rf "$out"
