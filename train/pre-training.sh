#!/usr/bin/env bash
# Pre-train a timm model on a 1p-frac dataset. Edit the variables here or set them in the
# environment. Defaults: the released recipe (ViT-Tiny/16 at 224, L = 1000, 8 x 32 images).
set -euo pipefail
LAUNCHER=${LAUNCHER:-none}        # none (one process: CPU or one GPU), torchrun, mpi, slurm
NGPUS=${NGPUS:-1}                 # processes in all (one per GPU); released: 8
NPERNODE=${NPERNODE:-$NGPUS}      # processes per node
BASE_DATADIR=${BASE_DATADIR:-./data}
ONEPFRAC_NAME=${ONEPFRAC_NAME:-sigma3.5_perturb0.1_sample1000_seed0}
CONFIG=${CONFIG:-$(dirname "$0")/configs/pretrain_1p-frac_vit_tiny.yaml}
# Unset: the CONFIG file's value (released: vit_tiny_patch16_224, 80000 epochs, 32 per process).
MODEL_NAME=${MODEL_NAME:-}
EPOCHS=${EPOCHS:-}
BATCH_SIZE=${BATCH_SIZE:-}        # per process; released: 32 x 8 GPUs = 256
OUTPUT_DIR=${OUTPUT_DIR:-}          # default ./output/pretrain/{MODEL_NAME or the config's model}_${ONEPFRAC_NAME}
EXTRA_ARGS=${EXTRA_ARGS:-}        # any option of `python -m onepfrac.train --help`

# The number of classes is the dataset name's sample{L} part, as in the released script.
CLASSES=$(echo "$ONEPFRAC_NAME" | sed -nE 's/.*sample([0-9]+).*/\1/p')
if [ -z "$CLASSES" ]; then
    echo "error: ONEPFRAC_NAME=$ONEPFRAC_NAME has no sample{L} part to read the class count from" >&2; exit 2
fi
source "$(dirname "$0")/_launch.sh"
OUTPUT_DIR=${OUTPUT_DIR:-$(default_output_dir pretrain "$ONEPFRAC_NAME")}
# shellcheck disable=SC2086  # EXTRA_ARGS is split into options on purpose
launch pretrain --config "$CONFIG" --data-dir "$BASE_DATADIR/$ONEPFRAC_NAME" --num-classes "$CLASSES" \
    $(CLASS_NUM= set_options) --output-dir "$OUTPUT_DIR" --experiment "$ONEPFRAC_NAME" $EXTRA_ARGS
