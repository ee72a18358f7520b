"""`python -m onepfrac.verify DATASET_DIR`: hashes, missing/extra/unfinished files, --rerender, user mistakes."""

import hashlib
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import filelock
import pytest

from conftest import CLI_TIMEOUT, TINY_DATASETS, interrupt_in_process, tiny_args
from onepfrac import datasets, generate, verify
from onepfrac.errors import UsageError

TINY = TINY_DATASETS
NAMES = list(TINY)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """name -> a clean tiny dataset of that name, generated once per module."""
    cache = {}

    def get(name: str) -> Path:
        if name not in cache:
            base = tmp_path_factory.mktemp(f"verify_{name}")
            args = ["--dataset", name, "--base-savedir", base, "--workers", 1, "--no-progress", *TINY[name]]
            assert generate.main([str(a) for a in args]) == 0
            (cache[name],) = [p for p in base.iterdir()]
        return cache[name]
    return get


@pytest.fixture
def copy(made, tmp_path):
    """name -> a private copy of the clean dataset, free to damage."""
    def get(name: str = "1p-frac") -> Path:
        source = made(name)
        return Path(shutil.copytree(source, tmp_path / source.name))
    return get


def run_verify(argv, capsys) -> tuple[int, list[str], str]:
    """`onepfrac.verify.main(argv)` in this process: (exit code, stdout lines, stderr)."""
    capsys.readouterr()
    try:
        code = verify.main([str(a) for a in argv])
    except SystemExit as stop:  # argparse refusals
        code = stop.code
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onepfrac.verify", *map(str, args)],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT)


def manifest_of(root: Path) -> dict:
    return json.loads((root / generate.MANIFEST).read_text())


