"""`python -m onepfrac.generate --dataset NAME`: layout, manifest, determinism, resume, refused options."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, TINY_DATASETS, interrupt_in_process, load_manifest, run_main, snapshot
from PIL import Image

from onepfrac import datasets, generate

TINY = {name: args for name, args in TINY_DATASETS.items() if name != "1p-frac"}
FOLDERS = {"fractaldb": "fractaldb_classes3_instances6_seed{seed}", "ofdb": "ofdb_classes3_seed{seed}",
           "3d-ofdb": "3d-ofdb_classes3_views4_seed{seed}", "visualatom": "visualatom_classes3_instances2_seed{seed}",
           "real-image": "real-image_classes3_instances1_seed{seed}"}
INSTANCES = {"fractaldb": 6, "ofdb": 1, "3d-ofdb": 4, "visualatom": 2, "real-image": 1}


NAMES = list(TINY)


def args_for(name, base, seed=0, workers=1, *extra):
    return ["--dataset", name, "--base-savedir", base, "--seed", seed, "--workers", workers, "--no-progress",
            *TINY[name], *extra]


def make(name, base, capsys, seed=0, workers=1, *extra) -> Path:
    code, out, err = run_main(args_for(name, base, seed, workers, *extra), capsys)
    assert code == 0, err
    root = Path(base) / FOLDERS[name].format(seed=seed)
    assert out == f"{root}\n"
    return root


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_an_identical_dataset_for_any_worker_count_and_another_seed_another(tmp_path, capsys, name):
    one = snapshot(make(name, tmp_path / "one", capsys, workers=1))
    two = snapshot(make(name, tmp_path / "two", capsys, workers=2))
    assert one == two
    other = snapshot(make(name, tmp_path / "other", capsys, seed=1))
    assert other.keys() == one.keys()
    assert any(other[k] != one[k] for k in one if k.endswith(".png"))


@pytest.mark.parametrize("name", NAMES)
def test_layout_is_class_folders_of_instance_pngs_with_a_manifest_that_checks_them(tmp_path, capsys, name):
    root = make(name, tmp_path, capsys)
    instances = INSTANCES[name]
    assert sorted(p.name for p in root.iterdir()) == ["00000", "00001", "00002", "manifest.json"]
    for c in range(3):
        assert sorted(p.name for p in (root / f"{c:05d}").iterdir()) == [f"{i:05d}.png" for i in range(instances)]
    manifest = load_manifest(root)
    assert manifest["dataset"] == name and manifest["format"] == generate.FORMAT
    assert manifest["arguments"]["classes"] == 3 and manifest["arguments"]["seed"] == 0
    assert "workers" not in manifest["arguments"]
    assert [record["index"] for record in manifest["classes"]] == [0, 1, 2]
    for record in manifest["classes"]:
        c = record["index"]
        assert record["files"] == [f"{c:05d}/{i:05d}.png" for i in range(instances)]
        assert [hashlib.sha256((root / f).read_bytes()).hexdigest() for f in record["files"]] == record["sha256"]
        assert isinstance(record["params"], dict)


@pytest.mark.parametrize("name", NAMES)
def test_rendering_each_instance_from_the_manifest_reproduces_the_saved_pixels(tmp_path, capsys, name):
    root = make(name, tmp_path, capsys)
    manifest = load_manifest(root)
    module = datasets.load(name)
    names = {f.name for f in fields(module.Config)}
    config = module.Config(**{k: v for k, v in manifest["arguments"].items() if k in names})
    shared = {k: v for k, v in manifest.items() if k not in ("format", "dataset", "generator", "arguments", "classes")}
    for record in manifest["classes"]:
        for instance, relative in enumerate(record["files"]):
            image = module.render_instance(config, shared, record["params"], instance)
            with Image.open(root / relative) as saved:
                assert np.array_equal(np.asarray(saved), image), relative


def test_gray_formula_datasets_pass_imagefolder_with_numeric_labels(tmp_path, capsys):
    folder = pytest.importorskip("torchvision.datasets").ImageFolder
    root = make("fractaldb", tmp_path, capsys)
    loaded = folder(str(root))
    assert loaded.class_to_idx == {"00000": 0, "00001": 1, "00002": 2}
    assert len(loaded) == 18 and loaded[7][1] == 1


def test_fractaldb_takes_the_first_instances_in_the_released_order(tmp_path, capsys):
    few = make("fractaldb", tmp_path / "few", capsys)
    extra = ["--instances", 9]
    code, out, err = run_main(args_for("fractaldb", tmp_path / "more", 0, 1, *extra), capsys)
    assert code == 0, err
    more = Path(out.strip())
    for c in range(3):
        for i in range(6):
            name = f"{c:05d}/{i:05d}.png"
            assert (few / name).read_bytes() == (more / name).read_bytes()


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path, capsys, monkeypatch):
    reference = snapshot(make("fractaldb", tmp_path / "reference", capsys))
    base = tmp_path / "resumed"
    code, _, _ = interrupt_in_process(args_for("fractaldb", base), capsys, monkeypatch, after=1)
    assert code == 130
    root = base / FOLDERS["fractaldb"].format(seed=0)
    assert not (root / "manifest.json").exists() and (root / generate.PARTIAL).exists()
    (root / "00000" / "00003.png").unlink()  # a finished class missing a file is made again
    assert make("fractaldb", base, capsys) == root
    assert snapshot(root) == reference


def test_rerunning_a_completed_dataset_changes_nothing_and_other_arguments_are_refused(tmp_path, capsys):
    root = make("3d-ofdb", tmp_path, capsys)
    before = snapshot(root, with_mtimes=True)
    assert make("3d-ofdb", tmp_path, capsys) == root
    code, out, err = run_main(args_for("3d-ofdb", tmp_path, 0, 1, "--fov", 60), capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "--fov" in err
    assert snapshot(root, with_mtimes=True) == before


REFUSED = {
    "1p-frac given --classes": (["--classes", "4"], ["--classes 4", "1p-frac", "--samples"]),
    "fractaldb given --sigma": (["--dataset", "fractaldb", "--sigma", "3"], ["--sigma 3", "fractaldb", "--classes"]),
    "fractaldb given --samples": (["--dataset", "fractaldb", "--samples", "3"], ["--samples 3", "--classes"]),
    "ofdb given --instances": (["--dataset", "ofdb", "--instances=2"], ["--instances 2", "ofdb", "one image"]),
    "3d-ofdb given --weights": (["--dataset", "3d-ofdb", "--weights", "recommended"], ["--weights recommended", "3d-ofdb"]),
    "fractaldb instances above 1000": (["--dataset", "fractaldb", "--instances", "1001"], ["--instances 1001", "1..1000"]),
    "fractaldb zero classes": (["--dataset", "fractaldb", "--classes", "0"], ["--classes 0"]),
    "fractaldb unknown weights": (["--dataset", "fractaldb", "--weights", "heavy"], ["--weights", "heavy"]),
    "3d-ofdb thirteen views": (["--dataset", "3d-ofdb", "--instances", "13"], ["--instances 13", "1..12"]),
    "3d-ofdb fov 180": (["--dataset", "3d-ofdb", "--fov", "180"], ["--fov 180"]),
    "ofdb a-scale nan": (["--dataset", "ofdb", "--a-scale", "nan"], ["--a-scale nan"]),
    "ofdb negative seed": (["--dataset", "ofdb", "--seed", "-1"], ["--seed -1"]),
    "unknown dataset": (["--dataset", "mnist"], ["--dataset mnist", "fractaldb", "3d-ofdb"]),
    "integer option given a fraction": (["--dataset", "fractaldb", "--size", "2.5"], ["--size", "2.5"]),
    "abbreviated --dataset": (["--data", "fractaldb"], ["--data fractaldb", "does not apply", "--dataset,"]),
}


@pytest.mark.parametrize("bad, words", REFUSED.values(), ids=REFUSED.keys())
def test_an_option_that_does_not_apply_or_is_out_of_range_exits_2_with_one_line_and_creates_nothing(
        tmp_path, capsys, bad, words):
    target = tmp_path / "out"
    code, out, err = run_main(["--base-savedir", target, "--no-progress", *bad], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "error" in err, err
    for word in words:
        assert word in err
    assert not target.exists()


def test_a_registered_dataset_whose_module_is_missing_is_refused_by_name(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "ghost", "onepfrac.datasets.ghost")
    code, out, err = run_main(["--dataset", "ghost", "--base-savedir", tmp_path / "out"], capsys)
    assert code == 2 and err.count("\n") == 1 and "not available" in err and "ghost" in err
    assert not (tmp_path / "out").exists()


def test_an_exhausted_search_fails_with_exit_1_and_writes_nothing(tmp_path, capsys):
    target = tmp_path / "out"
    code, out, err = run_main(args_for("fractaldb", target, 0, 1, "--fill-threshold", 1.0, "--max-tries", 3), capsys)
    assert code == 1 and out == "" and err.count("\n") == 1 and "--max-tries" in err
    assert not target.exists() or not any(target.rglob("*.png"))


@pytest.mark.parametrize("name, options", [("fractaldb", ["--classes", "--instances", "--weights", "--points"]),
                                           ("ofdb", ["--classes", "--a-scale"]),
                                           ("3d-ofdb", ["--classes", "--instances", "--fov", "--jitter"]),
                                           ("1p-frac", ["--sigma", "--samples", "--dataset"])])
def test_help_of_each_dataset_lists_its_own_options(capsys, name, options):
    code, out, err = run_main(["--dataset", name, "--help"], capsys)
    assert code == 0 and err == ""
    for option in options:
        assert option in out
    if name != "1p-frac":
        assert "--sigma" not in out and "--samples" not in out


def test_rgb_images_are_written_as_rgb_pngs(tmp_path, capsys):
    root = make("real-image", tmp_path, capsys, 0, 1, "--representation", "color")
    with Image.open(root / "00000" / "00000.png") as image:
        assert image.mode == "RGB" and image.size == (48, 48)


DRIVERS = {"fractaldb": ("generate_fractaldb.sh", {"CLASSES": "3", "INSTANCES": "6"}, TINY["fractaldb"][4:]),
           "ofdb": ("generate_ofdb.sh", {"CLASSES": "3"}, TINY["ofdb"][2:]),
           "3d-ofdb": ("generate_3d-ofdb.sh", {"CLASSES": "3", "VIEWS": "4"}, TINY["3d-ofdb"][4:]),
           "visualatom": ("generate_visualatom.sh", {"CLASSES": "3", "INSTANCES": "2"}, TINY["visualatom"][4:]),
           "real-image": ("generate_real-image.sh", {"CLASSES": "3"}, TINY["real-image"][2:])}


@pytest.mark.slow  # runs each shell driver in a subprocess
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("name", [name for name in NAMES if name in DRIVERS])
def test_driver_script_writes_what_the_module_cli_writes(tmp_path, capsys, name):
    script, variables, extra = DRIVERS[name]
    env = {**os.environ, "PYTHON": sys.executable, "WORKERS": "1", "BASE_SAVEDIR": str(tmp_path / "script"),
           "EXTRA_ARGS": " ".join(map(str, [*extra, "--no-progress"])), **variables}
    result = subprocess.run(["bash", str(REPO / "1p-frac_generator" / script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    root = Path(result.stdout.splitlines()[-1])
    assert root.parent == tmp_path / "script"
    assert snapshot(root) == snapshot(make(name, tmp_path / "cli", capsys))
    bad = subprocess.run(["bash", str(REPO / "1p-frac_generator" / script)], cwd=tmp_path,
                         env={**env, "CLASSES": "0", "BASE_SAVEDIR": str(tmp_path / "bad")},
                         capture_output=True, text=True, timeout=120)
    # the driver checks its variables itself and names the one that is wrong
    assert bad.returncode == 2 and "CLASSES=0" in bad.stderr and not (tmp_path / "bad").exists()
    assert json.loads((root / generate.MANIFEST).read_text())["dataset"] == name


@pytest.mark.parametrize("name, config, rows, columns", [
    ("fractaldb", dict(classes=2, instances=100, size=64, points=3000, pad=2, search_size=64, search_points=3000), 2, 3),
    ("ofdb", dict(classes=12, size=64, points=3000, pad=2, search_size=64, search_points=3000), 2, 6),
    ("3d-ofdb", dict(classes=2, size=48, points=2000), 2, 6)])
def test_sample_grid_shows_classes_by_instances_of_a_dataset(name, config, rows, columns):
    from onepfrac import figures
    module = datasets.load(name)
    if name == "fractaldb":
        figures_picks = [i for i in figures.SHOWN_INSTANCES["fractaldb"][0] if i < 100]
        columns = len(figures_picks)
    grid = figures.formula_grid(name, module.Config(**config), classes=rows, thumb=32)
    titles = 2 if name != "ofdb" else 1
    assert grid.size == (figures.LABEL_WIDTH + columns * 36, titles * figures.TITLE_HEIGHT + rows * 36)
    pixels = np.asarray(grid)
    first = pixels[titles * figures.TITLE_HEIGHT:][:32, figures.LABEL_WIDTH:figures.LABEL_WIDTH + 32]
    assert (first > 200).mean() > 0.005 and (first == 0).mean() > 0.1  # a drawn shape on black
