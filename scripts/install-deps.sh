#!/usr/bin/env bash
# System packages camstream builds against (Debian 12 / Ubuntu 22.04+): FFmpeg's
# libraries for video decode/encode, libclang for ffmpeg-sys bindings, pkg-config,
# protoc (protobuf-compiler) for candle-onnx's ONNX protobuf bindings.
# Skips apt when everything is already installed; uses sudo when not root.
set -euo pipefail
pkgs=(libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
      libavfilter-dev libavdevice-dev libclang-dev clang pkg-config protobuf-compiler)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ] && [ "${CI:-}" != "true" ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${pkgs[@]}"
