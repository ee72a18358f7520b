"""Chaos-game iteration and rasterisation: numba kernels on numpy arrays, nothing else.

The conventions follow the released 1p-frac renderer (docs/released-code.md, "Conventions of
the released 1p-frac renderer"): the orbit starts at (0, 0) and keeps that start point (no
burn-in), the frame is the bounding box of the whole orbit, and each point stamps a 3 x 3
patch whose cells follow a random 9-bit mask (value 127 where the bit is set, 0 where it is not).
Images are indexed image[row = y, column = x].
"""

from __future__ import annotations

import functools

import numba
import numpy as np

DRAWINGS = ("patch", "point")
INK = 127  # pixel value of a drawn cell in the released renderer


@numba.njit(cache=True)
def choose_maps(uniforms, probabilities):
    """Map index for every uniform draw: the first j whose cumulative probability is >= u."""
    n_maps = probabilities.shape[0]
    cumulative = np.cumsum(probabilities)
    indices = np.empty(uniforms.shape[0], dtype=np.int8)
    for i in range(uniforms.shape[0]):
        u = uniforms[i]
        j = 0
        while j < n_maps - 1 and cumulative[j] < u:
            j += 1
        indices[i] = j
    return indices


@numba.njit(cache=True)
def iterate(coefficients, map_indices):
    """The orbit from (0, 0): points[0] = (0, 0), points[k + 1] = w_{m_k}(points[k]).

    Returns len(map_indices) + 1 points, shape (n, 2) as (x, y).
    """
    n = map_indices.shape[0] + 1
    points = np.empty((n, 2))
    x = 0.0
    y = 0.0
    points[0, 0] = x
    points[0, 1] = y
    for k in range(n - 1):
        m = map_indices[k]
        a, b, c, d, e, f = (coefficients[m, 0], coefficients[m, 1], coefficients[m, 2],
                            coefficients[m, 3], coefficients[m, 4], coefficients[m, 5])
        x, y = a * x + b * y + e, c * x + d * y + f
        points[k + 1, 0] = x
        points[k + 1, 1] = y
    return points


@numba.njit(cache=True)
def frame(points, width, height, pad_x, pad_y):
    """Integer pixel coordinates, x in [pad_x, width - pad_x], y in [pad_y, height - pad_y].

    Each axis is shifted by -min, divided by (max - min), scaled to its side minus twice
    its pad, offset by the pad and truncated. The released code shifts only when min < 0,
    which is the same whenever the start point (0, 0) is among the points (always, without
    burn-in) and would push a burnt-in orbit off the canvas otherwise. Returns (ok, pixels);
    ok is False when the orbit is not finite or collapses to a line or a point on either axis.
    """
    n = points.shape[0]
    pixels = np.zeros((n, 2), dtype=np.int32)
    for axis in range(2):
        span = width - 2 * pad_x if axis == 0 else height - 2 * pad_y
        pad = pad_x if axis == 0 else pad_y
        low = points[0, axis]
        high = points[0, axis]
        for i in range(n):
            v = points[i, axis]
            if not np.isfinite(v):
                return False, pixels
            low = min(low, v)
            high = max(high, v)
        extent = high - low
        if not extent > 0.0:
            return False, pixels
        for i in range(n):
            pixels[i, axis] = int((points[i, axis] - low) / extent * span + pad)
    return True, pixels


@numba.njit(cache=True)
def to_pixels(points, size, pad):
    """`frame` on a square canvas with the same pad on every side (the released defaults)."""
    return frame(points, size, size, pad, pad)


@numba.njit(cache=True)
def stamp_patches(pixels, masks, width, height):
    """Every point pastes a 3 x 3 patch with top-left corner (x + 1, y + 1) on a height x width canvas.

    Bit 8 - r*3 - c of the point's mask (most significant bit first, row-major) sets
    cell (r, c) to 127, a clear bit writes 0; later points overwrite earlier ones.
    Cells outside the canvas are skipped.
    """
    image = np.zeros((height, width), dtype=np.uint8)
    for i in range(pixels.shape[0]):
        x0 = pixels[i, 0] + 1
        y0 = pixels[i, 1] + 1
        mask = masks[i]
        for r in range(3):
            row = y0 + r
            if row < 0 or row >= height:
                continue
            for c in range(3):
                col = x0 + c
                if col < 0 or col >= width:
                    continue
                bit = (mask >> (8 - (r * 3 + c))) & 1
                image[row, col] = INK if bit else 0
    return image


