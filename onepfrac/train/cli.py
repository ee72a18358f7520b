"""Command line of the trainer: `python -m onepfrac.train {pretrain,finetune,eval} [-c FILE.yaml]`.

The options, their YAML configs and their checks live in onepfrac.train.options (no torch);
this is the entry point that checks them, builds the model and the optimiser once on the meta
device to check timm's names, and hands them to onepfrac.train.trainer.run.
"""

from __future__ import annotations

import os
import sys

from onepfrac import extras
from onepfrac.errors import UserError
from onepfrac.train.options import parse_args


# The rank each launcher exports (torchrun, Open MPI, MPICH/Intel MPI, PMIx, Slurm).
RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")


def _other_rank() -> bool:
    """Whether a launcher started this process as a rank other than 0: an option error, the same
    on every rank, is then left to rank 0 to print, once."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "0")
        if value.isdigit() and int(value) != 0:
            return True
    return False


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        for module in ("torch", "torchvision", "timm"):  # options and --help need none of them
            extras.require(module, "train", f"python -m onepfrac.train {args.mode}")
        if args.mode != "eval":  # eval takes its model from the checkpoint
            from onepfrac.train.build import check_model, check_optimization

            # timm's names and the model's constructor, before any data is decoded
            check_optimization(args)
            check_model(args)
            if args.log_wandb:  # before any work, not after the data is loaded
                from onepfrac.train.metrics import require_wandb

                require_wandb()
        if args.check_only:
            from onepfrac.train.trainer import check_only

            return check_only(args)
    except UserError as error:
        if not _other_rank():
            print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    from onepfrac.train.trainer import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
