#!/usr/bin/env bash
# The GPU checks of issue 8, for a machine with an NVIDIA GPU (driver >= 580) and
# PyTorch's CUDA 13 libraries, but no Rust and no FFmpeg: build here with
# scripts/build-cuda.sh, then pack the binary with the FFmpeg it links (17 MB)
#   python3 scripts/gpu-bundle.py target/cuda/release/camstream .gpu/camstream.tar.xz
# and carry it with the working tree (samples/, tests/fixtures/).
#
#   bash scripts/gpu-check.sh [camstream binary or bundle .tar.xz] > gpu-results.txt
#
# 1. correctness: Grad-CAM raw maps on CUDA vs CPU (<= 1e-3 relative) for the shapes,
#    ECG and tiny-ResNet references and EfficientNet-Lite0 on the real photos;
# 2. speed: ResNet-18/50 forward and Grad-CAM at batch 1, 8, 64;
# 3. the 720p clip end to end, with each stage's rate;
# 4. with ZOO_MODELS set (and torchvision, onnx, onnxruntime, grad-cam importable), the
#    zoo check on CUDA: scripts/zoo/zoo.py --device cuda, table in ${ZOO_WORK:-/tmp/zoo}/zoo.md.
#    The project's GPU machines have torch, torchvision, onnx and onnxruntime but not
#    grad-cam: carry wheels (pip wheel --no-deps grad-cam==1.5.7 ttach) and install them
#    with pip install --no-index --no-deps --target DIR, DIR on PYTHONPATH.
# The whole run (2026-12-04, H200, 14 zoo models): about 3 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
cs=${1:-target/cuda/release/camstream}
py=${PYTHON:-python3}
if [[ "$cs" == *.tar.xz ]]; then
  tar -xJf "$cs" -C /tmp
  cs=/tmp/camstream-bundle/camstream
  export LD_LIBRARY_PATH=/tmp/camstream-bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
# PyTorch's CUDA 13 libraries (cuBLAS, cuRAND, NVRTC) before whatever the image sets.
libs=$("$py" -c 'import nvidia, os; print(":".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null || true)
export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
out=$(mktemp -d)
# Every check runs, whatever failed before it; the exit status counts the failures.
failed=0
try() {
  "$@" || { echo "FAILED (exit $?): ${*:1:6}"; failed=$((failed + 1)); }
}

echo "== correctness: CUDA vs CPU, raw and final maps"
run() { # device name model input [args]
  local dev=$1 name=$2 model=$3 input=$4; shift 4
  try "$cs" --device "$dev" image -m "$model" "$input" --cam-npy -o "$out/$name.$dev" "$@" >/dev/null
}
for d in cpu cuda; do
  run $d shapes tests/fixtures/shapes/shapes_cnn.toml tests/fixtures/shapes/input.npy
  run $d tinyres tests/fixtures/tinyres/tinyres.toml tests/fixtures/tinyres/input.npy -l layer1
  run $d effnet samples/models/efficientnet_lite0.toml samples/photos/coffee.png -l _blocks.10
  try "$cs" --device $d signal -m tests/fixtures/ecg/ecg_cnn.toml tests/fixtures/ecg/input.npy --cam-npy -o "$out/ecg.$d" -l features.4 >/dev/null
done
try "$py" - "$out" <<'EOF'
import glob, os, sys
import numpy as np
out = sys.argv[1]
worst, pairs = 0.0, 0
for cpu in sorted(glob.glob(os.path.join(out, "*.cpu", "*.npy"))):
    gpu = cpu.replace(".cpu" + os.sep, ".cuda" + os.sep)
    a, b = np.load(cpu), np.load(gpu)
    rel = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))
    worst, pairs = max(worst, rel), pairs + 1
    print(f"{os.path.relpath(cpu, out)}: max |cuda - cpu| / max |cpu| = {rel:.2e}")
ok = pairs == 8 and worst <= 1e-3
print("PASS" if ok else "FAIL", f"{pairs} of 8 maps compared, worst {worst:.2e} (limit 1e-3)")
sys.exit(0 if ok else 1)
EOF

echo "== speed (model stage)"
for arch in resnet18 resnet50; do
  for b in 1 8 64; do
    try "$cs" --device cuda bench -m "$arch" -b "$b" --iters 20 --json
  done
done

echo "== 720p clip end to end (ResNet-18, batch 64)"
try "$cs" --device cuda bench -m resnet18 -b 64 --iters 3 --video samples/video/bigbuckbunny.mp4 --json
rm -rf "$out"

if [ -n "${ZOO_MODELS:-}" ]; then
  echo "== the zoo on CUDA (${ZOO_EXPORTERS:-torchscript})"
  # shellcheck disable=SC2086 # lists of names
  try "$py" scripts/zoo/zoo.py --camstream "$cs" --work "${ZOO_WORK:-/tmp/zoo}" --device cuda \
    --models $ZOO_MODELS --exporters ${ZOO_EXPORTERS:-torchscript}
fi
echo "== $failed check(s) failed"
[ "$failed" -eq 0 ]
