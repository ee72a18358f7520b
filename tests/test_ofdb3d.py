"""3D-OFDB: 3D IFS search by axis variance, joint normalisation, 12 perspective views."""

import numpy as np
import pytest

from onepfrac import ifs, render
from onepfrac.datasets import ofdb3d as O
from onepfrac.datasets.interface import GenerationError, stream

TINY = dict(classes=3, size=64, points=2000)


def tiny(**changes) -> O.Config:
    return O.Config(**{**TINY, **changes})


def test_search_accepts_the_first_finite_cloud_whose_every_axis_variance_exceeds_the_threshold():
    config = tiny()
    params = O.class_params(config, {}, 1)
    rng = stream(config.seed, O.STREAM_SEARCH, 1)
    clouds = []
    for _ in range(params["tries"]):  # replay the class's stream
        coefficients = rng.uniform(-1, 1, size=(int(rng.integers(2, 8)), 12))
        clouds.append(O.point_cloud(coefficients, ifs.map_probabilities(coefficients, 3), config.points))
    assert not any(O.accepted(cloud, 0.05) for cloud in clouds[:-1])
    assert np.all(clouds[-1].var(axis=0) > 0.05)
    assert np.allclose(params["variances"], clouds[-1].var(axis=0))
    assert np.array_equal(coefficients, params["coefficients"])


def test_acceptance_needs_a_finite_cloud_and_variance_strictly_above_the_threshold():
    cloud = np.array([[-1.0, -1, -1], [1, 1, 1]])  # variance 1 on every axis
    assert O.accepted(cloud, 0.99) and not O.accepted(cloud, 1.0)
    assert not O.accepted(None, 0.0)
    expanding = np.array([[3.0, 0, 0, 0, 3, 0, 0, 0, 3, 1, 1, 1]])
    assert O.point_cloud(expanding, np.array([1.0]), 2000) is None


def test_search_gives_up_after_max_tries_with_an_error_that_names_the_options():
    with pytest.raises(GenerationError, match="--max-tries"):
        O.class_params(tiny(variance_threshold=10.0, max_tries=4), {}, 0)


def test_orbit_drops_the_start_point_and_probabilities_follow_the_determinants():
    coefficients = np.array([[0.5, 0, 0, 0, 0.5, 0, 0, 0, 0.5, 0.1, 0.2, 0.3],
                             [0.2, 0, 0, 0, 0.2, 0, 0, 0, 0.2, -0.1, 0.0, 0.0]])
    points = render.iterate3d(coefficients, np.array([0, 1], dtype=np.int8))
    assert np.allclose(points[0], [0.1, 0.2, 0.3])  # w_0(0): the origin itself is not kept
    assert np.allclose(points[1], 0.2 * points[0] + [-0.1, 0, 0])
    assert np.allclose(ifs.map_probabilities(coefficients, 3), np.array([0.125, 0.008]) / 0.133)


def test_cloud_is_scaled_jointly_to_minus_one_one_and_centred():
    coefficients = np.array([[0.5, 0, 0, 0, 0.3, 0, 0, 0, 0.4, 1, 0, 0],
                             [0.5, 0, 0, 0, 0.3, 0, 0, 0, 0.4, 0, 1, 0.5],
                             [0.5, 0, 0, 0, 0.3, 0, 0, 0, 0.4, -1, 0.2, -0.5]])
    cloud = O.point_cloud(coefficients, np.full(3, 1 / 3), 3000)
    assert np.allclose(cloud.mean(axis=0), 0, atol=1e-12)
    spans = cloud.max(axis=0) - cloud.min(axis=0)
    assert np.isclose(spans.max(), 2.0)  # one range for all axes: only the widest spans [-1, 1]
    assert spans.min() < 1.9


def test_view_angles_are_30_degrees_apart_from_30_degrees_within_the_jitter():
    config = tiny()
    angles = np.degrees([O.view_angle(config, 0, k) for k in range(12)])
    nominal = 30.0 * np.arange(12) + 30.0
    assert np.all(np.abs(angles - nominal) <= 3.0) and np.any(angles != nominal)
    assert O.view_angle(config, 0, 5) == O.view_angle(config, 0, 5) != O.view_angle(config, 1, 5)
    assert np.all(np.degrees([O.view_angle(tiny(jitter=0.0), 0, k) for k in range(12)]) == pytest.approx(nominal))


def test_projection_puts_the_origin_at_the_centre_and_follows_the_camera_around_the_y_axis():
    size = 65
    centre = render.project_points(np.zeros((1, 3)), 0.0, size, 45.0, 1.0, 100.0, 4.0)
    assert centre[32, 32] == 255 and centre.sum() == 255
    right = np.array([[0.5, 0.0, 0.0]])  # camera on +z looking at -z: +x is to the right
    assert np.argwhere(render.project_points(right, 0.0, size, 45.0, 1.0, 100.0, 4.0))[0][1] > 32
    assert np.argwhere(render.project_points(right, np.pi, size, 45.0, 1.0, 100.0, 4.0))[0][1] < 32
    up = np.array([[0.0, 0.5, 0.0]])  # +y is up: a smaller row
    assert np.argwhere(render.project_points(up, 1.0, size, 45.0, 1.0, 100.0, 4.0))[0][0] < 32
    edge = np.tan(np.radians(22.5)) * 4.0  # the half field of view at the origin's depth
    inside = render.project_points(np.array([[0.0, 0.98 * edge, 0.0]]), 0.0, size, 45.0, 1.0, 100.0, 4.0)
    outside = render.project_points(np.array([[0.0, 1.02 * edge, 0.0]]), 0.0, size, 45.0, 1.0, 100.0, 4.0)
    assert inside.sum() == 255 and outside.sum() == 0
    behind = render.project_points(np.array([[0.0, 0.0, 4.5]]), 0.0, size, 45.0, 1.0, 100.0, 4.0)
    assert behind.sum() == 0  # closer than the near plane (and behind the camera)


def test_a_category_renders_twelve_distinct_white_point_views_of_its_a_scaled_model():
    config = tiny(instances=12)
    params = O.class_params(config, {}, 0)
    views = [O.render_instance(config, {}, params, k) for k in range(12)]
    for view in views:
        assert view.shape == (64, 64) and view.dtype == np.uint8
        assert set(np.unique(view)) == {0, 255}
    assert len({view.tobytes() for view in views}) == 12
    unscaled = O.render_instance(tiny(a_scale=1.0), {}, params, 0)
    assert not np.array_equal(unscaled, views[0])
    with pytest.raises(IndexError):
        O.render_instance(config, {}, params, 12)


def test_released_defaults():
    config = O.Config()
    assert (config.size, config.points, config.instances, config.a_scale) == (224, 10_000, 12, 0.4)
    assert (config.fov, config.near, config.far, config.distance) == (45.0, 1.0, 100.0, 4.0)
    assert (config.start_angle, config.jitter, config.variance_threshold) == (30.0, 3.0, 0.05)


@pytest.mark.parametrize("changes, option", [(dict(instances=13), "--instances"), (dict(fov=180.0), "--fov"),
                                             (dict(near=5.0, far=2.0), "--near"), (dict(jitter=20.0), "--jitter"),
                                             (dict(classes=0), "--classes"), (dict(distance=0.0), "--distance")])
def test_check_names_the_option_that_is_out_of_range(changes, option):
    with pytest.raises(ValueError, match=option):
        O.check(tiny(**changes))
