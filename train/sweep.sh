#!/usr/bin/env bash
# Run a grid of generate -> pre-train -> fine-tune cells and aggregate the results
# (docs/sweeps.md). Edit the variables here or set them in the environment, e.g.
#   GRID=train/grids/cpu_delta.yaml OUT=output/sweeps/cpu_delta bash train/sweep.sh
#   EXTRA_ARGS="--only scratch_seed0 --dry-run" bash train/sweep.sh
# Run the same command again after a crash or Ctrl-C: complete cells are skipped and an
# interrupted training resumes from its last checkpoint.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GRID=${GRID:-$HERE/grids/smoke.yaml}          # a grid file of train/grids/ (or your own)
OUT=${OUT:-./output/sweeps/$(basename "$GRID" .yaml)}
EXTRA_ARGS=${EXTRA_ARGS:-}                    # --dry-run, --only CELL ..., --no-progress
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
# Launchers installed next to the interpreter (torchrun) come first, for grids that use them.
PATH="$(dirname "$PYTHON"):$PATH"
# shellcheck disable=SC2086  # EXTRA_ARGS is split into options on purpose
exec "$PYTHON" -m onepfrac.sweep "$GRID" --out "$OUT" $EXTRA_ARGS
