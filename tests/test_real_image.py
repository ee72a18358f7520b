"""onepfrac.datasets.real_image: warps within delta, representations, seeding, image input, errors."""

import json

import cv2
import numpy as np
import pytest

from onepfrac.datasets import real_image as R

SIZE = 48


def tiny(**changes) -> R.Config:
    return R.Config(**{"size": SIZE, "classes": 200, **changes})


def image(config: R.Config, class_index: int = 0, instance_index: int = 0) -> np.ndarray:
    shared = R.prepare(config)
    return R.render_instance(config, shared, R.class_params(config, shared, class_index), instance_index)


def test_defaults_follow_the_paper_and_ship_offline():
    config = R.Config()
    assert (config.image, config.representation, config.transform) == ("astronaut", "edges", "affine")
    assert (config.delta, config.classes, config.instances, config.size) == (0.1, 1000, 1, 512)
    shared = R.prepare(config)
    assert shared["source_shape"] == [512, 512, 3] and len(shared["source_sha256"]) == 64


def test_config_round_trips_through_json():
    config = tiny(seed=3, transform="elastic")
    assert R.Config(**json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("transform", R.TRANSFORMS)
def test_same_seed_gives_identical_images_and_another_class_another(transform):
    config = tiny(transform=transform, representation="gray")
    reference = image(config, 5)
    assert np.array_equal(reference, image(config, 5))
    assert not np.array_equal(reference, image(config, 6))
    assert not np.array_equal(reference, image(tiny(transform=transform, representation="gray", seed=1), 5))


@pytest.mark.parametrize("transform", R.TRANSFORMS)
@pytest.mark.parametrize("representation", R.REPRESENTATIONS)
def test_delta_zero_gives_the_unperturbed_image(transform, representation):
    config = tiny(transform=transform, representation=representation, delta=0.0)
    unperturbed = R.represent(R.source(config.image, SIZE), representation)
    for index in range(3):
        assert np.array_equal(image(config, index), unperturbed)


def test_class_params_are_json_and_do_not_depend_on_order_or_count():
    config = tiny(transform="polynomial")
    forward = [R.class_params(config, {}, i) for i in range(10)]
    backward = [R.class_params(config, {}, i) for i in reversed(range(10))][::-1]
    assert forward == backward and forward[3] == R.class_params(tiny(transform="polynomial", classes=4), {}, 3)
    assert json.loads(json.dumps(forward)) == forward


@pytest.mark.parametrize("transform, key, identity", [
    ("affine", "matrix", R.IDENTITY_AFFINE),
    ("polynomial", "coefficients", R.IDENTITY_POLYNOMIAL),
    ("elastic", "displacements", np.zeros((2, 4, 4))),
])
def test_every_coefficient_moves_within_delta_of_the_identity(transform, key, identity):
    config = tiny(transform=transform, delta=0.2)
    offsets = np.array([np.subtract(R.class_params(config, {}, i)[key], identity) for i in range(config.classes)])
    assert np.abs(offsets).max() <= 0.2
    assert offsets.max() > 0.19 and offsets.min() < -0.19  # the whole neighbourhood is used


def test_elastic_field_never_moves_a_pixel_more_than_delta_times_size():
    config = tiny(transform="elastic", delta=0.1, elastic_grid=5)
    for index in range(20):
        dx, dy = R.displacement(R.class_params(config, {}, index), SIZE)
        assert max(np.abs(dx).max(), np.abs(dy).max()) <= 0.1 * SIZE + 1e-4
        assert np.abs(np.diff(dx, axis=1)).max() < 0.1 * SIZE / 2  # smooth, not per-pixel noise


def test_output_pixel_samples_the_source_at_the_mapped_point():
    source = R.source("astronaut", SIZE)
    shift = 4  # pixels; normalised units are pixels x 2 / size
    translation = {"class_index": 0, "transform": "affine", "matrix": [[1.0, 0.0, 2 * shift / SIZE], [0.0, 1.0, 0.0]]}
    moved = R.warp(source, translation)
    assert np.array_equal(moved[:, :-shift], source[:, shift:])
    polynomial = {"class_index": 0, "transform": "polynomial",
                  "coefficients": [[2 * shift / SIZE, 1.0, 0.0, 0.0, 0.0, 0.0], list(R.IDENTITY_POLYNOMIAL[1])]}
    assert np.array_equal(R.warp(source, polynomial), moved)


@pytest.mark.parametrize("representation, shape", [("color", (SIZE, SIZE, 3)), ("gray", (SIZE, SIZE)),
                                                   ("edges", (SIZE, SIZE))])
def test_representations_have_their_shapes_and_dtype(representation, shape):
    result = image(tiny(representation=representation))
    assert result.shape == shape and result.dtype == np.uint8
    if representation == "edges":
        assert set(np.unique(result)) == {0, 255}


def test_first_instance_is_the_class_warp_and_later_ones_stay_near_it():
    config = tiny(instances=3, representation="gray", instance_delta=0.01)
    params = R.class_params(config, {}, 0)
    assert R.instance_params(config, params, 0) == params
    later = R.instance_params(config, params, 1)
    offsets = np.subtract(later["matrix"], params["matrix"])
    assert 0 < np.abs(offsets).max() <= 0.01
    assert not np.array_equal(image(config, 0, 0), image(config, 0, 1))
    assert np.array_equal(image(config, 0, 2), image(config, 0, 2))


def test_any_image_file_is_resized_to_its_short_side_and_centre_cropped(tmp_path):
    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    pixels[:, 10:50] = (10, 20, 30)  # RGB; the outer 10 columns are cropped away
    path = tmp_path / "wide.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    config = R.Config(image=str(path), size=20, classes=2, representation="color", delta=0.0)
    assert R.prepare(config)["source_shape"] == [40, 60, 3]
    result = image(config)
    assert result.shape == (20, 20, 3) and np.all(result == (10, 20, 30))


def test_an_unreadable_image_raises_value_error_naming_the_flag(tmp_path):
    path = tmp_path / "not_an_image.png"
    path.write_text("hello")
    with pytest.raises(ValueError, match="--image"):
        R.prepare(R.Config(image=str(path), size=SIZE))
    with pytest.raises(ValueError, match="--image"):
        R.Config(image=str(tmp_path / "missing.png"))


@pytest.mark.parametrize("changes, flag", [
    (dict(delta=1.0), "--delta"),
    (dict(delta=-0.1), "--delta"),
    (dict(instance_delta=-0.01), "--instance-delta"),
    (dict(representation="sepia"), "--representation"),
    (dict(transform="shear"), "--transform"),
    (dict(border="wrap"), "--border"),
    (dict(size=2), "--size"),
    (dict(classes=0), "--classes"),
    (dict(instances=0), "--instances"),
    (dict(canny_low=300.0), "--canny-high"),
    (dict(elastic_grid=1), "--elastic-grid"),
    (dict(classes=2.5), "--classes"),
    (dict(seed=-1), "--seed"),
])
def test_bad_values_raise_value_error_naming_the_flag(changes, flag):
    with pytest.raises(ValueError, match=flag):
        R.Config(**changes)


def test_every_option_has_help_and_named_values_list_their_choices():
    assert set(R.HELP) == {f for f in R.Config.__dataclass_fields__ if f != "seed"}
    assert set(R.CHOICES) == {"representation", "transform", "border"}
