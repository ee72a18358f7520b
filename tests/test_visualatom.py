"""onepfrac.datasets.visualatom: released parameter ranges, seeding, contour formula, errors."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from onepfrac import datasets
from onepfrac.datasets import visualatom as V

TINY = dict(size=64, classes=2000, instances=4)
PNOISE1_REFERENCE = Path(__file__).parent / "data" / "pnoise1_reference.json"
# pnoise1 computes in float32 (|value| < 1, one ulp <= 1.2e-7): a few ulps of different rounding
# stay under 1e-6, while one wrong lattice slope, or skipping its float32 input rounding, errs by > 1e-3
PNOISE1_TOLERANCE = 1e-6


def tiny(**changes) -> V.Config:
    return V.Config(**{**TINY, **changes})


def image(config: V.Config, class_index: int, instance_index: int) -> np.ndarray:
    shared = datasets.prepare(V, config)
    return V.render_instance(config, shared, V.class_params(config, shared, class_index), instance_index)


def small_atom(**changes) -> dict:
    """A category small enough to stay inside the canvas wherever its centre is near the middle."""
    return {"class_index": 0, "vertices": 50, "orbits": 3, "perlin": 1.5, "line_width": 0.05, "radius": 20,
            "frequency1": 3, "frequency2": 7, "oval_x": 1.2, "oval_y": 1.7, **changes}


def test_defaults_are_the_released_script_values():
    config = V.Config()
    assert (config.classes, config.instances, config.size) == (1000, 1000, 512)
    assert (config.vertices_min, config.vertices_max, config.orbits_min, config.orbits_max) == (200, 1000, 1, 200)
    assert (config.perlin_min, config.perlin_max, config.line_width) == (0.0, 4.0, 0.1)
    assert (config.radius_min, config.radius_max, config.oval_max) == (10, 60, 2.0)
    assert (config.frequency_min, config.frequency_max, config.start_pos) == (0, 20, 512)


def test_config_round_trips_through_json():
    config = tiny(seed=7)
    assert V.Config(**json.loads(json.dumps(config.to_dict()))) == config


def test_same_seed_gives_identical_images():
    assert np.array_equal(image(tiny(), 3, 1), image(tiny(), 3, 1))


def test_other_class_instance_or_seed_gives_another_image():
    reference = image(tiny(), 3, 1)
    assert not np.array_equal(reference, image(tiny(), 4, 1))
    assert not np.array_equal(reference, image(tiny(), 3, 2))
    assert not np.array_equal(reference, image(tiny(seed=1), 3, 1))


def test_class_params_are_json_and_do_not_depend_on_order_or_count():
    config = tiny()
    forward = [V.class_params(config, {}, i) for i in range(20)]
    backward = [V.class_params(config, {}, i) for i in reversed(range(20))][::-1]
    assert forward == backward
    assert forward[5] == V.class_params(tiny(classes=6), {}, 5)
    assert json.loads(json.dumps(forward)) == forward


def test_class_params_stay_in_the_released_ranges():
    config = tiny()
    params = [V.class_params(config, {}, i) for i in range(config.classes)]
    for p in params:
        assert 200 <= p["vertices"] <= 1000 and 1 <= p["orbits"] <= 200
        assert 0.0 <= p["perlin"] < 4.0 and 0.0 <= p["line_width"] < 0.1
        assert 10 <= p["radius"] <= 60
        assert 1.0 <= p["oval_x"] < 2.0 and 1.0 <= p["oval_y"] < 2.0
        assert 0 <= p["frequency1"] <= 20 and 0 <= p["frequency2"] <= 20
        assert p["frequency2"] != p["frequency1"] or p["frequency1"] == 0
    # integer ranges are inclusive at both ends, as random.randint's
    for key, low, high in (("vertices", 200, 1000), ("orbits", 1, 200), ("radius", 10, 60)):
        values = [p[key] for p in params]
        assert min(values) <= low + 5 and max(values) >= high - 5
    for key in ("frequency1", "frequency2"):
        assert {p[key] for p in params} == set(range(21))


def test_instance_draws_a_centre_in_the_released_range():
    config = tiny()
    params = V.class_params(config, {}, 0)
    centres = np.array([V.instance_draws(config, params, k)["centre"] for k in range(500)])
    assert centres.min() >= 0.0 and centres.max() <= 512.0
    assert np.all(centres * 2 == np.round(centres * 2))  # (512 + integer) / 2
    assert centres.std() > 100  # spread over the whole canvas


def test_instance_only_moves_the_centre():
    config = V.Config(size=512, instances=2)
    params = small_atom()
    draws = V.instance_draws(config, params, 0)
    draws["centre"] = np.array([200.0, 180.0])
    moved = {**draws, "centre": np.array([230.0, 190.0])}
    first = V.draw_atom(params, draws, 512)
    second = V.draw_atom(params, moved, 512)
    assert first.any() and not first[:10].any() and not first[:, -40:].any()
    assert np.array_equal(second[10:, 30:], first[:-10, :-30])
    # the category's parameters never see the instance
    assert V.class_params(config, {}, 0) == V.class_params(config, {}, 0)


def test_each_orbit_moves_every_vertex_outward_by_the_released_formula():
    params = small_atom(vertices=12, orbits=4)
    draws = V.instance_draws(tiny(), params, 0)
    cx, cy = draws["centre"]
    pixels = V.orbit_pixels(12, 20.0, 1.2, 1.7, cx, cy, 1.5, 0.05, 3.0, 7.0, draws["noise_x"], draws["noise_y"],
                            1.0, V.PERLIN_PERMUTATION)
    for k in range(12):
        theta = 2 * math.pi * k / 12
        wave = 0.5 * math.sin(3 * theta) + 0.5 * math.sin(7 * theta)
        x = math.cos(theta) * 20 * 1.2 + cx
        y = math.sin(theta) * 20 * 1.7 + cy
        for orbit in range(4):
            noise_x = V.perlin1(draws["noise_x"][orbit, k], V.PERLIN_PERMUTATION)
            noise_y = V.perlin1(draws["noise_y"][orbit, k], V.PERLIN_PERMUTATION)
            x += math.cos(theta) * (1.5 * (1 - noise_x) + wave + 0.05)
            y += math.sin(theta) * (1.5 * (1 - noise_y) + wave + 0.05)
            assert tuple(pixels[orbit, k]) == (int(x), int(y))


def test_orbits_are_drawn_in_their_grays_later_over_earlier():
    params = small_atom(perlin=0.0, frequency1=0, frequency2=0, line_width=3.0, orbits=2)
    draws = V.instance_draws(tiny(), params, 0)
    draws["centre"] = np.array([256.0, 256.0])
    draws["grays"] = np.array([90, 200])
    canvas = V.draw_atom(params, draws, 512)
    assert set(np.unique(canvas)) == {0, 90, 200}


def test_smaller_size_scales_the_same_atom():
    params = small_atom()
    draws = V.instance_draws(tiny(), params, 0)
    draws["centre"] = np.array([256.0, 256.0])
    full = V.draw_atom(params, draws, 512)
    small = V.draw_atom(params, draws, 64)
    rows, cols = np.nonzero(full)
    small_rows, small_cols = np.nonzero(small)
    assert abs(small_rows.mean() - rows.mean() / 8) < 1 and abs(small_cols.mean() - cols.mean() / 8) < 1


def test_perlin_noise_is_zero_on_the_lattice_bounded_and_periodic():
    for u in (0.0, 1.0, 17.0, 9999.0):
        assert V.perlin1(u, V.PERLIN_PERMUTATION) == 0.0
    samples = np.random.default_rng(0).random(5000) * V.NOISE_INPUT_MAX
    values = np.array([V.perlin1(u, V.PERLIN_PERMUTATION) for u in samples])
    assert np.all(np.abs(values) <= 0.96) and abs(values.mean()) < 0.02 and values.std() > 0.2
    # multiples of 1/1024 below 16384 are exact in float32, so u and u + 256 hit the same point
    exact = np.round(samples[:100] * 1024) / 1024
    shifted = np.array([V.perlin1(u + 256.0, V.PERLIN_PERMUTATION) for u in exact])
    assert np.array_equal(shifted, [V.perlin1(u, V.PERLIN_PERMUTATION) for u in exact])


def test_perlin_permutation_is_perlins_reference_table():
    assert sorted(V.PERLIN_PERMUTATION.tolist()) == list(range(256))
    assert V.PERLIN_PERMUTATION[:4].tolist() == [151, 160, 137, 91] and V.PERLIN_PERMUTATION[-1] == 180


def test_perlin_noise_equals_the_recorded_pnoise1_values():
    """The released renderer's noise.pnoise1(u) (defaults, one octave), recorded once by
    tests/data/make_pnoise1_reference.py: every group of inputs within PNOISE1_TOLERANCE."""
    reference = json.loads(PNOISE1_REFERENCE.read_text())
    assert reference["arguments"] == {"octaves": 1, "persistence": 0.5, "lacunarity": 2.0, "repeat": 1024, "base": 0}
    assert len(reference["groups"]["uniform_0_10000"]["inputs"]) >= 1000
    for name, group in reference["groups"].items():
        ours = np.array([V.perlin1(u, V.PERLIN_PERMUTATION) for u in group["inputs"]])
        error = np.abs(ours - np.array(group["outputs"]))
        assert error.max() <= PNOISE1_TOLERANCE, f"{name}: max |perlin1 - pnoise1| = {error.max():.3g}"


@pytest.mark.parametrize("size", [16, 64])
def test_images_are_square_uint8_gray(size):
    result = image(tiny(size=size), 0, 0)
    assert result.shape == (size, size) and result.dtype == np.uint8


@pytest.mark.parametrize("changes, flag", [
    (dict(vertices_max=150), "--vertices-max"),
    (dict(vertices_min=2), "--vertices-min"),
    (dict(orbits_min=0), "--orbits-min"),
    (dict(perlin_max=-1.0), "--perlin-max"),
    (dict(line_width=-0.1), "--line-width"),
    (dict(radius_max=5), "--radius-max"),
    (dict(oval_max=0.5), "--oval-max"),
    (dict(frequency_min=4, frequency_max=4), "--frequency-max"),
    (dict(start_pos=-1), "--start-pos"),
    (dict(size=4), "--size"),
    (dict(classes=0), "--classes"),
    (dict(instances=0), "--instances"),
    (dict(vertices_max=500.5), "--vertices-max"),
    (dict(seed=-1), "--seed"),
])
def test_bad_values_raise_value_error_naming_the_flag(changes, flag):
    with pytest.raises(ValueError, match=flag):
        V.Config(**changes)


def test_class_index_outside_the_dataset_is_refused():
    with pytest.raises(ValueError, match="class index"):
        V.class_params(tiny(classes=3), {}, 3)


def test_every_option_has_help():
    assert set(V.HELP) == {f for f in V.Config.__dataclass_fields__ if f != "seed"}
