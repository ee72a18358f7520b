"""Command line of the sweep driver: `python -m onepfrac.sweep GRID.yaml --out DIR` or
`python -m onepfrac.sweep aggregate DIR`."""

from __future__ import annotations

import argparse
import errno
import shlex
import sys
from pathlib import Path

from onepfrac.argparsing import Parser
from onepfrac.errors import UserError
from onepfrac.paths import check_writable_folder
from onepfrac.sweep import runner
from onepfrac.sweep.grid import load_grid, select
from onepfrac.sweep.stages import commands


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m onepfrac.sweep",
        description="Run a grid of generate -> pre-train -> fine-tune cells (resumable), then write "
                    "results.csv, results.md and figure/top1.png into --out. "
                    "`python -m onepfrac.sweep aggregate DIR` redoes the results from the cell.json files.")
    parser.add_argument("grid", help="grid YAML (see train/grids/ and docs/sweeps.md)")
    parser.add_argument("--out", default=None, help="output folder (default: ./output/sweeps/GRIDNAME)")
    parser.add_argument("--dry-run", action="store_true", help="check the grid and print the cells and commands")
    parser.add_argument("--only", nargs="+", default=None, metavar="CELL", help="run only these cells (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="print nothing but errors")
    return parser


def build_aggregate_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m onepfrac.sweep aggregate",
                    description="Redo results.csv, results.md and figure/top1.png of a sweep.")
    parser.add_argument("dir", help="a sweep's output folder (holding cells/*/cell.json)")
    parser.add_argument("--no-progress", action="store_true", help="print nothing but errors")
    return parser


def dry_run(grid, cells, out: Path) -> None:
    print(f"grid {grid.name}: {len(grid.cells)} cells, {len(cells)} selected")
    for cell in cells:
        record = runner.read_json(out / "cells" / cell.name / runner.CELL_JSON) or {}
        print(f"\n{cell.name}  [{record.get('status', 'not started')}]")
        argv = commands(grid, cell, sys.executable, out / "data", out / "cells" / cell.name,
                        Path("<generated dataset>"), ["<fine-tuning data options>"])
        for stage, command in argv.items():
            print(f"  {stage}: {shlex.join(command)}")


def check_out(out: Path) -> None:
    """--out must be a folder we can write, or creatable: checked before any cell starts."""
    check_writable_folder(out, "--out")


# a disk that refuses writes mid-sweep: one line, and the rerun resumes
DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, getattr(errno, "EDQUOT", errno.ENOSPC)}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["aggregate"]:
            args = build_aggregate_parser().parse_args(argv[1:])
            runner.aggregate(Path(args.dir), not args.no_progress)
            return 0
        args = build_parser().parse_args(argv)
        grid = load_grid(args.grid)
        out = Path(args.out) if args.out else Path("output") / "sweeps" / grid.name
        cells = select(grid.cells, args.only)
        check_out(out)
        runner.preflight(grid, cells, out.resolve(), sys.executable)
        if args.dry_run:
            dry_run(grid, cells, out.resolve())
            return 0
        return runner.run(grid, cells, out.resolve(), sys.executable, progress=not args.no_progress)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as error:
        if error.errno not in DISK_ERRORS:
            raise
        print(f"error: {error.strerror} writing {error.filename}: free space or choose another --out; "
              "then run the same command again to resume", file=sys.stderr)
        return 1
