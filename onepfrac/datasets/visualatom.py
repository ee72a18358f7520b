"""VisualAtom (Takashima et al., CVPR 2023): contours from sinusoidal waves and Perlin noise.

A category fixes the contour's parameters; an instance draws a new centre and a new
realisation of the per-orbit noise and grays, exactly as the released renderer does
(docs/released-code.md, "VisualAtom"). Pure functions from (config, class index, instance index)
to images; files and processes live in onepfrac.generate. Every random choice comes from
its own seeded stream keyed by (seed, class) or (seed, class, instance), so an image never
depends on worker count or order (the released renderer seeds each of its processes with
the process index, so its output does).

Geometry is defined on the released 512 x 512 canvas; another --size scales the drawn
coordinates by size / 512, so a 64-px test image is a low-resolution copy of the same atom.
There is no acceptance test and no search: class_params never raises GenerationError.

Config field -> CLI flag (released argument in brackets):
  seed -> --seed, classes -> --classes [numof_classes], instances -> --instances
  [numof_instances], size -> --size [image_size], vertices_min / vertices_max ->
  --vertices-min / --vertices-max [vertex_num_min/max], orbits_min / orbits_max ->
  --orbits-min / --orbits-max [line_num_min/max], perlin_min / perlin_max -> --perlin-min /
  --perlin-max [perlin_min, perlin_min + 4], line_width -> --line-width [line_width],
  radius_min / radius_max -> --radius-min / --radius-max [radius_min, radius_min + 50],
  oval_max -> --oval-max [oval_rate], frequency_min / frequency_max -> --frequency-min /
  --frequency-max [nami_1/2_min/max], start_pos -> --start-pos [start_pos].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numba
import numpy as np

from onepfrac.datasets.interface import STREAMS, check_range, require, stream

NAME = "visualatom"

STREAM_CLASS, STREAM_INSTANCE = STREAMS[NAME]["class"], STREAMS[NAME]["instance"]

REFERENCE_SIZE = 512  # the released canvas: all lengths below are in its pixels
NOISE_INPUT_MAX = 10_000.0  # released: each vertex's noise input u ~ U(0, 10000)
GRAY_LEVELS = 256  # released: each orbit's gray ~ U{0..255} (0 draws an invisible orbit)

# Ken Perlin's reference permutation of 0..255 (his 2002 "Improved Noise" reference
# implementation): the lattice hash of the `noise` package's pnoise1 the released renderer calls.
PERLIN_PERMUTATION = np.array([
    151, 160, 137, 91, 90, 15, 131, 13, 201, 95, 96, 53, 194, 233, 7, 225,
    140, 36, 103, 30, 69, 142, 8, 99, 37, 240, 21, 10, 23, 190, 6, 148,
    247, 120, 234, 75, 0, 26, 197, 62, 94, 252, 219, 203, 117, 35, 11, 32,
    57, 177, 33, 88, 237, 149, 56, 87, 174, 20, 125, 136, 171, 168, 68, 175,
    74, 165, 71, 134, 139, 48, 27, 166, 77, 146, 158, 231, 83, 111, 229, 122,
    60, 211, 133, 230, 220, 105, 92, 41, 55, 46, 245, 40, 244, 102, 143, 54,
    65, 25, 63, 161, 1, 216, 80, 73, 209, 76, 132, 187, 208, 89, 18, 169,
    200, 196, 135, 130, 116, 188, 159, 86, 164, 100, 109, 198, 173, 186, 3, 64,
    52, 217, 226, 250, 124, 123, 5, 202, 38, 147, 118, 126, 255, 82, 85, 212,
    207, 206, 59, 227, 47, 16, 58, 17, 182, 189, 28, 42, 223, 183, 170, 213,
    119, 248, 152, 2, 44, 154, 163, 70, 221, 153, 101, 155, 167, 43, 172, 9,
    129, 22, 39, 253, 19, 98, 108, 110, 79, 113, 224, 232, 178, 185, 112, 104,
    218, 246, 97, 228, 251, 34, 242, 193, 238, 210, 144, 12, 191, 179, 162, 241,
    81, 51, 145, 235, 249, 14, 239, 107, 49, 192, 214, 31, 181, 199, 106, 157,
    184, 84, 204, 176, 115, 121, 50, 45, 127, 4, 150, 254, 138, 236, 205, 93,
    222, 114, 67, 29, 24, 72, 243, 141, 128, 195, 78, 66, 215, 61, 156, 180,
], dtype=np.int64)


@dataclass(frozen=True)
class Config:
    seed: int = 0
    classes: int = 1000
    instances: int = 1000
    size: int = 512
    vertices_min: int = 200  # released make_VisualAtom.sh
    vertices_max: int = 1000
    orbits_min: int = 1
    orbits_max: int = 200
    perlin_min: float = 0.0  # Perlin amplitude c ~ U(perlin_min, perlin_max); released: U(0, 0 + 4)
    perlin_max: float = 4.0
    line_width: float = 0.1  # radial offset per orbit ~ U(0, line_width)
    radius_min: int = 10  # start radius ~ U{10..60}; released: radius_min + 50
    radius_max: int = 60
    oval_max: float = 2.0  # oval factors ~ U(1, oval_max) on each axis
    frequency_min: int = 0  # wave frequencies n1, n2 ~ U{0..20}
    frequency_max: int = 20
    start_pos: int = 512  # centre = (512 + U{-start_pos..start_pos}) / 2 on each axis

    def __post_init__(self) -> None:
        check(self)

    def to_dict(self) -> dict:
        return asdict(self)


# One line each for `--help` (onepfrac.generate turns every Config field into an option).
HELP = {
    "classes": "number of categories",
    "instances": "images per category (each a new centre and noise draw)",
    "size": "image side in pixels; the 512-px drawing is scaled to it",
    "vertices_min": "fewest contour vertices of a category",
    "vertices_max": "most contour vertices of a category",
    "orbits_min": "fewest contours (orbits) drawn per image",
    "orbits_max": "most contours (orbits) drawn per image",
    "perlin_min": "Perlin amplitude c ~ U(perlin-min, perlin-max)",
    "perlin_max": "upper end of the Perlin amplitude",
    "line_width": "radial offset per orbit ~ U(0, line-width), pixels",
    "radius_min": "smallest start radius, pixels",
    "radius_max": "largest start radius, pixels",
    "oval_max": "oval factors ~ U(1, oval-max) on each axis",
    "frequency_min": "smallest wave frequency n1, n2",
    "frequency_max": "largest wave frequency n1, n2",
    "start_pos": "centre = (512 + U{-start-pos..start-pos}) / 2 on each axis",
}


def check(config: Config) -> None:
    """Raise ValueError naming the CLI flag, the value and the range allowed."""
    check_range(config, "classes", 1, 10_000_000)
    check_range(config, "instances", 1, 10_000_000)
    check_range(config, "size", 8, 8192)
    # bounds keep every drawn coordinate far inside int32 for cv2
    check_range(config, "vertices_min", 3, 100_000, " (a closed contour needs 3 vertices)")
    check_range(config, "vertices_max", config.vertices_min, 100_000, " (at least --vertices-min)")
    check_range(config, "orbits_min", 1, 10_000)
    check_range(config, "orbits_max", config.orbits_min, 10_000, " (at least --orbits-min)")
    check_range(config, "perlin_min", 0.0, 100.0)
    check_range(config, "perlin_max", config.perlin_min, 100.0, " (at least --perlin-min)")
    check_range(config, "line_width", 0.0, 100.0)
    check_range(config, "radius_min", 0, 10_000)
    check_range(config, "radius_max", config.radius_min, 10_000, " (at least --radius-min)")
    check_range(config, "oval_max", 1.0, 100.0)
    check_range(config, "frequency_min", 0, 1000)
    check_range(config, "frequency_max", config.frequency_min, 1000, " (at least --frequency-min)")
    require(not config.frequency_min == config.frequency_max != 0,
            f"--frequency-max: {config.frequency_max} equals --frequency-min, but n2 must "
            f"differ from a non-zero n1: widen the range to at least two values")
    check_range(config, "start_pos", 0, 10_000)
    check_range(config, "seed", 0, 2**63 - 1)


def class_params(config: Config, shared: dict, class_index: int) -> dict:
    """The category's contour parameters, drawn from its own stream (released ranges)."""
    if not 0 <= class_index < config.classes:
        raise ValueError(f"class index {class_index} is outside [0, {config.classes - 1}]")
    rng = stream(config.seed, STREAM_CLASS, class_index)
    n1 = int(rng.integers(config.frequency_min, config.frequency_max, endpoint=True))
    if n1 == 0:
        n2 = int(rng.integers(config.frequency_min, config.frequency_max, endpoint=True))
    else:
        # the released loop redraws n2 while it equals n1: the same as a uniform draw without n1
        n2 = int(rng.integers(config.frequency_min, config.frequency_max - 1, endpoint=True))
        n2 += n2 >= n1
    return {
        "class_index": int(class_index),
        "vertices": int(rng.integers(config.vertices_min, config.vertices_max, endpoint=True)),
        "orbits": int(rng.integers(config.orbits_min, config.orbits_max, endpoint=True)),
        "perlin": float(rng.uniform(config.perlin_min, config.perlin_max)),
        "line_width": float(rng.uniform(0.0, config.line_width)),
        "radius": int(rng.integers(config.radius_min, config.radius_max, endpoint=True)),
        "frequency1": n1,
        "frequency2": n2,
        "oval_x": float(rng.uniform(1.0, config.oval_max)),
        "oval_y": float(rng.uniform(1.0, config.oval_max)),
    }


