#!/usr/bin/env bash
# Fine-tune a (pre-trained) timm model on real data. Edit the variables here or set them in the
# environment. Defaults: the released CIFAR-100 recipe (8 x 96 images, 1000 epochs).
set -euo pipefail
LAUNCHER=${LAUNCHER:-none}        # none, torchrun, mpi, slurm
NGPUS=${NGPUS:-1}                 # processes in all; released: 8
NPERNODE=${NPERNODE:-$NGPUS}
DATASET_NAME=${DATASET_NAME:-cifar100}   # folder (ImageFolder), cifar10 or cifar100
CLASS_NUM=${CLASS_NUM:-}          # unset: the CONFIG's, else the number of class folders / CIFAR's
BASE_DATADIR=${BASE_DATADIR:-./data}
# $BASE_DATADIR/$DATASET_NAME holds train/ and val/ ImageFolders, or CIFAR in torchvision's format;
# TRAIN_DATADIR and VAL_DATADIR, when set, point at the two splits instead.
TRAIN_DATADIR=${TRAIN_DATADIR:-}
VAL_DATADIR=${VAL_DATADIR:-}
CKPT_PATH=${CKPT_PATH:-}          # pre-trained weights: path, URL or known name; empty = scratch
CONFIG=${CONFIG:-$(dirname "$0")/configs/finetune_cifar100_vit_tiny.yaml}
# Unset: the CONFIG file's value (released: vit_tiny_patch16_224, 1000 epochs, 96 per process).
MODEL_NAME=${MODEL_NAME:-}
EPOCHS=${EPOCHS:-}
BATCH_SIZE=${BATCH_SIZE:-}        # per process
OUTPUT_DIR=${OUTPUT_DIR:-}          # default ./output/finetune/{MODEL_NAME or the config's model}_${DATASET_NAME}
EXTRA_ARGS=${EXTRA_ARGS:-}

DATASET_KIND=folder
case "$DATASET_NAME" in cifar10|cifar100) DATASET_KIND=$DATASET_NAME ;; esac
OPTIONAL=()
if [ -n "$CKPT_PATH" ]; then OPTIONAL+=(--ckpt "$CKPT_PATH"); fi
if [ -n "$TRAIN_DATADIR" ]; then OPTIONAL+=(--train-dir "$TRAIN_DATADIR"); fi
if [ -n "$VAL_DATADIR" ]; then OPTIONAL+=(--val-dir "$VAL_DATADIR"); fi
source "$(dirname "$0")/_launch.sh"
OUTPUT_DIR=${OUTPUT_DIR:-$(default_output_dir finetune "$DATASET_NAME")}
# shellcheck disable=SC2086  # EXTRA_ARGS is split into options on purpose
launch finetune --config "$CONFIG" --dataset "$DATASET_KIND" --data-dir "$BASE_DATADIR/$DATASET_NAME" \
    $(set_options) --output-dir "$OUTPUT_DIR" --experiment "$DATASET_NAME" "${OPTIONAL[@]}" $EXTRA_ARGS
