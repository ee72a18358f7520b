"""Formula-driven datasets: each module turns a seed and its parameters into image arrays.

Every dataset module here follows one interface, so that `python -m onepfrac.generate
--dataset NAME` writes it to disk and `onepfrac.datasets.onthefly.OnTheFlyDataset` renders
it inside DataLoader workers, with the same pixels:

- `NAME`: the dataset's name on the command line (`DATASETS` below maps it to the module).
- `Config`: a frozen dataclass with `seed`, the counts (`classes`, and `instances` where a
  class has several images) and `to_dict()`. Every field with a default becomes a
  command-line option `--field-name` (its type is the default's; `CHOICES[field]` and
  `HELP[field]`, both optional module dicts, add choices and help).
- `prepare(config) -> dict`: once-per-dataset work (1p-frac's base system; may be {}),
  JSON-serialisable; it is written to the manifest and handed to every call below.
- `class_params(config, shared, class_index) -> dict`: JSON-serialisable, determined by
  (config, class_index) alone, never by worker count or order. It holds everything
  `render_instance` needs (so include `class_index` when instances seed from it). A
  search draws a bounded number of tries from its own stream and raises
  `GenerationError` (the class below) when they run out.
- `render_instance(config, shared, params, instance_index) -> np.ndarray`: uint8
  (H, W) gray or (H, W, 3) RGB, deterministic.

Optional, with the defaults generate.py uses when a module leaves them out:
- `check(config)`: raise ValueError("--option VALUE ... allowed ...") for a bad value
  (ValueError from `Config(...)` itself is reported the same way);
- `counts(config) -> (classes, instances)`: default (config.classes, config.instances or 1);
- `folder_name(config) -> str`: default `{NAME}_classes{C}_instances{I}_seed{S}`;
- `render_class(config, shared, class_index) -> (params, [images])`: both steps at once,
  for a search that already renders the images (1p-frac); must equal the two calls;
- `file_name(config, class_index, instance_index)` and `class_record(index, params, files,
  checksums)`: 1p-frac keeps its released file names and manifest records with them.

On disk: `{root}/{class:05d}/{instance:05d}.png` and manifest.json, whose `classes` list
holds per class its index, params, files and their SHA-256. Random streams are
`SeedSequence(seed, spawn_key=(stream, class, ...))` (onepfrac.datasets.onepfrac.stream),
each module with its own stream numbers.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Iterator

import numpy as np

from onepfrac.datasets.onepfrac import GenerationError, stream  # noqa: F401  (one error class for all)

# Imported only when chosen: a module's dependencies (scikit-image, ...) load only for its dataset.
DATASETS = {
    "1p-frac": "onepfrac.datasets.onepfrac_interface",
    "fractaldb": "onepfrac.datasets.fractaldb",
    "ofdb": "onepfrac.datasets.ofdb",
    "3d-ofdb": "onepfrac.datasets.ofdb3d",
    "visualatom": "onepfrac.datasets.visualatom",
    "real-image": "onepfrac.datasets.real_image",
}
DEFAULT = "1p-frac"


class UnknownDataset(ValueError):
    """A dataset name that is not registered, or whose module is not installed."""


def load(name: str) -> ModuleType:
    """The dataset module registered as `name`."""
    if name not in DATASETS:
        raise UnknownDataset(f"--dataset {name} is not one of {', '.join(DATASETS)}")
    try:
        return importlib.import_module(DATASETS[name])
    except ModuleNotFoundError as missing:
        if missing.name != DATASETS[name]:
            raise  # the module is there but a dependency of it is not: let that error speak
        raise UnknownDataset(f"--dataset {name} is not available: {DATASETS[name]} is not installed") from None


def counts(module: ModuleType, config) -> tuple[int, int]:
    """(classes, instances per class) of a config."""
    if hasattr(module, "counts"):
        return module.counts(config)
    return config.classes, getattr(config, "instances", 1)


def class_images(module: ModuleType, config, shared: dict, class_index: int) -> tuple[dict, Iterator[np.ndarray]]:
    """A class's params and its instance images, rendered one at a time as they are consumed."""
    if hasattr(module, "render_class"):
        params, images = module.render_class(config, shared, class_index)
        return params, iter(images)
    params = module.class_params(config, shared, class_index)
    _, instances = counts(module, config)
    return params, (module.render_instance(config, shared, params, i) for i in range(instances))


def file_name(module: ModuleType, config, class_index: int, instance_index: int) -> str:
    """`{class}/{instance}.png`, zero-padded to 5 digits or more, so names sort in numeric order."""
    if hasattr(module, "file_name"):
        return module.file_name(config, class_index, instance_index)
    classes, instances = counts(module, config)
    class_width, instance_width = max(5, len(str(classes - 1))), max(5, len(str(instances - 1)))
    return f"{class_index:0{class_width}d}/{instance_index:0{instance_width}d}.png"


def folder_name(module: ModuleType, config) -> str:
    if hasattr(module, "folder_name"):
        return module.folder_name(config)
    classes, instances = counts(module, config)
    return f"{module.NAME}_classes{classes}_instances{instances}_seed{config.seed}"


def class_record(module: ModuleType, index: int, params: dict, files: list[str], checksums: list[str]) -> dict:
    """A class's manifest record: its params, files and their SHA-256, in instance order."""
    if hasattr(module, "class_record"):
        return module.class_record(index, params, files, checksums)
    return {"index": index, "params": params, "files": files, "sha256": checksums}


def record_files(record: dict) -> list[str]:
    """The files of a manifest record (1p-frac's records name a single `file`)."""
    return record["files"] if "files" in record else [record["file"]]
