"""Epochs end without a host sync: losses wait on the device and are read, written and checked
for many epochs at once, with the same records as a run that reads every epoch."""

import sys
import types

import torch

from conftest import LIGHT_RECIPE, TINY_MODEL, poison_loss_from_call, read_metrics
from onepfrac.train import engine, metrics, trainer
from onepfrac.train.cli import main


def pretrain_args(data_dir, out, *extra):
    # 8 images in batches of 4: 2 steps an epoch, so many epochs stay cheap.
    return ["pretrain", "--data-dir", str(data_dir), *TINY_MODEL, *LIGHT_RECIPE, "--batch-size", "4",
            "--output-dir", str(out), *extra]


def untimed(records):
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def count_calls(monkeypatch, owner, name) -> list:
    calls = []
    real = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_records_are_the_same_whether_read_every_update_or_once_at_the_end(tmp_path, train_fractal):
    every, once = tmp_path / "every", tmp_path / "once"
    common = ["--epochs", "6", "--save-every", "100"]
    assert main(pretrain_args(train_fractal, every, *common, "--check-every", "1")) == 0
    assert main(pretrain_args(train_fractal, once, *common, "--check-every", "1000")) == 0
    records = read_metrics(once)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) and r["images_per_s"] > 0
               for r in records)
    assert untimed(records) == untimed(read_metrics(every))  # same losses, bit for bit
    a, b = weights(every / "checkpoint_last.pth"), weights(once / "checkpoint_last.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_many_short_epochs_are_resolved_in_a_few_host_syncs(tmp_path, train_fractal, monkeypatch):
    resolves = count_calls(monkeypatch, engine, "mean_losses")
    checks = count_calls(monkeypatch, engine, "stop_if_nonfinite")
    writes = count_calls(monkeypatch, metrics.MetricsLog, "write")
    out = tmp_path / "out"
    # 20 epochs of 2 steps; a resolve once 8 updates have passed (every 4 epochs), and at the end.
    assert main(pretrain_args(train_fractal, out, "--epochs", "20", "--save-every", "100",
                              "--check-every", "8")) == 0
    assert [r["epoch"] for r in read_metrics(out)] == list(range(1, 21))
    assert len(resolves) == len(writes) == 5
    assert len(checks) == 40 // 8  # counted in updates of the run, across epoch boundaries


def test_a_checkpoint_or_an_evaluation_resolves_the_epochs_before_it(tmp_path, train_fractal, digits_folder,
                                                                      monkeypatch):
    resolves = count_calls(monkeypatch, engine, "mean_losses")
    out = tmp_path / "pre"
    assert main(pretrain_args(train_fractal, out, "--epochs", "6", "--save-every", "3",
                              "--check-every", "1000")) == 0
    assert len(resolves) == 2 and (out / "vit_tiny_patch16_224_p4-d16x2-h2-16px_sigma3.5_perturb0.1_sample8_seed0_003ep.pth").is_file()
    resolves.clear()
    fine = tmp_path / "fine"
    assert main(["finetune", "--data-dir", str(digits_folder), *TINY_MODEL, *LIGHT_RECIPE, "--batch-size", "50",
                 "--epochs", "4", "--eval-every", "2", "--check-every", "1000", "--output-dir", str(fine)]) == 0
    records = read_metrics(fine)
    assert len(resolves) == 2
    assert [("val_acc1" in r) for r in records] == [False, True, False, True]


def test_a_run_stopped_and_resumed_between_resolves_matches_an_uninterrupted_one(tmp_path, train_fractal):
    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--epochs", "6", "--save-every", "100", "--check-every", "1000", "--mixup", "0.8"]
    assert main(pretrain_args(train_fractal, full, *common)) == 0
    assert main(pretrain_args(train_fractal, part, *common, "--stop-after", "4")) == 0
    assert [r["epoch"] for r in read_metrics(part)] == [1, 2, 3, 4]
    assert main(pretrain_args(train_fractal, part, *common, "--resume", "auto")) == 0
    a, b = weights(full / "checkpoint_last.pth"), weights(part / "checkpoint_last.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert untimed(read_metrics(full)) == untimed(read_metrics(part))


def test_a_nan_between_resolves_is_reported_at_its_epoch_with_the_records_before_it(tmp_path, train_fractal,
                                                                                   monkeypatch, capsys):
    poison_loss_from_call(monkeypatch, 5)  # 2 steps an epoch: NaN from epoch 3 on
    out = tmp_path / "out"
    code = main(pretrain_args(train_fractal, out, "--epochs", "6", "--save-every", "100",
                              "--check-every", "1000"))
    err = capsys.readouterr().err
    assert code == 3 and "not finite at epoch 3;" in err
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2]
    assert not (out / "checkpoint_last.pth").exists()  # no checkpoint was due before the NaN


def test_a_nan_caught_inside_an_epoch_names_the_first_bad_epoch_and_keeps_the_finished_records(
        tmp_path, train_fractal, monkeypatch, capsys):
    # Checks at updates 5 and 10, resolves after epochs 3 and 5: the NaN appears at update 7
    # (epoch 4); the check at update 10 (epoch 5) stops the run with epoch 4 still pending.
    poison_loss_from_call(monkeypatch, 7)
    out = tmp_path / "out"
    code = main(pretrain_args(train_fractal, out, "--epochs", "8", "--save-every", "100",
                              "--check-every", "5"))
    err = capsys.readouterr().err
    assert code == 3 and "not finite at epoch 4;" in err and "last good checkpoint" in err
    assert [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]


def test_one_progress_bar_counts_every_step_of_the_run(tmp_path, train_fractal, monkeypatch):
    bars = []
    real = trainer.progress_bar

    def recorded(*args, **kwargs):
        bar = real(*args, **kwargs)
        close = bar.close

        def closing():
            bar.steps_at_close = bar.n
            close()

        bar.close = closing
        bars.append((bar, kwargs))
        return bar

    monkeypatch.setattr(trainer, "progress_bar", recorded)
    assert main(pretrain_args(train_fractal, tmp_path / "a", "--epochs", "5", "--check-every", "4",
                              "--progress")) == 0
    assert len(bars) == 1 and bars[0][0].total == bars[0][0].steps_at_close == 10
    assert "loss=" in bars[0][0].postfix and "lr=" in bars[0][0].postfix
    assert main(pretrain_args(train_fractal, tmp_path / "b", "--epochs", "2")) == 0  # --no-progress
    assert len(bars) == 2 and bars[1][1]["enabled"] is False


def test_metrics_log_appends_pending_records_at_once_and_leaves_flushing_to_tensorboard(tmp_path, monkeypatch):
    events = []

    class SummaryWriter:
        def __init__(self, log_dir, flush_secs=120):
            events.append(("open", flush_secs))

        def add_scalar(self, key, value, step):
            events.append(("scalar", key, step))

        def flush(self):
            events.append(("flush",))

        def close(self):
            events.append(("close",))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    log = metrics.MetricsLog(tmp_path, enabled=True)
    log.write([{"epoch": 1, "train_loss": 2.0, "lr": 0.1}, {"epoch": 2, "train_loss": 1.5, "lr": 0.1}])
    log.write([{"epoch": 3, "train_loss": 1.0, "lr": 0.1, "val_acc1": 50.0}])
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert events[0][0] == "open" and events[0][1] <= 30  # its own thread flushes that often
    assert ("flush",) not in events
    assert ("scalar", "val_acc1", 3) in events and events[-1] == ("scalar", "val_acc1", 3)
    log.close()
    assert events[-1] == ("close",)