@numba.njit(cache=True)
def stamp_points(pixels, width, height):
    """Every point sets one pixel (x, y) of a height x width canvas to 127."""
    image = np.zeros((height, width), dtype=np.uint8)
    for i in range(pixels.shape[0]):
        x = pixels[i, 0]
        y = pixels[i, 1]
        if 0 <= x < width and 0 <= y < height:
            image[y, x] = INK
    return image


@numba.njit(cache=True)
def rasterize_patch(pixels, masks, size):
    """`stamp_patches` on a square canvas."""
    return stamp_patches(pixels, masks, size, size)


@numba.njit(cache=True)
def rasterize_point(pixels, size):
    """`stamp_points` on a square canvas."""
    return stamp_points(pixels, size, size)


@numba.njit(cache=True)
def fill_fraction(image):
    """Fraction of non-zero pixels (the fill test's statistic)."""
    count = 0
    flat = image.ravel()
    for i in range(flat.shape[0]):
        if flat[i] != 0:
            count += 1
    return count / flat.shape[0]


MASK_MODES = ("random", "fill")  # the released --mask_mode: random 9-bit masks or solid patches
FULL_MASK = 0b111111111


def random_masks(n_points: int, rng: np.random.Generator) -> np.ndarray:
    """One patch mask per point, uniform on 1..511 (never the empty patch)."""
    return rng.integers(1, 512, size=n_points, dtype=np.uint16)


def solid_masks(n_points: int) -> np.ndarray:
    """Every patch fully set: the released `--mask_mode fill`."""
    return np.full(n_points, FULL_MASK, dtype=np.uint16)


def render(coefficients: np.ndarray, map_indices: np.ndarray, size: int, pad: int,
           drawing: str = "patch", masks: np.ndarray | None = None, burn_in: int = 0,
           size_y: int | None = None, pad_y: int | None = None) -> np.ndarray | None:
    """The canvas (size_y x size, uint8, not yet flipped) of one orbit, or None if it is not finite.

    size and pad are the width and the left/right margin; size_y and pad_y (default: the same)
    the height and the top/bottom margin, as the released --image_size_y / --pad_size_y.
    burn_in drops the first points (the start point (0, 0) and the transient) from the
    frame and the drawing; the released renderer keeps them all (burn_in 0).
    """
    height = size if size_y is None else size_y
    pad_top = pad if pad_y is None else pad_y
    points = iterate(np.ascontiguousarray(coefficients, dtype=np.float64), map_indices)
    ok, pixels = frame(points[burn_in:], size, height, pad, pad_top)
    if not ok:
        return None
    if drawing == "patch":
        if masks is None or masks.shape[0] != pixels.shape[0]:
            raise ValueError("patch drawing needs one mask per point")
        return stamp_patches(pixels, masks, size, height)
    if drawing == "point":
        return stamp_points(pixels, size, height)
    raise ValueError(f"drawing {drawing!r} is not one of {DRAWINGS}")


# ---- additions for FractalDB, 2D-OFDB and 3D-OFDB (the kernels above are unchanged) ----

# Orbits beyond this magnitude are treated as diverged: it keeps (max - min) of a frame finite.
DIVERGED = 1e100
# The released renderers drop the 100 points before the first NaN together with the rest.
RELEASED_NAN_MARGIN = 100


@functools.lru_cache(maxsize=8)
def released_uniforms(count: int) -> np.ndarray:
    """numpy.random.RandomState(100).random_sample(count): the map-choice draws of every released IFS renderer."""
    uniforms = np.random.RandomState(100).random_sample(count)
    uniforms.setflags(write=False)
    return uniforms


def released_map_choices(probabilities: np.ndarray, steps: int) -> np.ndarray:
    """Map indices of `steps` chaos-game steps that follow the released fixed sequence (seed 100)."""
    return choose_maps(released_uniforms(steps), np.ascontiguousarray(probabilities, dtype=np.float64))


