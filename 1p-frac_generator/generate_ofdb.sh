#!/usr/bin/env bash
# Generate 2D-OFDB (Nakamura et al., ICCV 2023): one image per category. Edit the variables here or set them in the environment.
# Writes $BASE_SAVEDIR/ofdb_classes${CLASSES}_seed${SEED}/ and prints that path.
set -euo pipefail
BASE_SAVEDIR=${BASE_SAVEDIR:-./data}
CLASSES=${CLASSES:-1000}             # categories = images (OFDB-1k)
A_SCALE=${A_SCALE:-0.2}              # released rendering: coefficient a x 0.2; 1.0 renders the searched system
SEED=${SEED:-0}
WORKERS=${WORKERS:-0}                # 0 = all cores
EXTRA_ARGS=${EXTRA_ARGS:-}           # any other option of `python -m onepfrac.generate --dataset ofdb --help`

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=checks.sh
. "$HERE/checks.sh"
need_int CLASSES 1; need_number A_SCALE; need_int SEED 0; need_int WORKERS 0
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
need_python
# shellcheck disable=SC2086  # EXTRA_ARGS is split into options on purpose
exec "$PYTHON" -m onepfrac.generate --dataset ofdb --base-savedir "$BASE_SAVEDIR" --classes "$CLASSES" \
    --a-scale "$A_SCALE" --seed "$SEED" --workers "$WORKERS" $EXTRA_ARGS
