"""One real image with shape augmentation (the paper's section extending 1p-frac to real images).

As in 1p-frac, one source is perturbed L times within delta and each perturbation is a
class; here the source is a photograph and a perturbation is a geometric warp of it:
`affine`, `elastic` or `polynomial` (the paper's Figure 4). The warped image is then shown
as `color`, `gray` or `edges` (Canny), so edges stay one pixel thin after any warp.

Every warp is a backward map: output pixel p samples the source at T(p) (bilinear). It is
defined in normalised coordinates, where the square image spans [-1, 1] on each axis, so
delta means the same at every size and plays the role it plays in 1p-frac (coefficients of
order 1, each moved by at most delta):
  affine      T(x) = A x + t, every one of the 6 entries of [A | t] = identity's + U(-delta, delta)
              (the released 1p-frac multiplies each coefficient by U(1 - delta, 1 + delta);
              around the identity, whose off-diagonal entries are 0, the additive form is the
              one that moves all six)
  polynomial  T(x) = sum_k c_k m_k(x, y) over m = (1, x, y, x^2, xy, y^2), for each output
              coordinate; the 12 coefficients = identity's + U(-delta, delta)
  elastic     a smooth displacement field: a grid x grid lattice of control displacements
              ~ U(-delta, delta) x size pixels on each axis, interpolated bicubically over the
              image and clipped to the largest control value, so no pixel moves more than
              delta x size on either axis
Delta 0 gives the unperturbed image, pixel for pixel. There is no search: class_params
never raises GenerationError.

The source is resized (area averaging, or bicubic when enlarging) so its short side is
--size, then centre-cropped to a square: 512 by default, the canvas of 1p-frac; the default
image, scikit-image's astronaut, is 512 x 512 already and ships with the package (no download).

Config field -> CLI flag: seed -> --seed, classes -> --classes, instances -> --instances,
image -> --image (a bundled name from BUNDLED or a path), representation -> --representation,
transform -> --transform, delta -> --delta, size -> --size, canny_low / canny_high ->
--canny-low / --canny-high, elastic_grid -> --elastic-grid, border -> --border,
instance_delta -> --instance-delta.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from onepfrac.datasets.interface import STREAMS, check_choice, check_range, require, stream
from onepfrac import extras
from onepfrac.errors import UsageError

NAME = "real-image"

STREAM_CLASS, STREAM_INSTANCE = STREAMS[NAME]["class"], STREAMS[NAME]["instance"]

REPRESENTATIONS = ("color", "gray", "edges")
TRANSFORMS = ("affine", "elastic", "polynomial")
BORDERS = ("reflect", "constant")
# scikit-image images stored inside its package: they load without any network access
BUNDLED = ("astronaut", "camera", "chelsea", "coffee", "rocket")

IDENTITY_AFFINE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))  # [A | t]
# coefficients of (1, x, y, x^2, xy, y^2) for x' and y': the identity warp
IDENTITY_POLYNOMIAL = ((0.0, 1.0, 0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0, 0.0, 0.0))


@dataclass(frozen=True)
class Config:
    seed: int = 0
    classes: int = 1000  # L, as in 1p-frac's Tables 11 and 12
    instances: int = 1  # one image per perturbation, as in 1p-frac
    image: str = "astronaut"
    representation: str = "edges"  # the paper finds Canny (contour, no colour) pre-trains best
    transform: str = "affine"  # ... and affine perturbations best
    delta: float = 0.1  # 1p-frac's best delta (Table 5)
    size: int = 512
    canny_low: float = 100.0  # hysteresis thresholds of cv2.Canny (the paper gives none)
    canny_high: float = 200.0
    elastic_grid: int = 4  # control points per side of the elastic field
    border: str = "reflect"  # a constant border would add straight edges that differ by class
    instance_delta: float = 0.01  # instances after the first: each coefficient + U(-0.01, 0.01)

    def __post_init__(self) -> None:
        check(self)

    def to_dict(self) -> dict:
        return asdict(self)


# Choices and one line of `--help` each (onepfrac.generate turns every Config field into an option).
CHOICES = {"representation": REPRESENTATIONS, "transform": TRANSFORMS, "border": BORDERS}
HELP = {
    "classes": "L, the number of perturbations = classes",
    "instances": "images per class: the class warp, then small perturbations of it",
    "image": f"a bundled image ({', '.join(BUNDLED)}) or the path of any image file",
    "representation": "how the warped image is shown",
    "transform": "the kind of warp each class is",
    "delta": "perturbation size, in [0, 1)",
    "size": "output side: the image's short side is resized to it, the centre square cropped",
    "canny_low": "cv2.Canny lower hysteresis threshold",
    "canny_high": "cv2.Canny upper hysteresis threshold",
    "elastic_grid": "control points per side of the elastic displacement field",
    "border": "what a warp sees outside the image: mirrored, or black",
    "instance_delta": "instances after the first move every class coefficient by U(-d, d)",
}


def check(config: Config) -> None:
    """Raise ValueError naming the CLI flag, the value and what is allowed."""
    check_range(config, "classes", 1, 10_000_000)
    check_range(config, "instances", 1, 10_000_000)
    check_range(config, "size", 8, 8192)
    # at delta 1 an affine map can be singular and a warp can fold the image onto itself
    check_range(config, "delta", 0.0, 1.0, open_high=True)
    check_range(config, "instance_delta", 0.0, 1.0, open_high=True)
    check_range(config, "canny_low", 0.0, 10_000.0)
    check_range(config, "canny_high", config.canny_low, 10_000.0, " (at least --canny-low)")
    check_range(config, "elastic_grid", 2, 256)
    check_choice(config, "representation", REPRESENTATIONS)
    check_choice(config, "transform", TRANSFORMS)
    check_choice(config, "border", BORDERS)
    check_range(config, "seed", 0, 2**63 - 1)
    require(isinstance(config.image, str) and (config.image in BUNDLED or os.path.isfile(config.image)),
            f"--image: {config.image!r} is neither a file nor one of the bundled images {', '.join(BUNDLED)}")


def load_image(image: str) -> np.ndarray:
    """The image as uint8 RGB (H, W, 3): a bundled scikit-image picture or a file OpenCV reads."""
    if image in BUNDLED:
        # only this branch needs scikit-image: a missing one names the extra
        photos = extras.require("skimage.data", "real-image", f"--image {image} (a bundled photo)")

        pixels = getattr(photos, image)()
    else:
        pixels = cv2.imread(image, cv2.IMREAD_COLOR)
        if pixels is None:  # OpenCV says nothing more: not an image, a format it lacks, or unreadable
            raise UsageError(f"--image {image}: not an image file OpenCV can read (PNG, JPEG, TIFF, BMP, WebP...) "
                             f"or one of the bundled images {', '.join(BUNDLED)}")
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3], dtype=np.uint8)


def square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize so the short side is `size`, then crop the centre square."""
    height, width = pixels.shape[:2]
    scale = size / min(height, width)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_width, new_height) != (width, height):
        shrinking = scale < 1.0
        pixels = cv2.resize(pixels, (new_width, new_height),
                            interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    top, left = (new_height - size) // 2, (new_width - size) // 2
    return np.ascontiguousarray(pixels[top:top + size, left:left + size])


@functools.lru_cache(maxsize=4)
def source(image: str, size: int) -> np.ndarray:
    """The square RGB source every class warps, read-only; cached, so a file is read once per process."""
    pixels = square(load_image(image), size)
    pixels.setflags(write=False)
    return pixels


def prepare(config: Config) -> dict:
    """Read the image once and record what was read, so a resumed run can check it is the same."""
    pixels = source(config.image, config.size)
    return {"image": config.image, "source_shape": list(load_image(config.image).shape),
            "source_sha256": hashlib.sha256(pixels.tobytes()).hexdigest()}


def _perturbed(identity, delta: float, rng: np.random.Generator) -> list[list[float]]:
    base = np.asarray(identity, dtype=np.float64)
    return (base + rng.uniform(-delta, delta, size=base.shape)).tolist()


def class_params(config: Config, shared: dict, class_index: int) -> dict:
    """The class's warp, drawn within delta from its own stream."""
    if not 0 <= class_index < config.classes:
        raise ValueError(f"class index {class_index} is outside [0, {config.classes - 1}]")
    rng = stream(config.seed, STREAM_CLASS, class_index)
    params = {"class_index": int(class_index), "transform": config.transform}
    if config.transform == "affine":
        params["matrix"] = _perturbed(IDENTITY_AFFINE, config.delta, rng)
    elif config.transform == "polynomial":
        params["coefficients"] = _perturbed(IDENTITY_POLYNOMIAL, config.delta, rng)
    else:
        grid = config.elastic_grid
        params["displacements"] = _perturbed(np.zeros((2, grid, grid)), config.delta, rng)
    return params


def instance_params(config: Config, params: dict, instance_index: int) -> dict:
    """Instance 0 is the class's warp; later ones move every coefficient by U(-instance_delta, +)."""
    if instance_index == 0:
        return params
    rng = stream(config.seed, STREAM_INSTANCE, params["class_index"], instance_index)
    key = {"affine": "matrix", "polynomial": "coefficients", "elastic": "displacements"}[params["transform"]]
    return {**params, key: _perturbed(params[key], config.instance_delta, rng)}


def render_instance(config: Config, shared: dict, params: dict, instance_index: int) -> np.ndarray:
    """The source warped by the instance's map, then shown as color (H, W, 3) or gray/edges (H, W)."""
    warped = warp(source(config.image, config.size), instance_params(config, params, instance_index),
                  config.border)
    return represent(warped, config.representation, config.canny_low, config.canny_high)


def represent(rgb: np.ndarray, representation: str, canny_low: float = 100.0, canny_high: float = 200.0) -> np.ndarray:
    if representation == "color":
        return rgb
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if representation == "gray":
        return gray
    if representation == "edges":
        return cv2.Canny(gray, canny_low, canny_high)
    raise ValueError(f"--representation: {representation!r} is not one of {', '.join(REPRESENTATIONS)}")


def displacement(params: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """T(p) - p in pixels at every output pixel, as float32 (dx, dy) maps of shape (size, size)."""
    if params["transform"] == "elastic":
        fields = np.asarray(params["displacements"], dtype=np.float32) * size
        # bicubic interpolation can overshoot its control values; the clip keeps |d| <= delta x size
        limit = np.abs(fields).max()
        dx, dy = (np.clip(cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC), -limit, limit) for f in fields)
        return dx, dy
    # normalised pixel centres: the image spans [-1, 1], pixel i sits at (2 i + 1) / size - 1
    axis = (2.0 * np.arange(size) + 1.0) / size - 1.0
    x, y = np.meshgrid(axis, axis)
    if params["transform"] == "affine":
        (a, b, e), (c, d, f) = params["matrix"]
        target_x, target_y = a * x + b * y + e, c * x + d * y + f
    elif params["transform"] == "polynomial":
        monomials = (np.ones_like(x), x, y, x * x, x * y, y * y)
        cx, cy = params["coefficients"]
        target_x = sum(k * m for k, m in zip(cx, monomials))
        target_y = sum(k * m for k, m in zip(cy, monomials))
    else:
        raise ValueError(f"--transform: {params['transform']!r} is not one of {', '.join(TRANSFORMS)}")
    half = size / 2.0  # normalised units -> pixels
    return ((target_x - x) * half).astype(np.float32), ((target_y - y) * half).astype(np.float32)


def warp(rgb: np.ndarray, params: dict, border: str = "reflect") -> np.ndarray:
    """Output pixel p = source at T(p), bilinear; a zero displacement returns the source exactly."""
    size = rgb.shape[0]
    dx, dy = displacement(params, size)
    grid = np.arange(size, dtype=np.float32)
    map_x = grid[None, :] + dx
    map_y = grid[:, None] + dy
    mode = cv2.BORDER_REFLECT_101 if border == "reflect" else cv2.BORDER_CONSTANT
    return cv2.remap(rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=mode, borderValue=0)
