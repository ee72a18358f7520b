#!/usr/bin/env bash
# Generate FractalDB (Kataoka et al., ACCV 2020). Edit the variables here or set them in the environment.
# Writes $BASE_SAVEDIR/fractaldb_classes${CLASSES}_instances${INSTANCES}_seed${SEED}/ and prints that path.
set -euo pipefail
BASE_SAVEDIR=${BASE_SAVEDIR:-./data}
CLASSES=${CLASSES:-1000}             # categories (FractalDB-1k)
INSTANCES=${INSTANCES:-1000}         # per category: 25 weight rows x 10 renderings x 4 flips
WEIGHTS=${WEIGHTS:-recommended}      # recommended (0.2..1.8) or renderer-default (0.8..1.2)
SEED=${SEED:-0}
WORKERS=${WORKERS:-0}                # 0 = all cores
EXTRA_ARGS=${EXTRA_ARGS:-}           # any other option of `python -m onepfrac.generate --dataset fractaldb --help`

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=checks.sh
. "$HERE/checks.sh"
need_int CLASSES 1; need_int INSTANCES 1; need_int SEED 0; need_int WORKERS 0
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
need_python
# shellcheck disable=SC2086  # EXTRA_ARGS is split into options on purpose
exec "$PYTHON" -m onepfrac.generate --dataset fractaldb --base-savedir "$BASE_SAVEDIR" --classes "$CLASSES" \
    --instances "$INSTANCES" --weights "$WEIGHTS" --seed "$SEED" --workers "$WORKERS" $EXTRA_ARGS
