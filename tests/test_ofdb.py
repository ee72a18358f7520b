"""2D-OFDB: FractalDB's search, one image per category, the released coefficient-a quirk as an option."""

import numpy as np
import pytest

from onepfrac import datasets, render
from onepfrac.datasets import fractaldb, ofdb as O

TINY = dict(classes=3, size=64, points=3000, pad=2, search_size=64, search_points=3000)


def tiny(**changes) -> O.Config:
    return O.Config(**{**TINY, **changes})


def test_categories_are_fractaldbs_for_the_same_seed_and_search_settings():
    fractal = fractaldb.Config(**TINY)
    for index in range(3):
        assert O.class_params(tiny(), {}, index) == fractaldb.class_params(fractal, {}, index)


def test_default_rendering_scales_coefficient_a_of_every_map_by_0_2_as_released():
    assert O.Config().a_scale == 0.2
    params = O.class_params(tiny(), {}, 0)
    searched = np.asarray(params["coefficients"])
    rendered = O.rendered_coefficients(tiny(), params)
    assert np.array_equal(rendered[:, 0], searched[:, 0] * 0.2)
    assert np.array_equal(rendered[:, 1:], searched[:, 1:])
    assert not np.array_equal(O.render_instance(tiny(), {}, params, 0),
                              O.render_instance(tiny(a_scale=1.0), {}, params, 0))


def test_a_scale_one_renders_the_searched_system_that_passed_the_fill_test():
    config = tiny(a_scale=1.0, drawing="point", size=64, points=3000, pad=6)
    params = O.class_params(config, {}, 1)
    image = O.render_instance(config, {}, params, 0)
    assert render.fill_fraction(image) == params["fill"] >= config.fill_threshold
    indices = render.released_map_choices(np.asarray(params["probabilities"]), 2999)
    assert np.array_equal(image, render.render(np.asarray(params["coefficients"]), indices, 64, 6, "point")[::-1])


def test_recommended_rendering_is_362_px_200k_points_patches():
    config = O.Config()
    assert (config.size, config.points, config.drawing, config.fill_threshold) == (362, 200_000, "patch", 0.2)
    assert (config.search_size, config.search_points) == (512, 100_000)


def test_a_category_has_exactly_one_image():
    config = tiny()
    params = O.class_params(config, {}, 0)
    assert datasets.counts(O, config) == (3, 1)
    image = O.render_instance(config, {}, params, 0)
    assert image.shape == (64, 64) and image.dtype == np.uint8 and set(np.unique(image)) <= {0, 127}
    with pytest.raises(IndexError):
        O.render_instance(config, {}, params, 1)


def test_same_seed_and_index_give_the_same_image_and_another_seed_another():
    first = O.render_instance(tiny(), {}, O.class_params(tiny(), {}, 2), 0)
    again = O.render_instance(tiny(), {}, O.class_params(tiny(), {}, 2), 0)
    other = O.render_instance(tiny(seed=1), {}, O.class_params(tiny(seed=1), {}, 2), 0)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


@pytest.mark.parametrize("changes, option", [(dict(a_scale=float("nan")), "--a-scale"), (dict(classes=0), "--classes"),
                                             (dict(size=8, pad=6), "--size"), (dict(search_points=1), "--search-points")])
def test_check_names_the_option_that_is_out_of_range(changes, option):
    with pytest.raises(ValueError, match=option):
        O.check(tiny(**changes))
