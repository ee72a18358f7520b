"""The edge of the sweep: checks that need other programs, subprocess calls of the generator and
trainer CLIs, cell.json records, and writing the aggregated results.

A cell's stages run as separate processes of the ordinary CLIs (`python -m onepfrac.generate`,
`python -m onepfrac.train`), so the sweep runs unchanged wherever those run: only the recipe
file and the device differ between a laptop and a GPU node.

Layout of an output folder:
    OUT/grid.yaml                     copy of the grid that was run
    OUT/data/<key>/<dataset>/         generated datasets, shared by cells with equal options
    OUT/data/digits_train..._seed../  fine-tuning data written by onepfrac.train.digits
    OUT/cells/<cell>/cell.json        parameters, status, commands, wall times, result
    OUT/cells/<cell>/{generate,pretrain,finetune}.log, pretrain/, finetune/
    OUT/results.csv, OUT/results.md, OUT/figure/top1.png (without matplotlib: no plot)
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import filelock

from onepfrac import lifetime, plots
from onepfrac.errors import UserError
from onepfrac.sweep import results
from onepfrac.sweep.grid import REPO, Cell, Grid, GridError, reference_for
from onepfrac.sweep.stages import commands, fingerprint, stage_options, to_argv
from onepfrac.train.options import UsageError, build_parser, parse_args

CELL_JSON = "cell.json"
LOG_TAIL = 20
LOCK = ".sweep.lock"  # held by the sweep running in an output folder
OWN_SIGINT_S = 2.0  # after Ctrl-C, how long a child gets to stop on the terminal's own SIGINT
STOP_S = 30.0  # then, how long it gets to save and exit before it is killed


class SweepBusy(UserError):
    """Another sweep holds the output folder."""

    exit_code = 1


# ---------------------------------------------------------------- small file helpers

def write_text(path: Path, text: str) -> None:
    """Atomic: a crash or a full disk leaves the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tail(path: Path, lines: int = LOG_TAIL) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def call(argv: list[str], log: Path) -> int:
    """Run one CLI with its output appended to `log`; the one place that starts processes
    (tests replace it to count or interrupt calls). The child dies with the sweep, even a
    killed one, so a rerun never meets a trainer still writing into the same folder."""
    with open(log, "a") as stream:
        stream.write(f"$ {' '.join(argv)}\n")
        stream.flush()
        parent = os.getpid()
        preexec = lifetime.preexec_for(parent, signal.SIGTERM)  # SIGTERM: a launcher passes it on
        command = argv if preexec is not None else lifetime.watched(argv, parent)
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=preexec)
        try:
            return process.wait()
        except KeyboardInterrupt:
            stop(process)
            raise
        finally:
            if process.poll() is None:  # a second Ctrl-C while stopping, or any other exit
                process.kill()
                process.wait()


def stop(process: subprocess.Popen) -> None:
    """After Ctrl-C: the child got the terminal's SIGINT too and saves its state; give it that
    time, send SIGINT ourselves if the interrupt reached only the sweep, and kill it last."""
    try:
        process.wait(timeout=OWN_SIGINT_S)
        return
    except subprocess.TimeoutExpired:
        pass
    if hasattr(signal, "SIGINT") and os.name == "posix":
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ---------------------------------------------------------------- checks before any work

