"""Sharded generation and WebDataset shards: the union equals a one-process run, kills resume,
--finalize refuses missing shards, tar bytes are fixed, launcher variables are read right."""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import REPO, snapshot
from onepfrac import generate, shards, verify, wds_writer
from onepfrac.errors import UsageError

ONE_P = ["--samples", "7", "--size", "32", "--points", "500", "--pad", "2", "--no-progress"]
FRACTALDB = ["--dataset", "fractaldb", "--classes", "3", "--instances", "5", "--size", "32", "--points", "500",
             "--search-size", "32", "--search-points", "500", "--no-progress"]
NO_LAUNCHER: dict = {}


def gen(base, args, *extra, workers=1, environ=NO_LAUNCHER) -> int:
    argv = ["--base-savedir", str(base), *args, "--workers", str(workers), *map(str, extra)]
    return generate.main(argv, environ=environ)


def only_dir(base) -> Path:
    (root,) = [p for p in Path(base).iterdir()]
    return root


# ---------------------------------------------------------------- launcher variables


@pytest.mark.parametrize("environ, expected", [
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3",
      "SLURM_ARRAY_TASK_MAX": "6"}, (2, 4, "SLURM array")),
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}, (2, 3, "SLURM array")),
    ({"SLURM_ARRAY_TASK_ID": "14", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "10",
      "SLURM_ARRAY_TASK_MAX": "16", "SLURM_ARRAY_TASK_STEP": "2"}, (2, 4, "SLURM array")),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, (1, 2, "torchrun")),
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8"}, (3, 8, "mpiexec (Open MPI)")),
    ({"PMI_RANK": "0", "PMI_SIZE": "2"}, (0, 2, "mpiexec (MPICH/Intel MPI)")),
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0"}, (1, 2, "srun")),
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, None),  # a batch script, not a job step
    ({}, None),
])
def test_launcher_variables_give_index_and_count(environ, expected):
    assert shards.from_environment(environ) == expected


def test_a_slurm_array_outranks_the_srun_and_mpi_variables_it_also_sets():
    environ = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_PROCID": "0",
               "SLURM_NTASKS": "1", "SLURM_STEP_ID": "0", "PMI_RANK": "0", "PMI_SIZE": "1"}
    assert shards.resolve(None, None, environ) == shards.Shard(1, 2, "SLURM array")


def test_a_sparse_slurm_array_is_refused_rather_than_skipping_classes():
    environ = {"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1",
               "SLURM_ARRAY_TASK_MAX": "9"}
    with pytest.raises(UsageError, match="--num-shards and --shard-index"):
        shards.resolve(None, None, environ)


def test_explicit_options_win_over_the_environment_each_on_its_own():
    environ = {"RANK": "1", "WORLD_SIZE": "4"}
    assert shards.resolve(8, 5, environ) == shards.Shard(5, 8, "options")
    assert shards.resolve(None, 3, environ) == shards.Shard(3, 4, "options and torchrun")
    assert shards.resolve(2, None, environ) == shards.Shard(1, 2, "options and torchrun")
    assert shards.resolve(None, None, {}) == shards.Shard(0, 1, "none")


