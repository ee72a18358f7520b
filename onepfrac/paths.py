"""Checks of the folders a command will write into, made before any work starts."""

from __future__ import annotations

import os
from pathlib import Path

from onepfrac.errors import UsageError


def check_writable_folder(folder: Path, option: str) -> None:
    """`folder` is a folder we can write, or can be created; UsageError naming `option` otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder} is a file, not a folder")
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{option} {folder}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {folder} is not writable ({ancestor} denies writing)")
