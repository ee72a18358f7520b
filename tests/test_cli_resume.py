"""Interrupted runs resume to the same bytes; mismatched or concurrent runs are refused."""

import signal

import filelock
import pytest
from PIL import Image

from conftest import (SLOW, SLOW_NAME, dataset_dir, interrupt_in_process, run_cli, run_main, snapshot,
                      start_cli, tiny_args, wait_for_classes)
from onepfrac import generate

PARTIAL = generate.PARTIAL


def slow_args(base, workers=1):
    args = ["--base-savedir", str(base), *SLOW]
    args[args.index("--workers") + 1] = str(workers)
    return args


def tiny_reference(tmp_path, capsys, samples=8):
    base = tmp_path / "reference"
    assert run_main(tiny_args(base, samples), capsys)[0] == 0
    return snapshot(dataset_dir(base, samples=samples))


@pytest.mark.slow  # real processes and signals
def test_rerun_after_sigkill_finishes_the_same_dataset_as_an_uninterrupted_run(tmp_path, slow_reference):
    root = tmp_path / SLOW_NAME
    proc = start_cli(slow_args(tmp_path))
    try:
        wait_for_classes(proc, root / PARTIAL, 5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (root / "manifest.json").exists()
    assert (root / PARTIAL).exists()
    pngs = sorted(root.glob("*/*.png"))
    assert len(pngs) >= 5
    for path in pngs:  # no partial PNG is ever visible under its final name
        with Image.open(path) as image:
            image.load()
            assert image.size == (128, 128)

    result = run_cli(slow_args(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{root}\n"
    assert snapshot(root) == slow_reference


@pytest.mark.slow  # real processes and signals
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_exits_130_without_temporary_files_and_a_rerun_completes_identically(tmp_path, slow_reference, workers):
    root = tmp_path / SLOW_NAME
    proc = start_cli(slow_args(tmp_path, workers))
    try:
        wait_for_classes(proc, root / PARTIAL, 5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert out == ""
    assert err.count("\n") == 1 and "interrupted" in err
    assert list(tmp_path.rglob("*.tmp")) == []
    assert not (root / "manifest.json").exists()

    result = run_cli(slow_args(tmp_path, workers))
    assert result.returncode == 0, result.stderr
    assert snapshot(root) == slow_reference


def test_ctrl_c_while_the_manifest_is_written_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    real_replace = generate.os.replace

    def replace(source, target):
        if str(target).endswith(generate.MANIFEST):
            raise KeyboardInterrupt  # Ctrl-C between writing manifest.json.tmp and renaming it
        return real_replace(source, target)

    monkeypatch.setattr(generate.os, "replace", replace)
    code, _, err = run_main(tiny_args(tmp_path, 3), capsys)
    monkeypatch.undo()
    assert code == 130, err
    assert list(tmp_path.rglob("*.tmp")) == []


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path, capsys, monkeypatch):
    reference = tiny_reference(tmp_path, capsys)
    base = tmp_path / "resumed"
    code, _, _ = interrupt_in_process(tiny_args(base, 8), capsys, monkeypatch, after=3)
    assert code == 130
    root = dataset_dir(base, samples=8)
    assert len(list(root.glob("*/*.png"))) == 3 and not (root / "manifest.json").exists()
    code, out, err = run_main(tiny_args(base, 8), capsys)
    assert (code, out, err) == (0, f"{root}\n", "")
    assert snapshot(root) == reference


def test_truncated_last_line_of_the_partial_manifest_is_tolerated_on_resume(tmp_path, capsys, monkeypatch):
    reference = tiny_reference(tmp_path, capsys)
    base = tmp_path / "resumed"
    assert interrupt_in_process(tiny_args(base, 8), capsys, monkeypatch, after=4)[0] == 130
    root = dataset_dir(base, samples=8)
    with open(root / PARTIAL, "ab") as log:
        log.write(b'{"attempts": 1, "coefficients": [[0.1, 0.')  # a record cut by a kill
    code, _, err = run_main(tiny_args(base, 8), capsys)
    assert code == 0, err
    assert snapshot(root) == reference


def test_rerunning_a_completed_dataset_prints_its_path_and_changes_nothing(tmp_path, capsys):
    code, first_out, _ = run_main(tiny_args(tmp_path, 4), capsys)
    assert code == 0
    root = dataset_dir(tmp_path, samples=4)
    before = snapshot(root, with_mtimes=True)
    code, out, err = run_main(tiny_args(tmp_path, 4, 0, workers=2), capsys)
    assert (code, out, err) == (0, first_out, "")
    assert out == f"{root}\n"
    assert snapshot(root, with_mtimes=True) == before


@pytest.mark.parametrize("option, value", [("--size", 48), ("--pad", 3), ("--png-bits", 1), ("--drawing", "point")])
def test_completed_dataset_refuses_other_arguments_and_stays_untouched(tmp_path, capsys, option, value):
    assert run_main(tiny_args(tmp_path, 3), capsys)[0] == 0
    root = dataset_dir(tmp_path, samples=3)
    before = snapshot(root, with_mtimes=True)
    code, out, err = run_main(tiny_args(tmp_path, 3, 0, option, value), capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and option in err
    assert snapshot(root, with_mtimes=True) == before


@pytest.mark.parametrize("option, value", [("--size", 48), ("--points", 2500), ("--perturbation", "additive")])
def test_partial_dataset_refuses_other_arguments_and_stays_untouched(tmp_path, capsys, monkeypatch, option, value):
    assert interrupt_in_process(tiny_args(tmp_path, 6), capsys, monkeypatch, after=2)[0] == 130
    root = dataset_dir(tmp_path, samples=6)
    before = snapshot(root)
    code, out, err = run_main(tiny_args(tmp_path, 6, 0, option, value), capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and option in err
    assert snapshot(root) == before


def test_partial_dataset_with_a_cut_last_line_stays_untouched_when_other_arguments_are_refused(
        tmp_path, capsys, monkeypatch):
    assert interrupt_in_process(tiny_args(tmp_path, 6), capsys, monkeypatch, after=2)[0] == 130
    root = dataset_dir(tmp_path, samples=6)
    with open(root / PARTIAL, "ab") as log:
        log.write(b'{"attempts": 1, "coeffi')
    before = snapshot(root)
    code, _, err = run_main(tiny_args(tmp_path, 6, 0, "--size", 48), capsys)
    assert code == 2 and "--size" in err
    assert snapshot(root) == before


def test_partial_dataset_refuses_other_arguments_before_searching_a_base_system(tmp_path, capsys, monkeypatch):
    # with these arguments no base system exists: the mismatch must still be what is reported
    assert interrupt_in_process(tiny_args(tmp_path, 6), capsys, monkeypatch, after=2)[0] == 130
    root = dataset_dir(tmp_path, samples=6)
    before = snapshot(root)
    code, out, err = run_main(tiny_args(tmp_path, 6, 0, "--fill-threshold", 0.99, "--max-base-tries", 3), capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--fill-threshold" in err and "other" in err
    assert snapshot(root) == before


def test_second_run_while_another_holds_the_lock_is_refused(tmp_path, capsys, monkeypatch):
    reference = tiny_reference(tmp_path, capsys, samples=6)
    base = tmp_path / "locked"
    assert interrupt_in_process(tiny_args(base, 6), capsys, monkeypatch, after=2)[0] == 130
    root = dataset_dir(base, samples=6)
    before = snapshot(root)
    with filelock.FileLock(str(root / generate.LOCK), timeout=0):  # as a running generator holds it
        code, out, err = run_main(tiny_args(base, 6), capsys)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and "another process is generating" in err
        assert snapshot(root) == before
    code, _, err = run_main(tiny_args(base, 6), capsys)  # the lock is released: the run finishes
    assert code == 0, err
    assert snapshot(root) == reference


@pytest.mark.slow  # real processes and signals
def test_second_cli_run_during_a_running_generation_is_refused(tmp_path):
    args = slow_args(tmp_path)
    args[args.index("--samples") + 1] = "1000"  # far longer than the second run needs to reach the lock
    partial = tmp_path / SLOW_NAME.replace("sample60", "sample1000") / PARTIAL
    proc = start_cli(args)
    try:
        wait_for_classes(proc, partial, 2)
        second = run_cli(args)
        assert proc.poll() is None  # the first run was generating all along
    finally:
        proc.kill()
        proc.wait()
    assert second.returncode == 2 and second.stdout == ""
    assert second.stderr.count("\n") == 1 and "another process is generating" in second.stderr
