"""1p-frac through the common dataset interface (see onepfrac.datasets), outputs unchanged.

A thin adapter over onepfrac.datasets.onepfrac: `prepare` finds the base system, a class
is one image named after the class (`00042/00042.png`, as before), and its manifest
record keeps the flat form {index, file, sha256, coefficients, attempts, fill}.
"""

from __future__ import annotations

import numpy as np

from onepfrac import ifs
from onepfrac.datasets import onepfrac as onepfrac_dataset
from onepfrac.datasets.onepfrac import Config  # noqa: F401  (the interface's Config)

NAME = "1p-frac"


def counts(config: Config) -> tuple[int, int]:
    return config.samples, 1


def folder_name(config: Config) -> str:
    return (f"sigma{float(config.sigma)!r}_perturb{float(config.delta)!r}_sample{config.samples}"
            f"_seed{config.seed}")


def file_name(config: Config, class_index: int, instance_index: int) -> str:
    width = max(5, len(str(config.samples - 1)))
    return f"{class_index:0{width}d}/{class_index:0{width}d}.png"


def prepare(config: Config) -> dict:
    return {"base_system": onepfrac_dataset.find_base(config).to_dict()}


# The base and its fixed map sequence, rebuilt once per process from `shared` (a pure memo).
_prepared: dict = {}


def _base_and_orbit(config: Config, shared: dict):
    record = shared["base_system"]
    key = (config, repr(record))
    if _prepared.get("key") != key:
        system = ifs.System.from_dict(record)
        base = onepfrac_dataset.Base(system, record["sigma_target"], record["candidate"])
        fixed = None
        if config.orbit == "fixed":
            fixed = onepfrac_dataset.released_map_indices(system.probabilities, config.points)
        _prepared.update(key=key, base=base, fixed=fixed)
    return _prepared["base"], _prepared["fixed"]


def render_class(config: Config, shared: dict, class_index: int) -> tuple[dict, list[np.ndarray]]:
    """The class's params and its image: the fill search already renders it, so it is kept."""
    base, fixed = _base_and_orbit(config, shared)
    result = onepfrac_dataset.render_class(config, base, class_index, fixed)
    params = {"class_index": class_index, "coefficients": result.system.to_dict()["coefficients"],
              "attempts": result.attempts, "fill": result.fill}
    return params, [result.image]


def class_params(config: Config, shared: dict, class_index: int) -> dict:
    return render_class(config, shared, class_index)[0]


def render_instance(config: Config, shared: dict, params: dict, instance_index: int) -> np.ndarray:
    if instance_index != 0:
        raise IndexError(f"1p-frac has one image per class, not {instance_index + 1}")
    base, fixed = _base_and_orbit(config, shared)
    system = ifs.System(np.asarray(params["coefficients"], dtype=np.float64), base.system.probabilities)
    return onepfrac_dataset.rerender(config, system, params["class_index"], params["attempts"], fixed)


def class_record(index: int, params: dict, files: list[str], checksums: list[str]) -> dict:
    """The manifest record of the released 1p-frac layout (one file per class)."""
    return {"index": index, "file": files[0], "sha256": checksums[0], "coefficients": params["coefficients"],
            "attempts": params["attempts"], "fill": params["fill"]}
