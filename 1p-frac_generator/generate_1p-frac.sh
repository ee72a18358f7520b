#!/usr/bin/env bash
# Generate a 1p-frac dataset. Edit the variables here or set them in the environment.
# Writes $BASE_SAVEDIR/sigma${SIGMA}_perturb${DELTA}_sample${SAMPLE}_seed${SEED}/ and prints that path.
set -euo pipefail
BASE_SAVEDIR=${BASE_SAVEDIR:-./data}
SIGMA=${SIGMA:-3.5}        # sigma-factor of the single fractal (paper: 3.5)
DELTA=${DELTA:-0.1}        # perturbation size (paper's best: 0.1)
SAMPLE=${SAMPLE:-1000}     # L: perturbations = classes
SEED=${SEED:-0}
WORKERS=${WORKERS:-0}      # 0 = all cores
EXTRA_ARGS=${EXTRA_ARGS:-} # any other option of `python -m onepfrac.generate --help`

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=checks.sh
. "$HERE/checks.sh"
need_number SIGMA; need_number DELTA; need_int SAMPLE 1; need_int SEED 0; need_int WORKERS 0
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
need_python
# shellcheck disable=SC2086  # EXTRA_ARGS is split into options on purpose
exec "$PYTHON" -m onepfrac.generate --base-savedir "$BASE_SAVEDIR" --sigma "$SIGMA" --delta "$DELTA" \
    --samples "$SAMPLE" --seed "$SEED" --workers "$WORKERS" $EXTRA_ARGS
