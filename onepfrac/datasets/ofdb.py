"""2D-OFDB (Nakamura et al., ICCV 2023): one image per category.

The category search is FractalDB's (N ~ U{2..7} maps, coefficients U(-1, 1), a 512-px point
rendering of 100k points filling at least 20%), so with the same seed category c of both
datasets is the same system, as both released datasets come from one search script.
The released recommended rendering (362 px, 200k points, 3 x 3 patches, one top-bottom
flip) first multiplies coefficient a of every map by 0.2: the saved image is not the
searched system and is not re-tested. That is the default here (`a_scale` 0.2), since it
made the OFDB images the paper compares with; `a_scale` 1.0 renders the searched system.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from onepfrac import render
from onepfrac.datasets import fractaldb
from onepfrac.datasets.interface import STREAMS, require, stream

NAME = "ofdb"

STREAM_MASKS = STREAMS[NAME]["masks"]  # the search is fractaldb's, STREAMS[NAME]["search"] (same categories)


@dataclass(frozen=True)
class Config:
    classes: int = 1000
    size: int = 362  # the released rendering script's size
    points: int = 200_000
    pad: int = 6
    drawing: str = "patch"
    a_scale: float = 0.2  # the released rendering's quirk: coefficient a of every map x 0.2
    fill_threshold: float = 0.2
    search_size: int = 512
    search_points: int = 100_000
    max_tries: int = 20_000
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


CHOICES = {"drawing": render.DRAWINGS}
HINTS = {"--instances": "2D-OFDB has one image per category"}
HELP = {
    **{k: v for k, v in fractaldb.HELP.items() if k != "instances" and k != "weights"},
    "classes": "categories = images (OFDB-1k: 1000)",
    "a_scale": "coefficient a of every map is multiplied by this before the saved rendering "
               "(released: 0.2, the searched system is then not re-tested; 1.0 renders the searched system)",
}


def check(config: Config) -> None:
    fractaldb.check_search(config)
    fractaldb.check_canvas(config)
    require(np.isfinite(config.a_scale), f"--a-scale {config.a_scale} must be a finite number")


def folder_name(config: Config) -> str:
    return f"ofdb_classes{config.classes}_seed{config.seed}"


def class_params(config: Config, shared: dict, class_index: int) -> dict:
    return fractaldb.search_system(config, class_index)


def rendered_coefficients(config: Config, params: dict) -> np.ndarray:
    coefficients = np.array(params["coefficients"], dtype=np.float64)
    coefficients[:, 0] *= config.a_scale
    return coefficients


def render_instance(config: Config, shared: dict, params: dict, instance_index: int) -> np.ndarray:
    if instance_index != 0:
        raise IndexError(f"2D-OFDB has one instance per category, not {instance_index + 1}")
    # p stays the searched system's, as the released renderer reads it from the search's file
    indices = render.released_map_choices(np.asarray(params["probabilities"]), config.points - 1)
    masks = None
    if config.drawing == "patch":
        masks = render.random_masks(config.points, stream(config.seed, STREAM_MASKS, params["class_index"]))
    canvas = render.render_released(rendered_coefficients(config, params), indices, config.size, config.pad,
                                    config.drawing, masks)
    return np.ascontiguousarray(canvas[::-1])
