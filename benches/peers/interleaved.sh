#!/usr/bin/env bash
# camstream and the strongest PyTorch peer (channels_last or contiguous, cut Grad-CAM),
# interleaved: per configuration camstream, peer, camstream, peer, so a shared machine's
# changing load falls on both alike. Prints one JSON line per run; compare the medians
# of the two rounds. Needs a release build and the peers' virtualenv (see compare.sh):
#   bash benches/peers/interleaved.sh [THREADS] [PYTHON] [ITERS] > interleaved.jsonl
# With MOBILE=DIR, also the mobile-class models at batch 8 (mobile_peers.py): DIR holds
# the ONNX exports (mobile_peers.py --arch A --export DIR/A.onnx); EfficientNet-Lite0 is
# the bundled TOML. With METHODS=1, also ScoreCAM and AblationCAM at batch 1 against
# pytorch-grad-cam's (method_peers.py); MODELS=0 skips the Grad-CAM models. With
# VIDEO=1, also the video ResNets (r3d_18, r2plus1d_18) on clips of 16x112x112 at batch 1,
# in clips/s, against video_model_peers.py (channels_last_3d or contiguous).
# ARCHS, BATCHES and ROUNDS narrow or lengthen the Grad-CAM models' part, e.g. one noisy
# row measured longer: ARCHS=resnet50 BATCHES=8 ROUNDS=8 bash benches/peers/interleaved.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${1:-2}
py=${2:-/tmp/peers/bin/python}
iters=${3:-10}
cs=target/release/camstream
export OMP_WAIT_POLICY=PASSIVE
echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%MZ)\", \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\", \"cores\": $(nproc), \"threads\": $threads}"
models=${ARCHS:-resnet18 resnet50}
[ "${MODELS:-1}" = 0 ] && models=
for arch in $models; do
  for b in ${BATCHES:-1 8}; do
    for round in $(seq 1 "${ROUNDS:-2}"); do
      $cs bench -m "$arch" -b "$b" --threads "$threads" --iters "$iters" --json |
        sed "s/^{/{\"who\": \"camstream\", \"round\": $round, /"
      $py benches/peers/torch_peers.py --threads "$threads" --iters "$iters" --archs "$arch" \
        --batches "$b" --json | $py -c "import json,sys; r=json.load(sys.stdin); r['who']='torch'; r['round']=$round; print(json.dumps(r))"
    done
  done
done
if [ "${METHODS:-0}" = 1 ]; then
  for round in 1 2; do
    $cs bench -m resnet18 -b 1 --threads "$threads" --iters 3 --method scorecam,ablationcam --json |
      sed "s/^{/{\"who\": \"camstream\", \"round\": $round, /"
    $py benches/peers/method_peers.py --threads "$threads" 2>/dev/null |
      $py -c "import json,sys; r=json.load(sys.stdin); r['who']='torch'; r['round']=$round; print(json.dumps(r))"
  done
fi
if [ "${VIDEO:-0}" = 1 ]; then
  for arch in r3d_18 r2plus1d_18; do
    for round in 1 2; do
      $cs bench -m "$arch" -b 1 --threads "$threads" --iters 5 --warmup 1 --json |
        sed "s/^{/{\"who\": \"camstream\", \"round\": $round, /"
      $py benches/peers/video_model_peers.py --threads "$threads" --archs "$arch" --json |
        $py -c "import json,sys; r=json.load(sys.stdin); r['who']='torch'; r['round']=$round; print(json.dumps(r))"
    done
  done
fi
[ -n "${MOBILE:-}" ] || exit 0
for arch in mobilenet_v2 mobilenet_v3_large efficientnet_b0 efficientnet_lite0; do
  model=$MOBILE/$arch.onnx
  [ "$arch" = efficientnet_lite0 ] && model=samples/models/efficientnet_lite0.toml
  for round in 1 2; do
    $cs bench -m "$model" -b 8 --threads "$threads" --iters "$iters" --json |
      sed "s/^{/{\"who\": \"camstream\", \"arch\": \"$arch\", \"round\": $round, /"
    $py benches/peers/mobile_peers.py --arch "$arch" --threads "$threads" --iters "$iters" --batch 8 --json |
      sed "s/^{/{\"who\": \"torch\", \"round\": $round, /"
  done
done
