"""Reproducible bytes for sharded datasets: tar shards, and a manifest.json written record by record.

A tar shard's bytes depend only on its members: each member has mtime 0, uid/gid 0, empty
user and group names, mode 0o644, ustar headers, and the members are written in sorted name
order, so the same samples always make the same file whatever process wrote it.

`write_manifest` writes exactly what `json.dumps(manifest, indent=1, sort_keys=True) + "\\n"`
would, but takes the class records from an iterator, so assembling a 21-million-record
manifest holds one record at a time.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

from onepfrac import atomic


def sample_key(class_index: int, instance: int, classes: int, instances: int) -> str:
    """`{class}_{instance}`, zero-padded to 5 digits or more: sorts in sample order and has no dot
    (WebDataset splits a member's name into key and extension at the first dot)."""
    class_width, instance_width = max(5, len(str(classes - 1))), max(5, len(str(instances - 1)))
    return f"{class_index:0{class_width}d}_{instance:0{instance_width}d}"


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A tar archive of (name, data) members with fixed metadata, in sorted name order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _indented(value, level: int) -> str:
    """`value` as json.dumps(indent=1, sort_keys=True) writes it `level` deep in a document."""
    text = json.dumps(value, indent=1, sort_keys=True)
    return text.replace("\n", "\n" + " " * level)


def manifest_chunks(top: dict, records: Iterator[dict], key: str = "classes") -> Iterator[str]:
    """The text of json.dumps({**top, key: list(records)}, indent=1, sort_keys=True), piece by piece."""
    if key in top:
        raise ValueError(f"{key!r} is given both in the top-level fields and as records")
    names = sorted([*top, key])
    yield "{"
    for position, name in enumerate(names):
        yield ("\n " if position == 0 else ",\n ") + json.dumps(name) + ": "
        if name != key:
            yield _indented(top[name], 1)
            continue
        empty = True
        for record in records:
            yield ("[\n  " if empty else ",\n  ") + _indented(record, 2)
            empty = False
        yield "[]" if empty else "\n ]"
    yield "\n}\n"


def write_manifest(path: Path, top: dict, records: Iterator[dict], key: str = "classes") -> None:
    """Stream the manifest to a temporary file and rename it into place."""
    def write(stream):
        for chunk in manifest_chunks(top, records, key):
            stream.write(chunk.encode("ascii"))  # json.dumps escapes everything else

    atomic.write_via(path, write)


def read_jsonl(path: Path) -> Iterator[dict]:
    """The records of a JSON-lines file, one at a time."""
    with open(path, "rb") as f:
        for line in f:
            yield json.loads(line)
