"""onepfrac.datasets.single_fractal: base search, classes, orbits, fill rule, re-rendering."""

import numpy as np
import pytest

from conftest import TINY_CONFIG
from onepfrac import ifs, render
from onepfrac.datasets import single_fractal as D
from onepfrac.datasets.interface import GenerationError, stream


def tiny(**changes) -> D.Config:
    return D.Config(**{**TINY_CONFIG, "samples": 8, **changes})


@pytest.fixture(scope="module")
def config_and_base():
    config = tiny()
    return config, D.find_base(config)


def test_fill_test_is_strict():
    config = tiny(fill_threshold=0.25)
    assert not D.passes(config, 0.25)
    assert D.passes(config, np.nextafter(0.25, 1))
    assert not D.passes(config, 0.1)


def test_every_class_image_fills_more_than_the_threshold(config_and_base):
    config, base = config_and_base
    for index in range(config.samples):
        result = D.render_class(config, base, index)
        assert result.fill > config.fill_threshold
        assert result.fill == render.fill_fraction(result.image)
        assert result.image.shape == (config.size, config.size) and result.image.dtype == np.uint8
        assert set(np.unique(result.image)) <= {0, 127}


def test_class_image_is_the_canvas_flipped_top_to_bottom(config_and_base):
    config, base = config_and_base
    result = D.render_class(config, base, 0)
    assert result.attempts == 1
    masks = render.random_masks(config.points, stream(config.seed, D.STREAM_MASKS, 0))
    indices = render.released_map_choices(base.system.probabilities, config.points - 1)
    canvas = render.render(result.system.coefficients, indices, config.size, config.pad, "patch", masks)
    assert not np.array_equal(canvas, canvas[::-1])
    assert np.array_equal(result.image, canvas[::-1])


def test_class_depends_only_on_config_and_index_not_on_order(config_and_base):
    config, base = config_and_base
    forward = [D.render_class(config, base, i) for i in range(4)]
    backward = [D.render_class(config, base, i) for i in reversed(range(4))][::-1]
    for a, b in zip(forward, backward):
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.system.coefficients, b.system.coefficients)
    assert not np.array_equal(forward[0].image, forward[1].image)


def test_class_perturbations_respect_delta_and_keep_base_probabilities(config_and_base):
    config, base = config_and_base
    for index in range(config.samples):
        system = D.render_class(config, base, index).system
        ratio = system.coefficients / base.system.coefficients
        assert np.all(np.abs(ratio - 1.0) <= config.delta + 1e-12)
        assert np.array_equal(system.probabilities, base.system.probabilities)


def test_base_system_sigma_factor_equals_its_jittered_target(config_and_base):
    config, base = config_and_base
    assert abs(ifs.sigma_factor(base.system.coefficients) - base.sigma_target) <= 1e-9
    assert config.sigma - config.sigma_jitter <= base.sigma_target <= config.sigma + config.sigma_jitter
    assert base.to_dict()["sigma_factor"] == ifs.sigma_factor(base.system.coefficients)


def test_zero_jitter_gives_exactly_the_requested_sigma():
    for sigma in (2.0, 3.5, 4.25):
        base = D.find_base(tiny(sigma=sigma, sigma_jitter=0.0))
        assert base.sigma_target == sigma
        assert abs(ifs.sigma_factor(base.system.coefficients) - sigma) <= 1e-9


def test_base_search_is_deterministic_per_seed():
    a, b, c = D.find_base(tiny(seed=5)), D.find_base(tiny(seed=5)), D.find_base(tiny(seed=6))
    assert np.array_equal(a.system.coefficients, b.system.coefficients) and a.candidate == b.candidate
    assert not np.array_equal(a.system.coefficients, c.system.coefficients)


def test_unreachable_fill_threshold_ends_the_base_search_with_a_clear_error():
    with pytest.raises(GenerationError, match="fill-threshold"):
        D.find_base(tiny(fill_threshold=0.99, max_base_tries=20))


def test_class_search_gives_up_after_max_class_tries(config_and_base):
    config, base = config_and_base
    impossible = D.Config(**{**config.to_dict(), "fill_threshold": 0.99, "max_class_tries": 3})
    with pytest.raises(GenerationError, match="class 2: .* 3 tries"):
        D.render_class(impossible, base, 2)


def test_fixed_orbit_uses_the_released_seed_100_sequence_for_every_class_and_seed():
    probabilities = np.array([0.35, 0.65])
    expected = render.choose_maps(np.random.RandomState(100).random_sample(3000)[:2999], probabilities)
    for seed in (0, 1):
        config = tiny(seed=seed)
        for index in (0, 1, 7):
            indices = D.map_indices_for(config, probabilities, index)
            assert len(indices) == config.points - 1
            assert np.array_equal(indices, expected)


def test_per_image_orbit_differs_between_classes_and_is_reproducible():
    config = tiny(orbit="per-image")
    probabilities = np.array([0.35, 0.65])
    first = D.map_indices_for(config, probabilities, 0)
    assert len(first) == config.points - 1
    assert np.array_equal(first, D.map_indices_for(config, probabilities, 0))
    assert not np.array_equal(first, D.map_indices_for(config, probabilities, 1))
    assert not np.array_equal(first, render.released_map_choices(probabilities, config.points - 1))


def test_fixed_orbit_with_zero_delta_and_point_drawing_gives_identical_classes():
    config = tiny(delta=0.0, drawing="point")
    base = D.find_base(config)
    images = [D.render_class(config, base, i).image for i in range(3)]
    assert np.array_equal(images[0], images[1]) and np.array_equal(images[1], images[2])


def test_per_image_orbit_finds_a_base_system_and_renders_classes():
    # the base search renders probes under per-image orbits too; it must not fail on their stream keys
    config = tiny(delta=0.0, drawing="point", orbit="per-image")
    base = D.find_base(config)
    images = [D.render_class(config, base, i).image for i in range(2)]
    assert not np.array_equal(images[0], images[1])  # same coefficients, different orbits


@pytest.mark.parametrize("changes", [{}, {"drawing": "point"}, {"perturbation": "additive"},
                                     {"delta": 0.5, "fill_threshold": 0.1, "seed": 1}])
def test_rerender_reproduces_each_class_from_its_recorded_coefficients(changes):
    config = tiny(**changes)
    base = D.find_base(config)
    attempts = []
    for index in range(config.samples):
        result = D.render_class(config, base, index)
        recorded = ifs.System(result.system.coefficients.copy(), base.system.probabilities.copy())
        assert np.array_equal(D.rerender(config, recorded, index, result.attempts), result.image)
        attempts.append(result.attempts)
    if "delta" in changes:
        assert max(attempts) > 1  # the masks of rejected attempts are skipped correctly
