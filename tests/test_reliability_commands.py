"""Nothing silently wrong, nothing lost: every command other than the trainer, tried as a
demanding user would. Each case checks the exit code, one line on stderr naming the option or
file (never a traceback), and that nothing was written, lost or left running."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import filelock
import pytest
import yaml
from PIL import Image

from conftest import (REPO, SLOW, SLOW_NAME, TINY, dataset_dir, interrupt_in_process, run_cli, run_main,
                      snapshot, tiny_args, wait_for_classes, is_root)
from onepfrac import generate, weights
from onepfrac.sweep import cli as sweep_cli

TIMEOUT = 120
PYTHON = sys.executable


# ---------------------------------------------------------------- helpers

def run_module(module: str, *args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=TIMEOUT, env=env, cwd=cwd)


def assert_one_line(result, code: int, *words: str) -> str:
    """Exit `code`, exactly one line on stderr holding every word, no traceback; the line."""
    stderr = result.stderr if hasattr(result, "stderr") else result[2]
    returncode = result.returncode if hasattr(result, "returncode") else result[0]
    assert returncode == code, (returncode, stderr)
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def processes_mentioning(marker: str) -> list[int]:
    """Live processes whose command line holds `marker` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue  # ended while we looked
    return found


def wait_until_gone(marker: str, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def pngs(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*.png")}


linux_only = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="looks for processes in /proc")


@pytest.fixture
def finished(tmp_path, capsys) -> Path:
    """A complete tiny dataset under tmp_path/base."""
    assert run_main(tiny_args(tmp_path / "base", 4), capsys)[0] == 0
    return dataset_dir(tmp_path / "base", samples=4)


def interrupted(tmp_path, capsys, monkeypatch, samples=6, after=2) -> Path:
    """A tiny dataset stopped by Ctrl-C after `after` classes (manifest.partial.jsonl present)."""
    assert interrupt_in_process(tiny_args(tmp_path / "base", samples), capsys, monkeypatch, after=after)[0] == 130
    return dataset_dir(tmp_path / "base", samples=samples)


# ---------------------------------------------------------------- generate: bad input, before any work

@pytest.mark.parametrize("image", ["not-an-image.png", "missing.png", "folder"])
def test_generate_real_image_that_is_not_an_image_is_one_line_and_writes_nothing(tmp_path, image):
    (tmp_path / "not-an-image.png").write_text("this is text, not pixels\n")
    (tmp_path / "folder").mkdir()
    result = run_cli(["--dataset", "real-image", "--image", tmp_path / image, "--classes", 2, "--size", 32,
                      "--base-savedir", tmp_path / "out", "--no-progress"])
    assert_one_line(result, 2, "--image", image)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value", [("--workers", "-1"), ("--workers", "abc"), ("--png-compression", "12"),
                                           ("--samples", "-3"), ("--seed", "abc"), ("--size", "-5")])
def test_generate_bad_numbers_are_one_line_naming_the_option(tmp_path, option, value):
    args = tiny_args(tmp_path / "out", 3)
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    assert_one_line(run_cli(args), 2, option, value)
    assert not (tmp_path / "out").exists()


def test_generate_base_savedir_that_is_a_file_or_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("mine\n")
    assert_one_line(run_cli(tiny_args(tmp_path / "afile", 2)), 2, "--base-savedir", "is a file")
    assert_one_line(run_cli(tiny_args(tmp_path / "afile" / "sub", 2)), 2, "--base-savedir", "is a file")
    assert (tmp_path / "afile").read_text() == "mine\n"


