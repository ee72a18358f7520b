"""1p-frac's base selection, sigma jitter and the released rendering options (issue 16)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest

from onepfrac import __version__, ifs, render
from onepfrac.datasets import make_config, single_fractal as F
from onepfrac.datasets.interface import GenerationError, stream

from conftest import TINY, run_cli, tiny_args

TINY_CONFIG = F.Config(size=64, points=3000, pad=2)

# find_base of 0.1.0 (the dense rule was the only one) at the default arguments, by seed:
# (candidate, SHA-256 of the coefficients' bytes, first 16 hex digits), recorded from that version.
DENSE_BASES_OF_0_1_0 = {0: (0, "9eac3989fe7bb474"), 3: (2, "3ae64f2686a9f51b"), 6: (4, "b98f90e202fda687"),
                        10: (1, "0a67f2775a23a788")}


def coefficient_digest(system: ifs.System) -> str:
    return hashlib.sha256(system.coefficients.tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("seed", sorted(DENSE_BASES_OF_0_1_0))
def test_dense_rule_keeps_the_bases_of_the_previous_version(seed):
    base = F.find_base(F.Config(seed=seed, base_rule="dense"))
    assert (base.candidate, coefficient_digest(base.system)) == DENSE_BASES_OF_0_1_0[seed]
    assert base.probes_passed >= 8  # 25% of 32


@pytest.mark.parametrize("seed", [3, 10, pytest.param(6, marks=pytest.mark.slow)])
def test_released_rule_keeps_a_base_the_dense_rule_rejects(seed):
    # these seeds' first candidate passes some probes, too few for the dense rule
    released = F.find_base(F.Config(seed=seed))
    dense = F.find_base(F.Config(seed=seed, base_rule="dense"))
    assert released.candidate == 0 < dense.candidate
    assert released.probes_passed == 1 and 1 <= released.probes_drawn <= F.Config().base_probes


def test_released_rule_never_takes_a_later_candidate_than_the_dense_rule():
    # both read the same probe stream, so a dense-usable base has a passing probe among its first `probes`
    for seed in range(6):
        config = replace(TINY_CONFIG, seed=seed, fill_threshold=0.2)
        assert F.find_base(config).candidate <= F.find_base(replace(config, base_rule="dense")).candidate


def test_released_rule_redraws_a_base_that_never_passes_within_its_probes():
    config = F.Config(seed=11, base_probes=10)  # candidate 0 needs 43 probes to pass once
    base = F.find_base(config)
    assert base.candidate > 0
    usable, drawn, passed = F.judge_base(config, F.find_base(F.Config(seed=11)).system, 0)
    assert (usable, drawn, passed) == (False, 10, 0)


def test_base_search_is_bounded_and_names_the_options_to_change():
    config = replace(TINY_CONFIG, fill_threshold=0.99, base_probes=3, max_base_tries=2)
    with pytest.raises(GenerationError, match=r"in 3 tries \(--base-probes\).* in 2 tries \(--max-base-tries\)"):
        F.find_base(config)
    with pytest.raises(GenerationError, match=r"--base-rule dense"):
        F.find_base(replace(config, base_rule="dense", probes=4))


def test_class_search_is_bounded_and_says_what_to_change():
    base = F.find_base(TINY_CONFIG)
    config = replace(TINY_CONFIG, fill_threshold=0.99, max_class_tries=5)
    with pytest.raises(GenerationError, match=r"class 3: .* in 5 tries"):
        F.render_class(config, base, 3)


def test_the_default_class_budget_finishes_a_base_that_passes_one_probe_in_a_thousand():
    budget = F.Config().max_class_tries
    assert (1 - 1e-3) ** budget < 1e-4  # a class fails with probability under 1e-4


@pytest.mark.parametrize("sigma,n_maps", [(6.0, 2), (5.95, 2), (9.0, 3)])
def test_sigma_jitter_stays_inside_the_valid_range_and_is_never_clipped(sigma, n_maps):
    config = F.Config(sigma=sigma, n_maps=n_maps)
    top = 3.0 * n_maps
    rng = np.random.default_rng(0)
    targets = np.array([F.sigma_target(config, rng) for _ in range(4000)])
    assert np.all(targets < top) and np.all(targets >= sigma - 0.1)
    assert np.unique(targets).size == targets.size  # no pile-up at 3N
    # uniform on [sigma - 0.1, min(sigma + 0.1, 3N)): mean in the middle of that interval
    assert abs(targets.mean() - (sigma - 0.1 + min(sigma + 0.1, top)) / 2) < 0.005


def test_sigma_at_the_top_gives_no_exact_isometry_unless_asked_for():
    for seed in range(20):
        rng = stream(seed, F.STREAM_BASE, 0)
        system = ifs.sample_system(F.sigma_target(F.Config(sigma=6.0), rng), 2, rng)
        singular = np.linalg.svd(ifs.linear_parts(system.coefficients), compute_uv=False)
        assert not np.allclose(singular, 1.0, atol=1e-9)
    asked = F.Config(sigma=6.0, sigma_jitter=0.0)
    assert F.sigma_target(asked, np.random.default_rng(0)) == 6.0


def test_sigma_jitter_near_zero_stays_positive():
    config = F.Config(sigma=0.05, sigma_jitter=0.049)
    rng = np.random.default_rng(1)
    assert min(F.sigma_target(config, rng) for _ in range(2000)) > 0


def test_jitter_inside_the_range_draws_what_it_drew_before():
    # the draw below 3N is unchanged, so bases of sigma 3.5 keep their targets
    rng_new, rng_old = stream(0, F.STREAM_BASE, 0), stream(0, F.STREAM_BASE, 0)
    assert F.sigma_target(F.Config(), rng_new) == rng_old.uniform(3.4, 3.6)


def test_fill_mask_mode_stamps_solid_patches():
    base = F.find_base(TINY_CONFIG)
    solid = F.render_class(replace(TINY_CONFIG, mask_mode="fill"), base, 0)
    random = F.render_class(TINY_CONFIG, base, 0)
    assert set(np.unique(solid.image)) <= {0, render.INK}
    assert solid.fill > random.fill  # every cell of every patch is drawn
    indices = F.map_indices_for(TINY_CONFIG, base.system.probabilities, 0)
    points = render.iterate(solid.system.coefficients, indices)
    ok, pixels = render.to_pixels(points, 64, 2)
    expected = render.rasterize_patch(pixels, np.full(len(pixels), 511, dtype=np.uint16), 64)
    assert ok and np.array_equal(solid.image, expected[::-1])


def test_separate_height_and_vertical_pad_frame_each_axis_on_its_own():
    config = replace(TINY_CONFIG, size=64, size_y=40, pad=2, pad_y=5)
    base = F.find_base(config)
    image = F.render_class(config, base, 1).image
    assert image.shape == (40, 64)
    rows = np.flatnonzero(image.any(axis=1))
    assert rows.min() >= 40 - 1 - (40 - 5) - 3 and rows.max() <= 40 - 5 + 3
    square = F.render_class(replace(config, size_y=64, pad_y=2), base, 1).image
    assert np.array_equal(square, F.render_class(replace(config, size_y=0, pad_y=-1), base, 1).image)


def test_render_with_equal_sides_is_the_square_render():
    rng = np.random.default_rng(3)
    coefficients = np.array([[0.5, 0.1, -0.2, 0.4, 0.3, -0.1], [-0.3, 0.2, 0.1, 0.6, -0.4, 0.5]])
    indices = render.choose_maps(rng.random(999), np.array([0.5, 0.5]))
    masks = render.random_masks(1000, rng)
    assert np.array_equal(render.render(coefficients, indices, 48, 3, "patch", masks),
                          render.render(coefficients, indices, 48, 3, "patch", masks, size_y=48, pad_y=3))


@pytest.mark.parametrize("values,message", [
    ({"size_y": 2}, "--size-y 2 is outside 4..16384"),
    ({"pad_y": -2}, "--pad-y -2 must be at least 0"),
    ({"size_y": 10, "pad_y": 4}, "--size-y 10 is too small for --pad-y 4"),
    ({"base_probes": 0}, "--base-probes 0 must be at least 1"),
])
def test_bad_released_layout_options_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        make_config(F, values)


def test_cli_refuses_an_unknown_base_rule_and_mask_mode(tmp_path):
    for option, value in (("--base-rule", "loose"), ("--mask-mode", "solid")):
        result = run_cli(["--base-savedir", tmp_path, option, value, *TINY])
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
        assert option in result.stderr and value in result.stderr
    assert not any(tmp_path.iterdir())


def test_negative_zero_delta_is_the_folder_of_zero():
    assert F.folder_name(make_config(F, {"delta": -0.0})) == F.folder_name(make_config(F, {"delta": 0.0}))
    assert "perturb0.0_" in F.folder_name(make_config(F, {"delta": -0.0}))


def test_manifest_records_the_rule_the_version_and_how_the_base_was_judged(tmp_path):
    result = run_cli(tiny_args(tmp_path, 3))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((next(tmp_path.iterdir()) / "manifest.json").read_text())
    assert manifest["base_system"]["probes_passed"] == 1 and manifest["base_system"]["probes_drawn"] >= 1
    assert manifest["arguments"]["base_rule"] == "released" and manifest["arguments"]["mask_mode"] == "random"
    assert manifest["generator"]["version"] == __version__ != "0.1.0"
