#!/usr/bin/env bash
# Generate one dataset as a SLURM job array: each array task makes its own shard (docs/shards.md).
#   sbatch --array=0-15 1p-frac_generator/generate_slurm_array.sh     # 16 shards, one node each
#   sbatch --array=7 1p-frac_generator/generate_slurm_array.sh        # resubmit a killed task: it resumes
#   FINALIZE=1 bash 1p-frac_generator/generate_slurm_array.sh          # once every task is done
# The shard index and count come from SLURM_ARRAY_TASK_ID/_MIN/_COUNT. Submit from the repository
# root (sbatch runs a copy of this file, so the repository is found from SLURM_SUBMIT_DIR).
#SBATCH --job-name=onepfrac-shards
#SBATCH --nodes=1
#SBATCH --exclusive
set -euo pipefail
BASE_SAVEDIR=${BASE_SAVEDIR:-./data}
FORMAT=${FORMAT:-wds}                # wds: tar shards; folder: PNG folders + manifest.json
SHARD_SIZE=${SHARD_SIZE:-1000}       # --format wds: samples per tar shard
WORKERS=${WORKERS:-0}                # 0 = all cores of the task's node
DATASET_ARGS=${DATASET_ARGS:---dataset fractaldb --classes 21000 --instances 1000}
FINALIZE=${FINALIZE:-0}              # 1: assemble the manifest (or index.json) instead of generating

if [ -n "${SLURM_SUBMIT_DIR:-}" ] && [ -d "$SLURM_SUBMIT_DIR/1p-frac_generator" ]; then
    HERE="$SLURM_SUBMIT_DIR/1p-frac_generator"
else
    HERE="$(cd "$(dirname "$0")" && pwd)"
fi
# shellcheck source=checks.sh
. "$HERE/checks.sh"
need_int WORKERS 0; need_int SHARD_SIZE 1
case "$FORMAT" in folder|wds) ;; *) _fail "FORMAT=$FORMAT is not allowed; expected folder or wds" ;; esac
case "$FINALIZE" in 0|1) ;; *) _fail "FINALIZE=$FINALIZE is not allowed; expected 0 or 1" ;; esac
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
need_python
EXTRA=()
if [ "$FORMAT" = wds ]; then EXTRA=(--shard-size "$SHARD_SIZE"); fi
if [ "$FINALIZE" = 1 ]; then EXTRA+=(--finalize); fi
# shellcheck disable=SC2086  # DATASET_ARGS is split into options on purpose
exec "$PYTHON" -m onepfrac.generate $DATASET_ARGS --base-savedir "$BASE_SAVEDIR" --format "$FORMAT" \
    --workers "$WORKERS" --no-progress "${EXTRA[@]}"