@pytest.mark.parametrize("num, index, environ, words", [
    (0, 0, {}, "--num-shards 0 must be 1 or more"),
    (2, -1, {}, "--shard-index -1 must be 0 or more"),
    (2, 2, {}, "--shard-index 2 is outside 0..1"),
    (None, 1, {}, "--shard-index 1 needs --num-shards"),
    (3, None, {}, "--num-shards 3 needs --shard-index"),
    (None, None, {"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
])
def test_bad_shard_settings_are_refused_in_one_line(num, index, environ, words):
    with pytest.raises(UsageError, match=words.replace(".", r"\.")) as error:
        shards.resolve(num, index, environ)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("total, count", [(10, 3), (7, 7), (3, 5), (1000, 16)])
def test_parts_are_disjoint_contiguous_and_cover_everything(total, count):
    parts = [shards.part(total, count, k) for k in range(count)]
    assert [i for p in parts for i in p] == list(range(total))
    assert all(shards.owner(total, count, i) == k for k, p in enumerate(parts) for i in p)


def test_ranges_text_keeps_a_long_list_short():
    assert shards.ranges_text([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert shards.ranges_text(range(0, 100, 2)).endswith("... (50 in all)")


# ---------------------------------------------------------------- bytes


def test_the_streamed_manifest_is_byte_identical_to_json_dumps():
    top = {"zeta": [1, {"b": [], "a": {}}], "alpha": {"x": 1.5, "y": "é\n"}, "format": "f"}
    records = [{"index": i, "params": {"c": [[0.1, -2e-9]], "s": []}, "files": [f"{i}/0.png"]} for i in range(3)]
    expected = json.dumps({**top, "classes": records}, indent=1, sort_keys=True) + "\n"
    assert "".join(wds_writer.manifest_chunks(top, iter(records))) == expected
    assert "".join(wds_writer.manifest_chunks(top, iter([]))) == json.dumps({**top, "classes": []}, indent=1,
                                                                             sort_keys=True) + "\n"


def test_tar_shards_have_fixed_metadata_and_sorted_members():
    data = wds_writer.tar_bytes([("b.png", b"2"), ("a.cls", b"1"), ("a.png", b"xyz")])
    assert data == wds_writer.tar_bytes([("a.png", b"xyz"), ("b.png", b"2"), ("a.cls", b"1")])
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == ["a.cls", "a.png", "b.png"]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
        assert archive.extractfile("a.png").read() == b"xyz"


def test_sample_keys_sort_in_sample_order_and_have_no_dot():
    keys = [wds_writer.sample_key(c, i, 120000, 3) for c in (0, 9, 99999, 100000) for i in range(3)]
    assert keys == sorted(keys) and not any("." in k for k in keys)


# ---------------------------------------------------------------- folder shards


@pytest.mark.parametrize("args", [ONE_P, FRACTALDB], ids=["1p-frac", "fractaldb"])
def test_folder_shards_union_equals_a_one_process_run(tmp_path, args):
    assert generate.main(["--base-savedir", str(tmp_path / "one"), *args, "--workers", "1"]) == 0
    for k in (2, 0, 1):
        assert gen(tmp_path / "three", args, "--num-shards", 3, "--shard-index", k, workers=1 + k % 2) == 0
    assert gen(tmp_path / "three", args, "--finalize") == 0
    assert snapshot(only_dir(tmp_path / "three")) == snapshot(only_dir(tmp_path / "one"))
    assert verify.verify(only_dir(tmp_path / "three")).ok


def test_finalize_refuses_while_shards_are_missing_and_names_them(tmp_path, capsys):
    gen(tmp_path, ONE_P, "--num-shards", 4, "--shard-index", 1)
    capsys.readouterr()
    assert gen(tmp_path, ONE_P, "--finalize") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shards 0, 2-3 of 4 are not finished" in err
    assert not (only_dir(tmp_path) / generate.MANIFEST).exists()
    with pytest.raises(UsageError, match="unfinished"):
        verify.verify(only_dir(tmp_path))


def test_a_shard_run_with_another_shard_count_is_refused(tmp_path, capsys):
    gen(tmp_path, ONE_P, "--num-shards", 2, "--shard-index", 0)
    capsys.readouterr()
    assert gen(tmp_path, ONE_P, "--num-shards", 3, "--shard-index", 0) == 2
    assert "is being generated with --num-shards 2" in capsys.readouterr().err


def test_a_shard_with_other_settings_is_refused_before_any_work(tmp_path, capsys):
    gen(tmp_path / "x", ONE_P, "--num-shards", 2, "--shard-index", 0)
    other = [*ONE_P, "--png-compression", "9"]
    root = only_dir(tmp_path / "x")
    capsys.readouterr()
    assert generate.main(["--base-savedir", str(tmp_path / "x"), *other, "--num-shards", "2",
                                 "--shard-index", "1", "--workers", "1"], environ={}) == 2
    assert "--png-compression 1 (on disk) vs 9 (now)" in capsys.readouterr().err
    assert not (root / generate.SHARD_WORK / generate.log_name(1, 2, False)).exists()


def test_an_interrupted_folder_shard_resumes_to_the_same_bytes(tmp_path, monkeypatch, capsys):
    reference = tmp_path / "reference"
    assert generate.main(["--base-savedir", str(reference), *ONE_P, "--workers", "1"]) == 0
    real, done = generate._make_class, []

    def make_class(index):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(index)
        return real(index)

    monkeypatch.setattr(generate, "_make_class", make_class)
    assert gen(tmp_path / "run", ONE_P, "--num-shards", 2, "--shard-index", 1) == 130
    monkeypatch.setattr(generate, "_make_class", real)
    root = only_dir(tmp_path / "run")
    assert list(root.rglob("*.tmp")) == []
    log = root / generate.SHARD_WORK / generate.log_name(1, 2, False)
    assert log.read_bytes().count(b"\n") == 3  # the header and two classes
    with open(log, "ab") as f:
        f.write(b'{"index": 5, "cut by a ki')  # a torn last line, as SIGKILL leaves it
    assert gen(tmp_path / "run", ONE_P, "--num-shards", 2, "--shard-index", 1) == 0
    assert gen(tmp_path / "run", ONE_P, "--num-shards", 2, "--shard-index", 0) == 0
    assert gen(tmp_path / "run", ONE_P, "--finalize") == 0
    assert snapshot(root) == snapshot(only_dir(reference))


# ---------------------------------------------------------------- WebDataset shards


@pytest.mark.parametrize("args", [ONE_P, FRACTALDB], ids=["1p-frac", "fractaldb"])
def test_wds_bytes_do_not_depend_on_shard_count_or_workers(tmp_path, args):
    assert gen(tmp_path / "one", args, "--format", "wds", "--shard-size", 4) == 0
    for k in range(3):
        environ = {"SLURM_ARRAY_TASK_ID": str(10 + k), "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "3"}
        assert gen(tmp_path / "three", args, "--format", "wds", "--shard-size", 4, workers=2, environ=environ) == 0
    assert gen(tmp_path / "three", args, "--format", "wds", "--shard-size", 4, "--finalize") == 0
    one = snapshot(only_dir(tmp_path / "one"))
    assert snapshot(only_dir(tmp_path / "three")) == one
    index = json.loads(one[generate.INDEX])
    assert [e["samples"] for e in index["shards"]] == [4] * (index["samples"] // 4) + (
        [index["samples"] % 4] if index["samples"] % 4 else [])
    assert verify.verify(only_dir(tmp_path / "one"), rerender=3).ok


def test_wds_samples_are_the_folder_datasets_pngs_with_their_class(tmp_path):
    assert gen(tmp_path / "wds", FRACTALDB, "--format", "wds", "--shard-size", 4) == 0
    assert generate.main(["--base-savedir", str(tmp_path / "folder"), *FRACTALDB, "--workers", "1"]) == 0
    folder = only_dir(tmp_path / "folder")
    pngs = {}
    for tar in sorted(only_dir(tmp_path / "wds").glob("*.tar")):
        with tarfile.open(tar) as archive:
            members = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
        for name, data in members.items():
            if name.endswith(".png"):
                key = name[:-4]
                meta = json.loads(members[f"{key}.json"])
                assert int(members[f"{key}.cls"]) == meta["class"]
                pngs[meta["file"]] = data
    manifest = json.loads((folder / generate.MANIFEST).read_text())
    files = [name for record in manifest["classes"] for name in record["files"]]
    assert sorted(pngs) == sorted(files)
    assert all(pngs[name] == (folder / name).read_bytes() for name in files)


def test_wds_finalize_names_the_generation_shards_whose_tars_are_missing(tmp_path, capsys):
    gen(tmp_path, ONE_P, "--format", "wds", "--shard-size", 2, "--num-shards", 3, "--shard-index", 0)
    capsys.readouterr()
    assert gen(tmp_path, ONE_P, "--format", "wds", "--shard-size", 2, "--finalize") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shards 1-2 of 3 are not finished" in err and "tar shards 1-3 are missing" in err


def test_an_interrupted_wds_shard_resumes_without_temporary_files(tmp_path, monkeypatch):
    assert gen(tmp_path / "reference", ONE_P, "--format", "wds", "--shard-size", 2) == 0
    real, done = generate._make_tar, []

    def make_tar(index):
        if len(done) == 2:
            (generate._WORK["root"] / "1p-frac-000002.tar.tmp").write_bytes(b"half")  # as Ctrl-C leaves it
            raise KeyboardInterrupt
        done.append(index)
        return real(index)

    monkeypatch.setattr(generate, "_make_tar", make_tar)
    assert gen(tmp_path / "run", ONE_P, "--format", "wds", "--shard-size", 2) == 130
    monkeypatch.setattr(generate, "_make_tar", real)
    root = only_dir(tmp_path / "run")
    assert len(list(root.glob("*.jsonl"))) == 2 and list(root.glob("*.tmp")) == []
    (root / "1p-frac-000003.tar.tmp").write_bytes(b"left by SIGKILL")
    assert gen(tmp_path / "run", ONE_P, "--format", "wds", "--shard-size", 2) == 0
    assert snapshot(root) == snapshot(only_dir(tmp_path / "reference"))


def test_verify_finds_a_damaged_member_in_a_tar_shard(tmp_path, capsys):
    gen(tmp_path, ONE_P, "--format", "wds", "--shard-size", 3)
    root = only_dir(tmp_path)
    tar = root / "1p-frac-000001.tar"
    with tarfile.open(tar) as archive:
        members = [(m.name, archive.extractfile(m).read()) for m in archive.getmembers()]
    members = [(n, b"7" if n.endswith(".cls") else d) for n, d in members]
    data = wds_writer.tar_bytes(members)
    tar.write_bytes(data)
    index = json.loads((root / generate.INDEX).read_text())
    index["shards"][1].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (root / generate.INDEX).write_text(json.dumps(index))
    (root / "1p-frac-000001.jsonl").write_text("\n".join(
        [json.dumps({**json.loads(line), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
         if number == 0 else line for number, line in enumerate((root / "1p-frac-000001.jsonl").read_text().splitlines())])
        + "\n")
    capsys.readouterr()
    assert verify.main([root, "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "00003_00000.cls holds b'7', expected b'3'" in out and out.startswith("changed: 1p-frac-000001.tar")


def test_bad_format_options_are_refused_naming_them(tmp_path, capsys):
    assert gen(tmp_path, ONE_P, "--format", "wds", "--shard-size", 0) == 2
    assert "--shard-size 0 must be 1 or more" in capsys.readouterr().err
    assert gen(tmp_path, ONE_P, "--num-shards", 2, "--shard-index", 0, "--shard-size", 5) == 2
    assert "--shard-size 5 applies to --format wds only" in capsys.readouterr().err


# ---------------------------------------------------------------- drivers and real processes


def test_the_example_drivers_are_valid_shell():
    for name in ("generate_slurm_array.sh", "generate_mpiexec.sh"):
        result = subprocess.run(["bash", "-n", str(REPO / "1p-frac_generator" / name)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


@pytest.mark.slow  # real processes and SIGKILL
def test_a_sigkilled_wds_shard_resumes_to_the_same_bytes(tmp_path):
    args = ["--samples", "40", "--size", "128", "--points", "300000", "--pad", "2", "--no-progress", "--workers", "1",
            "--format", "wds", "--shard-size", "2"]
    command = [sys.executable, "-m", "onepfrac.generate", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID")}
    assert subprocess.run([*command, "--base-savedir", str(tmp_path / "ref")], env=env, timeout=300).returncode == 0
    proc = subprocess.Popen([*command, "--base-savedir", str(tmp_path / "run"), "--num-shards", "2",
                             "--shard-index", "1"], env=env)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "run").glob("*/*.jsonl"))) < 3:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for k in (1, 0):
        assert subprocess.run([*command, "--base-savedir", str(tmp_path / "run"), "--num-shards", "2",
                               "--shard-index", str(k)], env=env, timeout=300).returncode == 0
    assert subprocess.run([*command, "--base-savedir", str(tmp_path / "run"), "--finalize"], env=env,
                          timeout=300).returncode == 0
    assert snapshot(only_dir(tmp_path / "run")) == snapshot(only_dir(tmp_path / "ref"))


# ---------------------------------------------------------------- verify reads manifests record by record


def test_verify_streams_the_generators_manifest_and_reads_any_other_layout_whole(tmp_path, capsys):
    assert generate.main(["--base-savedir", str(tmp_path), *ONE_P, "--workers", "1"]) == 0
    root = only_dir(tmp_path)
    path = root / generate.MANIFEST
    whole = json.loads(path.read_text())
    streamed = verify.load_manifest(root)
    assert streamed["classes"].loaded is None  # streamed, not held
    assert list(streamed["classes"]) == whole["classes"] and len(streamed["classes"]) == 7
    assert {k: v for k, v in streamed.items() if k != "classes"} == {k: v for k, v in whole.items() if k != "classes"}
    (root / "stray.txt").write_text("x")
    (root / "00003" / "00000.png.tmp").write_bytes(b"half")
    lines = verify.verify(root).extra
    path.write_text(json.dumps(whole))  # one line: not the generator's layout
    assert verify.load_manifest(root)["classes"].loaded is not None
    assert verify.verify(root).extra == lines
    whole["classes"].reverse()  # files out of path order: found with a set instead of a merge
    for position, record in enumerate(whole["classes"]):
        record["index"] = position
    path.write_text(json.dumps(whole, indent=1, sort_keys=True) + "\n")
    assert sorted(verify.verify(root).extra) == sorted(lines)
    assert lines == ["extra: stray.txt (not in the manifest)", "extra: 00003/00000.png.tmp (unfinished: left by an "
                     "interrupted generation; delete it, the manifest does not need it)"]


@pytest.mark.slow  # a real mpiexec
def test_the_mpiexec_driver_makes_what_one_process_makes(tmp_path):
    found = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec")
    args = "--samples 6 --size 32 --points 500 --pad 2"
    assert generate.main(["--base-savedir", str(tmp_path / "one"), *args.split(), "--workers", "1", "--format", "wds",
                          "--shard-size", "2", "--no-progress"], environ={}) == 0
    launcher = f"{found} --oversubscribe --bind-to none" + (" --allow-run-as-root" if os.geteuid() == 0 else "")
    env = {**os.environ, "PYTHON": sys.executable, "BASE_SAVEDIR": str(tmp_path / "mpi"), "NP": "2", "WORKERS": "1",
           "SHARD_SIZE": "2", "DATASET_ARGS": args, "MPIEXEC": launcher.split()[0], "OMP_NUM_THREADS": "1"}
    script = REPO / "1p-frac_generator" / "generate_mpiexec.sh"
    text = script.read_text().replace('"$MPIEXEC" -n', f'{launcher} -n')  # the test's own mpiexec options
    (tmp_path / "driver.sh").write_text(text.replace('HERE="$(cd "$(dirname "$0")" && pwd)"', f'HERE="{script.parent}"'))
    result = subprocess.run(["bash", str(tmp_path / "driver.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert snapshot(only_dir(tmp_path / "mpi")) == snapshot(only_dir(tmp_path / "one"))
