"""What a person sees while work goes on: onepfrac.progress (a bar on a terminal, a plain line every
N seconds in a log) and the optional Weights & Biases records of a training run."""

import io
import subprocess
import sys
import time

import pytest
from tqdm import tqdm

from conftest import REPO
from onepfrac import progress as progress_module
from onepfrac.errors import UsageError
from onepfrac.progress import LineProgress, progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_plain_lines_at_the_interval_and_no_carriage_return(monkeypatch):
    monkeypatch.setenv("ONEPFRAC_PROGRESS_INTERVAL", "0.05")
    out = io.StringIO()
    bar = progress(total=6, desc="rendering", unit="class", file=out)
    assert isinstance(bar, LineProgress)
    for _ in range(6):
        time.sleep(0.06)
        bar.update()
    bar.set_postfix(loss="0.1234")
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) >= 4  # about one per update, and the last line at close
    assert lines[0].startswith("rendering: 1/6 class (17%)")
    assert lines[-1].startswith("rendering: 6/6 class (100%)") and "took" in lines[-1]
    assert "loss=0.1234" in lines[-1]


def test_a_short_loop_in_a_log_writes_nothing(monkeypatch):
    monkeypatch.setenv("ONEPFRAC_PROGRESS_INTERVAL", "30")
    out = io.StringIO()
    assert list(progress(range(100), desc="eval", file=out)) == list(range(100))
    assert out.getvalue() == ""


def test_iterating_wraps_the_iterable_and_counts_it(monkeypatch):
    monkeypatch.setenv("ONEPFRAC_PROGRESS_INTERVAL", "0.01")
    out = io.StringIO()

    def slow():
        for i in range(3):
            time.sleep(0.02)
            yield i

    assert list(progress(slow(), total=3, desc="eval", unit="batch", file=out)) == [0, 1, 2]
    assert out.getvalue().splitlines()[-1].startswith("eval: 3/3 batch (100%)")


def test_bytes_are_shown_scaled():
    out = io.StringIO()
    bar = LineProgress(total=4 * 1024**2, initial=1024**2, unit="B", unit_scale=True, every=0,
                       desc="model.pth", file=out)
    bar.update(1024**2)
    assert out.getvalue().startswith("model.pth: 2.00MB/4.00MB (50%), ")


def test_a_terminal_gets_tqdm_and_disabled_gets_silence():
    assert isinstance(progress(total=3, file=Terminal()), tqdm)
    out = io.StringIO()
    bar = progress(total=3, enabled=False, file=out)
    bar.update()
    bar.set_postfix(loss=1)
    bar.close()
    assert out.getvalue() == ""


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_interval_is_one_line_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("ONEPFRAC_PROGRESS_INTERVAL", value)
    with pytest.raises(UsageError, match=f"ONEPFRAC_PROGRESS_INTERVAL={value!r}: expected a number"):
        progress_module.interval()


def test_the_generator_writes_lines_not_carriage_returns_into_a_log(tmp_path):
    # stderr is a pipe here, as in Slurm or nohup
    command = [sys.executable, "-m", "onepfrac.generate", "--base-savedir", str(tmp_path),
               "--samples", "40", "--seed", "0", "--workers", "1", "--size", "64", "--points", "3000",
               "--pad", "2"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "ONEPFRAC_PROGRESS_INTERVAL": "0.000001",
                               "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    progress_lines = [line for line in done.stderr.splitlines() if "/40 class" in line or "/40 img" in line]
    assert len(progress_lines) >= 10
    assert "40/40" in progress_lines[-1]


def test_evaluation_reports_its_progress_in_a_log(monkeypatch, capsys):
    import torch

    from onepfrac.train import engine
    from onepfrac.train.distributed import Context

    monkeypatch.setenv("ONEPFRAC_PROGRESS_INTERVAL", "0.000001")
    loader = [(torch.randn(4, 3), torch.tensor([0, 1, 2, 0])) for _ in range(5)]
    context = Context("none", 0, 1, 0, torch.device("cpu"), None)
    result = engine.evaluate(torch.nn.Linear(3, 3), loader, context=context, num_classes=3, progress=True)
    assert result["samples"] == 20
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[-1].startswith("eval: 5/5 batch (100%)")


# ---------------------------------------------------------------- Weights & Biases (--log-wandb)

class FakeRun:
    def __init__(self, **init):
        self.init, self.logged, self.finished = init, [], False

    def log(self, values, step=None):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


def fake_wandb(monkeypatch) -> list:
    import types

    runs = []
    module = types.ModuleType("wandb")
    module.init = lambda **init: runs.append(FakeRun(**init)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", module)
    return runs


def wandb_pretrain(data_dir, out, *extra):
    from conftest import LIGHT_RECIPE, TINY_MODEL

    return ["pretrain", "--data-dir", str(data_dir), *TINY_MODEL, *LIGHT_RECIPE, "--batch-size", "4",
            "--epochs", "2", "--output-dir", str(out), "--no-progress", *extra]


def test_log_wandb_logs_the_scalars_of_metrics_jsonl_by_epoch(train_fractal, tmp_path, monkeypatch):
    from conftest import read_metrics
    from onepfrac.train.cli import main

    runs = fake_wandb(monkeypatch)
    out = tmp_path / "run"
    assert main(wandb_pretrain(train_fractal, out, "--log-wandb", "--wandb-project", "mine")) == 0
    (run,) = runs
    assert run.init["project"] == "mine" and run.init["name"] == "run"
    assert run.init["config"]["model"] and run.init["config"]["output_dir"] == str(out)
    records = read_metrics(out)
    assert [step for step, _ in run.logged] == [r["epoch"] for r in records] == [1, 2]
    assert [values for _, values in run.logged] == [{k: v for k, v in r.items() if k != "epoch"}
                                                    for r in records]
    assert run.finished


def test_log_wandb_without_wandb_is_one_line_before_any_work(train_fractal, tmp_path, monkeypatch, capsys):
    from onepfrac.train.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)  # an import of it raises ImportError
    out = tmp_path / "run"
    assert main(wandb_pretrain(train_fractal, out, "--log-wandb")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --log-wandb: the wandb package is not installed; install it with "
                   "`pip install wandb`, or leave out --log-wandb"]
    assert not out.exists()


def test_without_log_wandb_wandb_is_never_imported(train_fractal, tmp_path, monkeypatch):
    from onepfrac.train.cli import main

    runs = fake_wandb(monkeypatch)
    assert main(wandb_pretrain(train_fractal, tmp_path / "run")) == 0
    assert runs == []
