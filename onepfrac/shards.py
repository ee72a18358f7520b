"""Which part of a dataset one generation process makes: the shard plan and the launcher's variables.

A dataset of C classes is cut into N generation shards of contiguous class ranges: shard K
makes classes [K*C//N, (K+1)*C//N), so the shards are disjoint, cover every class once and
depend on nothing but (C, N, K). In the WebDataset format the unit is the tar shard instead
(a fixed number of samples, so its bytes do not depend on N): generation shard K writes tar
shards [K*T//N, (K+1)*T//N) of the T tar shards.

N and K come from --num-shards/--shard-index when given (each option wins over the
environment on its own), else from the first launcher found:
  SLURM array   SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN (divided by SLURM_ARRAY_TASK_STEP),
                SLURM_ARRAY_TASK_COUNT
  torchrun      RANK, WORLD_SIZE
  mpiexec       OMPI_COMM_WORLD_RANK/SIZE (Open MPI), PMI_RANK/PMI_SIZE (MPICH, Intel MPI),
                PMIX_RANK/PMIX_SIZE
  srun          SLURM_PROCID, SLURM_NTASKS (inside a job step only: SLURM_STEP_ID is set)
and a single shard (0 of 1) when there is none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from onepfrac.errors import UsageError

# (index variable, count variable, launcher name), in the order they are looked for.
RANK_VARIABLES = (
    ("RANK", "WORLD_SIZE", "torchrun"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "mpiexec (Open MPI)"),
    ("PMI_RANK", "PMI_SIZE", "mpiexec (MPICH/Intel MPI)"),
    ("PMIX_RANK", "PMIX_SIZE", "mpiexec (PMIx)"),
)


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    source: str  # where the numbers came from, for messages: "options", "SLURM array", ...

    @property
    def sharded(self) -> bool:
        return self.count > 1


def _int(environ, name: str) -> int:
    value = environ.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"environment variable {name}={value!r} is not an integer; "
                         f"pass --num-shards and --shard-index yourself") from None


def _slurm_array(environ) -> tuple[int, int] | None:
    if "SLURM_ARRAY_TASK_ID" not in environ or "SLURM_ARRAY_TASK_COUNT" not in environ:
        return None
    task, count = _int(environ, "SLURM_ARRAY_TASK_ID"), _int(environ, "SLURM_ARRAY_TASK_COUNT")
    first = _int(environ, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in environ else 0
    step = _int(environ, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in environ else 1
    last = _int(environ, "SLURM_ARRAY_TASK_MAX") if "SLURM_ARRAY_TASK_MAX" in environ else None
    # a list such as --array=1,4,9 has no arithmetic index: refuse rather than skip classes
    regular = step > 0 and (task - first) % step == 0 and (last is None or (last - first) // step + 1 == count)
    if not regular:
        raise UsageError(f"SLURM array task {task} (min {first}, max {last}, step {step}, count {count}) "
                         f"is not part of a regular range such as --array=0-{count - 1}; "
                         f"pass --num-shards and --shard-index yourself")
    return (task - first) // step, count


def from_environment(environ=os.environ) -> tuple[int, int, str] | None:
    """(index, count, launcher) exported by a SLURM array, torchrun, mpiexec or srun; None if none."""
    array = _slurm_array(environ)
    if array is not None:
        return (*array, "SLURM array")
    for index, count, name in RANK_VARIABLES:
        if index in environ and count in environ:
            return _int(environ, index), _int(environ, count), name
    if "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ and "SLURM_STEP_ID" in environ:
        return _int(environ, "SLURM_PROCID"), _int(environ, "SLURM_NTASKS"), "srun"
    return None


def resolve(num_shards: int | None, shard_index: int | None, environ=os.environ) -> Shard:
    """This process's shard: each option given wins, the launcher's variables fill in the rest."""
    if num_shards is not None and num_shards < 1:
        raise UsageError(f"--num-shards {num_shards} must be 1 or more")
    if shard_index is not None and shard_index < 0:
        raise UsageError(f"--shard-index {shard_index} must be 0 or more")
    found = None if num_shards is not None and shard_index is not None else from_environment(environ)
    if found is None and shard_index is not None and num_shards is None:
        raise UsageError(f"--shard-index {shard_index} needs --num-shards (no SLURM array, torchrun or "
                         f"mpiexec variables say how many shards there are)")
    env_index, env_count, launcher = found if found is not None else (0, 1, "none")
    index = shard_index if shard_index is not None else env_index
    count = num_shards if num_shards is not None else env_count
    if num_shards is not None and shard_index is not None:
        source = "options"
    elif found is None:
        source = "options" if num_shards is not None else "none"
    else:
        source = launcher if num_shards is None and shard_index is None else f"options and {launcher}"
    if count < 1:
        raise UsageError(f"{launcher}: a shard count of {count} is not 1 or more")
    if not 0 <= index < count:
        what = "--shard-index" if shard_index is not None else f"the shard index from {launcher}"
        raise UsageError(f"{what} {index} is outside 0..{count - 1} (--num-shards {count})")
    if num_shards is not None and shard_index is None and found is None and count > 1:
        raise UsageError(f"--num-shards {count} needs --shard-index (or a SLURM array, torchrun or mpiexec "
                         f"to say which shard this process makes)")
    return Shard(index, count, source)


def part(total: int, count: int, index: int) -> range:
    """Shard `index` of `count` contiguous, near-equal parts of range(total)."""
    return range(index * total // count, (index + 1) * total // count)


def owner(total: int, count: int, item: int) -> int:
    """The shard whose part(total, count, shard) holds `item`."""
    shard = item * count // total
    while item >= (shard + 1) * total // count:  # integer division can land one short
        shard += 1
    while item < shard * total // count:
        shard -= 1
    return shard


def ranges_text(items) -> str:
    """'0-3, 7, 9-10' for sorted integers, so a message stays one short line."""
    items = list(items)
    spans, start = [], None
    for position, item in enumerate(items):
        if start is None:
            start = item
        if position + 1 == len(items) or items[position + 1] != item + 1:
            spans.append(str(start) if start == item else f"{start}-{item}")
            start = None
    if len(spans) > 12:
        spans = [*spans[:12], f"... ({len(items)} in all)"]
    return ", ".join(spans)
