"""The trainer's YAML configs and the sweep grids, found by name as well as by path.

They live in train/configs and train/grids of the repository; a wheel ships them as the package
data `onepfrac/_train/{configs,grids}` (pyproject.toml's package-dir maps those folders), so
`python -m onepfrac.train pretrain -c pretrain_cpu` and `python -m onepfrac.sweep cpu_L` work
from an installed package as well as in a checkout.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ("configs", "grids")


def folder(kind: str) -> Path | None:
    """The folder holding the bundled `kind` files: the wheel's copy first, then the checkout's."""
    # The wheel's copy is looked at first: next to an installed package, `../train` could be anything.
    for candidate in (HERE / "_train" / kind, HERE.parent / "train" / kind):
        if candidate.is_dir():
            return candidate
    return None


def names(kind: str) -> list[str]:
    where = folder(kind)
    return sorted(path.stem for path in where.glob("*.yaml")) if where else []


def find(value: str, kind: str) -> Path:
    """`value` itself when it names an existing file or holds a folder; else the bundled file of
    that name (with or without `.yaml`); else `value` unchanged, for the caller's error."""
    path = Path(value)
    where = folder(kind)
    if path.exists() or path.parent != Path(".") or where is None:
        return path
    for name in (value, f"{value}.yaml"):
        if (where / name).is_file():
            return where / name
    return path


def hint(kind: str) -> str:
    """The names a missing file could have been, for the end of its error line."""
    known = names(kind)
    return f" (bundled {kind} by name: {', '.join(known)})" if known else ""
