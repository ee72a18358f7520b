"""Whole files or nothing: written to a temporary name beside the target, then renamed over it.

A crash, a kill or a full disk leaves the old file or the new one, never half of one, and an
exception (KeyboardInterrupt included) removes the temporary file. Training checkpoints use
onepfrac.train.checkpoint.atomic_write instead, which adds fsync, hidden names and a sweep.
"""

from __future__ import annotations

import os
from pathlib import Path

TEMP_SUFFIX = ".tmp"  # as generate.TEMP_SUFFIX, by which generate and verify recognise leftovers


def write_via(path, write) -> None:
    """Call `write(binary file)` on `path` + ".tmp", then rename it onto `path`."""
    path = Path(path)
    temporary = path.with_name(path.name + TEMP_SUFFIX)
    try:
        with open(temporary, "wb") as stream:
            write(stream)
        os.replace(temporary, path)
    except BaseException:
        try:
            temporary.unlink()
        except OSError:
            pass  # never created, or already renamed
        raise


def write_bytes(path, data: bytes) -> None:
    write_via(path, lambda stream: stream.write(data))
