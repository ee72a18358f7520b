"""Grid files -> a checked Grid -> its cells (stages.py turns each cell into command lines).

Pure: this module reads the grid YAML and checks that the files it names exist, but starts no
process and writes nothing; runner.py does the work. Every mistake in a grid is reported here,
before any cell runs, naming the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from onepfrac import bundled
from onepfrac.errors import UserError

REPO = Path(__file__).resolve().parents[2]

DATASETS = ("1p-frac", "fractaldb", "ofdb", "visualatom", "real-image", "scratch")
AXES = ("dataset", "delta", "sigma", "L", "seed")
# The axes that shape each dataset's pre-training data. The others do not apply (None in the
# cell), so that the product does not repeat, say, a scratch cell once per delta.
APPLIES = {"1p-frac": ("delta", "sigma", "L"), "fractaldb": ("L",), "ofdb": ("L",),
           "visualatom": ("L",), "real-image": ("delta", "L"), "scratch": ()}
# The generator option that sets L: 1p-frac calls its classes samples (perturbations).
L_OPTION = {"1p-frac": "samples"}
# Released values: what an axis the grid leaves out stands at.
AXIS_DEFAULTS = {"dataset": ["1p-frac"], "delta": [0.1], "sigma": [3.5], "L": [1000], "seed": [0]}
STAGES = ("generate", "pretrain", "finetune")
OPTION_GROUPS = ("trainer", "pretrain", "finetune", "generate")
TOP_KEYS = ("name", "description", "pretrain", "finetune", "finetune_data", "options", "axes",
            "axis_options", "include", "exclude", "seed_applies_to", "reference", "launch")
FINETUNE_DATA = ("digits", "folder", "cifar10", "cifar100")
DIGITS_KEYS = {"train": 200, "size": 32, "seed": 0}
# Options the sweep sets itself for every cell; a grid that sets them would fight the driver.
TRAINER_OWNED = ("data_dir", "train_dir", "val_dir", "output_dir", "ckpt", "resume", "config",
                 "dataset")
GENERATOR_OWNED = ("dataset", "base_savedir", "samples", "classes", "delta", "sigma",
                   "no_progress")


class GridError(UserError, ValueError):
    """A mistake in a grid file; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Cell:
    dataset: str
    delta: float | None
    sigma: float | None
    L: int | None
    seed: int

    @property
    def name(self) -> str:
        """Directory name: the dataset and the axes that apply to it, e.g. 1p-frac_delta0.1_sigma3.5_L16_seed0."""
        parts = [self.dataset]
        if self.delta is not None:
            parts.append(f"delta{self.delta!r}")
        if self.sigma is not None:
            parts.append(f"sigma{self.sigma!r}")
        if self.L is not None:
            parts.append(f"L{self.L}")
        parts.append(f"seed{self.seed}")
        return "_".join(parts)

    @property
    def group(self) -> tuple:
        """What seeds are averaged over."""
        return (self.dataset, self.delta, self.sigma, self.L)

    def params(self) -> dict:
        return {axis: getattr(self, axis) for axis in AXES}


@dataclass
class Grid:
    path: Path
    name: str
    description: str
    recipes: dict                  # stage -> Path of the trainer's YAML config
    finetune_data: dict            # {"digits": {...}} | {"folder": Path} | {"cifar100": Path}
    options: dict                  # group -> {option: value}; generate: dataset -> {...}
    axes: dict                     # axis -> list of values
    axis_options: dict             # axis -> [(value, {group: {option: value}})]
    include: list
    exclude: list
    seed_applies_to: tuple
    reference: list
    launch: list
    cells: list = field(default_factory=list)


# ---------------------------------------------------------------- reading and checking

