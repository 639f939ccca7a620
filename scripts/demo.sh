#!/usr/bin/env bash
# The main job on the bundled sample models and inputs, from a fresh clone:
# installs the system packages if missing, builds, and explains pictures, ECG windows
# and the sample video. Results go to demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release --locked
cs=target/release/camstream
out=demo-out
mkdir -p "$out"

echo "== pictures: samples/images/*.png with the shapes model"
$cs image --model samples/models/shapes.toml samples/images/*.png --out "$out/images" --json

echo "== ECG: a 60 s recording (CSV, 250 Hz) in 8 s windows with the ECG model"
$cs signal --model samples/models/ecg.toml samples/ecg/ecg_60s.csv --out "$out/ecg" --cam-npy --json

echo "== audio events: 3 s WAV clips through the log-mel front end and the audio model"
$cs signal --model samples/models/audio.toml samples/audio/*.wav --out "$out/audio" --json

echo "== real photos with the real EfficientNet-Lite0 (ImageNet), top-3 classes each"
$cs image --model samples/models/efficientnet_lite0.toml samples/photos/* --top-k 3 --out "$out/photos" --json

echo "== real video: Big Buck Bunny (CC-BY-3.0, Blender Foundation) with EfficientNet-Lite0"
$cs video samples/video/bigbuckbunny.mp4 -o "$out/bunny_cam.mp4" --model samples/models/efficientnet_lite0.toml

echo "== video: samples/video/shapes.mp4 -> $out/shapes_cam.mp4"
$cs video samples/video/shapes.mp4 -o "$out/shapes_cam.mp4" --model samples/models/shapes.toml \
  --frames-json "$out/shapes_cam.frames.jsonl" --report "$out/shapes_cam.report.json"

echo "done: look at $out/images/*.png, $out/photos/*.png, $out/ecg/ecg_60s.png, $out/audio/*.png, $out/bunny_cam.mp4 and $out/shapes_cam.mp4"
