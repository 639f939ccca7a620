#!/usr/bin/env bash
# The load test of `camstream serve` (benches/RESULTS.md): starts the release server with
# the shapes model on a free port, reads its resident memory, sends N :explain requests
# at concurrency C from examples/serve_load.rs (a second process), reads the memory
# again and stops the server with SIGTERM.
#   bash scripts/serve-load.sh [N=200] [C=16] [extra serve flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
c=${2:-16}
shift 2 2>/dev/null || shift $#
cargo build --locked --release --quiet --bin camstream --example serve_load
. scripts/lib/serve.sh
start_server target/release/camstream --model shapes=samples/models/shapes.toml "$@"
rss() { awk '/VmRSS/ {print $2 / 1024}' "/proc/$server/status"; }
before=$(rss)
result=$(target/release/examples/serve_load "$url" shapes samples/images/circle.png "$n" "$c")
after=$(rss)
peak=$(awk '/VmHWM/ {print $2 / 1024}' "/proc/$server/status")
kill -TERM "$server"
wait "$server" || true
echo "{\"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\", \"cores\": $(nproc), \"rss_before_mb\": $before, \"rss_after_mb\": $after, \"rss_peak_mb\": $peak, \"load\": $result}"