def _close(key, allowed) -> str:
    close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _need(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise GridError(f"{key}: {value!r} is not allowed; {allowed}")


def _check_keys(where: str, given, allowed) -> None:
    _need(isinstance(given, dict), where, given, "expected a mapping of keys to values")
    for key in given:
        if key not in allowed:
            raise GridError(f"{where}: unknown key {key!r}{_close(key, allowed)}; "
                            f"allowed: {', '.join(map(str, allowed))}")


def _resolve_file(where: str, value, grid_dir: Path) -> Path:
    """A recipe path, relative to the grid file's folder first, then to the repository."""
    _need(isinstance(value, str) and value, where, value, "expected the path of a trainer YAML config")
    for base in (grid_dir, REPO):
        candidate = (base / value).resolve()
        if candidate.is_file():
            return candidate
    raise GridError(f"{where}: {value!r} is not a file (looked in {grid_dir} and {REPO})")


def _number(key: str, value, kind: str) -> float | int:
    if kind == "int":
        _need(isinstance(value, int) and not isinstance(value, bool), key, value, "expected an integer")
        return value
    _need(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
          key, value, "expected a number")
    return float(value)


def _axis_value(axis: str, value):
    """One axis value, checked and normalised (delta and sigma as floats, L and seed as ints)."""
    key = f"axes.{axis}"
    if axis == "dataset":
        _need(value in DATASETS, key, value,
              f"expected one of {', '.join(DATASETS)}{_close(value, DATASETS)}")
        return value
    if axis == "delta":
        value = _number(key, value, "float")
        _need(0 <= value < 1, key, value, "expected a perturbation size in [0, 1)")
        return value
    if axis == "sigma":
        value = _number(key, value, "float")
        _need(value > 0, key, value, "expected a sigma-factor > 0")
        return value
    if axis == "L":
        value = _number(key, value, "int")
        _need(value >= 1, key, value, "expected a number of classes >= 1")
        return value
    value = _number(key, value, "int")
    _need(value >= 0, key, value, "expected a seed >= 0")
    return value


def _as_list(key: str, value) -> list:
    values = value if isinstance(value, list) else [value]
    _need(len(values) > 0, key, value, "expected at least one value")
    return values


def _option_dict(where: str, value) -> dict:
    if value is None:
        return {}
    _need(isinstance(value, dict), where, value, "expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def _option_groups(where: str, value, generate_by_dataset: bool) -> dict:
    value = value or {}
    _check_keys(where, value, OPTION_GROUPS)
    groups = {g: _option_dict(f"{where}.{g}", value.get(g)) for g in OPTION_GROUPS if g != "generate"}
    generate = value.get("generate") or {}
    if generate_by_dataset:
        _check_keys(f"{where}.generate", generate, [d for d in DATASETS if d != "scratch"])
        groups["generate"] = {d: _option_dict(f"{where}.generate.{d}", v) for d, v in generate.items()}
    else:
        groups["generate"] = _option_dict(f"{where}.generate", generate)
    for group in ("trainer", "pretrain", "finetune"):
        for option in groups[group]:
            _need(option not in TRAINER_OWNED, f"{where}.{group}.{option}", groups[group][option],
                  "the sweep sets this option itself for every cell")
    generate_options = groups["generate"].values() if generate_by_dataset else [groups["generate"]]
    for options in generate_options:
        for option in options:
            _need(option not in GENERATOR_OWNED, f"{where}.generate.{option}", options[option],
                  "the sweep sets this option from the cell's axes")
    return groups


def _finetune_data(value, grid_dir: Path) -> dict:
    _need(isinstance(value, dict) and len(value) == 1, "finetune_data", value,
          f"expected exactly one of {', '.join(FINETUNE_DATA)}")
    (kind, spec), = value.items()
    if kind not in FINETUNE_DATA:
        raise GridError(f"finetune_data: unknown key {kind!r}{_close(kind, FINETUNE_DATA)}; "
                        f"allowed: {', '.join(FINETUNE_DATA)}")
    if kind == "digits":
        spec = spec or {}
        _check_keys("finetune_data.digits", spec, DIGITS_KEYS)
        spec = {**DIGITS_KEYS, **spec}
        for key in DIGITS_KEYS:
            _number(f"finetune_data.digits.{key}", spec[key], "int")
        _need(10 <= spec["train"] <= 1500, "finetune_data.digits.train", spec["train"], "expected 10..1500")
        return {"digits": spec}
    _need(isinstance(spec, str) and spec, f"finetune_data.{kind}", spec, "expected a folder path")
    path = Path(spec) if Path(spec).is_absolute() else (grid_dir / spec)
    if not path.exists() and not Path(spec).is_absolute():
        path = REPO / spec
    _need(path.is_dir(), f"finetune_data.{kind}", spec,
          "expected an existing folder" + (" holding train/ and val/" if kind == "folder" else ""))
    if kind == "folder":
        _need((path / "train").is_dir() and (path / "val").is_dir(), "finetune_data.folder", spec,
              "expected a folder holding train/ and val/ ImageFolders")
    return {kind: str(path.resolve())}


def _match_entry(where: str, entry) -> dict:
    """An include/exclude/reference entry: axis -> value or list of values."""
    _need(isinstance(entry, dict) and entry, where, entry, "expected a mapping of axes to values")
    checked = {}
    for axis, value in entry.items():
        if axis not in AXES:
            raise GridError(f"{where}: unknown axis {axis!r}{_close(axis, AXES)}; allowed: {', '.join(AXES)}")
        checked[axis] = [_axis_value(axis, v) for v in _as_list(f"{where}.{axis}", value)]
    return checked


def yaml_message(path: Path, error: yaml.YAMLError) -> str:
    """One line: the file, the line and column (1-based, as editors count) and what is wrong."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = " ".join(str(getattr(error, "problem", None) or error).split())
    context = getattr(error, "context", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    return f"grid: {where}: not valid YAML: {problem}" + (f" ({' '.join(context.split())})" if context else "")


def load_grid(path) -> Grid:
    """Read and check a grid file; raise GridError on the first mistake."""
    path = bundled.find(str(path), "grids")  # a path, or a bundled grid's name: cpu_L
    if not path.is_file():
        raise GridError(f"grid: {str(path)!r} is not a file{bundled.hint('grids')}")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise GridError(f"grid: {path} cannot be read ({getattr(error, 'strerror', None) or error})") from None
    except yaml.YAMLError as error:
        raise GridError(yaml_message(path, error)) from None
    _check_keys(f"grid {path.name}", raw, TOP_KEYS)
    grid_dir = path.resolve().parent
    for key in ("pretrain", "finetune", "finetune_data"):
        _need(key in raw, key, None, "this key is required")
    recipes = {stage: _resolve_file(stage, raw[stage], grid_dir) for stage in ("pretrain", "finetune")}

    axes_raw = raw.get("axes") or {}
    _check_keys("axes", axes_raw, AXES)
    axes = {axis: [_axis_value(axis, v) for v in _as_list(f"axes.{axis}", axes_raw.get(axis, AXIS_DEFAULTS[axis]))]
            for axis in AXES}

    axis_options = {}
    for axis, by_value in (raw.get("axis_options") or {}).items():
        if axis not in AXES:
            raise GridError(f"axis_options: unknown axis {axis!r}{_close(axis, AXES)}; allowed: {', '.join(AXES)}")
        _need(isinstance(by_value, dict), f"axis_options.{axis}", by_value,
              "expected a mapping of axis values to option groups")
        axis_options[axis] = [(_axis_value(axis, value), _option_groups(f"axis_options.{axis}.{value}", groups, False))
                              for value, groups in by_value.items()]

    seed_applies_to = tuple(_as_list("seed_applies_to", raw.get("seed_applies_to", list(STAGES))))
    for stage in seed_applies_to:
        _need(stage in STAGES, "seed_applies_to", stage, f"expected some of {', '.join(STAGES)}")

    reference = []
    entries = raw.get("reference") or []
    _need(isinstance(entries, list), "reference", entries, "expected a list of {axes..., top1, source}")
    for i, entry in enumerate(entries):
        _need(isinstance(entry, dict) and "top1" in entry, f"reference[{i}]", entry,
              "expected axes to match, top1 and source")
        match = _match_entry(f"reference[{i}]", {k: v for k, v in entry.items() if k in AXES})
        extra = set(entry) - set(AXES) - {"top1", "source"}
        if extra:
            key = sorted(extra)[0]
            raise GridError(f"reference[{i}]: unknown key {key!r}{_close(key, [*AXES, 'top1', 'source'])}")
        reference.append({"match": match, "top1": _number(f"reference[{i}].top1", entry["top1"], "float"),
                          "source": str(entry.get("source", ""))})

    launch = raw.get("launch") or ["{python}", "-m", "onepfrac.train"]
    _need(isinstance(launch, list) and all(isinstance(a, (str, int)) for a in launch), "launch", launch,
          "expected the trainer's command prefix as a list, e.g. [torchrun, --nproc-per-node, 8, -m, onepfrac.train]")

    grid = Grid(path=path.resolve(), name=str(raw.get("name") or path.stem),
                description=str(raw.get("description") or ""), recipes=recipes,
                finetune_data=_finetune_data(raw["finetune_data"], grid_dir),
                options=_option_groups("options", raw.get("options"), True), axes=axes,
                axis_options=axis_options,
                include=[_match_entry(f"include[{i}]", e) for i, e in enumerate(raw.get("include") or [])],
                exclude=[_match_entry(f"exclude[{i}]", e) for i, e in enumerate(raw.get("exclude") or [])],
                seed_applies_to=seed_applies_to, reference=reference, launch=[str(a) for a in launch])
    grid.cells = expand(grid)
    _need(len(grid.cells) > 0, "axes", axes, "the grid has no cells left after exclude")
    return grid


# ---------------------------------------------------------------- cells

def make_cell(values: dict) -> Cell:
    """A cell from axis values; the axes that do not apply to its dataset are dropped (None)."""
    applies = APPLIES[values["dataset"]]
    return Cell(dataset=values["dataset"], seed=values["seed"],
                **{axis: values[axis] if axis in applies else None for axis in ("delta", "sigma", "L")})


def matches(cell: Cell, entry: dict) -> bool:
    """Whether every axis named in an include/exclude/reference entry holds one of its values."""
    return all(getattr(cell, axis) in values for axis, values in entry.items())


def expand(grid: Grid) -> list[Cell]:
    """The cartesian product of the axes, minus `exclude`, plus `include` (each a sub-grid whose
    unnamed axes take the grid's values), without repeats, in order."""
    def product(axes):
        for combo in itertools.product(*(axes[axis] for axis in AXES)):
            yield make_cell(dict(zip(AXES, combo)))

    cells = [c for c in product(grid.axes) if not any(matches(c, e) for e in grid.exclude)]
    for entry in grid.include:
        cells.extend(product({**grid.axes, **entry}))
    return list(dict.fromkeys(cells))


def select(cells: list[Cell], names) -> list[Cell]:
    """The cells named (--only), in grid order; an unknown name is an error with close matches."""
    if not names:
        return cells
    by_name = {c.name: c for c in cells}
    for name in names:
        if name not in by_name:
            raise GridError(f"--only: {name!r} is not a cell of this grid{_close(name, by_name)}")
    return [c for c in cells if c.name in set(names)]


def reference_for(grid: Grid, cell: Cell) -> dict | None:
    """The first paper number whose axes all match the cell (its entry says which setting)."""
    for entry in grid.reference:
        if matches(cell, entry["match"]):
            return {"top1": entry["top1"], "source": entry["source"]}
    return None

