"""FractalDB (Kataoka et al., ACCV 2020): random IFS categories, 1,000 instances each.

A category is a system of N ~ U{2..7} maps with coefficients U(-1, 1), accepted when its
512-px point rendering fills at least 20% of the canvas (docs/released-code.md, "FractalDB"). Its
instances come from the released weight rows (one coefficient of every map scaled), each
rendered 10 times with fresh patch masks and saved with 4 flips: 25 x 10 x 4 = 1,000.
Pure functions of (config, class index, instance index); files live in onepfrac.generate.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from onepfrac import ifs, render
from onepfrac.datasets import interface
from onepfrac.datasets.interface import STREAMS, GenerationError, frozen, require, stream

NAME = "fractaldb"

STREAM_SEARCH, STREAM_MASKS = STREAMS[NAME]["search"], STREAMS[NAME]["masks"]

WEIGHT_SETS = ("recommended", "renderer-default")
RENDERS_PER_ROW = 10  # make_fractaldb.py's --instance 10: renderings that differ only in their masks
FLIPS = 4  # none, top-bottom, left-right, both (after the base top-bottom flip)


def weight_rows(steps: tuple[float, ...]) -> np.ndarray:
    """The released weight file: per coefficient a..f, each non-unit weight; the all-ones row
    sits where coefficient a's weight 1.0 falls (third for 5 steps), so 6 x 4 + 1 = 25 rows."""
    rows = []
    for column in range(6):
        for weight in steps:
            if weight == 1.0 and column > 0:
                continue
            row = np.ones(6)
            row[column] = weight
            rows.append(row)
    return np.array(rows)


WEIGHTS = {
    "recommended": weight_rows((0.2, 0.6, 1.0, 1.4, 1.8)),  # weights_0.4.csv, used by the released script
    "renderer-default": weight_rows((0.8, 0.9, 1.0, 1.1, 1.2)),  # weights_0.1.csv, make_fractaldb.py's default
}
MAX_INSTANCES = 25 * RENDERS_PER_ROW * FLIPS


@dataclass(frozen=True)
class Config:
    classes: int = 1000
    instances: int = MAX_INSTANCES
    size: int = 362  # the released script's image size; the renderer's own default is 512
    points: int = 200_000  # the released script's iterations; the renderer's default is 100,000
    pad: int = 6
    drawing: str = "patch"
    weights: str = "recommended"
    fill_threshold: float = 0.2  # search: at least this fraction of non-zero pixels
    search_size: int = 512
    search_points: int = 100_000
    max_tries: int = 20_000
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


CHOICES = {"drawing": render.DRAWINGS, "weights": WEIGHT_SETS}
HELP = {
    "classes": "categories (FractalDB-1k: 1000)",
    "instances": f"instances per category, 1..{MAX_INSTANCES}, taken in the released order (weight row, rendering, flip)",
    "size": "image side in pixels (released script: 362)",
    "points": "orbit length of an instance, start point included (released script: 200000)",
    "pad": "margin of the rescaled orbit in pixels",
    "drawing": "3 x 3 random patches (released script) or single points",
    "weights": "recommended: 0.2..1.8 step 0.4 (weights_0.4.csv); renderer-default: 0.8..1.2 step 0.1",
    "fill_threshold": "a category's 512-px point rendering must fill at least this fraction",
    "search_size": "canvas of the search's fill test",
    "search_points": "orbit length of the search's fill test",
    "max_tries": "systems drawn per category before giving up",
}


def check(config: Config) -> None:
    """Raise ValueError naming the first option outside its allowed range."""
    check_search(config)
    require(1 <= config.instances <= MAX_INSTANCES,
            f"--instances {config.instances} is outside 1..{MAX_INSTANCES} (25 weight rows x 10 renderings x 4 flips)")
    check_canvas(config)
    require(config.weights in WEIGHT_SETS, f"--weights {config.weights} is not one of {', '.join(WEIGHT_SETS)}")


