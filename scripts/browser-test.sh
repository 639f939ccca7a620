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

. scripts/lib/serve.sh
start_server "$bin" --model shapes=samples/models/shapes.toml --model ecg=samples/models/ecg.toml

node tests/browser/page.mjs "$url" samples/video/shapes.mp4 samples/images/circle.png \
  samples/ecg/ecg_60s.csv "$shots"

kill -TERM "$server"
status=0
wait "$server" || status=$?
trap 'rm -f "$server_log"' EXIT
if [ "$status" -ne 0 ] || ! grep -q "camstream serve: stopped" "$server_log"; then
  cat "$server_log"
  echo "browser-test: the server did not stop cleanly on SIGTERM (exit $status)" >&2
  exit 1
fi
echo "browser-test: screenshots in $shots"
