#!/usr/bin/env bash
# The main job: set up .venv, then run the whole pipeline on the packaged MNIST digits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/relief-export demo --out demo_out "$@"
