#!/usr/bin/env bash
# Generate one dataset with mpiexec: each MPI rank makes its own shard, then --finalize assembles
# the manifest (docs/shards.md). The rank and size come from OMPI_COMM_WORLD_RANK/SIZE or
# PMI_RANK/SIZE; rerunning the same command resumes every shard.
#   NP=4 WORKERS=16 bash 1p-frac_generator/generate_mpiexec.sh
set -euo pipefail
BASE_SAVEDIR=${BASE_SAVEDIR:-./data}
NP=${NP:-2}                          # MPI ranks = shards
FORMAT=${FORMAT:-wds}                # wds: tar shards; folder: PNG folders + manifest.json
SHARD_SIZE=${SHARD_SIZE:-1000}       # --format wds: samples per tar shard
WORKERS=${WORKERS:-0}                # processes per rank; 0 = all cores (set it when ranks share a node)
DATASET_ARGS=${DATASET_ARGS:---dataset fractaldb --classes 21000 --instances 1000}
MPIEXEC=${MPIEXEC:-mpiexec}

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=checks.sh
. "$HERE/checks.sh"
need_int NP 1; need_int WORKERS 0; need_int SHARD_SIZE 1
case "$FORMAT" in folder|wds) ;; *) _fail "FORMAT=$FORMAT is not allowed; expected folder or wds" ;; esac
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
need_python
command -v "$MPIEXEC" >/dev/null 2>&1 || _fail "MPIEXEC=$MPIEXEC is not a program here; load your MPI or set MPIEXEC"
EXTRA=()
if [ "$FORMAT" = wds ]; then EXTRA=(--shard-size "$SHARD_SIZE"); fi
# shellcheck disable=SC2086  # DATASET_ARGS is split into options on purpose
"$MPIEXEC" -n "$NP" "$PYTHON" -m onepfrac.generate $DATASET_ARGS --base-savedir "$BASE_SAVEDIR" \
    --format "$FORMAT" --workers "$WORKERS" --no-progress "${EXTRA[@]}"
# shellcheck disable=SC2086
exec "$PYTHON" -m onepfrac.generate $DATASET_ARGS --base-savedir "$BASE_SAVEDIR" --format "$FORMAT" \
    --no-progress "${EXTRA[@]}" --finalize
