#!/usr/bin/env bash
# What this project measures on one GPU, in one command, written to OUTDIR:
#   aug      bench_device_aug.py on the GPU at batch 256 and 1,024, with torch.profiler's top
#            ops (where the device augmentation's time goes). -> aug.log
#   bench    bench_train.py on the released pre-training recipe (ViT-Tiny/16 at 224, L = 1000
#            gray 512-px images): batch 256 and 1,024; fp16 (released AMP) and bf16; the fused
#            optimiser, torch.compile and channels-last; model-only vs loader vs device, with MFU.
#            -> bench.log, bench.jsonl
#   trainer  the real trainer end to end on the same data (train/pre-training.sh, batch 256,
#            bf16), under torchrun and under mpiexec (NCCL), and under torchrun with the
#            augmentation on a side stream (LAUNCHERS "side"): images/s including every epoch
#            boundary, log line and checkpoint. -> trainer.log, trainer.jsonl
#   epochs   bench_epochs.py: what an epoch boundary costs the trainer (1 epoch x 60 steps
#            against 20 epochs x 3 steps, tiny ViT at 224 px), both pipelines. -> epochs.log
#   sweep    train/grids/gpu_delta.yaml (Table 5 at one-GPU scale), seed by seed.
#            -> sweep.log, sweep_results.md, sweep_results.csv
#
#   bash benchmarks/gpu_report.sh OUTDIR [aug] [bench] [trainer] [epochs] [sweep]   (default: all)
#
# Environment: PYTHON (default python3), DATA (where the 1p-frac set is generated, default
# /tmp/onepfrac_gpu), WORKERS (loader workers, default: cores - 2), E2E_EPOCHS (default 400),
# SWEEP_SEEDS (default "0 1 2"), SWEEP_DEADLINE (seconds after which no new seed starts),
# BENCH_EXTRA and E2E_EXTRA (more trainer options for the bench and trainer parts), BENCH_RUNS
# (the bench runs' tags to do, default all), PIPELINES (default "loader device"), LAUNCHERS
# (default "torchrun mpi side").
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:?usage: bash benchmarks/gpu_report.sh OUTDIR [aug] [bench] [trainer] [epochs] [sweep]}
shift
PARTS=${*:-aug bench trainer epochs sweep}
PIPELINES=${PIPELINES:-loader device}
LAUNCHERS=${LAUNCHERS:-torchrun mpi side}
PYTHON=$(command -v "${PYTHON:-python3}")
DATA=${DATA:-/tmp/onepfrac_gpu}
WORKERS=${WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
E2E_EPOCHS=${E2E_EPOCHS:-400}
SWEEP_SEEDS=${SWEEP_SEEDS:-0 1 2}
SWEEP_DEADLINE=${SWEEP_DEADLINE:-100000}
NAME=sigma3.5_perturb0.1_sample1000_seed0
START=$SECONDS
mkdir -p "$OUTDIR" "$DATA"
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1

say() { echo "== [$((SECONDS - START)) s] $*"; }

if [ ! -d "$DATA/$NAME" ]; then
    say "generating the released 1p-frac set (L = 1000, 512 px) into $DATA"
    time "$PYTHON" -m onepfrac.generate --sigma 3.5 --delta 0.1 \
        --samples 1000 --base-savedir "$DATA" --no-progress
fi

case " $PARTS " in *" aug "*)
    for batch in 256 1024; do
        say "bench_device_aug.py --batch $batch"
        "$PYTHON" benchmarks/bench_device_aug.py --device cuda --batch "$batch" --batches 10 --profile \
            2>&1 | grep -v "^USDT\|^ERROR:.*gpuGetDeviceCount" | tee -a "$OUTDIR/aug.log"
    done
    ;;
esac

