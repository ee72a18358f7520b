"""The generated dataset: determinism, layout, manifest contents and audit, fill rule."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import (config_from_manifest, dataset_dir, load_manifest, run_cli, run_main, snapshot,
                      tiny_args)
from onepfrac import generate, ifs, png, render
from onepfrac.datasets import single_fractal as D


def test_same_seed_gives_identical_dataset_for_any_worker_count(tmp_path):
    runs = {}
    for workers in (1, 2):
        base = tmp_path / f"workers{workers}"
        result = run_cli(tiny_args(base, 13, 4, workers=workers))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(dataset_dir(base, samples=13, seed=4))
        assert result.stderr == ""
        runs[workers] = snapshot(dataset_dir(base, samples=13, seed=4))
    assert runs[1] == runs[2]
    assert "manifest.json" in runs[1] and len([p for p in runs[1] if p.endswith(".png")]) == 13
    assert "manifest.partial.jsonl" not in runs[1]


def test_different_seed_gives_a_different_dataset(tmp_path, capsys):
    for seed in (0, 1):
        assert run_main(tiny_args(tmp_path, 4, seed), capsys)[0] == 0
    first = snapshot(dataset_dir(tmp_path, samples=4, seed=0))
    second = snapshot(dataset_dir(tmp_path, samples=4, seed=1))
    assert first.keys() == second.keys()
    for name in first:
        assert first[name] != second[name], name
    assert load_manifest(dataset_dir(tmp_path, samples=4, seed=0))["base_system"] != \
        load_manifest(dataset_dir(tmp_path, samples=4, seed=1))["base_system"]


def test_dataset_folder_holds_one_zero_padded_class_folder_per_sample_with_one_png(tiny_dataset):
    folders = sorted(p.name for p in tiny_dataset.iterdir() if p.is_dir())
    assert folders == [f"{i:05d}" for i in range(12)]
    for name in folders:
        assert [p.name for p in (tiny_dataset / name).iterdir()] == [f"{name}.png"]
    assert sorted(p.name for p in tiny_dataset.iterdir() if p.is_file()) == ["manifest.json"]


def test_class_folder_names_sort_in_numeric_order_for_any_number_of_classes():
    for samples in (1, 12, 1000, 100_000, 1_234_567):
        last = samples - 1
        names = [D.file_name(D.Config(samples=samples), i, 0) for i in sorted({0, 1, 9, 10, last // 2, last})]
        assert names == sorted(names)
        assert len({len(name) for name in names}) == 1
    assert D.file_name(D.Config(samples=12), 7, 0) == "00007/00007.png"
    assert D.file_name(D.Config(samples=200_000), 7, 0) == "000007/000007.png"


def test_dataset_name_follows_the_released_pattern():
    config = D.Config(sigma=3.5, delta=0.05, samples=1000, seed=3)
    assert D.folder_name(config) == "sigma3.5_perturb0.05_sample1000_seed3"
    assert D.folder_name(D.Config(sigma=4, delta=0.2, samples=16, seed=0)) == "sigma4.0_perturb0.2_sample16_seed0"


def test_imagefolder_maps_class_folders_to_labels_in_numeric_order(tiny_dataset):
    datasets = pytest.importorskip("torchvision.datasets")
    folder = datasets.ImageFolder(str(tiny_dataset))
    assert folder.class_to_idx == {f"{i:05d}": i for i in range(12)}
    assert [target for _, target in folder.samples] == list(range(12))
    for index in range(12):
        image, target = folder[index]
        assert target == index
        assert image.mode == "RGB" and image.size == (64, 64)
        pixels = np.asarray(image)
        assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
        assert set(np.unique(pixels)) == {0, 127}


def test_manifest_records_every_argument_the_base_system_and_each_class(tiny_dataset):
    manifest = load_manifest(tiny_dataset)
    arguments = manifest["arguments"]
    assert (arguments["size"], arguments["points"], arguments["pad"], arguments["samples"]) == (64, 3000, 2, 12)
    assert arguments["png_bits"] == 8 and arguments["png_compression"] == 1
    assert "workers" not in arguments
    assert [c["index"] for c in manifest["classes"]] == list(range(12))
    assert [c["file"] for c in manifest["classes"]] == [f"{i:05d}/{i:05d}.png" for i in range(12)]
    base = manifest["base_system"]
    assert np.asarray(base["coefficients"]).shape == (2, 6)
    assert np.allclose(base["probabilities"], ifs.map_probabilities(np.asarray(base["coefficients"])), atol=1e-15)


def test_manifest_checksums_match_the_files(tiny_dataset):
    for record in load_manifest(tiny_dataset)["classes"]:
        assert hashlib.sha256((tiny_dataset / record["file"]).read_bytes()).hexdigest() == record["sha256"]


def test_every_saved_class_fills_more_than_the_threshold(tiny_dataset):
    manifest = load_manifest(tiny_dataset)
    threshold = manifest["arguments"]["fill_threshold"]
    for record in manifest["classes"]:
        image = png.decode_gray(tiny_dataset / record["file"])
        assert render.fill_fraction(image) == record["fill"] > threshold


def test_manifest_base_sigma_factor_equals_its_target_within_the_jitter(tiny_dataset):
    manifest = load_manifest(tiny_dataset)
    base, sigma, jitter = manifest["base_system"], manifest["arguments"]["sigma"], manifest["arguments"]["sigma_jitter"]
    assert abs(base["sigma_factor"] - base["sigma_target"]) <= 1e-9
    assert abs(ifs.sigma_factor(np.asarray(base["coefficients"])) - base["sigma_target"]) <= 1e-9
    assert sigma - jitter <= base["sigma_target"] <= sigma + jitter


def test_zero_sigma_jitter_gives_a_base_at_exactly_the_requested_sigma(tmp_path, capsys):
    code, _, err = run_main(tiny_args(tmp_path, 2, 0, "--sigma", "4.25", "--sigma-jitter", "0"), capsys)
    assert code == 0, err
    base = load_manifest(dataset_dir(tmp_path, sigma=4.25, samples=2))["base_system"]
    assert base["sigma_target"] == 4.25
    assert abs(base["sigma_factor"] - 4.25) <= 1e-9


@pytest.mark.parametrize("mode", ["multiplicative", "additive"])
def test_manifest_class_coefficients_stay_within_delta_of_the_base(tmp_path, capsys, mode):
    delta = 0.2
    code, _, err = run_main(tiny_args(tmp_path, 10, 2, "--delta", delta, "--perturbation", mode), capsys)
    assert code == 0, err
    manifest = load_manifest(dataset_dir(tmp_path, delta=delta, samples=10, seed=2))
    base = np.asarray(manifest["base_system"]["coefficients"])
    for record in manifest["classes"]:
        coefficients = np.asarray(record["coefficients"])
        if mode == "multiplicative":
            assert np.all(np.abs(coefficients / base - 1.0) <= delta + 1e-12)
        else:
            assert np.all(np.abs(coefficients - base) <= delta / 2 + 1e-12)
        assert not np.array_equal(coefficients, base)


AUDITED = {
    "default": [],
    "point drawing": ["--drawing", "point"],
    "additive": ["--perturbation", "additive"],
    "retried classes": ["--delta", "0.5", "--fill-threshold", "0.1", "--seed", "1"],
    "per-image orbit": ["--orbit", "per-image"],
    "1-bit png": ["--png-bits", "1", "--png-compression", "9"],
    "burn-in": ["--burn-in", "100"],
}


@pytest.mark.parametrize("extra", AUDITED.values(), ids=AUDITED.keys())
def test_rerendering_each_class_from_the_manifest_reproduces_the_saved_pixels(tmp_path, capsys, extra):
    code, out, err = run_main(["--base-savedir", tmp_path, "--samples", 8, "--workers", 1,
                               "--size", 64, "--points", 3000, "--pad", 2, "--no-progress", *extra], capsys)
    assert code == 0, err
    root = Path(out.strip())
    assert root.parent == tmp_path
    manifest = load_manifest(root)
    config = config_from_manifest(manifest)
    probabilities = np.asarray(manifest["base_system"]["probabilities"])
    attempts = []
    for record in manifest["classes"]:
        saved = root / record["file"]
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == record["sha256"]
        system = ifs.System(np.asarray(record["coefficients"]), probabilities)
        assert np.array_equal(D.rerender(config, system, record["index"], record["attempts"]), png.decode_gray(saved))
        attempts.append(record["attempts"])
    if "--delta" in extra:
        assert max(attempts) > 1


def test_one_bit_and_eight_bit_pngs_decode_to_identical_pixels(tmp_path, capsys):
    roots = {}
    for bits in (8, 1):
        base = tmp_path / f"bits{bits}"
        assert run_main(tiny_args(base, 4, 0, "--png-bits", bits), capsys)[0] == 0
        roots[bits] = dataset_dir(base, samples=4)
    for i in range(4):
        name = f"{i:05d}/{i:05d}.png"
        eight, one = roots[8] / name, roots[1] / name
        assert eight.read_bytes() != one.read_bytes()
        with Image.open(eight) as image:
            assert image.mode == "L"
            pil_eight = np.asarray(image.convert("L"))
        with Image.open(one) as image:
            pil_one = np.asarray(image.convert("L"))
        header_eight, header_one = eight.read_bytes()[24:26], one.read_bytes()[24:26]
        assert tuple(header_eight) == (8, 0)  # IHDR: bit depth 8, grayscale
        assert tuple(header_one) == (1, 3)  # IHDR: bit depth 1, palette
        assert np.array_equal(png.decode_gray(eight), png.decode_gray(one))
        assert np.array_equal(pil_eight, pil_one) and np.array_equal(pil_eight, png.decode_gray(one))
        assert set(np.unique(pil_one)) == {0, 127}
