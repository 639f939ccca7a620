#!/usr/bin/env bash
# The zoo check (not run by CI): exports torchvision's classification CNNs with both torch
# exporters, explains the 4 sample photos with camstream and with pytorch-grad-cam on the
# same weights, and prints a table (model, exporter, load, errors, forward img/s).
#   scripts/zoo.sh                      # all models, both exporters (~40 min on 2 cores)
#   scripts/zoo.sh --models resnet18 densenet121 --exporters dynamo
# Needs ~6 GB for the virtual environment (.zoo/venv; ZOO_VENV overrides) and the exports.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${ZOO_VENV:-.zoo/venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -r scripts/zoo/requirements.txt
cargo build --release --locked --bin camstream
exec "$venv/bin/python" scripts/zoo/zoo.py --camstream target/release/camstream --work .zoo "$@"
