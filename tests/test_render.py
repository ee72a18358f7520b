"""onepfrac.render: the released renderer's conventions, one kernel at a time."""

import numpy as np
import pytest

from onepfrac import render

# Two maps: a contraction toward (0.5, 0.25) and a rotation-scale with a translation.
COEFFICIENTS = np.array([[0.5, 0.0, 0.0, 0.5, 0.25, 0.125],
                         [0.0, -0.6, 0.6, 0.0, -0.5, 0.75]])


def test_orbit_starts_at_the_origin_and_keeps_it():
    indices = np.array([0, 1, 1, 0, 1], dtype=np.int8)
    points = render.iterate(COEFFICIENTS, indices)
    assert points.shape == (6, 2)
    assert points[0].tolist() == [0.0, 0.0]


def test_orbit_applies_the_chosen_affine_map_to_the_previous_point():
    indices = np.array([0, 1, 1, 0, 1, 0, 0], dtype=np.int8)
    points = render.iterate(COEFFICIENTS, indices)
    x, y = 0.0, 0.0
    for k, m in enumerate(indices):
        a, b, c, d, e, f = COEFFICIENTS[m]
        x, y = a * x + b * y + e, c * x + d * y + f
        assert points[k + 1].tolist() == [x, y]


def test_to_pixels_maps_minimum_to_pad_and_maximum_to_size_minus_pad():
    points = np.array([[0.0, 0.0], [-1.0, 2.0], [3.0, -0.5], [1.0, 1.0]])
    ok, pixels = render.to_pixels(points, 20, 2)
    assert ok
    # x: shift 1, extent 4, span 16 -> int((x + 1) / 4 * 16 + 2); y: shift 0.5, extent 2.5
    assert pixels[:, 0].tolist() == [6, 2, 18, 10]
    assert pixels[:, 1].tolist() == [int(0.5 / 2.5 * 16 + 2), 18, 2, int(1.5 / 2.5 * 16 + 2)]
    rng = np.random.default_rng(0)
    random_points = np.vstack([[0.0, 0.0], rng.normal(size=(500, 2))])
    for size, pad in [(64, 2), (512, 6), (37, 0)]:
        ok, pixels = render.to_pixels(random_points, size, pad)
        assert ok
        assert pixels.min(axis=0).tolist() == [pad, pad]
        assert pixels.max(axis=0).tolist() == [size - pad, size - pad]


def test_to_pixels_truncates_toward_zero():
    points = np.array([[0.0, 0.0], [-1.0, -1.0], [2.0, 2.0], [-0.9, 0.99]])
    ok, pixels = render.to_pixels(points, 11, 1)  # span 9, extent 3: pixel = int((v + 1) * 3 + 1)
    assert ok
    assert pixels[3].tolist() == [int(0.1 * 3 + 1), int(1.99 * 3 + 1)] == [1, 6]


def test_to_pixels_frames_the_bounding_box_when_the_minimum_is_positive():
    # the released rule shifts only when min < 0; with the start point kept min <= 0 and the two
    # agree, and after a burn-in the bounding box keeps the orbit on the canvas
    points = np.array([[1.0, 5.0], [3.0, 6.0]])
    ok, pixels = render.to_pixels(points, 12, 1)  # span 10: int((v - min) / extent * 10 + 1)
    assert ok
    assert pixels[:, 0].tolist() == [1, 11]
    assert pixels[:, 1].tolist() == [1, 11]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_to_pixels_rejects_non_finite_orbits(bad):
    points = np.array([[0.0, 0.0], [1.0, 1.0], [bad, 0.5]])
    ok, _ = render.to_pixels(points, 16, 2)
    assert not ok


def test_choose_maps_picks_the_first_map_whose_cumulative_probability_reaches_u():
    probabilities = np.array([0.2, 0.3, 0.5])  # cumulative 0.2, 0.5, 1.0 (exact in binary)
    uniforms = np.array([0.0, 0.1, 0.2, np.nextafter(0.2, 1), 0.5, np.nextafter(0.5, 1), 0.9, 1.0])
    assert render.choose_maps(uniforms, probabilities).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


def test_choose_maps_falls_back_to_the_last_map_when_cumulative_sum_falls_short_of_u():
    probabilities = np.array([0.3, 0.3, 0.3])  # sums to 0.9
    assert render.choose_maps(np.array([0.95, 1.0]), probabilities).tolist() == [2, 2]


def test_choose_maps_frequencies_follow_the_probabilities():
    probabilities = np.array([0.1, 0.6, 0.3])
    uniforms = np.random.default_rng(0).random(200_000)
    counts = np.bincount(render.choose_maps(uniforms, probabilities), minlength=3) / uniforms.size
    assert np.allclose(counts, probabilities, atol=0.01)


@pytest.mark.parametrize("bit", range(9))
def test_patch_mask_bits_are_most_significant_first_row_major(bit):
    size, x, y = 10, 3, 5
    mask = 1 << (8 - bit)
    image = render.rasterize_patch(np.array([[x, y]], dtype=np.int32), np.array([mask], dtype=np.uint16), size)
    r, c = divmod(bit, 3)
    expected = np.zeros((size, size), dtype=np.uint8)
    expected[y + 1 + r, x + 1 + c] = 127  # the patch's top-left corner is (x + 1, y + 1)
    assert np.array_equal(image, expected)


