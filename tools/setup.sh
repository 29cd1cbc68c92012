#!/usr/bin/env bash
# Create .venv and install relief_export with its test and benchmark extras.
# torch is installed first, pinned to the CPU build 2.13.0, so that nothing resolves an
# unpinned torch (which would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamp=.venv/.relief-export-installed
wanted=$(cat pyproject.toml tools/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[test,bench]"
echo "$wanted" > "$stamp"
