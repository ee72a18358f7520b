#!/usr/bin/env bash
# Generate a single-real-image dataset (the paper's real-image section). Edit the variables here or set them in the environment.
# Writes $BASE_SAVEDIR/real-image_classes${CLASSES}_instances1_seed${SEED}/ and prints that path.
set -euo pipefail
BASE_SAVEDIR=${BASE_SAVEDIR:-./data}
CLASSES=${CLASSES:-1000}             # L: perturbations = classes
IMAGE=${IMAGE:-astronaut}            # a bundled scikit-image picture or any image path
REPRESENTATION=${REPRESENTATION:-edges}  # color, gray or edges (Canny)
TRANSFORM=${TRANSFORM:-affine}       # affine, elastic or polynomial
DELTA=${DELTA:-0.1}                  # perturbation size
SEED=${SEED:-0}
WORKERS=${WORKERS:-0}                # 0 = all cores
EXTRA_ARGS=${EXTRA_ARGS:-}           # any other option of `python -m onepfrac.generate --dataset real-image --help`

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=checks.sh
. "$HERE/checks.sh"
need_int CLASSES 1; need_number DELTA; need_int SEED 0; need_int WORKERS 0
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
need_python
# shellcheck disable=SC2086  # EXTRA_ARGS is split into options on purpose
exec "$PYTHON" -m onepfrac.generate --dataset real-image --base-savedir "$BASE_SAVEDIR" --classes "$CLASSES" \
    --image "$IMAGE" --representation "$REPRESENTATION" --transform "$TRANSFORM" --delta "$DELTA" \
    --seed "$SEED" --workers "$WORKERS" $EXTRA_ARGS