def check_search(config) -> None:
    """The options of the category search shared with 2D-OFDB."""
    require(config.classes >= 1, f"--classes {config.classes} must be at least 1")
    require(np.isfinite(config.fill_threshold) and 0 <= config.fill_threshold <= 1,
            f"--fill-threshold {config.fill_threshold} is outside [0, 1]")
    require(16 <= config.search_size <= 16384, f"--search-size {config.search_size} is outside 16..16384")
    require(config.search_points >= 2, f"--search-points {config.search_points} must be at least 2")
    require(config.max_tries >= 1, f"--max-tries {config.max_tries} must be at least 1")


def check_canvas(config) -> None:
    """The rendering options shared with 2D-OFDB."""
    interface.check_canvas(config)
    require(config.drawing in render.DRAWINGS, f"--drawing {config.drawing} is not one of {', '.join(render.DRAWINGS)}")


SEARCH_PAD = 6


def search_fill(coefficients: np.ndarray, probabilities: np.ndarray, size: int, points: int) -> float:
    """Fill fraction of the released search's point rendering; 0 when the orbit is not finite."""
    indices = render.released_map_choices(probabilities, points - 1)
    canvas = render.render(coefficients, indices, size, SEARCH_PAD, "point")
    return 0.0 if canvas is None else float(render.fill_fraction(canvas))


def search_system(config, class_index: int) -> dict:
    """Category `class_index`: random systems from its own stream until one fills >= fill_threshold.

    The released search draws every category from one stream seeded with 1; here each
    category has its own, so a category never depends on the ones before it.
    """
    found = ifs.search_system(
        stream(config.seed, STREAM_SEARCH, class_index), 2,
        lambda c, p: search_fill(c, p, config.search_size, config.search_points),
        lambda fill: fill >= config.fill_threshold, config.max_tries)
    if found is None:
        raise GenerationError(
            f"category {class_index}: no system filled {config.fill_threshold} of the {config.search_size}-px "
            f"canvas in {config.max_tries} tries; raise --max-tries or lower --fill-threshold")
    coefficients, probabilities, fill, tries = found
    return {"class_index": class_index, **ifs.System(coefficients, probabilities).to_dict(),
            "fill": fill, "tries": tries}


def class_params(config: Config, shared: dict, class_index: int) -> dict:
    return search_system(config, class_index)


def instance_layout(instance_index: int) -> tuple[int, int, int]:
    """(weight row, rendering, flip) of an instance, in the released file order."""
    rendering, flip = divmod(instance_index, FLIPS)
    row, repeat = divmod(rendering, RENDERS_PER_ROW)
    return row, repeat, flip


def flipped(canvas: np.ndarray, flip: int) -> np.ndarray:
    """The base top-bottom flip, then none / top-bottom / left-right / both."""
    image = canvas[::-1]
    if flip in (1, 3):
        image = image[::-1]
    if flip in (2, 3):
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def rendering(config: Config, params: dict, row: int, repeat: int) -> np.ndarray:
    """The unflipped canvas of weight row `row`, rendering `repeat` (its masks are its own stream)."""
    return _rendering(config, params["class_index"], row, repeat, frozen(params["coefficients"]),
                      frozen(params["probabilities"]))


# The 4 flips of a rendering share one canvas: it is rendered once and cached (read-only).
@functools.lru_cache(maxsize=4)
def _rendering(config: Config, class_index: int, row: int, repeat: int, coefficients: tuple,
               probabilities: tuple) -> np.ndarray:
    weighted = np.array(coefficients, dtype=np.float64) * WEIGHTS[config.weights][row]
    # p stays the category's, as the released renderer reads it from the search's file
    indices = render.released_map_choices(np.array(probabilities), config.points - 1)
    masks = None
    if config.drawing == "patch":
        masks = render.random_masks(config.points, stream(config.seed, STREAM_MASKS, class_index, row, repeat))
    canvas = render.render_released(weighted, indices, config.size, config.pad, config.drawing, masks)
    canvas.setflags(write=False)
    return canvas


def render_instance(config: Config, shared: dict, params: dict, instance_index: int) -> np.ndarray:
    row, repeat, flip = instance_layout(instance_index)
    return flipped(rendering(config, params, row, repeat), flip)
