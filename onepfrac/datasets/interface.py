"""What every dataset module shares: its random streams, its error and its checks.

A dataset module (one per formula-driven dataset, registered in onepfrac.datasets.DATASETS)
declares:

- `NAME`: the dataset's name on the command line.
- `Config`: a frozen dataclass with `seed`, its counts and `to_dict()`. Every field with a
  default becomes a command-line option `--field-name` of `python -m onepfrac.generate`, typed
  by its default; `HELP[field]` (one line) and `CHOICES[field]` (allowed values), both module
  dicts, add help and choices.
- `check(config)`: raise ValueError("--option VALUE ... allowed ...") naming the first bad
  value. The CLI, `OnTheFlyDataset` and the trainer's `--render` all call it through
  `onepfrac.datasets.check`, so a value is refused the same way on every path.
- `class_params(config, shared, class_index) -> dict`: JSON-serialisable, determined by
  (config, class_index) alone, never by worker count or order, holding `class_index` and
  everything `render_instance` needs. A search draws a bounded number of tries from its own
  stream and raises `GenerationError` when they run out.
- `render_instance(config, shared, params, instance_index) -> np.ndarray`: uint8 (H, W) gray
  or (H, W, 3) RGB, deterministic.

Optional, with the defaults onepfrac.datasets supplies when a module leaves them out:
- `prepare(config) -> dict`: once-per-dataset work (1p-frac's base system), JSON-serialisable,
  written to the manifest and handed to every call above; default {}.
- `counts(config) -> (classes, instances)`: default (config.classes, config.instances or 1).
- `folder_name(config) -> str`: default `{NAME}_classes{C}_instances{I}_seed{S}`.
- `class_images(config, shared, class_index) -> (params, [images])`: both steps at once, for a
  search that already renders the images (1p-frac); must equal the two calls.
- `file_name(config, class_index, instance_index)` and `class_record(index, params, files,
  checksums)`: 1p-frac keeps its released file names and flat manifest records with them.
- `HINTS`: {option of another dataset: what this dataset uses instead}, for the CLI's error.

Randomness: every draw comes from `stream(seed, number, class, ...)`, a SeedSequence keyed by
the dataset's seed and the path below, so a class never depends on another class, on the
worker count or on the order of work. The numbers are listed once, in STREAMS.
"""

from __future__ import annotations

import numpy as np

from onepfrac.errors import UserError


class GenerationError(UserError, RuntimeError):
    """A bounded search ran out of tries; the message says what to change."""

    exit_code = 1


def stream(seed: int, *key: int) -> np.random.Generator:
    """The generator of one random stream: SeedSequence(seed, spawn_key=key)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


# Every stream number, by dataset and purpose. Numbers must differ within a dataset; across
# datasets they need not (each dataset draws from its own seed and writes its own folder).
# 2D-OFDB's search is FractalDB's on purpose: with one seed, category c of both is one system.
# VisualAtom and real-image reuse 1p-frac's 0 and 1; renumbering them would change their bytes.
STREAMS = {
    "1p-frac": {"base": 0, "probe": 1, "class": 2, "masks": 3, "orbit": 4, "probe-orbit": 5},
    "fractaldb": {"search": 10, "masks": 11},
    "ofdb": {"search": 10, "masks": 21},
    "3d-ofdb": {"search": 30, "views": 31},
    "visualatom": {"class": 0, "instance": 1},
    "real-image": {"class": 0, "instance": 1},
    "on-the-fly": {"pick": 90},  # the random view of a class per epoch (OnTheFlyDataset)
}


def frozen(values) -> tuple:
    """A hashable copy of a list (of lists) of numbers from a manifest's params, for a cache key."""
    return tuple(frozen(v) if isinstance(v, (list, tuple, np.ndarray)) else float(v) for v in values)


def flag(field: str) -> str:
    """The command-line option of a Config field."""
    return "--" + field.replace("_", "-")


def require(ok: bool, message: str) -> None:
    """Raise ValueError(message) unless ok: the one form every check takes."""
    if not ok:
        raise ValueError(message)


def check_range(config, field: str, low, high, note: str = "", open_high: bool = False) -> None:
    """A number of the field's type (int fields take ints only) in [low, high] or [low, high)."""
    value = getattr(config, field)
    kinds = int if type(config).__dataclass_fields__[field].type == "int" else (int, float)
    ok = (not isinstance(value, bool) and isinstance(value, kinds)
          and low <= value and (value < high if open_high else value <= high))
    bracket = ")" if open_high else "]"
    require(ok, f"{flag(field)}: {value!r} is outside the allowed range [{low}, {high}{bracket}{note}")


def check_choice(config, field: str, allowed: tuple[str, ...]) -> None:
    value = getattr(config, field)
    require(value in allowed, f"{flag(field)}: {value!r} is not one of {', '.join(allowed)}")


def check_canvas(config) -> None:
    """The IFS canvas options of 1p-frac, FractalDB and 2D-OFDB: --pad, --size and --points."""
    require(config.pad >= 0, f"--pad {config.pad} must be at least 0")
    require(config.size <= 16384, f"--size {config.size} is above the largest allowed, 16384")
    require(config.size >= 2 * config.pad + 4,
            f"--size {config.size} is too small for --pad {config.pad}: it must be at least 2 x pad + 4 = "
            f"{2 * config.pad + 4}")
    require(config.points >= 2, f"--points {config.points} must be at least 2")