@pytest.mark.skipif(is_root() or os.name != "posix", reason="root writes anywhere")
def test_generate_unwritable_base_savedir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_one_line(run_cli(tiny_args(locked / "data", 2)), 2, "--base-savedir", "not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------- generate: damaged files on a rerun

@pytest.mark.parametrize("damage", [b'{"arguments": {"size": 6', b"", b"[1, 2]\n", b"\xff\xfe garbage"])
def test_generate_damaged_manifest_is_named_with_how_to_recover_and_left_alone(finished, damage):
    (finished / generate.MANIFEST).write_bytes(damage)
    before = snapshot(finished, with_mtimes=True)
    line = assert_one_line(run_cli(tiny_args(finished.parent, 4)), 2, str(finished / generate.MANIFEST), "delete")
    assert str(finished) in line
    assert snapshot(finished, with_mtimes=True) == before


@pytest.mark.parametrize("line_number", [1, 3])
def test_generate_garbled_partial_manifest_is_named_and_nothing_is_overwritten(tmp_path, capsys, monkeypatch, line_number):
    root = interrupted(tmp_path, capsys, monkeypatch, samples=6, after=3)
    lines = (root / generate.PARTIAL).read_bytes().split(b"\n")
    lines[line_number - 1] = b"#!garbled" + lines[line_number - 1][9:]
    (root / generate.PARTIAL).write_bytes(b"\n".join(lines))
    before = snapshot(root, with_mtimes=True)
    assert_one_line(run_cli(tiny_args(tmp_path / "base", 6)), 2, generate.PARTIAL, f"line {line_number}", "delete")
    assert snapshot(root, with_mtimes=True) == before


# ---------------------------------------------------------------- generate: a disk that refuses writes

def failing_open(monkeypatch, error_number: int, after: int, suffix=".png.tmp"):
    """generate's open(): the (after+1)-th file ending in `suffix` is created, then its write fails."""
    opened = []

    def fake(path, mode="r", *args, **kwargs):
        stream = open(path, mode, *args, **kwargs)
        if str(path).endswith(suffix) and "w" in mode:
            opened.append(path)
            if len(opened) > after:
                stream.close()
                raise OSError(error_number, os.strerror(error_number), str(path))
        return stream

    monkeypatch.setattr(generate, "open", fake, raising=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_generate_full_disk_is_one_line_leaves_no_temporary_file_and_the_rerun_completes(tmp_path, capsys, monkeypatch, workers):
    reference = tmp_path / "reference"
    assert run_main(tiny_args(reference, 6), capsys)[0] == 0
    base = tmp_path / "base"
    with monkeypatch.context() as patch:
        failing_open(patch, errno.ENOSPC, after=2)
        code, out, err = run_main(tiny_args(base, 6, 0, workers=workers), capsys)
    root = dataset_dir(base, samples=6)
    line = assert_one_line((code, out, err), 1, "no space left on device writing", str(root),
                           "free space or choose another --base-savedir")
    assert line.startswith("python -m onepfrac.generate: error: ")
    assert out == ""
    assert list(base.rglob("*.tmp")) == [] and not (root / generate.MANIFEST).exists()
    for path in root.rglob("*.png"):  # whatever is there is whole
        with Image.open(path) as image:
            image.load()
    assert run_main(tiny_args(base, 6), capsys)[0] == 0
    assert snapshot(root) == snapshot(dataset_dir(reference, samples=6))


@pytest.mark.parametrize("error_number, words", [(errno.EROFS, "read-only file system writing"),
                                                 (errno.EDQUOT, "disk quota exceeded writing"),
                                                 (errno.EACCES, "permission denied writing")])
def test_generate_other_refused_writes_are_named(tmp_path, capsys, monkeypatch, error_number, words):
    failing_open(monkeypatch, error_number, after=0)
    assert_one_line(run_main(tiny_args(tmp_path, 3), capsys), 1, words, "--base-savedir")
    assert list(tmp_path.rglob("*.tmp")) == []


def test_generate_full_disk_while_logging_a_class_leaves_no_half_record(tmp_path, capsys, monkeypatch):
    real = generate.Progress._append
    calls = []

    class HalfWriter:  # the disk fills after the first bytes of a record
        def __init__(self, stream):
            self.stream = stream

        def write(self, data):
            self.stream.write(data[:9])
            self.stream.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.stream, name)

    def append(self, record):
        calls.append(1)
        if len(calls) != 3:  # the header and one class go in; the disk fills on the next
            return real(self, record)
        self.file = HalfWriter(self.file)
        try:
            return real(self, record)
        finally:
            self.file = self.file.stream

    with monkeypatch.context() as patch:
        patch.setattr(generate.Progress, "_append", append)
        assert_one_line(run_main(tiny_args(tmp_path, 4), capsys), 1, "no space left on device", generate.PARTIAL)
    log = (dataset_dir(tmp_path, samples=4) / generate.PARTIAL).read_bytes()
    assert log.endswith(b"\n") and log.count(b"\n") == 2  # header and one class, nothing cut
    assert run_main(tiny_args(tmp_path, 4), capsys)[0] == 0


# ---------------------------------------------------------------- generate: the lock

def test_generate_lock_of_a_killed_process_does_not_block_the_rerun(tmp_path, capsys, monkeypatch):
    root = interrupted(tmp_path, capsys, monkeypatch, samples=5, after=2)
    holder = subprocess.Popen([PYTHON, "-c", "import filelock, sys, time\n"
                               f"lock = filelock.FileLock({str(root / generate.LOCK)!r}, timeout=0)\nlock.acquire()\n"
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert_one_line(run_cli(tiny_args(tmp_path / "base", 5)), 2, "another process is generating", str(root))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    result = run_cli(tiny_args(tmp_path / "base", 5))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in root.iterdir()) == ["00000", "00001", "00002", "00003", "00004", "manifest.json"]


def test_generate_does_not_import_fcntl():
    source = (REPO / "onepfrac" / "generate.py").read_text()
    assert "import fcntl" not in source and "import filelock" in source  # Windows has no fcntl


# ---------------------------------------------------------------- generate: kill -9 and Ctrl-C

def slow_args(base, workers=2):
    args = ["--base-savedir", str(base), *SLOW]
    args[args.index("--workers") + 1] = str(workers)
    return args


def start_generator(base, workers, fallback=False) -> subprocess.Popen:
    """The SLOW generator in the background; `fallback` disables prctl to exercise the portable path."""
    code = ("import sys\n"
            + ("import onepfrac.lifetime as lifetime; lifetime._PRCTL = None\n" if fallback else "")
            + f"from onepfrac.generate import main\nsys.exit(main({slow_args(base, workers)!r}))")
    return subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@linux_only
@pytest.mark.slow  # real processes and signals
@pytest.mark.parametrize("fallback", [False, True], ids=["pdeathsig", "watching-parent"])
def test_generate_sigkill_takes_the_workers_with_it_and_an_immediate_rerun_matches(tmp_path, slow_reference, fallback):
    root = tmp_path / SLOW_NAME
    proc = start_generator(tmp_path, 2, fallback)
    try:
        wait_for_classes(proc, root / generate.PARTIAL, 5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        _, err = proc.communicate(timeout=30)  # the workers share this pipe: it closes when they are gone
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_until_gone(str(tmp_path)) == []
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    written = pngs(root)
    time.sleep(1.0)
    assert pngs(root) == written  # nothing writes any more
    result = run_cli(slow_args(tmp_path))  # at once: the lock died with its holders
    assert result.returncode == 0, result.stderr
    assert snapshot(root) == slow_reference


# ---------------------------------------------------------------- sweep

RECIPES = {"pretrain": str(REPO / "train/configs/pretrain_cpu.yaml"),
           "finetune": str(REPO / "train/configs/finetune_cpu_digits.yaml")}
GRID = {
    "name": "reliability", **RECIPES,
    "finetune_data": {"digits": {"train": 100, "size": 16, "seed": 0}},
    "options": {
        "trainer": {"img_size": 16, "model_kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2},
                    "workers": 0, "amp": "none", "device": "cpu"},
        "pretrain": {"epochs": 1, "repeats": 1, "batch_size": 8, "warmup_epochs": 1},
        "finetune": {"epochs": 2, "batch_size": 10, "warmup_epochs": 1, "eval_every": 1},
        "generate": {"1p-frac": {"size": 128, "points": 2000000, "pad": 2, "workers": 2}},
    },
    "axes": {"dataset": ["1p-frac"], "delta": [0.1], "L": [60], "seed": [0]},
}


def write_grid(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**GRID, **changes}, sort_keys=False))
    return path


def run_sweep(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([PYTHON, "-m", "onepfrac.sweep", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


def test_sweep_yaml_syntax_error_names_file_line_and_column(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: x\naxes: {dataset: [1p-frac\npretrain: a.yaml\n")
    assert_one_line(run_sweep(grid, "--out", tmp_path / "out"), 2, str(grid), "line 3, column 9", "not valid YAML")
    assert not (tmp_path / "out").exists()


def test_sweep_grid_with_an_unknown_key_is_one_line(tmp_path):
    grid = write_grid(tmp_path / "grid.yaml", axis={"dataset": ["scratch"]})
    assert_one_line(run_sweep(grid, "--out", tmp_path / "out"), 2, "unknown key 'axis'", "did you mean axes")
    assert not (tmp_path / "out").exists()


def test_sweep_missing_grid_file(tmp_path):
    assert_one_line(run_sweep(tmp_path / "nowhere.yaml", "--out", tmp_path / "out"), 2, "nowhere.yaml", "not a file")


def test_sweep_out_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("mine\n")
    grid = write_grid(tmp_path / "grid.yaml", axes={"dataset": ["scratch"], "seed": [0]})
    assert_one_line(run_sweep(grid, "--out", tmp_path / "afile"), 2, "--out", "is a file")
    assert_one_line(run_sweep(grid, "--out", tmp_path / "afile" / "sub"), 2, "--out", "is a file")
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_sweep_bad_trainer_option_in_every_cell_is_reported_once(tmp_path):
    options = {**GRID["options"], "finetune": {**GRID["options"]["finetune"], "batch_size": 0}}
    grid = write_grid(tmp_path / "grid.yaml", options=options, axes={"dataset": ["scratch"], "seed": [0, 1, 2]})
    assert_one_line(run_sweep(grid, "--out", tmp_path / "out"), 2, "--batch-size", "0")
    assert not (tmp_path / "out").exists()


def test_sweep_aggregate_of_a_folder_without_cells(tmp_path):
    assert_one_line(run_sweep("aggregate", tmp_path / "empty"), 2, "aggregate", "cell.json")
    assert not (tmp_path / "empty").exists()


def test_second_sweep_on_the_same_out_is_refused_before_any_cell(tmp_path):
    grid = write_grid(tmp_path / "grid.yaml", axes={"dataset": ["scratch"], "seed": [0]})
    out = tmp_path / "out"
    out.mkdir()
    with filelock.FileLock(str(out / ".sweep.lock"), timeout=0):  # as a running sweep holds it
        assert_one_line(run_sweep(grid, "--out", out, "--no-progress"), 1, "another sweep is running", str(out))
    assert sorted(p.name for p in out.iterdir()) == [".sweep.lock"]


def test_sweep_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    grid = write_grid(tmp_path / "grid.yaml", axes={"dataset": ["scratch"], "seed": [0]})

    real = Path.write_text

    def full(self, text, *args, **kwargs):
        if tmp_path / "out" in self.parents:  # half the text lands, then the disk is full
            real(self, text[:len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    code = sweep_cli.main([str(grid), "--out", str(tmp_path / "out"), "--no-progress"])
    assert_one_line((code, "", capsys.readouterr().err), 1, "No space left on device writing", "grid.yaml", "--out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".sweep.lock"]  # no half grid.yaml, no .tmp


def guard_script(tmp_path, fallback: bool) -> str:
    """A stand-in sweep: runner.call starts a long child, whose pid goes to child.pid."""
    child = f"import os, time; open({str(tmp_path / 'child.pid')!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    return ("import sys\n"
            + ("import onepfrac.lifetime as lifetime; lifetime._PRCTL = None\n" if fallback else "")
            + "from pathlib import Path\nfrom onepfrac.sweep import runner\n"
            f"runner.call([sys.executable, '-c', {child!r}, {str(tmp_path)!r}], Path({str(tmp_path / 'log')!r}))\n")


@linux_only
@pytest.mark.slow  # real processes and signals
@pytest.mark.parametrize("fallback", [False, True], ids=["pdeathsig", "guard-process"])
def test_sweep_child_dies_with_a_killed_sweep(tmp_path, fallback):
    sweep = subprocess.Popen([PYTHON, "-c", guard_script(tmp_path, fallback)], cwd=REPO)
    deadline = time.monotonic() + 60
    while not (tmp_path / "child.pid").exists():
        assert time.monotonic() < deadline and sweep.poll() is None
        time.sleep(0.05)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    assert wait_until_gone(str(tmp_path)) == []


def swept_data(out: Path) -> Path | None:
    found = list(out.glob(f"data/*/{SLOW_NAME}"))
    return found[0] if found else None


@linux_only
@pytest.mark.slow  # a whole sweep, killed in its generator, then rerun
def test_sweep_sigkill_during_generation_stops_generator_and_workers_and_the_rerun_completes(tmp_path, slow_reference):
    grid, out = write_grid(tmp_path / "grid.yaml"), tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen([PYTHON, "-m", "onepfrac.sweep", str(grid), "--out", str(out), "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while (root := swept_data(out)) is None or not (root / generate.PARTIAL).exists():
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
            time.sleep(0.05)
        wait_for_classes(sweep, root / generate.PARTIAL, 5)
        assert len(processes_mentioning(str(out / "data"))) == 3  # the generator and its two workers
        sweep.send_signal(signal.SIGKILL)
        sweep.wait(timeout=30)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert wait_until_gone(str(tmp_path)) == []
    written = pngs(root)
    time.sleep(1.0)
    assert pngs(root) == written
    result = run_sweep(grid, "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in (out / "cells").joinpath(f"1p-frac_delta0.1_sigma3.5_L60_seed0", "generate.log").read_text()
    assert snapshot(root) == slow_reference
    record = json.loads((out / "cells" / "1p-frac_delta0.1_sigma3.5_L60_seed0" / "cell.json").read_text())
    assert record["status"] == "complete"


@linux_only
@pytest.mark.slow  # a sweep killed in its trainer, then rerun
def test_sweep_sigkill_during_training_stops_the_trainer_and_the_rerun_completes(tmp_path):
    options = {**GRID["options"], "finetune": {**GRID["options"]["finetune"], "epochs": 4}}
    grid, out = write_grid(tmp_path / "grid.yaml", options=options, axes={"dataset": ["scratch"], "seed": [0]}), tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen([PYTHON, "-m", "onepfrac.sweep", str(grid), "--out", str(out), "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not [p for p in processes_mentioning(str(out)) if p != sweep.pid
                   and b"onepfrac.train" in Path(f"/proc/{p}/cmdline").read_bytes()]:
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
            time.sleep(0.05)
        time.sleep(1.0)
        sweep.send_signal(signal.SIGKILL)
        sweep.wait(timeout=30)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert wait_until_gone(str(tmp_path)) == []
    result = run_sweep(grid, "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "cells" / "scratch_seed0" / "cell.json").read_text())["status"] == "complete"


# ---------------------------------------------------------------- weights

def test_weights_download_of_an_unknown_name_names_the_command_not_ckpt(tmp_path):
    line = assert_one_line(run_module("onepfrac.weights", "download", "bogus", "--cache-dir", tmp_path / "c"), 2,
                           "download 'bogus'", "weights list")
    assert "--ckpt" not in line
    assert not (tmp_path / "c").exists()


def test_weights_download_cache_dir_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("mine\n")
    assert_one_line(run_module("onepfrac.weights", "download", "1p-frac-vit-tiny-delta0.1", "--cache-dir",
                               tmp_path / "afile"), 2, "--cache-dir", "is a file")
    env = {**os.environ, "ONEPFRAC_CACHE": str(tmp_path / "afile" / "sub")}
    assert_one_line(run_module("onepfrac.weights", "download", "1p-frac-vit-tiny-delta0.1", env=env), 2,
                    "$ONEPFRAC_CACHE", "is a file")
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_weights_verify_of_a_missing_file(tmp_path):
    assert_one_line(run_module("onepfrac.weights", "verify", "1p-frac-vit-tiny-delta0.1", "--cache-dir", tmp_path),
                    1, "does not exist", "weights download 1p-frac-vit-tiny-delta0.1")
    assert_one_line(run_module("onepfrac.weights", "verify", "1p-frac-vit-tiny-delta0.1", "--file",
                               tmp_path / "x.pth"), 2, "--file", "x.pth", "no such file")
    assert list(tmp_path.iterdir()) == []


def test_weights_verify_and_where_of_an_unknown_name(tmp_path):
    assert_one_line(run_module("onepfrac.weights", "verify", "bogus"), 2, "verify 'bogus'")
    assert_one_line(run_module("onepfrac.weights", "where", "1p-frac-vit-tiny-delta0.3"), 2, "where",
                    "did you mean")


def test_weights_verify_reports_a_matching_file(tmp_path, monkeypatch, capsys):
    release = weights.RELEASES["1p-frac-vit-tiny-delta0.1"]
    (tmp_path / release.filename).write_bytes(b"x" * 10)
    monkeypatch.setitem(weights.RELEASES, release.name, weights.Release(**{**release.__dict__, "size": 10}))
    assert weights.main(["verify", release.name, "--cache-dir", str(tmp_path)]) == 0
    assert "10 bytes" in capsys.readouterr().out
    monkeypatch.setitem(weights.RELEASES, release.name, weights.Release(**{**release.__dict__, "size": 11}))
    assert_one_line((weights.main(["verify", release.name, "--cache-dir", str(tmp_path)]), "",
                     capsys.readouterr().err), 1, "10 bytes, expected 11")


def test_weights_download_onto_a_full_disk_is_one_line_naming_what_to_do(tmp_path, monkeypatch, capsys):
    def full(url, dest, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(dest) + ".part")

    monkeypatch.setattr(weights, "_fetch_unlocked", full)
    code = weights.main(["download", "1p-frac-vit-tiny-delta0.1", "--cache-dir", str(tmp_path), "--no-progress"])
    assert_one_line((code, "", capsys.readouterr().err), 1, "no space left on device writing", ".part",
                    "--cache-dir", "resume")


def test_weights_download_of_a_folder_is_bad_input(tmp_path):
    assert_one_line(run_module("onepfrac.weights", "download", tmp_path), 2, "download", "not a checkpoint file")


# ---------------------------------------------------------------- figures

def test_figures_grid_out_under_a_file_or_a_folder_or_not_an_image(finished, tmp_path):
    (tmp_path / "afile").write_text("mine\n")
    cases = [(tmp_path / "afile" / "grid.png", "is a file"), (tmp_path, "is a folder"), (tmp_path / "grid.txt", ".txt")]
    for out, words in cases:
        assert_one_line(run_module("onepfrac.figures", "grid", finished, "--out", out), 2, "--out", words)
    assert (tmp_path / "afile").read_text() == "mine\n" and not (tmp_path / "grid.txt").exists()


def test_figures_out_dir_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("mine\n")
    for command in (["paper"], ["datasets", "--names", "ofdb"]):
        assert_one_line(run_module("onepfrac.figures", *command, "--out-dir", tmp_path / "afile"), 2,
                        "--out-dir", "is a file")
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_figures_grid_of_a_damaged_manifest(finished, tmp_path):
    (finished / generate.MANIFEST).write_text('{"arguments": {}, "classes": [{"index": 0, "fi')
    assert_one_line(run_module("onepfrac.figures", "grid", finished, "--out", tmp_path / "g.png"), 2,
                    generate.MANIFEST, "delete")
    assert not (tmp_path / "g.png").exists()


def test_figures_grid_count_zero(finished, tmp_path):
    assert_one_line(run_module("onepfrac.figures", "grid", finished, "--out", tmp_path / "g.png", "--count", 0), 2,
                    "--count 0", "at least 1")


def test_figures_grid_interrupted_while_saving_leaves_nothing(finished, tmp_path, monkeypatch, capsys):
    from onepfrac import figures

    def save(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half an image")
        raise KeyboardInterrupt

    monkeypatch.setattr(figures.Image.Image, "save", save)
    assert figures.main(["grid", str(finished), "--out", str(tmp_path / "g.png")]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]


# ---------------------------------------------------------------- generator drivers

DRIVERS = sorted((REPO / "1p-frac_generator").glob("generate_*.sh"))
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run_driver(script: Path, tmp_path, **variables) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": PYTHON, "BASE_SAVEDIR": str(tmp_path / "data"), **variables}
    return subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)


@needs_bash
@pytest.mark.parametrize("script", DRIVERS, ids=lambda p: p.name)
def test_driver_with_workers_abc_names_the_variable(tmp_path, script):
    assert_one_line(run_driver(script, tmp_path, WORKERS="abc"), 2, script.name, "WORKERS=abc", "whole number")
    assert not (tmp_path / "data").exists()


@needs_bash
@pytest.mark.parametrize("variable, value", [("SAMPLE", "0"), ("SAMPLE", "1e3"), ("SEED", "-1"), ("SIGMA", "x"),
                                             ("DELTA", "0.1.2"), ("PYTHON", "no-such-python")])
def test_driver_1p_frac_bad_variables(tmp_path, variable, value):
    script = REPO / "1p-frac_generator" / "generate_1p-frac.sh"
    assert_one_line(run_driver(script, tmp_path, **{variable: value}), 2, f"{variable}={value}")
    assert not (tmp_path / "data").exists()


@needs_bash
@pytest.mark.parametrize("script, variable", [("generate_fractaldb.sh", "INSTANCES"), ("generate_3d-ofdb.sh", "VIEWS"),
                                              ("generate_ofdb.sh", "A_SCALE"), ("generate_real-image.sh", "CLASSES")])
def test_other_drivers_bad_variables(tmp_path, script, variable):
    assert_one_line(run_driver(REPO / "1p-frac_generator" / script, tmp_path, **{variable: "abc"}), 2, f"{variable}=abc")
    assert not (tmp_path / "data").exists()
