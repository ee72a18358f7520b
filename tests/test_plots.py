"""Plots made with matplotlib: `python -m onepfrac.figures curves` and the sweep's top1.png."""

import json
import sys

import pytest

from onepfrac import figures, plots
from onepfrac.sweep import results, runner

PNG = b"\x89PNG\r\n\x1a\n"
# matplotlib is optional for users (the [plots] extra); these tests draw with it
needs_matplotlib = pytest.mark.skipif(not plots.available(), reason="needs matplotlib")


def write_run(folder, epochs=4, evaluate_every=2, loss=2.0):
    folder.mkdir(parents=True)
    lines = []
    for epoch in range(1, epochs + 1):
        record = {"epoch": epoch, "train_loss": loss / epoch, "lr": 1e-3 * (1 - epoch / (epochs + 1)),
                  "images_per_s": 1000.0}
        if epoch % evaluate_every == 0:
            record.update(val_acc1=10.0 * epoch, val_acc5=20.0 * epoch, val_loss=1.0 / epoch)
        lines.append(json.dumps(record))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000


@needs_matplotlib
def test_curves_of_two_runs_are_one_png_with_a_line_per_run_in_each_panel(tmp_path, capsys):
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", epochs=6, loss=3.0)
    out = tmp_path / "plots" / "curves.png"
    assert figures.main(["curves", str(a), str(b), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert_png(out)
    assert not list(out.parent.glob("*.tmp"))
    figure = figures.curves_figure([("a", figures.read_run(a)), ("b", figures.read_run(b))])
    panels = figure.axes
    assert [ax.get_title() for ax in panels] == ["training loss", "learning rate", "validation top-1 (%)"]
    assert [len(line.get_xdata()) for line in panels[0].lines] == [4, 6]
    assert [list(line.get_xdata()) for line in panels[2].lines] == [[2, 4], [2, 4, 6]]
    assert [t.get_text() for t in panels[0].get_legend().get_texts()] == ["a", "b"]


def test_runs_with_the_same_folder_name_are_told_apart_by_their_path(tmp_path):
    runs = [write_run(tmp_path / "x" / "finetune"), write_run(tmp_path / "y" / "finetune")]
    assert figures.run_labels(runs) == [str(runs[0]), str(runs[1])]


@needs_matplotlib
def test_curves_also_draw_as_pdf_and_svg(tmp_path):
    run = write_run(tmp_path / "a")
    for name in ("c.pdf", "c.svg"):
        assert figures.main(["curves", str(run), "--out", str(tmp_path / name)]) == 0
    assert (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")
    assert b"<svg" in (tmp_path / "c.svg").read_bytes()


@needs_matplotlib
def test_a_folder_without_metrics_is_one_line_and_nothing_is_written(tmp_path, capsys):
    good, empty = write_run(tmp_path / "a"), tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "curves.png"
    assert figures.main(["curves", str(good), str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"python -m onepfrac.figures: error: {empty}: no metrics.jsonl there; give the "
                   "--output-dir of a training run that finished at least one epoch"]
    assert not out.exists()


@needs_matplotlib
def test_a_metrics_line_that_is_not_a_record_is_one_line_naming_it(tmp_path, capsys):
    run = write_run(tmp_path / "a")
    with (run / "metrics.jsonl").open("a") as file:
        file.write("not json\n")
    assert figures.main(["curves", str(run), "--out", str(tmp_path / "c.png")]) == 2
    assert "metrics.jsonl: line 5 is not a record of onepfrac.train" in capsys.readouterr().err


@needs_matplotlib
@pytest.mark.parametrize("name, message", [("c.gif", ".gif is not an image format; use .png, .pdf or .svg"),
                                           ("folder", "is a folder; give a file name")])
def test_a_bad_out_is_one_line(tmp_path, capsys, name, message):
    (tmp_path / "folder").mkdir()
    run = write_run(tmp_path / "a")
    assert figures.main(["curves", str(run), "--out", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "--out" in err[0]


def test_curves_without_matplotlib_is_one_line_saying_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    run = write_run(tmp_path / "a")
    assert figures.main(["curves", str(run), "--out", str(tmp_path / "c.png")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "python -m onepfrac.figures: error: curves: matplotlib is not installed; install it with "
        "`pip install matplotlib`"]


def sweep_row(cell, dataset, seed, acc, status="complete", delta=None):
    return {"cell": cell, "dataset": dataset, "delta": delta, "sigma": None, "L": None, "seed": seed,
            "status": status, "best_acc1": acc, "last_acc1": acc, "best_acc5": acc, "pretrain_loss": None,
            "wall_total_s": 60.0, "paper_top1": None, "paper_source": None}


@needs_matplotlib
def test_the_sweep_plot_shows_each_seed_and_the_mean_with_its_std():
    rows = [sweep_row("s0", "scratch", 0, 40.0), sweep_row("s1", "scratch", 1, 44.0),
            sweep_row("p0", "1p-frac", 0, 60.0, delta=0.1), sweep_row("p1", "1p-frac", 1, 64.0, delta=0.1),
            sweep_row("p2", "1p-frac", 2, None, status="failed", delta=0.1)]
    figure = results.figure(rows, "test")
    (ax,) = figure.axes
    from matplotlib.collections import PathCollection

    dots = [c.get_offsets().tolist() for c in ax.collections if isinstance(c, PathCollection)]
    seeds = [point for group in dots for point in group]
    below = results.SEED_OFFSET
    assert sorted(seeds) == [[40.0, below], [44.0, below], [60.0, 1 + below], [64.0, 1 + below]]
    assert [label.get_text() for label in ax.get_yticklabels()] == ["scratch (n=2)", "1p-frac δ=0.1 (n=2)"]
    assert {text.get_text() for text in ax.texts} == {"42.00 ± 2.83", "62.00 ± 2.83"}
    assert plots.render(figure).startswith(PNG)
    assert plots.render(figure) == plots.render(results.figure(rows, "test"))  # no time stamp inside


def test_the_sweep_writes_its_tables_without_matplotlib_and_says_the_plot_is_missing(tmp_path, capsys, monkeypatch):
    record = {"cell": "scratch_seed0", "params": {"dataset": "scratch", "seed": 0}, "status": "complete",
              "result": {"best_acc1": 41.23456789, "last_acc1": 40.0}}
    (tmp_path / "cells" / "scratch_seed0").mkdir(parents=True)
    (tmp_path / "cells" / "scratch_seed0" / "cell.json").write_text(json.dumps(record))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    runner.aggregate(tmp_path)
    assert "no plot: matplotlib is not installed" in capsys.readouterr().out
    assert "| 41.23 |" in (tmp_path / "results.md").read_text()
    assert ",41.23," in (tmp_path / "results.csv").read_text()
    assert not (tmp_path / "figure" / "top1.png").exists()
