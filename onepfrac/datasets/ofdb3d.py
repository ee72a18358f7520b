"""3D-OFDB: one 3D IFS point cloud per category, rendered from 12 viewpoints.

Search (docs/released-code.md, "3D-OFDB"): N ~ U{2..7} maps of 12 coefficients U(-1, 1) (3 x 3 matrix
row by row, then the translation), p proportional to |det A_j|, 10,000 iterations from the
origin with the start point dropped, points min-max scaled jointly (one range for all axes)
to [-1, 1] and centred on their mean; accepted when every axis' variance exceeds 0.05.
The model then scales coefficient a of every map by 0.4 and is rendered at 224 x 224 as
white 1-px points by a perspective camera (fov 45, near 1, far 100) at distance 4 circling
the y axis: view k at 2 pi k / 12 + 30 degrees + U(-3, 3) degrees. A category's folder
holds its views as instances 0..11; the released trainer picks one view per visit.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from onepfrac import ifs, render
from onepfrac.datasets.interface import STREAMS, GenerationError, frozen, require, stream

NAME = "3d-ofdb"

STREAM_SEARCH, STREAM_VIEWS = STREAMS[NAME]["search"], STREAMS[NAME]["views"]
VIEWS = 12


@dataclass(frozen=True)
class Config:
    classes: int = 1000
    instances: int = VIEWS  # views per category, the first n of the 12
    size: int = 224
    points: int = 10_000  # chaos-game iterations; the start point is not kept
    variance_threshold: float = 0.05
    a_scale: float = 0.4  # the released model scales coefficient a before rendering
    fov: float = 45.0
    near: float = 1.0
    far: float = 100.0
    distance: float = 4.0
    start_angle: float = 30.0  # degrees added to every view's 2 pi k / 12
    jitter: float = 3.0  # degrees, each view's angle + U(-jitter, jitter)
    max_tries: int = 20_000
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


HELP = {
    "classes": "categories (3D-OFDB-1k: 1000)",
    "instances": f"views per category, the first 1..{VIEWS} of the 12 around the y axis",
    "size": "image side in pixels",
    "points": "chaos-game iterations (start point dropped)",
    "variance_threshold": "every axis of the normalised cloud needs more variance than this",
    "a_scale": "coefficient a of every map is multiplied by this before rendering (released model: 0.4)",
    "fov": "vertical field of view in degrees",
    "near": "near clipping distance",
    "far": "far clipping distance",
    "distance": "camera distance from the origin",
    "start_angle": "degrees added to every view angle 360 k / 12",
    "jitter": "each view angle moves by U(-jitter, jitter) degrees",
    "max_tries": "systems drawn per category before giving up",
}


def check(config: Config) -> None:
    """Raise ValueError naming the first option outside its allowed range."""
    require(config.classes >= 1, f"--classes {config.classes} must be at least 1")
    require(1 <= config.instances <= VIEWS, f"--instances {config.instances} is outside 1..{VIEWS} (the 12 views)")
    require(8 <= config.size <= 16384, f"--size {config.size} is outside 8..16384")
    require(config.points >= 2, f"--points {config.points} must be at least 2")
    require(np.isfinite(config.variance_threshold) and config.variance_threshold >= 0,
            f"--variance-threshold {config.variance_threshold} must be 0 or more")
    require(np.isfinite(config.a_scale), f"--a-scale {config.a_scale} must be a finite number")
    require(0 < config.fov < 180, f"--fov {config.fov} is outside (0, 180) degrees")
    require(0 < config.near < config.far, f"--near {config.near} and --far {config.far} need 0 < near < far")
    require(np.isfinite(config.far), f"--far {config.far} must be finite")
    require(config.distance > 0 and np.isfinite(config.distance), f"--distance {config.distance} must be above 0")
    require(np.isfinite(config.start_angle), f"--start-angle {config.start_angle} must be finite")
    require(0 <= config.jitter <= 15, f"--jitter {config.jitter} is outside 0..15 degrees (views are 30 degrees apart)")
    require(config.max_tries >= 1, f"--max-tries {config.max_tries} must be at least 1")


def folder_name(config: Config) -> str:
    return f"3d-ofdb_classes{config.classes}_views{config.instances}_seed{config.seed}"


def point_cloud(coefficients: np.ndarray, probabilities: np.ndarray, points: int) -> np.ndarray | None:
    """The normalised cloud (points, 3): joint min-max to [-1, 1], then centred; None if not finite."""
    indices = render.released_map_choices(probabilities, points)
    cloud = render.iterate3d(np.ascontiguousarray(coefficients, dtype=np.float64), indices)
    if not np.all(np.isfinite(cloud)):
        return None
    low, high = cloud.min(), cloud.max()
    if not high > low:
        return None
    cloud = (cloud - low) / (high - low) * 2.0 - 1.0
    return cloud - cloud.mean(axis=0)


def accepted(cloud: np.ndarray | None, threshold: float) -> bool:
    """The released test: a finite cloud whose every axis has variance above the threshold."""
    return cloud is not None and bool(np.all(cloud.var(axis=0) > threshold))


def class_params(config: Config, shared: dict, class_index: int) -> dict:
    found = ifs.search_system(stream(config.seed, STREAM_SEARCH, class_index), 3,
                              lambda c, p: point_cloud(c, p, config.points),
                              lambda cloud: accepted(cloud, config.variance_threshold), config.max_tries)
    if found is None:
        raise GenerationError(
            f"category {class_index}: no 3D system had every axis' variance above {config.variance_threshold} "
            f"in {config.max_tries} tries; raise --max-tries or lower --variance-threshold")
    coefficients, probabilities, cloud, tries = found
    return {"class_index": class_index,
            "coefficients": [[float(v) for v in row] for row in coefficients],
            "probabilities": [float(p) for p in probabilities],
            "variances": [float(v) for v in cloud.var(axis=0)], "tries": tries}


def view_angle(config: Config, class_index: int, view: int) -> float:
    """Radians of view `view`: 360 k / 12 + start angle + its own seeded jitter."""
    jitter = stream(config.seed, STREAM_VIEWS, class_index, view).uniform(-config.jitter, config.jitter)
    return 2.0 * np.pi * view / VIEWS + np.radians(config.start_angle + jitter)


def model_cloud(config: Config, params: dict) -> np.ndarray:
    """The rendered model's cloud: coefficient a scaled, normalised as in the search (empty if not finite)."""
    return _model_cloud(config, frozen(params["coefficients"]), frozen(params["probabilities"]))


# The views of a category share one cloud: it is computed once and cached (read-only).
@functools.lru_cache(maxsize=4)
def _model_cloud(config: Config, coefficients: tuple, probabilities: tuple) -> np.ndarray:
    scaled = np.array(coefficients, dtype=np.float64)
    scaled[:, 0] *= config.a_scale
    # p stays the searched system's, as the released model keeps it
    cloud = point_cloud(scaled, np.array(probabilities), config.points)
    if cloud is None:
        cloud = np.zeros((0, 3))
    cloud.setflags(write=False)
    return cloud


def render_instance(config: Config, shared: dict, params: dict, instance_index: int) -> np.ndarray:
    if not 0 <= instance_index < VIEWS:
        raise IndexError(f"3D-OFDB has {VIEWS} views per category, not {instance_index + 1}")
    theta = view_angle(config, params["class_index"], instance_index)
    return render.project_points(model_cloud(config, params), theta, config.size, config.fov,
                                 config.near, config.far, config.distance)
