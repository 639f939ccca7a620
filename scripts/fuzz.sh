#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 20; CI gives 10, the closing
# runs of issue 16 used 600). New inputs go to a scratch corpus; fuzz/corpus/<target> is
# read as the seeds. A crash stops the script with the fuzzer's report. FUZZ_SEED fixes
# libFuzzer's random seed (CI sets 1, so a run is repeatable; 0, the default, draws one).
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(wav csv wfdb npy toml_config safetensors pth onnx)
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version 0.13.2
cargo +nightly fuzz build
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    log="$scratch/$t.log"
    if ! cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$secs" -seed="${FUZZ_SEED:-0}" -rss_limit_mb=4096 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 80 "$log"
        echo "fuzz $t: CRASH (input under fuzz/artifacts/$t)"
        exit 1
    fi
    runs="$(awk '/^stat::number_of_executed_units/ {print $2}' "$log")"
    cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)"
    echo "fuzz $t: ${secs} s, ${runs:-?} runs, ${cov:-no coverage line}, no crash"
done