@numba.njit(cache=True)
def finite_length(points, limit):
    """Index of the first point with a coordinate that is not finite or beyond `limit` (len if none)."""
    for i in range(points.shape[0]):
        for axis in range(points.shape[1]):
            v = points[i, axis]
            if not (abs(v) <= limit):  # also catches NaN
                return i
    return points.shape[0]


def released_prefix(points: np.ndarray) -> np.ndarray:
    """The points the released renderers keep: all of a finite orbit, else those up to 100 before it diverged."""
    first = finite_length(points, DIVERGED)
    if first == points.shape[0]:
        return points
    return points[: max(first - RELEASED_NAN_MARGIN, 0)]


def render_released(coefficients: np.ndarray, map_indices: np.ndarray, size: int, pad: int,
                    drawing: str = "patch", masks: np.ndarray | None = None) -> np.ndarray:
    """A FractalDB / OFDB canvas (unflipped): like `render`, but a diverging orbit is cut as released.

    A cut orbit that leaves fewer than two distinct points on an axis gives a blank canvas.
    """
    points = released_prefix(iterate(np.ascontiguousarray(coefficients, dtype=np.float64), map_indices))
    ok, pixels = to_pixels(points, size, pad)
    if not ok:
        return np.zeros((size, size), dtype=np.uint8)
    if drawing == "patch":
        if masks is None or masks.shape[0] < pixels.shape[0]:
            raise ValueError("patch drawing needs one mask per point")
        return rasterize_patch(pixels, masks[: pixels.shape[0]], size)
    if drawing == "point":
        return rasterize_point(pixels, size)
    raise ValueError(f"drawing {drawing!r} is not one of {DRAWINGS}")


@numba.njit(cache=True)
def iterate3d(coefficients, map_indices):
    """3D orbit from (0, 0, 0) WITHOUT the start point: points[k] = w_{m_k}(points[k - 1]).

    coefficients (N, 12): a..i the 3 x 3 matrix row by row, j, k, l the translation.
    """
    n = map_indices.shape[0]
    points = np.empty((n, 3))
    x = 0.0
    y = 0.0
    z = 0.0
    for k in range(n):
        c = coefficients[map_indices[k]]
        x, y, z = (c[0] * x + c[1] * y + c[2] * z + c[9],
                   c[3] * x + c[4] * y + c[5] * z + c[10],
                   c[6] * x + c[7] * y + c[8] * z + c[11])
        points[k, 0] = x
        points[k, 1] = y
        points[k, 2] = z
    return points


@numba.njit(cache=True)
def project_points(points, theta, size, fov_degrees, near, far, distance):
    """White 1-px points seen by a perspective camera circling the y axis (OpenGL conventions).

    The camera sits at distance * (sin theta, 0, cos theta), looks at the origin with y up;
    the vertical field of view is fov_degrees, points outside [near, far] or the frustum are
    skipped. Returns a (size, size) uint8 image, row 0 at the top.
    """
    image = np.zeros((size, size), dtype=np.uint8)
    eye_x = distance * np.sin(theta)
    eye_z = distance * np.cos(theta)
    # forward f = -eye / |eye|, right r = f x up, true up = r x f = (0, 1, 0) at zero elevation
    f_x = -np.sin(theta)
    f_z = -np.cos(theta)
    r_x = -f_z
    r_z = f_x
    scale = 1.0 / np.tan(np.radians(fov_degrees) / 2.0)
    for i in range(points.shape[0]):
        dx = points[i, 0] - eye_x
        dy = points[i, 1]
        dz = points[i, 2] - eye_z
        depth = dx * f_x + dz * f_z
        if depth < near or depth > far:
            continue
        ndc_x = (dx * r_x + dz * r_z) * scale / depth
        ndc_y = dy * scale / depth
        if not (-1.0 <= ndc_x < 1.0 and -1.0 < ndc_y <= 1.0):
            continue
        col = int((ndc_x + 1.0) * 0.5 * size)
        row = int((1.0 - ndc_y) * 0.5 * size)
        if 0 <= row < size and 0 <= col < size:
            image[row, col] = 255
    return image
