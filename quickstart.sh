#!/usr/bin/env bash
# One-command set-up and demonstration on a laptop CPU (about 5 minutes on 2 cores after the
# install): creates .venv, installs the requirements and the package, generates the default
# 1p-frac (sigma 3.5, delta 0.1, L = 1000) with a sample grid, then pre-trains a small ViT on a
# 16-class 1p-frac (train/configs/pretrain_cpu.yaml), fine-tunes it and the same ViT from scratch
# on scikit-learn's digits (200 training images), and prints both accuracies.
# Variables may be set in the environment; DEMO=0 stops after the dataset.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
BASE_SAVEDIR=${BASE_SAVEDIR:-./data}
SAMPLE=${SAMPLE:-1000}
DEMO=${DEMO:-1}
OUTPUT_DIR=${OUTPUT_DIR:-./output/quickstart}
# shellcheck source=1p-frac_generator/checks.sh
. 1p-frac_generator/checks.sh
need_int SAMPLE 1
[ "$DEMO" = 0 ] || [ "$DEMO" = 1 ] || _fail "DEMO=$DEMO is not allowed; expected 0 (stop after the dataset) or 1"
need_python

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
$PY -m pip install --quiet --upgrade pip
$PY -m pip install --quiet -r requirements.txt
$PY -m pip install --quiet --no-deps -e .

DATASET=$($PY -m onepfrac.generate --base-savedir "$BASE_SAVEDIR" --samples "$SAMPLE" | tail -n 1)
$PY -m onepfrac.figures grid "$DATASET" --out "$DATASET/sample_grid.png"
echo "dataset:     $DATASET"
echo "sample grid: $DATASET/sample_grid.png"
[ "$DEMO" = 1 ] || exit 0

# A 16-class 1p-frac at 128 px: the CPU recipe trains at 32 px, so 512-px images would only cost decoding.
SMALL=$($PY -m onepfrac.generate --base-savedir "$BASE_SAVEDIR" --samples 16 --size 128 --points 25000 \
    --pad 2 --no-progress | tail -n 1)
DIGITS="$BASE_SAVEDIR/digits"
[ -d "$DIGITS/train" ] || $PY -m onepfrac.train.digits "$DIGITS" --train 200 --size 32
$PY -m onepfrac.train pretrain -c train/configs/pretrain_cpu.yaml --data-dir "$SMALL" \
    --output-dir "$OUTPUT_DIR/pretrain" --resume auto
for START in scratch 1p-frac; do
    CKPT=()
    [ "$START" = scratch ] || CKPT=(--ckpt "$OUTPUT_DIR/pretrain/checkpoint_last.pth")
    $PY -m onepfrac.train finetune -c train/configs/finetune_cpu_digits.yaml --data-dir "$DIGITS" \
        --output-dir "$OUTPUT_DIR/finetune_$START" --resume auto "${CKPT[@]}"
done
$PY - "$OUTPUT_DIR" <<'PYTHON'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("\ndigits (200 training images), best validation top-1 of the same ViT:")
for start in ("scratch", "1p-frac"):
    summary = json.loads((out / f"finetune_{start}" / "summary.json").read_text())
    print(f"  from {start:8s} {summary['best_acc1']:6.2f} %")
PYTHON
