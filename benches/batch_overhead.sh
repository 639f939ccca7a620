#!/usr/bin/env bash
# What the batch commit protocol (fetch check, upload, SHA-256 of every output, the
# create-only marker) costs per input, against plain `camstream video` runs of the same
# inputs, on a local output folder. Release build.
#   bash benches/batch_overhead.sh [COPIES]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-6}
bin=target/release/camstream
model=samples/models/shapes.toml
[ -x "$bin" ] || cargo build --release --locked
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/in" "$work/plain"
for i in $(seq 1 "$n"); do cp samples/video/shapes.mp4 "$work/in/v$i.mp4"; done

now() { date +%s.%N; }
t0=$(now)
for f in "$work"/in/*.mp4; do
  "$bin" video "$f" -o "$work/plain/$(basename "$f")" --frames-json "$work/plain/$(basename "$f").jsonl" \
    --model "$model" --quiet
done
t1=$(now)
"$bin" plan "$work/in" -o "$work/manifest.jsonl" --model "$model" 2>/dev/null
t2=$(now)
"$bin" batch --manifest "$work/manifest.jsonl" --out "$work/out" --model "$model" \
  >"$work/summary.json" 2>"$work/log"
t3=$(now)
"$bin" batch --manifest "$work/manifest.jsonl" --out "$work/out" --model "$model" >/dev/null 2>&1
t4=$(now)

python3 - "$work" "$n" "$t0" "$t1" "$t2" "$t3" "$t4" <<'EOF'
import glob, json, re, sys
work, n = sys.argv[1], int(sys.argv[2])
t0, t1, t2, t3, t4 = map(float, sys.argv[3:])
# Per input: the progress line's seconds (start to marker) minus the marker's own
# seconds (the pipeline alone) is the protocol's cost.
total = {}
for line in open(f"{work}/log"):
    m = re.search(r"\] (\w{32}) .*: done, \d+ frames in ([\d.]+) s", line)
    if m:
        total[m.group(1)] = float(m.group(2))
markers = [json.load(open(p)) for p in glob.glob(f"{work}/out/*/_done/*.json")]
over = [total[m["key"]] - m["seconds"] for m in markers]
frames = sum(m["frames"] for m in markers)
print(f"{n} inputs, {frames} frames")
print(f"plain `camstream video`, one process per input: {t1 - t0:.2f} s ({(t1 - t0) / n:.2f} s/input)")
print(f"plan: {t2 - t1:.2f} s; batch, one process: {t3 - t2:.2f} s ({(t3 - t2) / n:.2f} s/input)")
print(f"protocol per input (upload + hashes + marker): mean {1000 * sum(over) / len(over):.1f} ms, max {1000 * max(over):.1f} ms")
print(f"rerun with everything done: {t4 - t3:.2f} s")
EOF
