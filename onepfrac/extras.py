"""Optional dependencies: one line naming the pip extra to install when one is missing.

`pip install onepfrac` is the generator alone (numpy, numba, OpenCV, Pillow); everything else
comes with an extra (pyproject.toml's `[project.optional-dependencies]`). An import site of an
optional package calls `require(module, extra, purpose)` instead of `import module`, so a user
who lacks it reads, e.g.,

    error: --dataset real-image's bundled photos need scikit-image: pip install "onepfrac[real-image]"

and the command exits with code 1 (`MissingExtra.exit_code`: the input is fine, the environment
lacks a package), never with a traceback. `MissingExtra` is also an ImportError, so a caller that
treats the package as optional can still catch that.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from onepfrac.errors import UserError

# The distribution each importable name comes from, where the two differ (pip wants the former).
DISTRIBUTIONS = {
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "torch": "torch",
    "torchvision": "torchvision",
    "tensorboard": "tensorboard",
    "mpi4py": "mpi4py",
    "webdataset": "webdataset",
    "gdown": "gdown",
    "matplotlib": "matplotlib",
}


class MissingExtra(UserError, ImportError):
    """An optional package is not installed; the message names the extra that installs it."""

    exit_code = 1


def message(module: str, extra: str, purpose: str) -> str:
    top = module.split(".")[0]
    return f"{purpose} needs {DISTRIBUTIONS.get(top, top)}: pip install \"onepfrac[{extra}]\""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module` and return it, or raise MissingExtra naming `extra`.

    Only a missing `module` (or one of its parents) counts as a missing extra: an ImportError
    raised inside an installed package (a broken install, a missing shared library) is kept as it
    is, because reinstalling the extra would not be the fix."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = getattr(error, "name", None)
        parts = module.split(".")
        if missing in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:
            raise MissingExtra(message(module, extra, purpose)) from None
        raise


def require_or_exit(module: str, extra: str, purpose: str) -> ModuleType:
    """`require` for a command module's top-level imports, which run before its `main` can catch
    anything: prints the one line and exits."""
    try:
        return require(module, extra, purpose)
    except MissingExtra as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
