"""Bad input is refused with exit code 2 and one line naming the option, before anything is written."""

import os

import pytest

from conftest import TINY, dataset_dir, is_root, run_cli, run_main, snapshot, tiny_args

BAD_OPTIONS = {
    "sigma zero": (["--sigma", "0"], ["--sigma"]),
    "sigma negative": (["--sigma", "-1"], ["--sigma"]),
    "sigma above 3N": (["--sigma", "6.5", "--n-maps", "2"], ["--sigma"]),
    "sigma nan": (["--sigma", "nan"], ["--sigma"]),
    "sigma not a number": (["--sigma", "abc"], ["--sigma"]),
    "delta negative": (["--delta", "-0.1"], ["--delta"]),
    "delta one": (["--delta", "1"], ["--delta"]),
    "delta infinite": (["--delta", "inf"], ["--delta"]),
    "samples zero": (["--samples", "0"], ["--samples"]),
    "samples not an integer": (["--samples", "2.5"], ["--samples"]),
    "size too small for pad": (["--size", "10", "--pad", "6"], ["--size", "--pad"]),
    "pad negative": (["--pad", "-1"], ["--pad"]),
    "one map": (["--n-maps", "1"], ["--n-maps"]),
    "fill threshold one": (["--fill-threshold", "1"], ["--fill-threshold"]),
    "fill threshold negative": (["--fill-threshold", "-0.1"], ["--fill-threshold"]),
    "one point": (["--points", "1"], ["--points"]),
    "workers negative": (["--workers", "-1"], ["--workers"]),
    "png compression ten": (["--png-compression", "10"], ["--png-compression"]),
    "png bits four": (["--png-bits", "4"], ["--png-bits"]),
    "unknown drawing": (["--drawing", "splat"], ["--drawing"]),
    "unknown perturbation": (["--perturbation", "gaussian"], ["--perturbation"]),
    "jitter not below sigma": (["--sigma", "0.5", "--sigma-jitter", "0.5"], ["--sigma-jitter"]),
    "max class tries zero": (["--max-class-tries", "0"], ["--max-class-tries"]),
    "max base tries zero": (["--max-base-tries", "0"], ["--max-base-tries"]),
    "burn-in negative": (["--burn-in", "-1"], ["--burn-in"]),
    "burn-in leaves under two points": (["--points", "100", "--burn-in", "99"], ["--burn-in", "--points"]),
    "probes zero": (["--probes", "0"], ["--probes"]),
    "probe pass rate zero": (["--probe-pass-rate", "0"], ["--probe-pass-rate"]),
}


def assert_refused(code, out, err, names):
    assert code == 2
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "error" in err
    for name in names:
        assert name in err


@pytest.mark.parametrize("bad, names", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_option_exits_2_with_one_line_naming_it_and_creates_nothing(tmp_path, capsys, bad, names):
    target = tmp_path / "out"
    code, out, err = run_main(["--base-savedir", target, "--samples", 3, *TINY, "--workers", 1, *bad], capsys)
    assert_refused(code, out, err, names)
    assert not target.exists()


@pytest.mark.parametrize("bad, names", [(["--sigma", "abc"], ["--sigma"]), (["--sigma", "0"], ["--sigma"]),
                                        (["--size", "10", "--pad", "6"], ["--size", "--pad"])])
def test_bad_option_from_the_command_line_exits_2_with_one_line(tmp_path, bad, names):
    target = tmp_path / "out"
    result = run_cli(["--base-savedir", target, "--samples", 3, *TINY, *bad])
    assert_refused(result.returncode, result.stdout, result.stderr, names)
    assert not target.exists()


def test_negative_seed_is_refused_as_bad_input(tmp_path, capsys):
    target = tmp_path / "out"
    code, out, err = run_main(tiny_args(target, 3, -1), capsys)
    assert_refused(code, out, err, ["--seed"])
    assert not target.exists()


def test_base_savedir_that_is_a_file_is_refused_and_left_alone(tmp_path, capsys):
    existing = tmp_path / "data"
    existing.write_bytes(b"not a folder")
    for target in (existing, existing / "inside"):
        code, out, err = run_main(tiny_args(target, 3), capsys)
        assert_refused(code, out, err, ["--base-savedir"])
        assert existing.read_bytes() == b"not a folder"
        assert [p.name for p in tmp_path.iterdir()] == ["data"]


@pytest.mark.skipif(is_root(), reason="root ignores folder permissions")
def test_base_savedir_in_a_read_only_folder_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    try:
        code, out, err = run_main(tiny_args(locked / "out", 3), capsys)
        assert_refused(code, out, err, ["--base-savedir"])
        assert list(locked.iterdir()) == []
    finally:
        os.chmod(locked, 0o755)


def test_existing_folder_that_is_not_a_dataset_in_progress_is_refused_and_left_alone(tmp_path, capsys):
    root = dataset_dir(tmp_path, samples=3)
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("my own files")
    (root / "00000").mkdir()
    before = snapshot(tmp_path, with_mtimes=True)
    code, out, err = run_main(tiny_args(tmp_path, 3), capsys)
    assert_refused(code, out, err, [root.name])
    assert snapshot(tmp_path, with_mtimes=True) == before
    assert sorted(p.name for p in root.iterdir()) == ["00000", "notes.txt"]


def test_existing_file_at_the_dataset_path_is_refused_and_left_alone(tmp_path, capsys):
    root = dataset_dir(tmp_path, samples=3)
    root.write_bytes(b"occupied")
    code, out, err = run_main(tiny_args(tmp_path, 3), capsys)
    assert_refused(code, out, err, [root.name])
    assert root.read_bytes() == b"occupied"


def test_empty_existing_dataset_folder_is_used(tmp_path, capsys):
    root = dataset_dir(tmp_path, samples=3)
    root.mkdir(parents=True)
    code, out, _ = run_main(tiny_args(tmp_path, 3), capsys)
    assert code == 0 and out == f"{root}\n"
    assert (root / "manifest.json").exists()


def test_unreachable_fill_threshold_fails_quickly_with_a_clear_error_and_writes_nothing(tmp_path):
    target = tmp_path / "out"
    result = run_cli(tiny_args(target, 3, 0, "--fill-threshold", "0.99"), timeout=90)  # no hang
    assert result.returncode != 0 and result.returncode != 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "fill test" in result.stderr and "--fill-threshold" in result.stderr
    assert not target.exists()


def test_help_lists_the_options_and_exits_0(capsys):
    code, out, err = run_main(["--help"], capsys)
    assert code == 0 and err == ""
    for option in ("--sigma", "--delta", "--samples", "--seed", "--base-savedir", "--workers", "--png-bits"):
        assert option in out


def test_base_savedir_that_denies_writing_is_refused_even_when_running_as_root(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(locked) else real_access(path, mode))
    code, out, err = run_main(tiny_args(locked / "out", 3), capsys)
    assert_refused(code, out, err, ["--base-savedir", "not writable"])
    assert list(locked.iterdir()) == []
