"""The sweep driver: grids -> cells, an interrupted sweep that resumes without redoing finished
work, aggregation of known cell results into mean ± std, and grid mistakes caught before work."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, snapshot
from onepfrac.sweep import cli, results, runner
from onepfrac.sweep.grid import GridError, load_grid
from onepfrac.sweep.stages import stage_options

RECIPES = {"pretrain": str(REPO / "train/configs/pretrain_cpu.yaml"),
           "finetune": str(REPO / "train/configs/finetune_cpu_digits.yaml")}
# A ViT whose steps take milliseconds, two epochs a stage, 8 classes of 64-px fractals.
TINY_GRID = {
    "name": "tiny", **RECIPES,
    "finetune_data": {"digits": {"train": 100, "size": 16, "seed": 0}},
    "options": {
        "trainer": {"img_size": 16, "model_kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2},
                    "workers": 0, "amp": "none", "device": "cpu"},
        "pretrain": {"epochs": 2, "repeats": 1, "batch_size": 4, "warmup_epochs": 1, "save_every": 1},
        "finetune": {"epochs": 2, "batch_size": 10, "warmup_epochs": 1, "eval_every": 1, "save_every": 1},
        "generate": {"1p-frac": {"size": 64, "points": 3000, "pad": 2, "workers": 1}},
    },
    "axes": {"dataset": ["scratch", "1p-frac"], "delta": [0.1], "L": [8], "seed": [0]},
    "reference": [{"dataset": "1p-frac", "delta": 0.1, "top1": 84.2, "source": "upstream README"}],
}
ONEPFRAC = "1p-frac_delta0.1_sigma3.5_L8_seed0"


def write_grid(path: Path, grid: dict) -> Path:
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def grid_with(tmp_path, **changes) -> Path:
    return write_grid(tmp_path / "grid.yaml", {**TINY_GRID, **changes})


# ---------------------------------------------------------------- end to end, interrupted and resumed

@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The tiny grid run in-process twice: the first run is interrupted (as by Ctrl-C) after the
    1p-frac cell's pre-training finished 1 of its 2 epochs; the second run resumes it. Every
    process the sweep starts is recorded."""
    base = tmp_path_factory.mktemp("sweep")
    grid, out = write_grid(base / "grid.yaml", TINY_GRID), base / "out"
    real_call = runner.call
    calls = {"first": [], "second": []}
    run = "first"

    def recording_call(argv, log):
        calls[run].append((Path(log).parent.name, Path(log).stem))
        if run == "first" and Path(log).stem == "pretrain":
            code = real_call([*argv, "--stop-after", "1"], log)  # leaves the epoch-1 checkpoint
            assert code == 0
            raise KeyboardInterrupt
        return real_call(argv, log)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setattr(runner, "call", recording_call)
        first = cli.main([str(grid), "--out", str(out), "--no-progress"])
        after_first = snapshot(out / "cells", with_mtimes=True)
        run = "second"
        second = cli.main([str(grid), "--out", str(out), "--no-progress"])
    return dict(grid=grid, out=out, calls=calls, codes=(first, second), after_first=after_first)


@pytest.mark.slow  # runs a whole sweep (the `swept` fixture)
def test_an_interrupted_sweep_records_the_interruption_and_exits_130(swept):
    assert swept["codes"][0] == 130
    first = json.loads(swept["after_first"][f"{ONEPFRAC}/cell.json"][0])
    assert first["status"] == "interrupted"
    assert first["stages"]["generate"]["status"] == "complete"
    assert first["stages"]["pretrain"]["status"] == "interrupted"
    assert json.loads(swept["after_first"]["scratch_seed0/cell.json"][0])["status"] == "complete"


def errors(out: Path) -> str:
    """The recorded errors of failed cells, to show why a run did not complete."""
    records = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*/cell.json"))]
    return "\n".join(f"{r['cell']}: {r.get('error')}" for r in records if r.get("error"))