def rewrite_manifest(root: Path, manifest: dict) -> None:
    (root / generate.MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def first_file(record: dict) -> str:
    return datasets.record_files(record)[0]


def set_first_sha(record: dict, value: str) -> None:
    if isinstance(record["sha256"], str):  # 1p-frac's flat records
        record["sha256"] = value
    else:
        record["sha256"][0] = value


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m onepfrac.verify: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- clean datasets


@pytest.mark.parametrize("name", NAMES)
def test_a_clean_dataset_passes_with_one_summary_line_and_every_class_re_rendered_identical(made, capsys, name):
    root = made(name)
    classes = len(manifest_of(root)["classes"])
    files = sum(len(datasets.record_files(r)) for r in manifest_of(root)["classes"])
    code, out, err = run_verify([root, "--rerender", 100, "--workers", 1], capsys)
    assert (code, err) == (0, "")
    assert out == [f"ok: {root}: {files} files, 0 missing, 0 extra, 0 changed; "
                   f"{classes} of {classes} classes re-rendered identical"]


@pytest.mark.parametrize("name", NAMES)
def test_rerender_catches_a_file_swapped_for_another_valid_png_whose_hash_was_updated_too(copy, capsys, name):
    root = copy(name)
    manifest = manifest_of(root)
    donor, victim = manifest["classes"][0], manifest["classes"][1]
    data = (root / first_file(donor)).read_bytes()
    (root / first_file(victim)).write_bytes(data)
    set_first_sha(victim, hashlib.sha256(data).hexdigest())
    rewrite_manifest(root, manifest)

    code, out, _ = run_verify([root], capsys)
    assert code == 0, out  # the hashes agree: only re-rendering can tell
    code, out, _ = run_verify([root, "--rerender", 2, "--workers", 1], capsys)  # classes 0 and the last
    assert code == 0, out
    code, out, _ = run_verify([root, "--rerender", 100, "--workers", 1], capsys)
    assert code == 1
    assert out[0] == f"rerender: class 1: {first_file(victim)} differs from its re-render"
    assert out[1] == "rerender: class 1: its manifest record differs from the re-render in sha256"
    assert out[-1].startswith(f"failed: {root}: ") and out[-1].endswith(f"; 1 of {len(manifest['classes'])} re-rendered classes differ")


def test_rerender_reports_an_edited_param_by_its_field(copy, capsys):
    root = copy()
    manifest = manifest_of(root)
    manifest["classes"][4]["fill"] += 0.01
    rewrite_manifest(root, manifest)
    code, out, _ = run_verify([root, "--rerender", 9, "--workers", 1], capsys)
    assert code == 1
    assert out[:-1] == ["rerender: class 4: its manifest record differs from the re-render in fill"]


def test_classes_to_re_render_are_evenly_spaced_first_and_last_included():
    assert verify.spread(10, 3) == [0, 4, 9]
    assert verify.spread(1000, 5) == [0, 250, 500, 749, 999]
    assert verify.spread(7, 1) == [0]
    assert verify.spread(7, 0) == []
    assert verify.spread(3, 10) == [0, 1, 2]


# ---------------------------------------------------------------- damaged folders


def test_every_kind_of_damage_gets_a_line_naming_the_file(copy, capsys):
    root = copy()
    flipped, rewritten, removed = "00001/00001.png", "00002/00002.png", "00003/00003.png"
    data = bytearray((root / flipped).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / flipped).write_bytes(bytes(data))
    (root / rewritten).write_bytes((root / "00000/00000.png").read_bytes())  # another valid PNG
    (root / removed).unlink()
    (root / "notes.txt").write_text("x")
    (root / ".cache").mkdir()
    (root / ".cache" / "a.bin").write_bytes(b"a")
    (root / ".cache" / "b.bin").write_bytes(b"b")
    (root / "00004" / "00004.png.tmp").write_bytes(b"half")
    (root / generate.PARTIAL).write_text("{}\n")

    code, out, err = run_verify([root, "--workers", 1], capsys)
    assert (code, err) == (1, "")
    assert out[0] == f"missing: {removed}"
    assert out[1].startswith(f"changed: {flipped} (sha256 ")
    assert out[2].startswith(f"changed: {rewritten} (sha256 ")
    assert sorted(out[3:7]) == sorted([
        "extra: .cache/ (a folder the manifest does not list, 2 files)",
        "extra: notes.txt (not in the manifest)",
        f"extra: {generate.PARTIAL} (unfinished: left by an interrupted generation; delete it, the manifest does not need it)",
        "extra: 00004/00004.png.tmp (unfinished: left by an interrupted generation; delete it, the manifest does not need it)",
    ])
    assert out[7] == f"failed: {root}: 5 files, 1 missing, 4 extra, 2 changed; 0 of 5 classes re-rendered"
    assert len(out) == 8


def test_an_empty_hidden_folder_is_extra_too(copy, capsys):
    root = copy()
    (root / ".ipynb_checkpoints").mkdir()
    code, out, _ = run_verify([root], capsys)
    assert code == 1
    assert out[0] == "extra: .ipynb_checkpoints/ (a folder the manifest does not list, 0 files)"


def test_the_list_is_capped_with_and_n_more(copy, capsys):
    root = copy()
    for i in range(5):
        (root / f"stray{i}.txt").write_text("x")
    code, out, _ = run_verify([root, "--max-lines", 2], capsys)
    assert code == 1
    assert out[:2] == ["extra: stray0.txt (not in the manifest)", "extra: stray1.txt (not in the manifest)"]
    assert out[2:-1] == ["... and 3 more"]
    code, out, _ = run_verify([root, "--max-lines", 0], capsys)
    assert len(out) == 6


def test_several_workers_find_what_one_finds(copy, capsys, monkeypatch):
    root = copy()
    (root / "00002/00002.png").write_bytes(b"not a png")
    monkeypatch.setattr(verify, "BATCH", 2)  # three batches, so the pool really splits the work
    one = run_verify([root, "--workers", 1, "--rerender", 5], capsys)
    two = run_verify([root, "--workers", 2, "--rerender", 5], capsys)
    assert one == two
    assert one[0] == 1 and one[1][0].startswith("changed: 00002/00002.png")


# ---------------------------------------------------------------- user mistakes: exit 2, one line


def test_an_unfinished_generation_is_refused_with_the_command_that_finishes_it(tmp_path, capsys, monkeypatch):
    argv = tiny_args(tmp_path, 6, 0)
    code, _, _ = interrupt_in_process(argv, capsys, monkeypatch, after=2)
    assert code == 130
    (root,) = list(tmp_path.iterdir())
    code, out, err = run_verify([root], capsys)
    assert (code, out) == (2, [])
    line = one_error_line(err)
    assert f"{root}: the generation is unfinished ({generate.PARTIAL}, no {generate.MANIFEST})" in line
    command = shlex.split(line.split("rerun the command that started it: ")[1])
    assert command[:3] == ["python", "-m", "onepfrac.generate"]
    assert generate.main([*command[3:], "--no-progress"]) == 0
    capsys.readouterr()
    code, out, _ = run_verify([root], capsys)
    assert code == 0, out


def test_a_folder_being_generated_now_is_refused_as_such(tmp_path, capsys):
    (tmp_path / generate.PARTIAL).write_text("{}\n")
    with filelock.FileLock(str(tmp_path / generate.LOCK)):  # as a running generator holds it
        code, _, err = run_verify([tmp_path], capsys)
    assert code == 2
    assert "is being generated right now" in one_error_line(err)


@pytest.mark.parametrize("damage, expected", [
    (lambda text: text[: len(text) // 2], "is not valid JSON"),
    (lambda text: "", "is not valid JSON"),
    (lambda text: "[1, 2]", "is not a onepfrac dataset manifest (format 'list'"),
    (lambda text: text.replace(generate.FORMAT, "other/9"), "is not a onepfrac dataset manifest (format 'other/9'"),
    (lambda text: text.replace('"sha256"', '"sha"'), "class 0 does not list its files with one sha256 each"),
    (lambda text: text.replace('"00001/00001.png"', '"../00001.png"'), "class 1 lists a file outside the dataset folder"),
])
def test_a_garbled_manifest_is_refused_in_one_line_naming_it(copy, capsys, damage, expected):
    root = copy()
    path = root / generate.MANIFEST
    path.write_text(damage(path.read_text()))
    code, out, err = run_verify([root], capsys)
    assert (code, out) == (2, [])
    line = one_error_line(err)
    assert str(path) in line and expected in line


def test_a_missing_folder_a_file_and_a_folder_without_manifest_are_refused(tmp_path, capsys):
    (tmp_path / "file.png").write_bytes(b"x")
    for target, expected in [(tmp_path / "nope", "does not exist"), (tmp_path / "file.png", "is a file"),
                             (tmp_path, f"is not a dataset folder: it has no {generate.MANIFEST}")]:
        code, out, err = run_verify([target], capsys)
        assert (code, out) == (2, [])
        assert f"DATASET_DIR {target} {expected}" in one_error_line(err)


@pytest.mark.parametrize("option, value", [("--rerender", "-1"), ("--rerender", "two"), ("--workers", "-2"),
                                           ("--max-lines", "1.5")])
def test_a_bad_count_is_refused_naming_option_and_value(made, capsys, option, value):
    code, out, err = run_verify([made("1p-frac"), option, value], capsys)
    assert (code, out) == (2, [])
    assert f"argument {option}: '{value}' is not a whole number 0 or more" in one_error_line(err)


def test_verify_called_in_code_refuses_a_negative_count(made):
    with pytest.raises(UsageError, match=r"--rerender -1 must be 0"):
        verify.verify(made("1p-frac"), rerender=-1)


# ---------------------------------------------------------------- the command line


def test_cli_exit_codes_lines_and_no_progress_bar_without_a_terminal(made, tmp_path):
    root = made("1p-frac")
    ok = cli(root, "--rerender", 1)
    assert (ok.returncode, ok.stderr) == (0, "")  # stderr is a pipe: no progress bar
    assert ok.stdout == f"ok: {root}: 5 files, 0 missing, 0 extra, 0 changed; 1 of 5 classes re-rendered identical\n"
    missing = cli(tmp_path / "nope")
    assert (missing.returncode, missing.stdout) == (2, "")
    assert "does not exist" in one_error_line(missing.stderr)
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / generate.MANIFEST).write_text('{"format": "onepfrac-dataset/1", "classes": [')
    garbled = cli(tmp_path / "garbled")
    assert garbled.returncode == 2
    assert "manifest.json is not valid JSON" in one_error_line(garbled.stderr)


def test_help_names_the_exit_codes():
    result = cli("--help")
    assert result.returncode == 0
    assert "--rerender K" in result.stdout and "Exit status: 0" in result.stdout


def test_rerender_of_a_manifest_with_unusable_arguments_is_refused_before_hashing(copy, capsys):
    root = copy()
    manifest = manifest_of(root)
    manifest["arguments"]["sigma"] = -1.0
    rewrite_manifest(root, manifest)
    code, out, _ = run_verify([root], capsys)
    assert code == 0, out  # the files still match their hashes
    code, out, err = run_verify([root, "--rerender", 1], capsys)
    assert (code, out) == (2, [])
    line = one_error_line(err)
    assert f"{root / generate.MANIFEST}: its arguments are not valid for --dataset 1p-frac" in line and "--sigma" in line
    manifest["dataset"] = "nope"
    rewrite_manifest(root, manifest)
    code, _, err = run_verify([root, "--rerender", 1], capsys)
    assert code == 2 and "cannot re-render its classes: --dataset nope is not one of" in one_error_line(err)


def test_rerender_encodes_as_the_manifest_records_one_bit_palettes_and_compression_9(tmp_path, capsys):
    assert generate.main(tiny_args(tmp_path, 3, 0, "--png-bits", "1", "--png-compression", "9")) == 0
    (root,) = list(tmp_path.iterdir())
    code, out, _ = run_verify([root, "--rerender", 3], capsys)
    assert code == 0 and out[-1].endswith("3 of 3 classes re-rendered identical"), out


def test_nested_listed_files_need_their_folders_and_nothing_else():
    assert list(verify.parents("a/b/c.png")) == ["a", "a/b"]
    assert list(verify.parents("c.png")) == []