def instance_draws(config: Config, params: dict, instance_index: int) -> dict:
    """An instance's own randomness: its centre, each orbit's gray and noise inputs.

    Released order of use: the centre, then per orbit its gray and the x and y noise inputs.
    """
    rng = stream(config.seed, STREAM_INSTANCE, params["class_index"], instance_index)
    offsets = rng.integers(-config.start_pos, config.start_pos, size=2, endpoint=True)
    orbits, vertices = params["orbits"], params["vertices"]
    return {
        "centre": (REFERENCE_SIZE + offsets) / 2.0,  # (x, y) on the 512 canvas
        "grays": rng.integers(0, GRAY_LEVELS, size=orbits),
        "noise_x": rng.random((orbits, vertices)) * NOISE_INPUT_MAX,
        "noise_y": rng.random((orbits, vertices)) * NOISE_INPUT_MAX,
    }


def render_instance(config: Config, shared: dict, params: dict, instance_index: int) -> np.ndarray:
    """Instance `instance_index` of the category `params`: uint8 (size, size) gray.

    The released renderer saves RGB with three equal channels; one channel holds the same.
    """
    return draw_atom(params, instance_draws(config, params, instance_index), config.size)


def draw_atom(params: dict, draws: dict, size: int) -> np.ndarray:
    """Every orbit as a closed 1-px polyline in its gray, later orbits over earlier ones."""
    centre_x, centre_y = (float(c) for c in draws["centre"])
    pixels = orbit_pixels(params["vertices"], float(params["radius"]), float(params["oval_x"]),
                          float(params["oval_y"]), centre_x, centre_y, float(params["perlin"]),
                          float(params["line_width"]), float(params["frequency1"]), float(params["frequency2"]),
                          draws["noise_x"], draws["noise_y"], size / REFERENCE_SIZE, PERLIN_PERMUTATION)
    image = np.zeros((size, size), dtype=np.uint8)
    for orbit, gray in enumerate(draws["grays"]):
        cv2.polylines(image, [pixels[orbit]], True, int(gray), 1, cv2.LINE_8)
    return image


