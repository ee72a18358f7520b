"""Chaos-game iteration and rasterisation: numba kernels on numpy arrays, nothing else.

The conventions follow the released 1p-frac renderer (see ../shared/REFERENCE.md):
the orbit starts at (0, 0) and keeps that start point (no burn-in), the frame is the
bounding box of the whole orbit, and each point stamps a 3 x 3 patch whose cells
follow a random 9-bit mask (value 127 where the bit is set, 0 where it is not).
Images are indexed image[row = y, column = x].
"""

from __future__ import annotations

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
def to_pixels(points, size, pad):
    """Integer pixel coordinates in [pad, size - pad]: the bounding box of the points, scaled.

    Each axis is shifted by -min, divided by (max - min), scaled to size - 2 pad, offset
    by pad and truncated. The released code shifts only when min < 0, which is the same
    whenever the start point (0, 0) is among the points (always, without burn-in) and
    would push a burnt-in orbit off the canvas otherwise. Returns (ok, pixels); ok is
    False when the orbit is not finite or collapses to a line or a point on either axis.
    """
    n = points.shape[0]
    pixels = np.zeros((n, 2), dtype=np.int32)
    span = size - 2 * pad
    for axis in range(2):
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
def rasterize_patch(pixels, masks, size):
    """Every point pastes a 3 x 3 patch with top-left corner (x + 1, y + 1).

    Bit 8 - r*3 - c of the point's mask (most significant bit first, row-major) sets
    cell (r, c) to 127, a clear bit writes 0; later points overwrite earlier ones.
    Cells outside the canvas are skipped.
    """
    image = np.zeros((size, size), dtype=np.uint8)
    for i in range(pixels.shape[0]):
        x0 = pixels[i, 0] + 1
        y0 = pixels[i, 1] + 1
        mask = masks[i]
        for r in range(3):
            row = y0 + r
            if row < 0 or row >= size:
                continue
            for c in range(3):
                col = x0 + c
                if col < 0 or col >= size:
                    continue
                bit = (mask >> (8 - (r * 3 + c))) & 1
                image[row, col] = INK if bit else 0
    return image


@numba.njit(cache=True)
def rasterize_point(pixels, size):
    """Every point sets one pixel (x, y) to 127."""
    image = np.zeros((size, size), dtype=np.uint8)
    for i in range(pixels.shape[0]):
        x = pixels[i, 0]
        y = pixels[i, 1]
        if 0 <= x < size and 0 <= y < size:
            image[y, x] = INK
    return image


@numba.njit(cache=True)
def fill_fraction(image):
    """Fraction of non-zero pixels (the fill test's statistic)."""
    count = 0
    flat = image.ravel()
    for i in range(flat.shape[0]):
        if flat[i] != 0:
            count += 1
    return count / flat.shape[0]


def random_masks(n_points: int, rng: np.random.Generator) -> np.ndarray:
    """One patch mask per point, uniform on 1..511 (never the empty patch)."""
    return rng.integers(1, 512, size=n_points, dtype=np.uint16)


def render(coefficients: np.ndarray, map_indices: np.ndarray, size: int, pad: int,
           drawing: str = "patch", masks: np.ndarray | None = None, burn_in: int = 0) -> np.ndarray | None:
    """The canvas (size x size, uint8, not yet flipped) of one orbit, or None if it is not finite.

    burn_in drops the first points (the start point (0, 0) and the transient) from the
    frame and the drawing; the released renderer keeps them all (burn_in 0).
    """
    points = iterate(np.ascontiguousarray(coefficients, dtype=np.float64), map_indices)
    ok, pixels = to_pixels(points[burn_in:], size, pad)
    if not ok:
        return None
    if drawing == "patch":
        if masks is None or masks.shape[0] != pixels.shape[0]:
            raise ValueError("patch drawing needs one mask per point")
        return rasterize_patch(pixels, masks, size)
    if drawing == "point":
        return rasterize_point(pixels, size)
    raise ValueError(f"drawing {drawing!r} is not one of {DRAWINGS}")
