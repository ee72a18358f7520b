"""FractalDB: the category search's acceptance rule, the released weight rows, instance order and flips."""

import numpy as np
import pytest

from onepfrac import ifs, render
from onepfrac.datasets import fractaldb as F
from onepfrac.datasets.interface import GenerationError
from onepfrac.datasets.interface import stream

TINY = dict(classes=3, instances=12, size=64, points=3000, pad=2, search_size=64, search_points=3000)


def tiny(**changes) -> F.Config:
    return F.Config(**{**TINY, **changes})


def test_recommended_weight_rows_are_the_25_rows_of_the_released_file():
    rows = F.WEIGHTS["recommended"]
    assert rows.shape == (25, 6)
    assert np.array_equal(rows[2], np.ones(6))  # the released file's third row
    assert np.allclose(rows[:5, 0], [0.2, 0.6, 1.0, 1.4, 1.8])
    assert np.allclose(rows[5:9, 1], [0.2, 0.6, 1.4, 1.8])
    assert np.allclose(rows[-4:, 5], [0.2, 0.6, 1.4, 1.8])
    for row in rows:  # each row scales at most one coefficient
        assert np.count_nonzero(row != 1.0) <= 1
    assert len({tuple(row) for row in rows}) == 25
    assert np.allclose(sorted(set(F.WEIGHTS["renderer-default"].ravel())), [0.8, 0.9, 1.0, 1.1, 1.2])


def test_instances_follow_the_released_file_order_weight_row_then_rendering_then_flip():
    assert F.instance_layout(0) == (0, 0, 0)
    assert F.instance_layout(3) == (0, 0, 3)
    assert F.instance_layout(4) == (0, 1, 0)
    assert F.instance_layout(40) == (1, 0, 0)
    assert F.instance_layout(999) == (24, 9, 3)
    assert F.MAX_INSTANCES == 1000


def test_search_accepts_the_first_system_of_the_class_stream_that_fills_at_least_the_threshold():
    config = tiny()
    params = F.class_params(config, {}, 1)
    rng = stream(config.seed, F.STREAM_SEARCH, 1)
    fills = []
    for _ in range(params["tries"]):  # replay the class's stream
        n_maps = int(rng.integers(2, 8))
        coefficients = rng.uniform(-1, 1, size=(n_maps, 6))
        fills.append(F.search_fill(coefficients, ifs.map_probabilities(coefficients), 64, 3000))
    assert all(fill < config.fill_threshold for fill in fills[:-1])
    assert fills[-1] == params["fill"] >= config.fill_threshold
    assert np.array_equal(coefficients, params["coefficients"])
    assert 2 <= len(params["coefficients"]) <= 7
    assert np.allclose(params["probabilities"], ifs.map_probabilities(coefficients))


def test_a_fill_exactly_at_the_threshold_is_accepted(monkeypatch):
    monkeypatch.setattr(F, "search_fill", lambda *args: 0.2)
    assert F.class_params(tiny(), {}, 0)["tries"] == 1


def test_search_gives_up_after_max_tries_with_an_error_that_names_the_options():
    with pytest.raises(GenerationError, match="category 2: .* 5 tries.*--max-tries"):
        F.class_params(tiny(fill_threshold=1.0, max_tries=5), {}, 2)


def test_a_category_depends_only_on_the_seed_and_its_index():
    config = tiny()
    forward = [F.class_params(config, {}, i) for i in range(3)]
    backward = [F.class_params(config, {}, i) for i in reversed(range(3))][::-1]
    assert forward == backward
    assert F.class_params(tiny(seed=1), {}, 0)["coefficients"] != forward[0]["coefficients"]


def test_the_four_flips_of_a_rendering_are_none_top_bottom_left_right_and_both():
    config = tiny()
    params = F.class_params(config, {}, 0)
    first, top_bottom, left_right, both = (F.render_instance(config, {}, params, i) for i in range(4))
    assert np.array_equal(top_bottom, first[::-1])
    assert np.array_equal(left_right, first[:, ::-1])
    assert np.array_equal(both, first[::-1, ::-1])
    assert not np.array_equal(first, top_bottom)


def test_renderings_of_a_weight_row_differ_only_in_their_patch_masks():
    patch, point = tiny(), tiny(drawing="point")
    params = F.class_params(patch, {}, 0)
    assert not np.array_equal(F.render_instance(patch, {}, params, 0), F.render_instance(patch, {}, params, 4))
    assert np.array_equal(F.render_instance(point, {}, params, 0), F.render_instance(point, {}, params, 4))


def test_weight_row_three_renders_the_category_itself_flipped_top_to_bottom():
    config = tiny(drawing="point", instances=100)
    params = F.class_params(config, {}, 0)
    indices = render.released_map_choices(np.asarray(params["probabilities"]), config.points - 1)
    canvas = render.render(np.asarray(params["coefficients"]), indices, 64, 2, "point")
    assert np.array_equal(F.render_instance(config, {}, params, 2 * 40), canvas[::-1])


def test_instances_are_the_same_in_any_order():
    config = tiny()
    params = F.class_params(config, {}, 0)
    order = [7, 0, 11, 3, 4, 7, 1]
    shuffled = {i: F.render_instance(config, {}, params, i) for i in order}
    for i in sorted(set(order)):
        assert np.array_equal(F.render_instance(config, {}, params, i), shuffled[i])


def test_a_diverging_orbit_is_cut_100_points_before_it_leaves_the_finite_range():
    expanding = np.array([[3.0, 0.0, 0.0, 3.0, 0.1, 0.1]])  # |x| triples each step
    points = render.iterate(expanding, np.zeros(2000, dtype=np.int8))
    first = render.finite_length(points, render.DIVERGED)
    assert 0 < first < 2000 and np.all(np.abs(points[:first]) <= render.DIVERGED)
    assert len(render.released_prefix(points)) == first - 100
    canvas = render.render_released(expanding, np.zeros(2000, dtype=np.int8), 64, 2, "point")
    assert canvas.shape == (64, 64) and canvas.dtype == np.uint8


def test_released_map_choices_are_those_of_the_released_fixed_sequence():
    probabilities = np.array([0.3, 0.7])
    uniforms = np.random.RandomState(100).random_sample(1000)
    assert np.array_equal(render.released_map_choices(probabilities, 999), render.choose_maps(uniforms[:999], probabilities))


@pytest.mark.parametrize("changes, option", [(dict(instances=1001), "--instances"), (dict(instances=0), "--instances"),
                                             (dict(classes=0), "--classes"), (dict(size=5, pad=2), "--size"),
                                             (dict(fill_threshold=1.5), "--fill-threshold"), (dict(max_tries=0), "--max-tries"),
                                             (dict(weights="heavy"), "--weights"), (dict(points=1), "--points")])
def test_check_names_the_option_that_is_out_of_range(changes, option):
    with pytest.raises(ValueError, match=option):
        F.check(tiny(**changes))