@numba.njit(cache=True)
def _gradient(hashed):
    # the `noise` package's pnoise1 convention (used by the released renderer): slopes 1..8
    # from the low three bits, or -1 when bit 3 is set
    if hashed & 8:
        return np.float32(-1.0)
    return np.float32((hashed & 7) + 1)


@numba.njit(cache=True)
def perlin1(u, permutation):
    """1-D gradient (Perlin) noise at u, equal to the released renderer's `noise.pnoise1(u)`.

    Zero at integers, period 256. Lattice point i has slope g_i = gradient(permutation[i mod 256]);
    between i and i + 1, with t = u - i and the quintic fade f(t) = 6t^5 - 15t^4 + 10t^3, the
    noise is 0.4 (g_i t + f(t) (g_{i+1} (t - 1) - g_i t)). With PERLIN_PERMUTATION (Perlin's
    table) this is pnoise1 with its defaults (one octave; its repeat=1024 is a multiple of
    256, so it changes nothing). pnoise1 takes its argument as a C float and computes in
    float32, so u is rounded to float32 first (skipping that would move values by up to
    1.4e-3 for u ~ U(0, 10000)) and the arithmetic is float32 too: the recorded pnoise1
    values in tests/data/pnoise1_reference.json are matched exactly.
    """
    x = np.float32(u)  # pnoise1's C float argument: float32 resolution is ~1e-3 at 10000
    cell = np.floor(x)
    t = x - cell
    i = int(cell) & 255
    left = _gradient(permutation[i]) * t
    right = _gradient(permutation[(i + 1) & 255]) * (t - np.float32(1.0))
    fade = t * t * t * (t * (t * np.float32(6.0) - np.float32(15.0)) + np.float32(10.0))
    return float((left + fade * (right - left)) * np.float32(0.4))


