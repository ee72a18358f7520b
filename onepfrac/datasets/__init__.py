"""Formula-driven datasets: each module turns a seed and its parameters into image arrays.

Every module registered in DATASETS follows one interface (onepfrac.datasets.interface), so
that `python -m onepfrac.generate --dataset NAME` writes it to disk and
`onepfrac.datasets.onthefly.OnTheFlyDataset` renders it inside DataLoader workers, with the
same pixels. The functions below are the only way the rest of the package calls a dataset
module: they supply the defaults of the optional parts of the interface.

On disk: `{root}/{class:05d}/{instance:05d}.png` and manifest.json, whose `classes` list holds
per class its index, params, files and their SHA-256.
"""

from __future__ import annotations

import importlib
from dataclasses import MISSING, fields
from types import ModuleType
from typing import Iterator

import numpy as np

from onepfrac.datasets.interface import GenerationError, flag, stream  # noqa: F401  (the package's names)
from onepfrac.errors import UsageError

# Imported only when chosen: a module's dependencies (scikit-image, ...) load only for its dataset.
DATASETS = {
    "1p-frac": "onepfrac.datasets.single_fractal",
    "fractaldb": "onepfrac.datasets.fractaldb",
    "ofdb": "onepfrac.datasets.ofdb",
    "3d-ofdb": "onepfrac.datasets.ofdb3d",
    "visualatom": "onepfrac.datasets.visualatom",
    "real-image": "onepfrac.datasets.real_image",
}
DEFAULT = "1p-frac"


class UnknownDataset(UsageError):
    """A dataset name that is not registered, or whose module is not installed."""


class ConfigError(UsageError):
    """A dataset option outside what the dataset allows; the message names the option."""


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


def options(module: ModuleType) -> list:
    """The Config fields that are command-line options (those with a default)."""
    return [f for f in fields(module.Config) if f.default is not MISSING and not f.name.startswith("_")]


def _kind_error(field, value) -> str | None:
    """Why `value` is not of the option's type (its default's), or None when it is."""
    default = field.default
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    else:
        return None
    return None if ok else f"{flag(field.name)} {value!r} must be {kind}"


def check(module: ModuleType, config) -> None:
    """Refuse a config the dataset does not allow, the same way on every path (CLI, on the fly).

    Raises ConfigError naming the first bad option: a value of the wrong type or outside the
    module's CHOICES (the CLI's parser checks both itself), a negative seed, then the module's
    own check.
    """
    choices = getattr(module, "CHOICES", {})
    for field in options(module):
        value = getattr(config, field.name)
        problem = _kind_error(field, value)
        if problem:
            raise ConfigError(problem)
        if field.name in choices and value not in choices[field.name]:
            raise ConfigError(f"{flag(field.name)} {value} is not one of {', '.join(choices[field.name])}")
    if config.seed < 0:
        raise ConfigError(f"--seed {config.seed} must be 0 or more")
    try:
        module.check(config)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def make_config(module: ModuleType, values: dict):
    """The module's Config from option values (field names), checked; raises ConfigError.

    An integer given for a float option becomes a float, as the command line's parser makes it,
    and -0.0 becomes 0.0, so that one value has one folder name and one manifest.
    """
    fields_by_name = {f.name: f for f in options(module)}
    unknown = sorted(set(values) - set(fields_by_name))
    if unknown:
        raise ConfigError(f"{module.NAME} has no option {', '.join(unknown)}; its options are "
                          f"{', '.join(sorted(fields_by_name))}")
    values = {k: float(v) + 0.0 if type(fields_by_name[k].default) is float and type(v) in (int, float) else v
              for k, v in values.items()}
    try:
        config = module.Config(**values)
    except ValueError as error:  # a Config that checks itself when built
        raise ConfigError(str(error)) from None
    check(module, config)
    return config


def prepare(module: ModuleType, config) -> dict:
    """Once-per-dataset work shared by every class (JSON-serialisable, written to the manifest)."""
    return module.prepare(config) if hasattr(module, "prepare") else {}


def counts(module: ModuleType, config) -> tuple[int, int]:
    """(classes, instances per class) of a config."""
    if hasattr(module, "counts"):
        return module.counts(config)
    return config.classes, getattr(config, "instances", 1)


def class_images(module: ModuleType, config, shared: dict, class_index: int) -> tuple[dict, Iterator[np.ndarray]]:
    """A class's params and its instance images, rendered one at a time as they are consumed."""
    if hasattr(module, "class_images"):
        params, images = module.class_images(config, shared, class_index)
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
