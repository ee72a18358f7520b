"""Issue 17 for the trainer: nothing silently wrong, nothing lost.

Bad numbers and YAML values refused before any data is decoded, unknown timm names, run folders
that hold a run or are in use, args.yaml, finished and shortened resumes, signals during a
checkpoint save, file modes, and the drivers' launch checks. Each case checks the exit code, a
single `error:` line naming the option or file, and that nothing was written, lost or left
running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import LIGHT_RECIPE, REPO, TINY_MODEL, snapshot, train_env
from onepfrac.train import checkpoint, cli, options, run_folder
from onepfrac.train import trainer as trainer_module

PRETRAIN = REPO / "train" / "pre-training.sh"
FINETUNE = REPO / "train" / "finetune.sh"
SUBPROCESS_TIMEOUT = 300


def main(argv, capsys):
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, *needles: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


def tiny(data_dir, out, *extra):
    return ["pretrain", "--data-dir", data_dir, *TINY_MODEL, *LIGHT_RECIPE, "--batch-size", "4",
            "--output-dir", out, *extra]


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def files_with_times(folder: Path) -> dict:
    return snapshot(folder, with_mtimes=True)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, train_fractal):
    """A tiny pre-training that ran all of its 2 epochs."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main([str(a) for a in tiny(train_fractal, out, "--epochs", "2")]) == 0
    return out


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, train_fractal):
    """A tiny pre-training of 2 epochs stopped after 1 (--stop-after), to be resumed."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    assert cli.main([str(a) for a in tiny(train_fractal, out, "--epochs", "2", "--stop-after", "1")]) == 0
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


# ---------------------------------------------------------------- numbers that make no sense

@pytest.mark.parametrize("argv, option", [
    (["--clip-grad", "-1"], "--clip-grad: -1.0"),
    (["--lr", "inf"], "--lr: inf"),
    (["--lr", "nan"], "--lr: nan"),
    (["--std", "0", "0", "0"], "--std: [0.0, 0.0, 0.0]"),
    (["--momentum", "nan"], "--momentum: nan"),
    (["--momentum", "1.5"], "--momentum: 1.5"),
    (["--ratio", "1", "inf"], "--ratio: [1.0, inf]"),
    (["--mean", "nan", "0", "0"], "--mean: [nan, 0.0, 0.0]"),
    (["--weight-decay=-inf"], "--weight-decay: -inf"),
    (["--opt-eps", "0"], "--opt-eps: 0.0"),
    (["--seed", "-1"], "--seed: -1"),
    (["--memory-limit-gb", "nan"], "--memory-limit-gb: nan"),
    (["--model-ema-decay", "2"], "--model-ema-decay: 2.0"),
    (["--color-jitter", "-0.5"], "--color-jitter: -0.5"),
    (["--eval-batch-size", "0"], "--eval-batch-size: 0"),
    (["--warmup-lr", "inf"], "--warmup-lr: inf"),
])
def test_senseless_numbers_are_refused_before_anything_is_read_or_written(tmp_path, capsys, argv, option):
    out = tmp_path / "out"
    code, _, err = main(["pretrain", "--data-dir", tmp_path / "absent", "--output-dir", out, *argv], capsys)
    assert code == 2
    one_error_line(err, option, "is not allowed")
    assert not out.exists()


def test_clip_grad_zero_means_no_clipping():
    args = options.parse_args(["pretrain", "--data-dir", "x", "--clip-grad", "0"])
    assert args.clip_grad is None
    assert options.parse_args(["pretrain", "--data-dir", "x", "--clip-grad", "1.5"]).clip_grad == 1.5


# ---------------------------------------------------------------- YAML configs

@pytest.mark.parametrize("line, key", [
    ("batch_size: true", "batch_size: True (bool)"),
    ("epochs: 2.5", "epochs: 2.5 (float)"),
    ("lr: fast", "lr: 'fast' (str)"),
    ("hflip: '0.5'", "hflip: '0.5' (str)"),
    ("scale: [0.5]", "scale: [0.5]"),
    ("mean: [a, b, c]", "mean: ['a', 'b', 'c']"),
    ("model: 5", "model: 5 (int)"),
    ("progress: 'yes'", "progress: 'yes'"),
    ("model_kwargs: 5", "model_kwargs: 5"),
    ("epochs: null", "epochs: None"),
    ("mixup_chunk: 1/0", "mixup_chunk: '1/0'"),
])
def test_config_values_of_the_wrong_type_are_refused_naming_key_and_file(tmp_path, capsys, line, key):
    config = tmp_path / "bad.yaml"
    config.write_text(line + "\n")
    code, _, err = main(["pretrain", "-c", config, "--data-dir", tmp_path, "--output-dir", tmp_path / "o"], capsys)
    assert code == 2
    one_error_line(err, f"--config {config}: {key}", "is not allowed; expected")
    assert not (tmp_path / "o").exists()


def test_config_exponent_written_without_a_dot_is_the_number(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("lr: 1e-3\nmodel_kwargs: [depth=2]\n")  # YAML 1.1 reads 1e-3 as a string
    args = options.parse_args(["pretrain", "-c", str(config), "--data-dir", "x"])
    assert args.lr == 1e-3 and args.model_kwargs == {"depth": 2}


def test_config_syntax_error_is_one_line_with_file_line_and_column(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("lr: 0.1\nepochs: [1, 2\nseed: 3\n")
    code, _, err = main(["pretrain", "-c", config, "--data-dir", tmp_path], capsys)
    assert code == 2
    one_error_line(err, f"--config {config}: line ", ", column ", "not valid YAML")


def test_config_may_not_hold_overwrite(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("overwrite: true\n")
    code, _, err = main(["pretrain", "-c", config, "--data-dir", tmp_path], capsys)
    assert code == 2
    one_error_line(err, "unknown key 'overwrite'")


# ---------------------------------------------------------------- timm names and the model

@pytest.mark.parametrize("argv, message", [
    (["--opt", "adamx"], "--opt: 'adamx' is not allowed"),
    (["--sched", "cosin"], "--sched: 'cosin' is not allowed"),
    (["--sched", "none"], "--sched: 'none' is not allowed"),
    (["--model", "vit_tiniest_patch16"], "--model: 'vit_tiniest_patch16' is not a timm model"),
    (["--model-kwargs", "embed_dim=30", "num_heads=4"], "--model-kwargs: vit_tiny_patch16_224 rejects embed_dim=30 num_heads=4"),
    (["--model-kwargs", "no_such_option=1"], "--model-kwargs: vit_tiny_patch16_224 rejects no_such_option=1"),
])
def test_unknown_timm_names_and_rejected_model_kwargs_are_refused_before_the_data(tmp_path, capsys, argv, message):
    # --data-dir is missing: the refusal names the option, so it came before any data was looked at
    code, _, err = main(tiny(tmp_path / "absent", tmp_path / "o", *argv), capsys)
    assert code == 2
    one_error_line(err, message)
    assert not (tmp_path / "o").exists()


def test_the_model_check_builds_on_the_meta_device_cheaply():
    from onepfrac.train.build import check_model

    args = options.parse_args(["pretrain", "--data-dir", "x", "--model", "vit_base_patch16_224"])
    check_model(args)  # warm
    start = time.perf_counter()
    check_model(args)
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------- run folders

def test_output_dir_that_is_a_file_is_refused(tmp_path, capsys, train_fractal):
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    for out in (target, target / "sub"):
        code, _, err = main(tiny(train_fractal, out, "--epochs", "1"), capsys)
        assert code == 2
        one_error_line(err, "--output-dir", "results.txt", "is a file")
    assert target.read_text() == "keep me\n"


def test_rerun_without_resume_is_refused_and_nothing_changes(tmp_path, capsys, finished_run, train_fractal):
    run = copy_of(finished_run, tmp_path)
    before = files_with_times(run)
    code, _, err = main(tiny(train_fractal, run, "--epochs", "2"), capsys)
    assert code == 2
    one_error_line(err, f"--output-dir: {str(run)!r} already holds a run", "--resume auto", "--overwrite")
    assert files_with_times(run) == before


def test_overwrite_starts_afresh_and_removes_the_previous_runs_files(tmp_path, capsys, finished_run, train_fractal):
    run = copy_of(finished_run, tmp_path)
    (run / "notes.txt").write_text("mine\n")
    old_checkpoint = next(run.glob("*_002ep.pth"))
    code, _, err = main(tiny(train_fractal, run, "--epochs", "1", "--overwrite"), capsys)
    assert code == 0, err
    assert not old_checkpoint.exists() and next(run.glob("*_001ep.pth")).is_file()
    assert [line for line in (run / "metrics.jsonl").read_text().splitlines() if line] != []
    assert torch.load(run / checkpoint.LAST, weights_only=False)["epoch"] == 1
    assert (run / "notes.txt").read_text() == "mine\n"  # not the trainer's file: kept


def test_overwrite_with_resume_is_refused(tmp_path, capsys, train_fractal):
    code, _, err = main(tiny(train_fractal, tmp_path / "o", "--overwrite", "--resume", "auto"), capsys)
    assert code == 2
    one_error_line(err, "--overwrite", "--resume auto")


def test_overwrite_that_fails_its_checks_loses_nothing(tmp_path, capsys, finished_run):
    run = copy_of(finished_run, tmp_path)
    before = files_with_times(run)
    code, _, err = main(tiny(tmp_path / "absent", run, "--epochs", "1", "--overwrite"), capsys)
    assert code == 2 and "Traceback" not in err
    assert files_with_times(run) == before


def test_a_folder_in_use_refuses_a_second_trainer(tmp_path, capsys, stopped_run, train_fractal):
    run = copy_of(stopped_run, tmp_path)
    lock = run_folder.RunLock(run).acquire()  # as a first trainer holds it
    try:
        before = files_with_times(run)
        code, _, err = main(tiny(train_fractal, run, "--epochs", "2", "--resume", "auto"), capsys)
        assert code == 2
        one_error_line(err, f"--output-dir: {str(run)!r} is in use by another trainer")
        assert files_with_times(run) == before
    finally:
        lock.release()


def test_the_lock_is_released_when_a_run_ends(tmp_path, finished_run):
    run_folder.RunLock(finished_run).acquire().release()


def test_args_yaml_round_trip_repeats_the_run(tmp_path, capsys, finished_run, train_fractal):
    recorded = yaml.safe_load((finished_run / run_folder.ARGS).read_text())
    assert not list(finished_run.glob(".args.yaml.*"))
    again = options.parse_args(["pretrain", "-c", str(finished_run / run_folder.ARGS)])
    assert run_folder.recorded_options(again) == recorded
    stored = torch.load(finished_run / checkpoint.LAST, weights_only=False)["args"]
    assert all(stored[key] == again.__dict__[key] for key in ("lr", "model_kwargs", "batch_size", "seed"))
    # the recorded folder holds the run: repeating it there is refused, elsewhere it runs
    code, _, err = main(["pretrain", "-c", finished_run / run_folder.ARGS], capsys)
    assert code == 2 and "already holds a run" in err
    code, _, err = main(["pretrain", "-c", finished_run / run_folder.ARGS, "--output-dir", tmp_path / "again"], capsys)
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "again" / run_folder.ARGS).read_text()) == {
        **recorded, "output_dir": str(tmp_path / "again")}


# ---------------------------------------------------------------- resuming

def test_resuming_a_finished_run_says_so_and_touches_nothing(tmp_path, capsys, finished_run, train_fractal):
    run = copy_of(finished_run, tmp_path)
    before = files_with_times(run)
    code, out, err = main(tiny(train_fractal, run, "--epochs", "2", "--resume", "auto"), capsys)
    assert code == 0 and err == ""
    assert "already finished its 2 epochs; nothing to do" in out
    assert files_with_times(run) == before


@pytest.mark.parametrize("epochs", ["1", "5"])
def test_resuming_with_other_epochs_is_refused_naming_both(tmp_path, capsys, finished_run, train_fractal, epochs):
    run = copy_of(finished_run, tmp_path)
    before = files_with_times(run)
    code, _, err = main(tiny(train_fractal, run, "--epochs", epochs, "--resume", "auto"), capsys)
    assert code == 2
    one_error_line(err, f"--epochs {epochs} does not match the 2 epochs of the run", "2 done")
    assert files_with_times(run) == before


def test_resume_sweeps_stale_temporary_files_and_keeps_others(tmp_path, capsys, stopped_run, train_fractal):
    run = copy_of(stopped_run, tmp_path)
    stale = run / ".checkpoint_last.pth.a1b2c3d4e5f6.tmp"
    stale.write_bytes(b"half a checkpoint")
    mine = run / ".notes.tmp"
    mine.write_text("mine\n")
    code, _, err = main(tiny(train_fractal, run, "--epochs", "2", "--resume", "auto"), capsys)
    assert code == 0, err
    assert not stale.exists() and mine.read_text() == "mine\n"
    assert torch.load(run / checkpoint.LAST, weights_only=False)["epoch"] == 2


# ---------------------------------------------------------------- checkpoint files

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        checkpoint.save_checkpoint(tmp_path / "c.pth", {"epoch": 1})
        checkpoint.atomic_write_text(tmp_path / "a.yaml", "x: 1\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "c.pth").stat().st_mode & 0o777 == mode
    assert (tmp_path / "a.yaml").stat().st_mode & 0o777 == mode
    assert temporaries(tmp_path) == []


def test_an_exception_during_a_save_leaves_no_temporary_file(tmp_path):
    def fail(stream):
        stream.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_write(tmp_path / "c.pth", fail)
    assert list(tmp_path.iterdir()) == []


def test_the_sigterm_handler_is_restored_after_a_run(tmp_path, train_fractal):
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main([str(a) for a in tiny(tmp_path / "absent", tmp_path / "o", "--epochs", "1")]) == 2
    assert signal.getsignal(signal.SIGTERM) is before
    assert trainer_module.Terminated.__mro__[1] is BaseException  # not caught by `except Exception`


# ---------------------------------------------------------------- --check-only and the drivers

def test_check_only_passes_good_options_and_writes_nothing(tmp_path, capsys, train_fractal):
    code, out, err = main(tiny(train_fractal, tmp_path / "o", "--check-only"), capsys)
    assert (code, out, err) == (0, "", "")
    assert not (tmp_path / "o").exists()


def test_check_only_refuses_a_folder_holding_a_run_and_a_missing_data_dir(tmp_path, capsys, finished_run, train_fractal):
    code, _, err = main(tiny(train_fractal, finished_run, "--epochs", "2", "--check-only"), capsys)
    assert code == 2
    one_error_line(err, "already holds a run")
    code, _, err = main(tiny(tmp_path / "absent", tmp_path / "o", "--check-only"), capsys)
    assert code == 2
    one_error_line(err, "--data-dir", "absent", "does not exist")


@pytest.mark.parametrize("config, batch, chunk", [
    ("pretrain_1p-frac_vit_tiny.yaml", "4", 0),
    ("finetune_cifar100_vit_tiny.yaml", "32", 0),
    ("finetune_imagenet1k_vit_base.yaml", "32", 16),
    ("pretrain_1p-frac_vit_base_21k.yaml", "64", 0),
])
def test_released_configs_take_any_even_batch(config, batch, chunk):
    mode = "finetune" if config.startswith("finetune") else "pretrain"
    args = options.parse_args([mode, "-c", str(REPO / "train" / "configs" / config), "--data-dir", "x",
                               "--batch-size", batch])
    assert args.batch_size == int(batch) and args.mixup_chunk == chunk


def test_a_chunk_the_user_sets_can_still_be_refused(capsys, tmp_path):
    config = str(REPO / "train" / "configs" / "pretrain_1p-frac_vit_tiny.yaml")
    code, _, err = main(["pretrain", "-c", config, "--data-dir", tmp_path, "--batch-size", "4",
                         "--mixup-chunk", "32"], capsys)
    assert code == 2
    one_error_line(err, "--mixup-chunk: 32")
    code, _, err = main(["pretrain", "--data-dir", tmp_path, "--batch-size", "32", "--mixup-chunk", "1/3"], capsys)
    assert code == 2
    one_error_line(err, "--batch-size: 32", "--mixup-chunk 1/3")


def run_driver(script, cwd, **variables):
    env = {**train_env(), "PYTHON": sys.executable, **{k: str(v) for k, v in variables.items()}}
    return subprocess.run(["bash", str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("variables, message", [
    (dict(NGPUS="0"), "NGPUS=0 is not allowed"),
    (dict(NGPUS="abc"), "NGPUS=abc is not allowed"),
    (dict(NGPUS="08"), "NGPUS=08 is not allowed"),
    (dict(NGPUS="2", NPERNODE="x"), "NPERNODE=x is not allowed"),
    (dict(NGPUS="2"), "NGPUS=2 is not allowed with LAUNCHER=none"),
])
def test_driver_refuses_a_bad_process_count_in_one_line(tmp_path, variables, message):
    result = run_driver(PRETRAIN, tmp_path, OUTPUT_DIR=tmp_path / "o", **variables)
    assert result.returncode == 2
    one_error_line(result.stderr, message)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # the driver starts the trainer's check in a subprocess
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script, variables", [
    (PRETRAIN, dict(BATCH_SIZE=4)),
    (FINETUNE, dict(BATCH_SIZE=32, DATASET_NAME="images")),
])
def test_drivers_take_a_batch_other_than_the_released_one(tmp_path, script, variables):
    data = tmp_path / "data"
    (data / "sigma3.5_perturb0.1_sample1000_seed0").mkdir(parents=True)
    (data / "images" / "train").mkdir(parents=True)
    result = run_driver(script, tmp_path, BASE_DATADIR=data, OUTPUT_DIR=tmp_path / "o",
                        EXTRA_ARGS="--check-only", **variables)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and not (tmp_path / "o").exists()


@pytest.mark.slow  # real torchrun
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bad_option_under_torchrun_is_reported_once_before_any_rank_starts(tmp_path, train_fractal):
    result = run_driver(PRETRAIN, tmp_path, LAUNCHER="torchrun", NGPUS=2, BASE_DATADIR=train_fractal.parent,
                        ONEPFRAC_NAME=train_fractal.name, OUTPUT_DIR=tmp_path / "o",
                        EXTRA_ARGS=" ".join(TINY_MODEL + LIGHT_RECIPE) + " --lr inf")
    assert result.returncode == 2
    assert result.stderr == "error: --lr: inf is not allowed; expected a finite number\n"
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # real torchrun, two ranks
def test_bad_option_under_a_bare_torchrun_is_printed_by_rank_0_only(tmp_path, train_fractal):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("needs torchrun")
    result = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "onepfrac.train",
                             *map(str, tiny(train_fractal, tmp_path / "o", "--momentum", "nan"))],
                            env=train_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode != 0
    assert result.stderr.count("error: --momentum: nan is not allowed") == 1
    assert not (tmp_path / "o").exists()


def test_option_errors_of_ranks_other_than_0_are_left_to_rank_0(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    code, _, err = main(["pretrain", "--data-dir", tmp_path, "--lr", "inf"], capsys)
    assert (code, err) == (2, "")
    monkeypatch.setenv("RANK", "0")
    code, _, err = main(["pretrain", "--data-dir", tmp_path, "--lr", "inf"], capsys)
    assert code == 2
    one_error_line(err, "--lr: inf")


# ---------------------------------------------------------------- real processes and signals

def start_trainer(argv, pause=None) -> subprocess.Popen:
    env = train_env()
    if pause is not None:
        env["ONEPFRAC_TEST_SAVE_PAUSE"] = str(pause)
    return subprocess.Popen([sys.executable, "-m", "onepfrac.train", *map(str, argv)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_temporary(proc: subprocess.Popen, folder: Path, timeout=240.0) -> Path:
    """Block until the trainer is in the middle of a save (its temporary file exists)."""
    deadline = time.monotonic() + timeout
    while True:
        found = temporaries(folder) if folder.is_dir() else []
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"the trainer ended before saving: {proc.communicate()}")
        assert time.monotonic() < deadline, "the trainer did not start saving in time"
        time.sleep(0.05)


@pytest.mark.slow  # real process, real signal
@pytest.mark.parametrize("signum, code, line", [
    (signal.SIGTERM, 143, "terminated (SIGTERM); resume with --resume auto"),
    (signal.SIGINT, 130, "interrupted; resume with --resume auto"),
])
def test_a_signal_during_a_checkpoint_save_leaves_no_temporary_file(tmp_path, train_fractal, signum, code, line):
    out = tmp_path / "run"
    proc = start_trainer(tiny(train_fractal, out, "--epochs", "1"), pause=120)
    try:
        wait_for_temporary(proc, out)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code
    assert err.strip().splitlines()[-1] == line and "Traceback" not in err
    assert temporaries(out) == []
    run_folder.RunLock(out).acquire().release()  # released


@pytest.mark.slow  # two real trainers
def test_a_second_real_trainer_is_refused_while_the_first_runs(tmp_path, train_fractal):
    out = tmp_path / "run"
    first = start_trainer(tiny(train_fractal, out, "--epochs", "1"), pause=120)
    try:
        wait_for_temporary(first, out)
        before = files_with_times(out)
        second = subprocess.run([sys.executable, "-m", "onepfrac.train",
                                 *map(str, tiny(train_fractal, out, "--epochs", "1", "--resume", "auto"))],
                                env=train_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
        assert second.returncode == 2
        one_error_line(second.stderr, f"--output-dir: {str(out)!r} is in use by another trainer")
        assert files_with_times(out) == before
        assert first.poll() is None  # the first one goes on
    finally:
        first.terminate()
        first.communicate(timeout=60)
    assert temporaries(out) == []


@pytest.mark.slow  # real process, kill -9
def test_kill_9_leaves_the_lock_releasable_and_the_next_run_sweeps_its_temporary(tmp_path, train_fractal):
    out = tmp_path / "run"
    proc = start_trainer(tiny(train_fractal, out, "--epochs", "1"), pause=120)
    try:
        left = wait_for_temporary(proc, out)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert left.exists()  # nothing can remove it at kill -9
    # the folder holds a run now (args.yaml): continue it; the lock went with the process
    result = subprocess.run([sys.executable, "-m", "onepfrac.train",
                             *map(str, tiny(train_fractal, out, "--epochs", "1", "--resume", "auto"))],
                            env=train_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert temporaries(out) == [] and (out / checkpoint.LAST).is_file()