def test_full_patch_covers_three_by_three_cells_below_right_of_the_point():
    image = render.rasterize_patch(np.array([[0, 0]], dtype=np.int32), np.array([511], dtype=np.uint16), 6)
    assert np.array_equal(np.argwhere(image == 127).tolist(), [[r, c] for r in (1, 2, 3) for c in (1, 2, 3)])
    assert set(np.unique(image)) == {0, 127}


def test_later_patches_overwrite_earlier_ones_with_zeros_too():
    pixels = np.array([[2, 2], [2, 2]], dtype=np.int32)
    image = render.rasterize_patch(pixels, np.array([0b111111111, 0b000000001], dtype=np.uint16), 8)
    assert np.argwhere(image != 0).tolist() == [[5, 5]]
    assert image[5, 5] == 127


def test_patch_cells_outside_the_canvas_are_skipped():
    size = 8
    image = render.rasterize_patch(np.array([[size - 2, size - 2]], dtype=np.int32),
                                   np.array([511], dtype=np.uint16), size)
    assert np.argwhere(image != 0).tolist() == [[size - 1, size - 1]]


def test_point_drawing_sets_one_pixel_per_point_at_row_y_column_x():
    image = render.rasterize_point(np.array([[1, 4], [3, 0]], dtype=np.int32), 6)
    assert sorted(np.argwhere(image == 127).tolist()) == [[0, 3], [4, 1]]
    assert np.count_nonzero(image) == 2


def test_fill_fraction_counts_non_zero_pixels():
    image = np.zeros((10, 10), dtype=np.uint8)
    image[:2, :3] = 127
    image[9, 9] = 1
    assert render.fill_fraction(image) == 7 / 100


def test_random_masks_are_never_empty_and_reach_every_value():
    masks = render.random_masks(100_000, np.random.default_rng(0))
    assert masks.min() == 1 and masks.max() == 511
    assert len(np.unique(masks)) == 511


def test_render_is_the_patch_rasterisation_of_the_rescaled_orbit():
    indices = render.choose_maps(np.random.RandomState(100).random_sample(999), np.array([0.4, 0.6]))
    masks = render.random_masks(1000, np.random.default_rng(1))
    canvas = render.render(COEFFICIENTS, indices, 32, 2, "patch", masks)
    ok, pixels = render.to_pixels(render.iterate(COEFFICIENTS, indices), 32, 2)
    assert ok and canvas.dtype == np.uint8 and canvas.shape == (32, 32)
    assert np.array_equal(canvas, render.rasterize_patch(pixels, masks, 32))
    assert np.array_equal(render.render(COEFFICIENTS, indices, 32, 2, "point"), render.rasterize_point(pixels, 32))


def test_burn_in_drops_the_start_point_and_transient_from_frame_and_drawing():
    # two maps whose attractor (the segment from (10, 10) to (11, 9)) lies far from the start point (0, 0)
    far = np.array([[0.5, 0.0, 0.0, 0.5, 5.0, 5.0], [0.5, 0.0, 0.0, 0.5, 5.5, 4.5]])
    indices = render.choose_maps(np.random.RandomState(100).random_sample(2999), np.array([0.5, 0.5]))
    points = render.iterate(far, indices)
    kept = render.render(far, indices, 64, 2, "point")
    burnt = render.render(far, indices, 64, 2, "point", burn_in=50)
    assert np.array_equal(kept, render.rasterize_point(render.to_pixels(points, 64, 2)[1], 64))
    assert np.array_equal(burnt, render.rasterize_point(render.to_pixels(points[50:], 64, 2)[1], 64))
    assert kept[2, 2] == render.INK and burnt[2, 2] == 0  # the origin is framed only without burn-in
    # without the transient the attractor alone spans the frame, from pad to size - pad on both axes
    rows, cols = np.nonzero(burnt)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 62, 2, 62)


def test_render_returns_none_for_an_orbit_that_is_not_finite():
    expanding = np.array([[1e200, 0.0, 0.0, 1e200, 1.0, 1.0], [1e200, 1.0, 1.0, 1e200, -1.0, 1.0]])
    indices = np.zeros(2000, dtype=np.int8)
    masks = render.random_masks(2001, np.random.default_rng(0))
    assert render.render(expanding, indices, 32, 2, "patch", masks) is None
    assert render.render(expanding, indices, 32, 2, "point") is None


def test_render_returns_none_for_an_orbit_collapsed_to_a_point():
    collapsed = np.zeros((2, 6))
    assert render.render(collapsed, np.zeros(100, dtype=np.int8), 32, 2, "point") is None


def test_render_rejects_missing_masks_and_unknown_drawings():
    indices = np.zeros(10, dtype=np.int8)
    with pytest.raises(ValueError, match="mask"):
        render.render(COEFFICIENTS, indices, 16, 1, "patch", None)
    with pytest.raises(ValueError, match="drawing"):
        render.render(COEFFICIENTS, indices, 16, 1, "splat")
