#!/usr/bin/env bash
# One-command set-up: creates .venv, installs the requirements and the package, then
# generates a default 1p-frac dataset (sigma 3.5, delta 0.1, L = 1000; seconds on a laptop CPU)
# and writes a sample grid of it. Variables may be set in the environment.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
BASE_SAVEDIR=${BASE_SAVEDIR:-./data}
SAMPLE=${SAMPLE:-1000}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet --no-deps -e .

DATASET=$(.venv/bin/python -m onepfrac.generate --base-savedir "$BASE_SAVEDIR" --samples "$SAMPLE" | tail -n 1)
.venv/bin/python -m onepfrac.figures grid "$DATASET" --out "$DATASET/sample_grid.png"
echo "dataset:     $DATASET"
echo "sample grid: $DATASET/sample_grid.png"
