#!/usr/bin/env bash
# Behaviour-unchanged check for a refactor: the same datasets and short seeded trainings made by
# two revisions of this repository, compared byte for byte.
#
#   bash benchmarks/compare_revisions.sh OLD_REV [NEW_REV]     # NEW_REV: the working tree
#
# Generates the default 1p-frac (L = 1000), two small 1p-frac variants and a small set of every
# other dataset, then three 3-epoch trainings (loader pipeline, device pipeline with RandAugment,
# FractalDB rendered on the fly). Prints the PNG and manifest differences and each run's
# model-weight SHA-256; exits 0 when everything is identical, 1 otherwise. Runs with .venv's
# Python (bash run_tests.sh makes it); about a minute per revision on 2 cores.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-$REPO/.venv/bin/python}
[ $# -ge 1 ] || { echo "usage: $0 OLD_REV [NEW_REV]" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

checkout() {  # checkout REV DIR: a clean copy of REV, or of the working tree when REV is empty
    if [ -n "$1" ]; then
        git -C "$REPO" rev-parse --verify --quiet "$1^{commit}" > /dev/null || { echo "error: $1 is not a revision" >&2; exit 2; }
        git -C "$REPO" archive "$1" | tar -x -C "$2"
    else
        (cd "$REPO" && git ls-files -co --exclude-standard -z | tar -c --null -T - 2>/dev/null) | tar -x -C "$2"
    fi
}

outputs() {  # outputs SOURCE OUT
    local g="$PY -m onepfrac.generate --no-progress --workers 2" t="$PY -m onepfrac.train pretrain"
    local common=(--model vit_tiny_patch16_224 --img-size 32 --model-kwargs patch_size=8 embed_dim=32 depth=2
                  num_heads=2 --batch-size 16 --epochs 3 --repeats 4 --no-progress --workers 0 --seed 1 --warmup-epochs 1)
    mkdir -p "$2"
    cd "$2"
    export PYTHONPATH="$1"
    $g --base-savedir d/default > /dev/null
    $g --base-savedir d/small --samples 40 --size 96 --points 5000 --sigma 4.5 --delta 0.2 --seed 3 --drawing point --png-bits 1 > /dev/null
    $g --base-savedir d/per-image --samples 20 --size 64 --points 3000 --orbit per-image --burn-in 10 --perturbation additive > /dev/null
    $g --base-savedir d/fractaldb --dataset fractaldb --classes 4 --instances 12 --size 64 --points 3000 --search-points 5000 --search-size 128 > /dev/null
    $g --base-savedir d/ofdb --dataset ofdb --classes 6 --size 64 --points 3000 --search-points 5000 --search-size 128 > /dev/null
    $g --base-savedir d/3d-ofdb --dataset 3d-ofdb --classes 3 --instances 4 --size 48 --points 3000 > /dev/null
    $g --base-savedir d/visualatom --dataset visualatom --classes 4 --instances 3 --size 64 > /dev/null
    $g --base-savedir d/real-image --dataset real-image --classes 4 --instances 2 --size 64 --transform elastic --representation edges > /dev/null
    local small
    small=$(ls -d d/small/*/)
    $t --data-dir "$small" "${common[@]}" --output-dir run_loader --data-pipeline loader > log_loader.txt 2>&1
    $t --data-dir "$small" "${common[@]}" --output-dir run_device --data-pipeline device --aa rand-m9-mstd0.5-inc1 > log_device.txt 2>&1
    $t --render fractaldb --render-kwargs classes=4 instances=4 size=64 points=2000 search_points=3000 search_size=64 \
        "${common[@]}" --output-dir run_render > log_render.txt 2>&1
    "$PY" - > weights.txt <<'PY'
import hashlib
import torch
for run in ("run_loader", "run_device", "run_render"):
    state = torch.load(f"{run}/checkpoint_last.pth", map_location="cpu", weights_only=False)["model"]
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].numpy().tobytes())
    print(run, digest.hexdigest())
PY
    cd - > /dev/null
}

mkdir "$WORK/old" "$WORK/new"
checkout "$1" "$WORK/old"
checkout "${2:-}" "$WORK/new"
echo "old: $1, new: ${2:-working tree}; outputs in $WORK (removed at the end)"
outputs "$WORK/old" "$WORK/out-old"
outputs "$WORK/new" "$WORK/out-new"
status=0
pngs=$(find "$WORK/out-old/d" -name '*.png' | wc -l)
if diff -rq -x manifest.json "$WORK/out-old/d" "$WORK/out-new/d"; then
    echo "PNGs: all $pngs identical"
else
    status=1
fi
if diff -rq "$WORK/out-old/d" "$WORK/out-new/d" > "$WORK/manifests.txt"; then
    echo "manifests: identical"
else
    sed "s|$WORK/||g" "$WORK/manifests.txt"
    status=1
fi
paste "$WORK/out-old/weights.txt" "$WORK/out-new/weights.txt" | while read -r run old _ new; do
    echo "$run: $([ "$old" = "$new" ] && echo "weights identical ($old)" || echo "weights DIFFER ($old vs $new)")"
done
cmp -s "$WORK/out-old/weights.txt" "$WORK/out-new/weights.txt" || status=1
exit $status