def generator_options(python: str, dataset: str) -> set[str]:
    """The options `python -m onepfrac.generate --dataset D` accepts, read from its --help
    (the generator is used only through its CLI)."""
    done = subprocess.run([python, "-m", "onepfrac.generate", "--dataset", dataset, "--help"],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise GridError(f"axes.dataset: {dataset!r} is not accepted by `python -m onepfrac.generate` "
                        f"here ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no output'})")
    return {m.replace("-", "_") for m in re.findall(r"--([a-z0-9][a-z0-9-]*)", done.stdout)}


def _hint(option: str, allowed) -> str:
    close = difflib.get_close_matches(option, sorted(allowed), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def preflight(grid: Grid, cells: list[Cell], out: Path, python: str) -> None:
    """Every check that does not need the grid alone: option names and values against the CLIs,
    and complete or half-done cells made with other options. Raises GridError."""
    trainer_options = {a.dest for a in build_parser()._actions} - {"help", "mode"}
    accepted = {}
    checked = set()
    for cell in cells:
        options = stage_options(grid, cell)
        if "generate" in options:
            dataset = cell.dataset
            if dataset not in accepted:
                accepted[dataset] = generator_options(python, dataset)
            for option, value in options["generate"].items():
                if option not in accepted[dataset]:
                    raise GridError(f"generator option {option!r} = {value!r} (cell {cell.name}) is not an "
                                    f"option of `python -m onepfrac.generate --dataset {dataset}`"
                                    f"{_hint(option, accepted[dataset])}")
        for stage in ("pretrain", "finetune"):
            if stage not in options:
                continue
            for option, value in options[stage].items():
                # checked here because argparse would take an abbreviation (--epoch) silently
                if option not in trainer_options:
                    raise GridError(f"trainer option {option!r} = {value!r} (cell {cell.name}) is not an "
                                    f"option of `python -m onepfrac.train {stage}`{_hint(option, trainer_options)}")
            argv = [stage, "--config", str(grid.recipes[stage]), *to_argv(options[stage]),
                    "--data-dir", "unused", "--output-dir", "unused"]
            if tuple(argv) in checked:
                continue
            checked.add(tuple(argv))
            try:
                parse_args(argv)
            except UsageError as error:
                raise GridError(f"{stage} options of cell {cell.name} (recipe {grid.recipes[stage].name}): "
                                f"{error}") from None
    for cell in cells:
        record = read_json(out / "cells" / cell.name / CELL_JSON)
        if record and record.get("fingerprint") != fingerprint(grid, cell):
            raise GridError(f"cell {cell.name}: {out / 'cells' / cell.name} was made with other options or "
                            f"recipes (status {record.get('status')}); use another --out, or delete that "
                            "cell's folder to run it again")


# ---------------------------------------------------------------- fine-tuning data

def finetune_args(grid: Grid, out: Path, python: str, say) -> list[str]:
    """Trainer options that point at the fine-tuning data, writing digits once if needed."""
    (kind, spec), = grid.finetune_data.items()
    if kind == "folder":
        return ["--dataset", "folder", "--data-dir", spec]
    if kind in ("cifar10", "cifar100"):
        return ["--dataset", kind, "--data-dir", spec]
    folder = out / "data" / f"digits_train{spec['train']}_size{spec['size']}_seed{spec['seed']}"
    if not ((folder / "train").is_dir() and (folder / "val").is_dir()):
        # written beside and renamed, so an interrupted write is never taken for finished data
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        say(f"writing digits to {folder}")
        argv = [python, "-m", "onepfrac.train.digits", str(partial), "--train", str(spec["train"]),
                "--size", str(spec["size"]), "--seed", str(spec["seed"])]
        log = out / "data" / "digits.log"
        if call(argv, log) != 0:
            raise RuntimeError(f"writing the digits failed:\n{tail(log)}")
        os.replace(partial, folder)
    return ["--dataset", "folder", "--data-dir", str(folder)]


# ---------------------------------------------------------------- one cell

def generated_folder(base: Path) -> Path | None:
    """The finished dataset under a cache folder (the generator writes manifest.json last)."""
    if not base.is_dir():
        return None
    done = [p for p in sorted(base.iterdir()) if (p / "manifest.json").is_file()]
    return done[0] if len(done) == 1 else None


def finetune_result(cell_dir: Path) -> dict:
    summary = read_json(cell_dir / "finetune" / "summary.json") or {}
    evaluated = [r for r in read_jsonl(cell_dir / "finetune" / "metrics.jsonl") if "val_acc1" in r]
    best_epoch = summary.get("best_epoch")
    at_best = next((r for r in evaluated if r["epoch"] == best_epoch), {})
    last = evaluated[-1] if evaluated else {}
    result = {"best_acc1": summary.get("best_acc1"), "best_epoch": best_epoch,
              "best_acc5": at_best.get("val_acc5"), "last_acc1": last.get("val_acc1"),
              "last_acc5": last.get("val_acc5")}
    pretrain = read_jsonl(cell_dir / "pretrain" / "metrics.jsonl")
    if pretrain:
        result["pretrain_loss"] = pretrain[-1].get("train_loss")
        result["pretrain_classes"] = (read_json(cell_dir / "pretrain" / "summary.json") or {}).get("num_classes")
    return result


STAGE_OUTPUT = {"pretrain": "pretrain/checkpoint_last.pth", "finetune": "finetune/summary.json"}


def run_cell(grid: Grid, cell: Cell, out: Path, python: str, ft_args: list[str], say) -> dict:
    """generate -> pre-train -> fine-tune -> record, skipping stages already complete. Returns
    the final record; raises KeyboardInterrupt after recording an interruption."""
    cell_dir = out / "cells" / cell.name
    cell_dir.mkdir(parents=True, exist_ok=True)
    path = cell_dir / CELL_JSON
    record = read_json(path) or {"cell": cell.name, "params": cell.params(), "grid": grid.name,
                                 "fingerprint": fingerprint(grid, cell), "stages": {}}
    record.update(status="running", reference=reference_for(grid, cell), error=None)
    write_json(path, record)
    stages = record["stages"]
    data_root = out / "data"
    data_dir = Path(stages["generate"]["data_dir"]) if stages.get("generate", {}).get("data_dir") else None
    try:
        for stage in ("generate", "pretrain", "finetune"):
            argv = commands(grid, cell, python, data_root, cell_dir, data_dir, ft_args).get(stage)
            if argv is None:
                continue
            state = stages.setdefault(stage, {"status": "pending", "wall_s": 0.0, "attempts": 0})
            done_file = cell_dir / STAGE_OUTPUT[stage] if stage in STAGE_OUTPUT else None
            if state["status"] == "complete" and (done_file is None or done_file.is_file()):
                continue
            if stage == "generate":
                base = Path(argv[argv.index("--base-savedir") + 1])
                data_dir = generated_folder(base)
                if data_dir is not None:  # another cell made it: shared, not regenerated
                    state.update(status="complete", argv=argv, data_dir=str(data_dir), cached=True)
                    write_json(path, record)
                    say(f"  generate: cached {data_dir}")
                    continue
            state.update(status="running", argv=argv, attempts=state["attempts"] + 1)
            write_json(path, record)
            say(f"  {stage} ...")
            start = time.monotonic()
            try:
                code = call(argv, cell_dir / f"{stage}.log")
            finally:
                state["wall_s"] = round(state["wall_s"] + time.monotonic() - start, 3)
            if stage == "generate" and code == 0:
                data_dir = generated_folder(Path(argv[argv.index("--base-savedir") + 1]))
                if data_dir is None:
                    code = -1
                state.update(data_dir=str(data_dir) if data_dir else None, cached=False)
            if code != 0:
                state["status"] = "failed"
                record.update(status="failed", error=f"{stage} exited with {code}:\n{tail(cell_dir / f'{stage}.log')}")
                write_json(path, record)
                say(f"  {stage} FAILED (exit {code}); see {cell_dir / f'{stage}.log'}")
                return record
            state["status"] = "complete"
            write_json(path, record)
            say(f"  {stage} done in {state['wall_s']:.1f} s")
    except KeyboardInterrupt:
        record["status"] = "interrupted"
        for state in stages.values():
            if state["status"] == "running":
                state["status"] = "interrupted"
        write_json(path, record)
        raise
    record.update(status="complete", result=finetune_result(cell_dir))
    write_json(path, record)
    return record


# ---------------------------------------------------------------- the sweep and its results

def run(grid: Grid, cells: list[Cell], out: Path, python: str = sys.executable, progress: bool = True) -> int:
    """Run every cell not yet complete; 0 when all are complete, 1 when some failed."""
    def say(message):
        if progress:
            print(message, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    # one sweep per folder: two would start the same trainings into the same cells; the kernel
    # releases a killed sweep's lock, so a rerun after kill -9 is never refused
    lock = filelock.FileLock(str(out / LOCK), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise SweepBusy(f"another sweep is running in {out}; wait for it or stop it") from None
    try:
        return _run_locked(grid, cells, out, python, say, progress)
    finally:
        lock.release()


def _run_locked(grid: Grid, cells: list[Cell], out: Path, python: str, say, progress: bool) -> int:
    if grid.path != (out / "grid.yaml").resolve():  # a record of what ran; never copied onto itself
        write_text(out / "grid.yaml", grid.path.read_text())
    todo = [c for c in cells if (read_json(out / "cells" / c.name / CELL_JSON) or {}).get("status") != "complete"]
    say(f"sweep {grid.name}: {len(cells)} cells, {len(cells) - len(todo)} already complete")
    failed = []
    if todo:
        ft_args = finetune_args(grid, out, python, say)
        for i, cell in enumerate(todo, 1):
            say(f"[{i}/{len(todo)}] {cell.name}")
            start = time.monotonic()
            record = run_cell(grid, cell, out, python, ft_args, say)
            if record["status"] != "complete":
                failed.append(cell.name)
            else:
                r = record["result"]
                say(f"  top-1 best {results.pm((r['best_acc1'], None))}, last {results.pm((r['last_acc1'], None))} "
                    f"({time.monotonic() - start:.1f} s)")
    aggregate(out, progress)
    if failed:
        print(f"{len(failed)} cell(s) failed: {', '.join(failed)}; run the same command again to retry them",
              file=sys.stderr)
        return 1
    return 0


def aggregate(out: Path, progress: bool = True) -> list[dict]:
    """results.csv, results.md and figure/top1.png from the cell.json files alone (the plot only
    where matplotlib is installed: the tables never depend on it)."""
    records = [read_json(p) for p in sorted((out / "cells").glob(f"*/{CELL_JSON}"))]
    records = [r for r in records if r]
    if not records:
        raise GridError(f"aggregate: no {CELL_JSON} under {out / 'cells'}")
    rows = [results.row(r) for r in records]
    names = sorted({r.get("grid", "sweep") for r in records})
    title = f"Sweep {', '.join(names)}"
    write_text(out / "results.csv", results.csv_text(rows))
    write_text(out / "results.md", results.markdown(rows, title))
    written = [out / "results.md", out / "results.csv"]
    if plots.available():
        (out / "figure").mkdir(exist_ok=True)
        plots.save(results.figure(rows, title), out / "figure" / "top1.png")
        written.append(out / "figure" / "top1.png")
    elif progress:
        print(f"no plot: matplotlib is not installed; {plots.INSTALL}, then run "
              f"`python -m onepfrac.sweep aggregate {out}`")
    if progress:
        print(f"results: {', '.join(map(str, written))}")
    return rows
