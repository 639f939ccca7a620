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

echo "== ECG: eight 8 s windows with the ECG model (plots coloured by relevance)"
$cs signal --model samples/models/ecg.toml samples/ecg/ecg_windows.npy --out "$out/ecg" --cam-npy --json

echo "== audio events: four 3 s clips as log-mel spectrograms with the audio model"
$cs signal --model samples/models/audio.toml samples/audio/events.npy --out "$out/audio" --cam-npy --json

echo "== video: samples/video/shapes.mp4 -> $out/shapes_cam.mp4"
$cs video samples/video/shapes.mp4 -o "$out/shapes_cam.mp4" --model samples/models/shapes.toml \
  --frames-json "$out/shapes_cam.frames.jsonl" --report "$out/shapes_cam.report.json"

echo "done: look at $out/images/*.png, $out/ecg/*.png and $out/shapes_cam.mp4"
