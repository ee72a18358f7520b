#!/usr/bin/env bash
# Generate 3D-OFDB: 3D IFS point clouds, 12 views each. Edit the variables here or set them in the environment.
# Writes $BASE_SAVEDIR/3d-ofdb_classes${CLASSES}_views${VIEWS}_seed${SEED}/ and prints that path.
set -euo pipefail
BASE_SAVEDIR=${BASE_SAVEDIR:-./data}
CLASSES=${CLASSES:-1000}             # categories (3D-OFDB-1k)
VIEWS=${VIEWS:-12}                   # views per category, the first of the 12 around the y axis
SEED=${SEED:-0}
WORKERS=${WORKERS:-0}                # 0 = all cores
EXTRA_ARGS=${EXTRA_ARGS:-}           # any other option of `python -m onepfrac.generate --dataset 3d-ofdb --help`

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=checks.sh
. "$HERE/checks.sh"
need_int CLASSES 1; need_int VIEWS 1; need_int SEED 0; need_int WORKERS 0
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
need_python
# shellcheck disable=SC2086  # EXTRA_ARGS is split into options on purpose
exec "$PYTHON" -m onepfrac.generate --dataset 3d-ofdb --base-savedir "$BASE_SAVEDIR" --classes "$CLASSES" \
    --instances "$VIEWS" --seed "$SEED" --workers "$WORKERS" $EXTRA_ARGS