case " $PARTS " in *" bench "*)
    say "bench_train.py matrix ($WORKERS loader workers)"
    bench() {
        local tag=$1; shift
        case " ${BENCH_RUNS:-$tag} " in *" $tag "*) ;; *) return ;; esac
        say "bench $tag: $*"
        "$PYTHON" benchmarks/bench_train.py -c train/configs/pretrain_1p-frac_vit_tiny.yaml \
            --data-dir "$DATA/$NAME" --workers "$WORKERS" --json "$WORK/$tag.json" "$@" ${BENCH_EXTRA:-} 2>&1 \
            | grep -v "^data pipeline" | tee -a "$OUTDIR/bench.log"
        [ -f "$WORK/$tag.json" ] && { tr -d '\n' < "$WORK/$tag.json"; echo; } >> "$OUTDIR/bench.jsonl"
    }
    bench b256_fp16 --batch-size 256 --amp fp16 --pipelines $PIPELINES
    bench b256_bf16 --batch-size 256 --amp bf16 --pipelines $PIPELINES
    bench b256_bf16_fused --batch-size 256 --amp bf16 --fused-opt --pipelines device
    bench b256_bf16_fused_compile --batch-size 256 --amp bf16 --fused-opt --compile --pipelines device
    bench b1024_bf16 --batch-size 1024 --repeats 4 --amp bf16 --pipelines $PIPELINES
    bench b1024_bf16_fused_compile --batch-size 1024 --repeats 4 --amp bf16 --fused-opt --compile --pipelines device
    bench b1024_bf16_fused_compile_cl --batch-size 1024 --repeats 4 --amp bf16 --fused-opt --compile \
        --channels-last --pipelines device
    bench b256_bf16_fused_compile_side --batch-size 256 --amp bf16 --fused-opt --compile --side-stream \
        --pipelines device
    bench b1024_bf16_fused_compile_side --batch-size 1024 --repeats 4 --amp bf16 --fused-opt --compile \
        --side-stream --pipelines device
    ;;
esac

case " $PARTS " in *" trainer "*)
    e2e() {
        local tag=$1 launcher=$2 epochs=$3; shift 3
        say "trainer end to end ($tag): LAUNCHER=$launcher, $epochs epochs of 3 x 256, $*"
        LAUNCHER=$launcher NGPUS=1 BASE_DATADIR=$DATA EPOCHS=$epochs BATCH_SIZE=256 PYTHON=$PYTHON \
            OUTPUT_DIR=$WORK/e2e_$tag EXTRA_ARGS="--no-progress --save-every 100000 $* ${E2E_EXTRA:-}" \
            bash train/pre-training.sh > "$WORK/e2e_$tag.log" 2>&1
        local rc=$?
        { echo "--- $tag: LAUNCHER=$launcher (exit $rc)"; head -5 "$WORK/e2e_$tag.log"; echo ...;
          tail -6 "$WORK/e2e_$tag.log"; } | tee -a "$OUTDIR/trainer.log"
        if [ -f "$WORK/e2e_$tag/summary.json" ]; then
            { echo -n "{\"launcher\": \"$launcher\", \"options\": \"$*\", \"summary\": ";
              tr -d '\n' < "$WORK/e2e_$tag/summary.json"; echo "}"; } >> "$OUTDIR/trainer.jsonl"
        fi
    }
    case " $LAUNCHERS " in *" torchrun "*) e2e torchrun torchrun "$E2E_EPOCHS" --amp bf16 --fused-opt --compile ;; esac
    case " $LAUNCHERS " in *" side "*)
        e2e side torchrun "$E2E_EPOCHS" --amp bf16 --fused-opt --compile --side-stream ;; esac
    case " $LAUNCHERS " in *" mpi "*) e2e mpi mpi $((E2E_EPOCHS / 4)) --amp fp16 ;; esac
    ;;
esac

case " $PARTS " in *" epochs "*)
    say "bench_epochs.py ($WORKERS loader workers)"
    "$PYTHON" benchmarks/bench_epochs.py --device cuda --img-size 224 --workers "$WORKERS" 2>&1 \
        | tee -a "$OUTDIR/epochs.log"
    ;;
esac

case " $PARTS " in *" sweep "*)
    SWEEP=$WORK/sweep
    for seed in $SWEEP_SEEDS; do
        if [ $((SECONDS - START)) -gt "$SWEEP_DEADLINE" ]; then
            say "sweep: deadline reached, seed $seed not started"; break
        fi
        say "sweep gpu_delta, seed $seed"
        cells="scratch_seed$seed"
        for delta in 0.01 0.05 0.1 0.2; do cells="$cells 1p-frac_delta${delta}_sigma3.5_L1000_seed$seed"; done
        # shellcheck disable=SC2086  # one argument per cell
        "$PYTHON" -m onepfrac.sweep train/grids/gpu_delta.yaml --out "$SWEEP" --only $cells \
            >> "$OUTDIR/sweep.log" 2>&1
        "$PYTHON" -m onepfrac.sweep aggregate "$SWEEP" >> "$OUTDIR/sweep.log" 2>&1
        cp "$SWEEP/results.md" "$OUTDIR/sweep_results.md" 2>/dev/null
        cp "$SWEEP/results.csv" "$OUTDIR/sweep_results.csv" 2>/dev/null
        cat "$OUTDIR/sweep_results.md" 2>/dev/null
    done
    ;;
esac
say "done"