@pytest.mark.slow  # runs a whole sweep (the `swept` fixture)
def test_resuming_runs_only_the_unfinished_stages_and_continues_the_interrupted_training(swept):
    assert swept["codes"][1] == 0, errors(swept["out"])
    assert swept["calls"]["first"] == [("data", "digits"),
                                       ("scratch_seed0", "finetune"), (ONEPFRAC, "generate"), (ONEPFRAC, "pretrain")]
    assert swept["calls"]["second"] == [(ONEPFRAC, "pretrain"), (ONEPFRAC, "finetune")]
    cells = swept["out"] / "cells"
    assert "resuming after epoch 1" in (cells / ONEPFRAC / "pretrain.log").read_text()
    # the complete scratch cell was not touched: same bytes, same modification times
    now = snapshot(cells / "scratch_seed0", with_mtimes=True)
    assert now == {k.split("/", 1)[1]: v for k, v in swept["after_first"].items() if k.startswith("scratch_seed0/")}
    record = json.loads((cells / ONEPFRAC / "cell.json").read_text())
    assert record["stages"]["pretrain"]["attempts"] == 2


@pytest.mark.slow  # runs a whole sweep (the `swept` fixture)
def test_a_complete_cell_records_parameters_stage_times_and_its_result(swept):
    record = json.loads((swept["out"] / "cells" / ONEPFRAC / "cell.json").read_text())
    assert record["status"] == "complete"
    assert record["params"] == {"dataset": "1p-frac", "delta": 0.1, "sigma": 3.5, "L": 8, "seed": 0}
    assert all(record["stages"][s]["wall_s"] > 0 for s in ("generate", "pretrain", "finetune"))
    result = record["result"]
    assert 0 <= result["best_acc1"] <= result["best_acc5"] <= 100
    assert result["best_acc1"] >= result["last_acc1"] and result["pretrain_classes"] == 8
    assert record["reference"] == {"top1": 84.2, "source": "upstream README"}
    metrics = [json.loads(l) for l in (swept["out"] / "cells" / ONEPFRAC / "finetune/metrics.jsonl").read_text().splitlines()]
    assert result["best_acc1"] == max(m["val_acc1"] for m in metrics)


@pytest.mark.slow  # runs a whole sweep (the `swept` fixture)
def test_the_sweep_writes_csv_markdown_and_png_results(swept):
    out = swept["out"]
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith("scratch_seed0,scratch,")
    table = (out / "results.md").read_text()
    assert "| scratch | – | – | – | 1 |" in table and "| 1p-frac | 0.1 | 3.5 | 8 | 1 |" in table
    assert "84.2 [1]" in table and "[1] upstream README" in table
    plot = (out / "figure" / "top1.png").read_bytes()
    assert plot.startswith(b"\x89PNG\r\n\x1a\n") and len(plot) > 5000


