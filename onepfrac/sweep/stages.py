"""Each stage of a cell: its options beyond the recipe, its command line, and the cell's fingerprint.

Pure, like grid.py, whose checked Grid and Cells it takes: nothing here starts a process or
writes a file; runner.py runs the commands and keeps the records.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from onepfrac.sweep.grid import AXES, L_OPTION, Cell, Grid


def _axis_groups(grid: Grid, cell: Cell, group: str) -> dict:
    merged = {}
    for axis in AXES:
        for value, groups in grid.axis_options.get(axis, []):
            if getattr(cell, axis) == value:
                merged.update(groups[group])
    return merged


def stage_options(grid: Grid, cell: Cell) -> dict:
    """Every option each stage of a cell gets beyond its recipe file, the more specific winning:
    grid-wide, then per dataset (generator), then per axis value; the seed axis last."""
    pretrain = {**grid.options["trainer"], **grid.options["pretrain"],
                **_axis_groups(grid, cell, "trainer"), **_axis_groups(grid, cell, "pretrain")}
    finetune = {**grid.options["trainer"], **grid.options["finetune"],
                **_axis_groups(grid, cell, "trainer"), **_axis_groups(grid, cell, "finetune")}
    generate = {}
    if cell.dataset != "scratch":
        generate = {**grid.options["generate"].get(cell.dataset, {}), **_axis_groups(grid, cell, "generate")}
        generate["dataset"] = cell.dataset
        if cell.delta is not None:
            generate["delta"] = cell.delta
        if cell.sigma is not None:
            generate["sigma"] = cell.sigma
        generate[L_OPTION.get(cell.dataset, "classes")] = cell.L
    for stage, options in (("generate", generate), ("pretrain", pretrain), ("finetune", finetune)):
        if stage in grid.seed_applies_to and (stage != "generate" or cell.dataset != "scratch"):
            options["seed"] = cell.seed
    if cell.dataset == "scratch":
        return {"finetune": finetune}
    return {"generate": generate, "pretrain": pretrain, "finetune": finetune}


def to_argv(options: dict) -> list[str]:
    """{option: value} -> ['--option', 'value', ...]: True is a bare flag, False its --no- form,
    None leaves the option out, a list gives several values, a mapping key=value pairs."""
    argv = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, dict):
            argv += [flag, *(f"{k}={v}" for k, v in value.items())]
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def fingerprint(grid: Grid, cell: Cell) -> str:
    """What a cell's result depends on (options, recipe contents, fine-tuning data), without
    any path of the output folder: a complete cell is reused only while this is unchanged."""
    content = {"cell": cell.params(), "options": stage_options(grid, cell),
               "recipes": {s: hashlib.sha256(p.read_bytes()).hexdigest() for s, p in grid.recipes.items()},
               "finetune_data": grid.finetune_data, "launch": grid.launch}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def generator_key(options: dict) -> str:
    """Cache key of a generated dataset: cells with equal generator options share one folder."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:12]


def commands(grid: Grid, cell: Cell, python: str, data_root: Path, cell_dir: Path,
             pretrain_data: Path | None, finetune_args: list[str]) -> dict:
    """The argv of each stage. `pretrain_data` is the generated folder (known once generated);
    `finetune_args` points the trainer at the fine-tuning data."""
    options = stage_options(grid, cell)
    launch = [python if a == "{python}" else a for a in grid.launch]
    argv = {}
    if "generate" in options:
        generate = options["generate"]
        # --num-shards 1: a sweep run as a SLURM array or under mpiexec still makes whole datasets
        argv["generate"] = [python, "-m", "onepfrac.generate", *to_argv(generate),
                            "--base-savedir", str(data_root / generator_key(generate)), "--no-progress",
                            "--num-shards", "1"]
        argv["pretrain"] = [*launch, "pretrain", "--config", str(grid.recipes["pretrain"]),
                            *to_argv(options["pretrain"]), "--data-dir", str(pretrain_data),
                            "--output-dir", str(cell_dir / "pretrain"), "--resume", "auto",
                            "--no-progress"]
    ckpt = ["--ckpt", str(cell_dir / "pretrain" / "checkpoint_last.pth")] if cell.dataset != "scratch" else []
    argv["finetune"] = [*launch, "finetune", "--config", str(grid.recipes["finetune"]),
                        *to_argv(options["finetune"]), *finetune_args, *ckpt,
                        "--output-dir", str(cell_dir / "finetune"), "--resume", "auto", "--no-progress"]
    return argv
