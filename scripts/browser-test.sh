#!/usr/bin/env bash
# The web page in headless Chromium (tests/browser/page.mjs): installs Debian's chromium
# and playwright-core (npm, from the lock file) when missing, starts `camstream serve`
# on a free port with the bundled shapes model, runs the page test, then stops the
# server with SIGTERM and checks it exits cleanly. Screenshots go to $SHOTS
# (default target/browser). Usage: bash scripts/browser-test.sh [path/to/camstream]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/camstream}
shots=${SHOTS:-target/browser}
mkdir -p "$shots"

if ! command -v chromium >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends chromium
fi
[ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && npm ci --no-audit --no-fund)
[ -x "$bin" ] || cargo build --locked

log=$(mktemp)
"$bin" serve --model shapes=samples/models/shapes.toml --model ecg=samples/models/ecg.toml \
  --bind 127.0.0.1:0 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
url=""
for _ in $(seq 1 100); do
  url=$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -1 || true)
  [ -n "$url" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$log"; echo "browser-test: the server did not start" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$log"; echo "browser-test: no address from the server" >&2; exit 1; }

node tests/browser/page.mjs "$url" samples/video/shapes.mp4 samples/images/circle.png \
  samples/ecg/ecg_60s.csv "$shots"

kill -TERM "$server"
status=0
wait "$server" || status=$?
trap 'rm -f "$log"' EXIT
if [ "$status" -ne 0 ] || ! grep -q "camstream serve: stopped" "$log"; then
  cat "$log"
  echo "browser-test: the server did not stop cleanly on SIGTERM (exit $status)" >&2
  exit 1
fi
echo "browser-test: screenshots in $shots"