@pytest.mark.slow  # runs a whole sweep (the `swept` fixture)
def test_running_a_complete_sweep_again_starts_nothing_and_changes_no_cell(swept):
    before = snapshot(swept["out"] / "cells", with_mtimes=True)
    done = subprocess.run([sys.executable, "-m", "onepfrac.sweep", str(swept["grid"]), "--out", str(swept["out"])],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "2 cells, 2 already complete" in done.stdout
    assert snapshot(swept["out"] / "cells", with_mtimes=True) == before


@pytest.mark.slow  # runs a whole sweep (the `swept` fixture)
def test_aggregate_redoes_the_results_from_cell_json_alone(swept, tmp_path):
    copy = tmp_path / "copy"
    for cell in ("scratch_seed0", ONEPFRAC):
        (copy / "cells" / cell).mkdir(parents=True)
        (copy / "cells" / cell / "cell.json").write_bytes((swept["out"] / "cells" / cell / "cell.json").read_bytes())
    done = subprocess.run([sys.executable, "-m", "onepfrac.sweep", "aggregate", str(copy)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    for name in ("results.csv", "results.md", "figure/top1.png"):
        assert (copy / name).read_bytes() == (swept["out"] / name).read_bytes()


@pytest.mark.slow  # runs a whole sweep (the `swept` fixture)
def test_a_cell_made_with_other_options_is_refused_before_any_work(swept, tmp_path, capsys):
    changed = {**TINY_GRID, "options": {**TINY_GRID["options"], "finetune": {**TINY_GRID["options"]["finetune"], "epochs": 3}}}
    grid = write_grid(tmp_path / "changed.yaml", changed)
    before = snapshot(swept["out"], with_mtimes=True)
    assert cli.main([str(grid), "--out", str(swept["out"])]) == 2
    assert "made with other options" in capsys.readouterr().err
    assert snapshot(swept["out"], with_mtimes=True) == before


# ---------------------------------------------------------------- aggregation of known results

def record(dataset, seed, best, delta=None, L=None, status="complete", reference=None, wall=60.0):
    sigma = 3.5 if dataset == "1p-frac" else None
    params = {"dataset": dataset, "delta": delta, "sigma": sigma, "L": L, "seed": seed}
    name = "_".join([dataset, *([f"delta{delta}"] if delta else []), f"seed{seed}"])
    return {"cell": name, "params": params, "status": status, "reference": reference,
            "stages": {"finetune": {"wall_s": wall}},
            "result": {"best_acc1": best, "best_acc5": best + 10, "last_acc1": best - 1, "last_acc5": best + 9,
                       "best_epoch": 5, "pretrain_loss": 0.5 if dataset != "scratch" else None}
            if status == "complete" else None}


KNOWN = [record("scratch", s, b) for s, b in enumerate([40.0, 42.0, 44.0])] + \
        [record("1p-frac", s, b, 0.1, 16, reference={"top1": 84.2, "source": "README"}) for s, b in enumerate([60.0, 64.0])] + \
        [record("1p-frac", 0, 20.0, 0.01, 16), record("1p-frac", 1, None, 0.01, 16, status="failed")]


def test_mean_and_sample_std_over_seeds_and_a_single_seed_has_no_std():
    assert results.mean_std([40.0, 42.0, 44.0]) == (42.0, 2.0)
    mean, std = results.mean_std([60.0, 64.0])
    assert mean == 62.0 and std == pytest.approx(math.sqrt(8))
    assert results.mean_std([20.0]) == (20.0, None) and results.mean_std([]) == (None, None)


def test_the_table_averages_complete_cells_per_setting_with_scratch_first_and_lists_the_rest():
    table = results.markdown([results.row(r) for r in KNOWN], "known")
    lines = [l for l in table.splitlines() if l.startswith("| ") and "---" not in l][1:]
    assert lines[0].startswith("| scratch | – | – | – | 3 | 42.00 ± 2.00 | 41.00 ± 2.00 | 52.00 ± 2.00 |")
    assert lines[1].startswith("| 1p-frac | 0.01 | 3.5 | 16 | 1 | 20.00 | 19.00 | 30.00 |")
    assert lines[2].startswith("| 1p-frac | 0.1 | 3.5 | 16 | 2 | 62.00 ± 2.83 | 61.00 ± 2.83 |")
    assert lines[2].endswith("| 84.2 [1] |") and "[1] README" in table
    assert "| 1.0 ± 0.0 |" in lines[0]  # minutes per cell
    assert "Not complete (1 of 7 cells" in table and "1p-frac_delta0.01_seed1 (failed)" in table


def test_aggregate_writes_one_csv_row_per_cell_from_hand_written_records(tmp_path):
    for r in KNOWN:
        (tmp_path / "cells" / r["cell"]).mkdir(parents=True)
        (tmp_path / "cells" / r["cell"] / "cell.json").write_text(json.dumps(r))
    runner.aggregate(tmp_path, progress=False)
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert len(lines) == 1 + len(KNOWN)
    assert lines[1].split(",")[:7] == ["scratch_seed0", "scratch", "", "", "", "0", "complete"]
    assert "62.00 ± 2.83" in (tmp_path / "results.md").read_text()
    plot = (tmp_path / "figure" / "top1.png").read_bytes()
    assert plot.startswith(b"\x89PNG\r\n\x1a\n") and len(plot) > 5000


# ---------------------------------------------------------------- grids: expansion and mistakes

def test_axes_that_do_not_apply_to_a_dataset_do_not_multiply_its_cells(tmp_path):
    grid = load_grid(grid_with(tmp_path, axes={"dataset": ["scratch", "fractaldb", "1p-frac"],
                                               "delta": [0.01, 0.1], "L": [16, 64], "seed": [0, 1]}))
    names = [c.name for c in grid.cells]
    assert names.count("scratch_seed0") == 1 and len([n for n in names if n.startswith("scratch")]) == 2
    assert "fractaldb_L16_seed1" in names and len([n for n in names if n.startswith("fractaldb")]) == 4
    assert "1p-frac_delta0.01_sigma3.5_L64_seed1" in names and len([n for n in names if n.startswith("1p-frac")]) == 8


def test_exclude_removes_and_include_adds_sub_grids(tmp_path):
    grid = load_grid(grid_with(tmp_path, axes={"dataset": ["scratch", "1p-frac"], "delta": [0.01, 0.1], "L": [16], "seed": [0]},
                               exclude=[{"dataset": "1p-frac", "delta": 0.01}],
                               include=[{"dataset": "1p-frac", "L": 1000, "delta": [0.05, 0.2]}]))
    assert [c.name for c in grid.cells] == ["scratch_seed0", "1p-frac_delta0.1_sigma3.5_L16_seed0",
                                            "1p-frac_delta0.05_sigma3.5_L1000_seed0", "1p-frac_delta0.2_sigma3.5_L1000_seed0"]


def test_per_axis_options_reach_only_the_cells_with_that_value_and_the_seed_axis_sets_seeds(tmp_path):
    grid = load_grid(grid_with(tmp_path, axes={"dataset": ["1p-frac"], "L": [16, 1000], "seed": [3]},
                               axis_options={"L": {1000: {"pretrain": {"repeats": 1}, "generate": {"points": 100}}}},
                               seed_applies_to=["pretrain", "finetune"]))
    small, large = grid.cells
    assert stage_options(grid, small)["pretrain"]["repeats"] == 1 and stage_options(grid, small)["generate"]["points"] == 3000
    assert stage_options(grid, large)["generate"] == {"size": 64, "points": 100, "pad": 2, "workers": 1, "dataset": "1p-frac",
                                                      "delta": 0.1, "sigma": 3.5, "samples": 1000}
    assert stage_options(grid, large)["pretrain"]["seed"] == 3 and "seed" not in stage_options(grid, large)["generate"]


@pytest.mark.parametrize("changes, message", [
    ({"axis": {"dataset": ["scratch"]}}, "unknown key 'axis' (did you mean axes?)"),
    ({"axes": {"dataset": ["fractaldbb"]}}, "axes.dataset: 'fractaldbb' is not allowed; expected one of 1p-frac"),
    ({"axes": {"dataset": ["1p-frac"], "delta": [1.5]}}, "axes.delta: 1.5 is not allowed; expected a perturbation size in [0, 1)"),
    ({"axes": {"L": [16.5]}}, "axes.L: 16.5 is not allowed; expected an integer"),
    ({"axes": {"sigmaa": [3.5]}}, "axes: unknown key 'sigmaa' (did you mean sigma?)"),
    ({"pretrain": "configs/nowhere.yaml"}, "pretrain: 'configs/nowhere.yaml' is not a file"),
    ({"finetune_data": {"digit": {}}}, "finetune_data: unknown key 'digit' (did you mean digits?)"),
    ({"exclude": [{"datset": "scratch"}]}, "exclude[0]: unknown axis 'datset' (did you mean dataset?)"),
    ({"options": {"pretrain": {"data_dir": "x"}}}, "options.pretrain.data_dir: 'x' is not allowed; the sweep sets"),
    ({"options": {"generate": {"1p-frac": {"samples": 3}}}}, "options.generate.samples: 3 is not allowed; the sweep sets"),
    ({"seed_applies_to": ["pretraining"]}, "seed_applies_to: 'pretraining' is not allowed"),
])
def test_grid_mistakes_name_the_key_the_value_and_what_is_allowed(tmp_path, changes, message):
    with pytest.raises(GridError) as error:
        load_grid(grid_with(tmp_path, **changes))
    assert message in str(error.value)


@pytest.mark.parametrize("options, message", [
    ({"pretrain": {"epoch": 2}}, "trainer option 'epoch' = 2 (cell 1p-frac_delta0.1_sigma3.5_L8_seed0) is not an option of `python -m onepfrac.train pretrain` (did you mean epochs"),
    ({"finetune": {"batch_size": 0}}, "--batch-size: 0 is not allowed; expected an integer >= 1"),
    ({"generate": {"1p-frac": {"point": 100}}}, "generator option 'point' = 100 (cell 1p-frac_delta0.1_sigma3.5_L8_seed0) is not an option"),
])
def test_option_mistakes_are_caught_by_the_cli_before_any_work(tmp_path, capsys, options, message):
    merged = {group: {**TINY_GRID["options"][group], **options.get(group, {})} for group in TINY_GRID["options"]}
    grid, out = grid_with(tmp_path, options=merged), tmp_path / "out"
    assert cli.main([str(grid), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists()


def test_only_names_cells_and_an_unknown_one_has_close_matches(tmp_path, capsys):
    assert cli.main([str(grid_with(tmp_path)), "--out", str(tmp_path / "o"), "--dry-run", "--only", "scratch_seed0"]) == 0
    printed = capsys.readouterr().out
    assert "scratch_seed0  [not started]" in printed and ONEPFRAC not in printed
    assert cli.main([str(grid_with(tmp_path)), "--out", str(tmp_path / "o"), "--only", "scratch_seed1"]) == 2
    assert "did you mean scratch_seed0" in capsys.readouterr().err


def test_every_grid_in_train_grids_is_valid():
    grids = sorted((REPO / "train" / "grids").glob("*.yaml"))
    assert grids
    for path in grids:
        try:
            assert load_grid(path).cells, path
        except GridError as error:  # released-recipe grids need CIFAR, which cannot ship here
            assert "_released" in path.name and "finetune_data.cifar100" in str(error), error


def test_a_failing_stage_fails_its_cell_with_the_log_tail_and_the_next_run_retries_it(tmp_path, monkeypatch, capsys):
    data = tmp_path / "ft"
    (data / "train").mkdir(parents=True), (data / "val").mkdir()
    grid = grid_with(tmp_path, finetune_data={"folder": str(data)}, axes={"dataset": ["scratch"], "seed": [0, 1]})
    out, failing = tmp_path / "out", {"scratch_seed1"}

    def fake_trainer(argv, log):  # stands in for `python -m onepfrac.train finetune`
        cell = Path(log).parent.name
        Path(log).write_text(f"training {cell}\n" + ("boom: out of memory\n" if cell in failing else ""))
        if cell in failing:
            return 3
        target = Path(argv[argv.index("--output-dir") + 1])
        target.mkdir(parents=True)
        (target / "summary.json").write_text(json.dumps({"best_acc1": 50.0, "best_epoch": 2}))
        (target / "metrics.jsonl").write_text('{"epoch": 1, "val_acc1": 40.0, "val_acc5": 80.0}\n'
                                              '{"epoch": 2, "val_acc1": 50.0, "val_acc5": 90.0}\n')
        return 0

    monkeypatch.setattr(runner, "call", fake_trainer)
    assert cli.main([str(grid), "--out", str(out), "--no-progress"]) == 1
    assert "1 cell(s) failed: scratch_seed1" in capsys.readouterr().err
    record = json.loads((out / "cells" / "scratch_seed1" / "cell.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("finetune exited with 3")
    assert "boom: out of memory" in record["error"]
    assert "scratch_seed1 (failed)" in (out / "results.md").read_text()
    failing.clear()
    assert cli.main([str(grid), "--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "cells" / "scratch_seed1" / "cell.json").read_text())
    assert record["status"] == "complete" and record["stages"]["finetune"]["attempts"] == 2
    assert record["result"]["best_acc5"] == 90.0 and record["result"]["last_acc1"] == 50.0
    assert "| scratch | – | – | – | 2 | 50.00 ± 0.00 |" in (out / "results.md").read_text()
