#!/usr/bin/env bash
# Builds camstream with CUDA (`--features cuda`) on a machine without a GPU and without
# a system CUDA toolkit: the CUDA 13.0 compiler comes from NVIDIA's PyPI wheels,
# unpacked into .cuda/ (about 250 MB). Pinned to 13.0: the project's GPU machines run
# driver 580, which loads PTX up to CUDA 13.0; the 12.x nvcc wheels hold no nvcc.
#
#   scripts/build-cuda.sh          # release binary: target/cuda/release/camstream
#   scripts/build-cuda.sh check    # compile check only (CI)
#
# The binary loads libcuda, cuBLAS, cuRAND and NVRTC at run time (cudarc's dynamic
# loading, see vendor/candle-core), so it starts anywhere and `--device auto` falls back
# to the CPU. On a GPU machine put the CUDA 13 libraries on LD_LIBRARY_PATH, e.g. those
# of PyTorch's nvidia-* packages:
#   export LD_LIBRARY_PATH=$(python3 -c 'import nvidia, os; print(":".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))')
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-build}
root=${CAMSTREAM_CUDA_DIR:-$PWD/.cuda}
cuda=$root/nvidia/cu13
python=${PYTHON:-python3}

if [ ! -x "$cuda/bin/nvcc" ]; then
  echo "== CUDA 13.0 toolkit from PyPI into $root"
  tmp=$(mktemp -d)
  "$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*"
  mkdir -p "$root"
  for w in "$tmp"/*.whl; do
    "$python" -m zipfile -e "$w" "$root"
  done
  rm -rf "$tmp"
  # Wheels are zips: the executables lose their mode bits.
  chmod +x "$cuda"/bin/* "$cuda"/nvvm/bin/* 2>/dev/null || true
  # The layout nvcc and the build scripts expect of a toolkit.
  [ -e "$cuda/lib64" ] || ln -s lib "$cuda/lib64"
fi
# candle-kernels asks for `-lcudart`. With only `libcudart.a` (the static runtime) to
# find, the binary carries the runtime and needs no CUDA library just to start; the
# driver and cuBLAS/cuRAND/NVRTC are loaded at run time.
rm -f "$cuda/lib/libcudart.so"
[ -e "$cuda/lib/libcudart.a" ] || ln -s libcudart_static.a "$cuda/lib/libcudart.a"

export CUDA_ROOT=$cuda CUDA_PATH=$cuda CUDA_HOME=$cuda
export PATH=$cuda/bin:$PATH
export LIBRARY_PATH=$cuda/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
# H100/H200 (sm_90); set CUDA_COMPUTE_CAP for another card.
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# candle-kernels' build script compiles its kernels with nvcc on half the cores unless
# told otherwise: one nvcc at a time on a 2-core machine, the longest part of this build.
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
# A build gets its own target folder, so the CPU build is not rebuilt each time. A check
# shares the workspace's: the dependencies CUDA does not touch are then already checked
# (CI runs clippy first), and only candle's CUDA side and camstream's crates are left.
case "$mode" in
  check) export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target} ;;
  *) export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda} ;;
esac
nvcc --version | tail -1

case "$mode" in
  check) cargo check --locked --features cuda --bins ;;
  build) cargo build --locked --release --features cuda
         echo "built $CARGO_TARGET_DIR/release/camstream" ;;
  *) echo "usage: $0 [build|check]" >&2; exit 2 ;;
esac
