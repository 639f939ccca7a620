#!/usr/bin/env bash
# The Python package (bindings/python): checks that the build without video links no
# FFmpeg, builds the abi3 wheel with video with maturin (from PyPI), installs it in a
# fresh virtual environment with numpy and pytest only (no torch), and runs pytest.
#   bash scripts/python-test.sh [--release]
# Dev profile by default (the numeric crates are optimised in it, see Cargo.toml); the
# wheel lands in target/wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=dev
[ "${1:-}" = "--release" ] && profile=release
py=${PYTHON:-python3}

# 1. Without the `video` feature the module must not need FFmpeg.
cargo build --locked -p camstream-python
so=target/debug/lib_camstream.so
if ldd "$so" | grep -q libav; then
  ldd "$so" | grep libav
  echo "python-test: the build without video links FFmpeg" >&2
  exit 1
fi

# 2. The wheel, with video, built by maturin in its own environment.
tools=target/python-tools
[ -x "$tools/bin/maturin" ] || { "$py" -m venv "$tools" && "$tools/bin/pip" install --quiet "maturin>=1.9,<2"; }
rm -rf target/wheels
(cd bindings/python && "../../$tools/bin/maturin" build --profile "$profile" --features video \
  --auditwheel skip --strip --out ../../target/wheels)

# 3. A fresh environment: the wheel, numpy and pytest; no torch.
venv=target/python-venv
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/pip" install --quiet target/wheels/camstream-*.whl pytest
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "python-test: torch must not be in the test environment" >&2
  exit 1
fi
cd bindings/python/tests
"../../../$venv/bin/python" -m pytest -q