@numba.njit(cache=True)
def orbit_pixels(vertices, radius, oval_x, oval_y, centre_x, centre_y, perlin, line_width,
                 frequency1, frequency2, noise_x, noise_y, scale, permutation):
    """Integer vertex positions (orbits, vertices, 2) as (x, y) pixels of every orbit.

    The contour starts as an oval of the start radius around the centre; before each orbit
    is drawn, vertex k at angle theta_k = 2 pi k / V moves outward by
    c (1 - perlin(u)) + 0.5 sin(n1 theta_k) + 0.5 sin(n2 theta_k) + line_width, with its own
    u for x and for y. Coordinates are scaled by `scale` and truncated toward zero, as the
    released renderer's float coordinates are by Pillow's line drawing.
    """
    orbits = noise_x.shape[0]
    pixels = np.empty((orbits, vertices, 2), dtype=np.int32)
    cosines = np.empty(vertices)
    sines = np.empty(vertices)
    waves = np.empty(vertices)
    x = np.empty(vertices)
    y = np.empty(vertices)
    step = 2.0 * math.pi / vertices
    for k in range(vertices):
        angle = step * k
        cosines[k] = math.cos(angle)
        sines[k] = math.sin(angle)
        waves[k] = 0.5 * math.sin(angle * frequency1) + 0.5 * math.sin(angle * frequency2)
        x[k] = cosines[k] * radius * oval_x + centre_x
        y[k] = sines[k] * radius * oval_y + centre_y
    for orbit in range(orbits):
        for k in range(vertices):
            x[k] += cosines[k] * (perlin * (1.0 - perlin1(noise_x[orbit, k], permutation)) + waves[k] + line_width)
            y[k] += sines[k] * (perlin * (1.0 - perlin1(noise_y[orbit, k], permutation)) + waves[k] + line_width)
            pixels[orbit, k, 0] = int(x[k] * scale)
            pixels[orbit, k, 1] = int(y[k] * scale)
    return pixels
