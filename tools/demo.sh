#!/usr/bin/env bash
# The main job: set up .venv, then run the whole pipeline on the packaged MNIST digits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
mkdir -p demo_out
.venv/bin/relief-export train --arch lenet300_100 --data mnist5k --epochs 20 --out demo_out/dense.pt "$@"
