"""Check a generated dataset folder against its manifest: `python -m onepfrac.verify DATASET_DIR`.

Every PNG the manifest lists is hashed (SHA-256, read in chunks) and compared with its
recorded checksum; files under the folder that the manifest does not list are reported, a
leftover `*.tmp` or manifest.partial.jsonl as the trace of an unfinished generation.
`--rerender K` renders K classes again (evenly spaced, first and last included) from the
manifest's arguments and shared record with the dataset's own functions, encodes them as the
generator does (the recorded --png-bits and --png-compression) and compares the bytes with
the files, and the re-derived class record (params, names, checksums) with the manifest's.

Exit status: 0 everything matches (one summary line), 1 problems found (one line each, then
the summary), 2 a mistake in what was asked (no such folder, not a dataset folder, a garbled
manifest, an unfinished generation, a bad option).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import filelock

from onepfrac import __version__, datasets, generate, wds_writer
from onepfrac.cores import available_cores
from onepfrac.datasets.interface import flag
from onepfrac.argparsing import Parser
from onepfrac.errors import UsageError, UserError
from onepfrac.progress import progress as progress_bar

PROG = "python -m onepfrac.verify"
CHUNK = 1 << 20  # bytes read at a time: a file's size never decides the memory used
BATCH = 64  # files per task handed to a hashing worker: amortises the inter-process round trip
HEADER_KEYS = ("format", "dataset", "generator", "arguments")
PNG_ARGUMENTS = ("png_bits", "png_compression")


@dataclass
class Report:
    root: Path
    files: int = 0
    classes: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # one line each, unfinished traces included
    rerendered: int = 0
    differing: list[str] = field(default_factory=list)  # one line per difference found by re-rendering
    differing_classes: int = 0
    note: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.extra or self.differing)

    def problems(self) -> list[str]:
        return [*self.missing, *self.changed, *self.extra, *self.differing]

    def summary(self) -> str:
        counts = (f"{self.files} files, {len(self.missing)} missing, {len(self.extra)} extra, "
                  f"{len(self.changed)} changed")
        if self.rerendered == 0:
            rendered = f"0 of {self.classes} classes re-rendered"
        elif self.differing_classes == 0:
            rendered = f"{self.rerendered} of {self.classes} classes re-rendered identical"
        else:
            rendered = f"{self.differing_classes} of {self.rerendered} re-rendered classes differ"
        return f"{'ok' if self.ok else 'failed'}: {self.root}: {counts}; {rendered}{self.note}"


# ---------------------------------------------------------------- the manifest


def unfinished_error(root: Path) -> UsageError:
    """What to say about a folder that has manifest.partial.jsonl but no manifest.json."""
    partial = root / generate.PARTIAL
    if generating(root):
        return UsageError(f"{root} is being generated right now (a generator holds {generate.LOCK}); "
                          f"verify it once that run has finished")
    try:
        with open(partial, "rb") as f:
            first = f.readline()
    except OSError as error:
        return UsageError(f"{partial}: cannot read it ({error.strerror})")
    command = resume_command(root, first)
    how = f"rerun the command that started it: {command}" if command else "rerun the same generate command"
    return UsageError(f"{root}: the generation is unfinished ({generate.PARTIAL}, no {generate.MANIFEST}); "
                      f"to finish it, {how}")


def generating(root: Path) -> bool:
    """Whether a generator holds the folder's lock now; never creates the lock file."""
    lock_path = root / generate.LOCK
    if not lock_path.exists():
        return False
    lock = filelock.FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        return True
    except OSError:
        return False
    lock.release()
    return False


def resume_command(root: Path, header_line: bytes) -> str | None:
    """The generate command that finishes `root`, from the partial log's header; None if unreadable."""
    try:
        header = json.loads(header_line)
        arguments = dict(header["arguments"])
        module = datasets.load(header["dataset"])
    except (ValueError, KeyError, TypeError, UserError):
        return None
    defaults = {f.name: f.default for f in datasets.options(module)}
    defaults.update(png_bits=8, png_compression=1)
    words = [*generate.PROG.split(), "--dataset", header["dataset"], "--base-savedir", str(root.parent)]
    for name, value in arguments.items():
        if name not in defaults:
            return None  # an argument this version has no option for: no command would reproduce it
        if value != defaults[name]:
            words += [flag(name), str(value).lower() if isinstance(value, bool) else str(value)]
    return " ".join(shlex.quote(w) for w in words)


class Records:
    """A manifest's class records, read from the file at each pass (never all held), with their counts."""

    def __init__(self, path: Path, count: int, files: int, loaded: list | None = None):
        self.path, self.count, self.files, self.loaded = path, count, files, loaded

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        if self.loaded is not None:
            yield from self.loaded
            return
        for kind, value in stream_manifest(self.path):
            if kind == "record":
                yield value


class Layout(ValueError):
    """The manifest is not laid out as the generator writes it (indent 1, sorted keys)."""


def stream_manifest(path: Path):
    """("top", (key, value)) and ("record", class record) of a manifest in the generator's layout
    (json.dumps(indent=1, sort_keys=True)), a record at a time; Layout where it is not."""
    with open(path, "rb") as f:
        if f.readline() != b"{\n":
            raise Layout("first line")
        member, record, in_classes, ended = [], None, False, False

        def top():
            text = b"".join(member).rstrip()
            return json.loads(b"{" + (text[:-1] if text.endswith(b",") else text) + b"}").popitem()

        for line in f:
            if ended:
                raise Layout("text after the end")
            if in_classes:
                if record is None and line == b"  {\n":
                    record = [line]
                elif record is not None and line in (b"  }\n", b"  },\n"):
                    yield "record", json.loads(b"".join(record) + b"}")
                    record = None
                elif record is not None and line.startswith(b"   "):
                    record.append(line)
                elif record is None and line in (b" ]\n", b" ],\n"):
                    in_classes = False
                else:
                    raise Layout("a record line")
            elif line.startswith(b' "') or line == b"}\n":
                if member:
                    yield "top", top()
                member = []
                if line == b"}\n":
                    ended = True
                elif line == b' "classes": [\n':
                    in_classes = True
                elif not line.startswith(b' "classes": []'):
                    member = [line]
            elif member and line.startswith(b" "):  # its value's lines, the closing " }" included
                member.append(line)
            else:
                raise Layout("a top-level line")
        if not ended or in_classes:
            raise Layout("truncated")


def read_streamed(path: Path) -> dict | None:
    """The manifest's top-level fields and its Records, checked record by record; None if the file
    is not in the generator's layout (then it is read whole, with json's own error messages)."""
    manifest, count, files = {}, 0, 0
    try:
        for kind, value in stream_manifest(path):
            if kind == "top":
                manifest[value[0]] = value[1]
            else:
                files += len(files_and_sums(value, count, path)[0])
                count += 1
    except (Layout, ValueError, UnicodeDecodeError):
        return None
    if "format" not in manifest:
        return None
    manifest["classes"] = Records(path, count, files)
    return manifest


def load_manifest(root: Path) -> dict:
    """The folder's manifest, checked for what verify relies on; UsageError naming the problem.

    A manifest in the generator's layout is streamed: its `classes` are Records, read again at
    each pass, so memory does not grow with the number of images."""
    if not root.exists():
        raise UsageError(f"DATASET_DIR {root} does not exist")
    if not root.is_dir():
        raise UsageError(f"DATASET_DIR {root} is a file, not a dataset folder")
    path = root / generate.MANIFEST
    if not path.exists():
        if (root / generate.PARTIAL).exists():
            raise unfinished_error(root)
        raise UsageError(f"DATASET_DIR {root} is not a dataset folder: it has no {generate.MANIFEST}")
    try:
        manifest = read_streamed(path)
        text = path.read_bytes() if manifest is None else None
    except OSError as error:
        raise UsageError(f"{path}: cannot read it ({error.strerror})") from None
    if manifest is None:
        try:
            manifest = json.loads(text)
        except (ValueError, UnicodeDecodeError) as error:
            where = f" at line {error.lineno} column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
            raise UsageError(f"{path} is not valid JSON ({getattr(error, 'msg', error)}{where}): it is truncated or "
                             f"garbled; move the folder away and generate the dataset again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != generate.FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise UsageError(f"{path} is not a onepfrac dataset manifest (format {found!r}, expected {generate.FORMAT!r})")
    arguments = manifest.get("arguments")
    if not isinstance(arguments, dict) or any(not isinstance(arguments.get(k), int) for k in PNG_ARGUMENTS):
        raise UsageError(f"{path}: 'arguments' must be an object holding png_bits and png_compression")
    if isinstance(manifest.get("classes"), Records):
        return manifest
    if not isinstance(manifest.get("classes"), list):
        raise UsageError(f"{path}: 'classes' must be a list of class records")
    files = sum(len(files_and_sums(record, position, path)[0]) for position, record in enumerate(manifest["classes"]))
    manifest["classes"] = Records(path, len(manifest["classes"]), files, loaded=manifest["classes"])
    return manifest


def files_and_sums(record, position: int, path: Path) -> tuple[list[str], list[str]]:
    """A class record's files and checksums, in instance order; UsageError if malformed."""
    problem = None
    if not isinstance(record, dict) or record.get("index") != position:
        problem = f"record {position} is not an object with index {position}"
    else:
        try:
            files = datasets.record_files(record)
        except KeyError:
            files = None
        sums = record.get("sha256")
        sums = [sums] if isinstance(sums, str) else sums
        if not (isinstance(files, list) and isinstance(sums, list) and len(files) == len(sums)
                and all(isinstance(x, str) for x in files + sums)):
            problem = f"class {position} does not list its files with one sha256 each"
        elif any(not safe(name) for name in files):
            problem = f"class {position} lists a file outside the dataset folder ({next(n for n in files if not safe(n))})"
    if problem:
        raise UsageError(f"{path} is not a valid dataset manifest: {problem}")
    return files, sums


def safe(name: str) -> bool:
    """A relative path that stays inside the folder."""
    pure = PurePosixPath(name)
    return bool(name) and not pure.is_absolute() and ".." not in pure.parts and "\\" not in name


# ---------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


_ROOT: list[Path] = []  # the folder a hashing worker reads, set by _init_hashing


def _init_hashing(root: str) -> None:
    _ROOT[:] = [Path(root)]


def _hash_batch(batch: list[tuple[str, str]]) -> tuple[int, list[tuple[str, str]]]:
    """(files checked, [(kind, line)]) for a batch of (relative path, recorded sha256)."""
    problems = []
    for name, recorded in batch:
        try:
            actual = sha256_file(_ROOT[0] / name)
        except FileNotFoundError:
            problems.append(("missing", f"missing: {name}"))
            continue
        except OSError as error:
            problems.append(("changed", f"changed: {name} cannot be read ({error.strerror})"))
            continue
        if actual != recorded:
            problems.append(("changed", f"changed: {name} (sha256 {actual[:12]}... on disk, "
                                        f"{recorded[:12]}... in the manifest)"))
    return len(batch), problems


def batches(manifest: dict):
    """The manifest's (file, sha256) pairs in batches, read class by class as they are consumed."""
    batch = []
    for position, record in enumerate(manifest["classes"]):
        batch.extend(zip(*files_and_sums(record, position, Path(generate.MANIFEST))))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def check_files(report: Report, manifest: dict, workers: int, progress: bool) -> None:
    total = manifest["classes"].files
    workers = min(workers, max(1, -(-total // BATCH)))
    bar = progress_bar(total=total, unit="file", desc=f"hashing {report.root.name}", enabled=progress)
    try:
        if workers == 1:
            _init_hashing(str(report.root))
            results = map(_hash_batch, batches(manifest))
            consume(report, results, bar)
        else:
            with generate._pool_context().Pool(workers, _init_hashing, (str(report.root),)) as pool:
                consume(report, pool.imap_unordered(_hash_batch, batches(manifest)), bar)
    finally:
        bar.close()
    report.files = total
    report.missing.sort()
    report.changed.sort()


def consume(report: Report, results, bar) -> None:
    for count, problems in results:
        for kind, line in problems:
            (report.missing if kind == "missing" else report.changed).append(line)
        bar.update(count)


def parents(name: str):
    """'a/b/c.png' -> 'a', 'a/b': the folders a listed file needs."""
    slash = name.find("/")
    while slash != -1:
        yield name[:slash]
        slash = name.find("/", slash + 1)


class Unsorted(Exception):
    """The manifest's files are not listed in path order, so they cannot be merged with a walk."""


class Expected:
    """The manifest's files as path-part tuples, one at a time, checked to come in sorted order."""

    def __init__(self, manifest: dict):
        self.names = (tuple(name.split("/")) for record in manifest["classes"] for name in datasets.record_files(record))
        self.head = None
        self.advance()

    def advance(self) -> None:
        previous, self.head = self.head, next(self.names, None)
        if previous is not None and self.head is not None and self.head < previous:
            raise Unsorted


def extra_line(path: str, name: str) -> str | None:
    """The line for a file the manifest does not list (None for manifest.json itself)."""
    if path == generate.MANIFEST:
        return None
    if name.endswith(generate.TEMP_SUFFIX) or path == generate.PARTIAL:
        return f"extra: {path} (unfinished: left by an interrupted generation; delete it, the manifest does not need it)"
    return f"extra: {path} (not in the manifest)"


def folder_line(path: str, directory: Path) -> str:
    inside = sum(len(f) for _, _, f in os.walk(directory))
    return f"extra: {path}/ (a folder the manifest does not list, {inside} file{'' if inside == 1 else 's'})"


def extra_by_merge(directory: Path, prefix: tuple, expected: Expected) -> list[str]:
    """Walk `directory` in sorted order beside the sorted expected names: memory is one path deep."""
    own_folders, own_files, below = [], [], []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        parts = (*prefix, entry.name)
        while expected.head is not None and expected.head < parts:
            expected.advance()  # listed but absent: the hashing pass reports it
        path = "/".join(parts)
        if entry.is_dir():
            head = expected.head
            if head is not None and len(head) > len(parts) and head[:len(parts)] == parts:
                below += extra_by_merge(Path(entry.path), parts, expected)
            else:
                own_folders.append(folder_line(path, Path(entry.path)))
        elif expected.head == parts:
            expected.advance()
        elif (line := extra_line(path, entry.name)) is not None:
            own_files.append(line)
    return own_folders + own_files + below


def extra_by_set(report: Report, manifest: dict) -> list[str]:
    """The same lines from a set of every listed name, for a manifest whose files are not in path order."""
    expected = {name for record in manifest["classes"] for name in datasets.record_files(record)}
    folders = {parent for name in expected for parent in parents(name)}
    top, lines = os.path.join(str(report.root), ""), []
    for directory, subdirs, files in os.walk(top):
        prefix = os.path.join(directory[len(top):], "").replace(os.sep, "/").lstrip("/")  # "" or "a/b/"
        lines += [folder_line(f"{prefix}{sub}", Path(directory) / sub) for sub in sorted(subdirs)
                  if f"{prefix}{sub}" not in folders]
        subdirs[:] = [s for s in subdirs if f"{prefix}{s}" in folders]
        lines += [line for name in sorted(files) if f"{prefix}{name}" not in expected
                  and (line := extra_line(f"{prefix}{name}", name)) is not None]
    return lines


def find_extra(report: Report, manifest: dict) -> None:
    """Files and folders under the dataset folder that the manifest does not list."""
    try:
        report.extra.extend(extra_by_merge(report.root, (), Expected(manifest)))
    except Unsorted:
        report.extra.extend(extra_by_set(report, manifest))


# ---------------------------------------------------------------- re-rendering


def spread(classes: int, count: int) -> list[int]:
    """`count` class indices evenly spaced over 0..classes-1, first and last included; all if count >= classes."""
    if count >= classes:
        return list(range(classes))
    if count == 1:
        return [0]
    return [round(i * (classes - 1) / (count - 1)) for i in range(count)]


_RENDER: dict = {}  # what a re-rendering worker needs, set by _init_rendering


def _init_rendering(dataset, config, shared, png_bits, png_compression, root) -> None:
    _RENDER.update(module=datasets.load(dataset), config=config, shared=shared, png_bits=png_bits,
                   png_compression=png_compression, root=Path(root))


def _rerender(job: tuple[int, dict]) -> list[str]:
    """Render class `index` as the generator would; a line per file or record field that differs."""
    index, record = job
    module, config, root = _RENDER["module"], _RENDER["config"], _RENDER["root"]
    try:
        params, images = datasets.class_images(module, config, _RENDER["shared"], index)
        files, sums, lines = [], [], []
        for instance, image in enumerate(images):
            data = generate.encode_image(image, _RENDER["png_bits"], _RENDER["png_compression"])
            name = datasets.file_name(module, config, index, instance)
            files.append(name)
            sums.append(hashlib.sha256(data).hexdigest())
            try:
                on_disk = (root / name).read_bytes()
            except OSError:
                continue  # reported as missing by the hashing pass
            if on_disk != data:
                lines.append(f"rerender: class {index}: {name} differs from its re-render")
    except (UserError, ValueError) as error:  # a search that fails now, or images the recorded encoding refuses
        return [f"rerender: class {index}: cannot be re-rendered ({error})"]
    fresh = json.loads(json.dumps(datasets.class_record(module, index, params, files, sums)))
    fields_ = sorted(k for k in set(fresh) | set(record) if fresh.get(k) != record.get(k))
    if fields_:
        lines.append(f"rerender: class {index}: its manifest record differs from the re-render in {', '.join(fields_)}")
    return lines


def render_setup(root: Path, manifest: dict):
    """The dataset module and Config a manifest records; UsageError (before any hashing) if unusable."""
    try:
        module = datasets.load(str(manifest.get("dataset")))
    except UserError as error:  # a dataset this installation lacks
        raise UsageError(f"{root / generate.MANIFEST}: cannot re-render its classes: {error}") from None
    arguments = {k: v for k, v in manifest["arguments"].items() if k not in PNG_ARGUMENTS}
    try:
        config = datasets.make_config(module, arguments)
    except UserError as error:
        raise UsageError(f"{root / generate.MANIFEST}: its arguments are not valid for "
                         f"--dataset {module.NAME} ({error})") from None
    return module, config


def rerender_classes(report: Report, manifest: dict, module, config, count: int, workers: int, progress: bool) -> None:
    classes = datasets.counts(module, config)[0]
    if classes != report.classes:
        report.differing.append(f"rerender: the manifest lists {report.classes} classes, its arguments make {classes}")
    shared = {k: v for k, v in manifest.items() if k not in (*HEADER_KEYS, "classes")}
    chosen = set(spread(min(classes, report.classes), count))
    jobs = [(i, record) for i, record in enumerate(manifest["classes"]) if i in chosen]  # one streamed pass
    context = (manifest["dataset"], config, shared, *(manifest["arguments"][k] for k in PNG_ARGUMENTS), str(report.root))
    made_by = (manifest.get("generator") or {}).get("version")
    if made_by != __version__:
        report.note = f" (made by onepfrac {made_by}, re-rendered by {__version__}: differences may come from that)"
    bar = progress_bar(total=len(jobs), unit="class", desc=f"re-rendering {report.root.name}", enabled=progress)
    try:
        _init_rendering(*context)
        results = []
        if jobs:  # the first in this process compiles the kernels that forked workers then share
            results.append(_rerender(jobs[0]))
            bar.update()
        rest = jobs[1:]
        workers = min(workers, max(1, len(rest)))
        if workers == 1:
            for lines in map(_rerender, rest):
                results.append(lines)
                bar.update()
        else:
            with generate._pool_context().Pool(workers, _init_rendering, context) as pool:
                for lines in pool.imap(_rerender, rest):
                    results.append(lines)
                    bar.update()
    finally:
        bar.close()
    report.rerendered = len(jobs)
    report.differing_classes = sum(1 for lines in results if lines)
    report.differing.extend(line for lines in results for line in lines)


# ---------------------------------------------------------------- WebDataset shards


def load_index(root: Path) -> dict:
    """A --format wds folder's index.json, checked for what verify relies on."""
    path = root / generate.INDEX
    try:
        index = json.loads(path.read_bytes())
    except OSError as error:
        raise UsageError(f"{path}: cannot read it ({error.strerror})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is not valid JSON ({getattr(error, 'msg', error)}): it is truncated or garbled; "
                         f"run the generator again with --finalize") from None
    if not isinstance(index, dict) or index.get("format") != generate.WDS_FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise UsageError(f"{path} is not a onepfrac WebDataset index (format {found!r}, "
                         f"expected {generate.WDS_FORMAT!r})")
    arguments = index.get("arguments")
    if not isinstance(arguments, dict) or any(not isinstance(arguments.get(k), int)
                                              for k in (*PNG_ARGUMENTS, "shard_size")):
        raise UsageError(f"{path}: 'arguments' must be an object holding png_bits, png_compression and shard_size")
    shards_ = index.get("shards")
    keys = ("tar", "jsonl", "bytes", "sha256", "samples")
    if (not isinstance(shards_, list) or not all(isinstance(e, dict) and all(k in e for k in keys) for e in shards_)
            or not all(isinstance(index.get(k), int) for k in ("classes", "instances", "samples"))
            or any(not (safe(e["tar"]) and safe(e["jsonl"])) for e in shards_)):
        raise UsageError(f"{path}: 'shards' must list tar, jsonl, bytes, sha256 and samples of each tar shard, "
                         f"with classes, instances and samples counts")
    return index


_SHARDS: dict = {}  # the folder and counts a tar-checking worker needs, set by _init_tars


def _init_tars(root: str, classes: int, instances: int, shard_size: int) -> None:
    _SHARDS.update(root=Path(root), classes=classes, instances=instances, shard_size=shard_size)


def _check_tar(job: tuple[int, dict]) -> tuple[int, list[tuple[str, str]]]:
    """(samples checked, [(kind, line)]) for tar shard `number`: its hash, its .jsonl, every member."""
    number, entry = job
    root, classes, instances = _SHARDS["root"], _SHARDS["classes"], _SHARDS["instances"]
    tar, jsonl = entry["tar"], entry["jsonl"]
    for name in (tar, jsonl):
        if not (root / name).exists():
            return entry["samples"], [("missing", f"missing: {name}")]
    actual = sha256_file(root / tar)
    if actual != entry["sha256"]:
        return entry["samples"], [("changed", f"changed: {tar} (sha256 {actual[:12]}... on disk, "
                                              f"{entry['sha256'][:12]}... in {generate.INDEX})")]
    expected, problems = {}, []  # member name -> its sha256 (.png), bytes (.cls) or (class, instance) (.json)
    start = number * _SHARDS["shard_size"]
    try:
        records = wds_writer.read_jsonl(root / jsonl)
        head = next(records)
        if {k: head.get(k) for k in ("tar", "bytes", "sha256", "samples")} != \
                {k: entry[k] for k in ("tar", "bytes", "sha256", "samples")}:
            problems.append(("changed", f"changed: {jsonl} describes another tar than {generate.INDEX} lists"))
        for record in records:
            first = record["first_instance"]
            for offset, (key, digest) in enumerate(zip(record["keys"], record["sha256"])):
                class_index, instance = record["class"], first + offset
                expected[f"{key}.png"] = digest
                expected[f"{key}.cls"] = str(class_index).encode()
                expected[f"{key}.json"] = (class_index, instance)
        keys = [wds_writer.sample_key(n // instances, n % instances, classes, instances)
                for n in range(start, start + entry["samples"])]
        if sorted(k[:-4] for k in expected if k.endswith(".png")) != keys:
            problems.append(("changed", f"changed: {jsonl} does not list samples {start}..{start + entry['samples'] - 1}"))
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return entry["samples"], [("changed", f"changed: {jsonl} is not a valid record of {tar}")]
    seen, previous = set(), ""
    try:
        with tarfile.open(root / tar, mode="r|") as archive:
            for member in archive:
                name = member.name
                if name <= previous:
                    problems.append(("changed", f"changed: {tar}: {name} is out of sorted order"))
                previous = name
                if name not in expected:
                    problems.append(("changed", f"changed: {tar} holds {name}, which {jsonl} does not list"))
                    continue
                seen.add(name)
                data = archive.extractfile(member).read() if member.isfile() else b""
                want = expected[name]
                if name.endswith(".png") and hashlib.sha256(data).hexdigest() != want:
                    problems.append(("changed", f"changed: {tar}: {name} differs from its sha256 in {jsonl}"))
                elif name.endswith(".cls") and data != want:
                    problems.append(("changed", f"changed: {tar}: {name} holds {data[:20]!r}, expected {want!r}"))
                elif name.endswith(".json") and not _meta_matches(data, *want):
                    problems.append(("changed", f"changed: {tar}: {name} does not name class {want[0]}, "
                                                f"instance {want[1]}"))
    except (tarfile.TarError, OSError) as error:
        return entry["samples"], [("changed", f"changed: {tar} is not a readable tar ({error})")]
    lost = sorted(set(expected) - seen)
    if lost:
        problems.append(("missing", f"missing: {tar} lacks {len(lost)} member(s), the first {lost[0]}"))
    return entry["samples"], problems


def _meta_matches(data: bytes, class_index: int, instance: int) -> bool:
    try:
        meta = json.loads(data)
    except ValueError:
        return False
    return isinstance(meta, dict) and meta.get("class") == class_index and meta.get("instance") == instance


def find_extra_wds(report: Report, index: dict) -> None:
    """Files under a --format wds folder that index.json does not list."""
    listed = {name for entry in index["shards"] for name in (entry["tar"], entry["jsonl"])} | {generate.INDEX}
    for path in sorted(report.root.iterdir()):
        name = path.name
        if name in listed:
            continue
        if name.endswith(generate.TEMP_SUFFIX) or name == generate.SHARD_WORK:
            report.extra.append(f"extra: {name}{'/' if path.is_dir() else ''} (unfinished: left by an interrupted "
                                f"generation; delete it, the index does not need it)")
        else:
            report.extra.append(f"extra: {name}{'/' if path.is_dir() else ''} (not in {generate.INDEX})")


def class_records_wds(root: Path, index: dict, class_index: int) -> list[dict]:
    """The .jsonl records of one class, from the tar shards that hold its samples."""
    size, instances = index["arguments"]["shard_size"], index["instances"]
    first, last = class_index * instances // size, ((class_index + 1) * instances - 1) // size
    found = []
    for entry in index["shards"][first:last + 1]:
        try:
            found += [r for r in list(wds_writer.read_jsonl(root / entry["jsonl"]))[1:] if r.get("class") == class_index]
        except (OSError, ValueError):
            continue  # reported by the hashing pass
    return found


def rerender_wds(report: Report, index: dict, module, config, count: int, progress: bool) -> None:
    """Render `count` classes again and compare their PNG checksums and params with the .jsonl records."""
    classes, instances = datasets.counts(module, config)
    if (classes, instances) != (index["classes"], index["instances"]):
        report.differing.append(f"rerender: the index lists {index['classes']} classes of {index['instances']}, "
                                f"its arguments make {classes} of {instances}")
    shared = {k: v for k, v in index.items() if k not in (*HEADER_KEYS, "classes", "instances", "samples", "shards")}
    jobs = spread(min(classes, index["classes"]), count)
    bits, compression = (index["arguments"][k] for k in PNG_ARGUMENTS)
    for class_index in progress_bar(jobs, total=len(jobs), unit="class", desc=f"re-rendering {report.root.name}",
                                    enabled=progress):
        lines = []
        try:
            params, images = datasets.class_images(module, config, shared, class_index)
            sums = [hashlib.sha256(generate.encode_image(image, bits, compression)).hexdigest() for image in images]
        except (UserError, ValueError) as error:
            lines.append(f"rerender: class {class_index}: cannot be re-rendered ({error})")
        else:
            records = class_records_wds(report.root, index, class_index)
            recorded = [digest for r in sorted(records, key=lambda r: r["first_instance"]) for digest in r["sha256"]]
            fresh = json.loads(json.dumps(params))
            if recorded != sums:
                lines.append(f"rerender: class {class_index}: its PNGs differ from the re-render")
            if any(r.get("params") != fresh for r in records):
                lines.append(f"rerender: class {class_index}: its recorded params differ from the re-render")
        report.differing.extend(lines)
        report.differing_classes += bool(lines)
    report.rerendered = len(jobs)


def verify_wds(root: Path, rerender: int, workers: int, progress: bool) -> Report:
    index = load_index(root)
    report = Report(root, classes=index["classes"])
    module = config = None
    if rerender:
        module, config = render_setup(root, {**index, "arguments": {k: v for k, v in index["arguments"].items()
                                                                    if k != "shard_size"}})
    jobs = list(enumerate(index["shards"]))
    context = (str(root), index["classes"], index["instances"], index["arguments"]["shard_size"])
    bar = progress_bar(total=index["samples"], unit="img", desc=f"checking {root.name}", enabled=progress)
    try:
        workers = min(workers, max(1, len(jobs)))
        if workers == 1:
            _init_tars(*context)
            consume(report, map(_check_tar, jobs), bar)
        else:
            with generate._pool_context().Pool(workers, _init_tars, context) as pool:
                consume(report, pool.imap_unordered(_check_tar, jobs), bar)
    finally:
        bar.close()
    report.files = index["samples"]
    report.missing.sort()
    report.changed.sort()
    find_extra_wds(report, index)
    if rerender:
        made_by = (index.get("generator") or {}).get("version")
        if made_by != __version__:
            report.note = f" (made by onepfrac {made_by}, re-rendered by {__version__}: differences may come from that)"
        rerender_wds(report, index, module, config, rerender, progress)
    return report


# ---------------------------------------------------------------- the command


def verify(root, rerender: int = 0, workers: int = 0, progress: bool = False) -> Report:
    """Check the dataset folder `root`; raise UsageError for a mistake, return the findings otherwise."""
    if rerender < 0:
        raise UsageError(f"--rerender {rerender} must be 0 (none) or more (more than the class count: all)")
    if workers < 0:
        raise UsageError(f"--workers {workers} must be 0 (all cores) or more")
    root = Path(root)
    if root.is_dir() and (root / generate.INDEX).exists():
        return verify_wds(root, rerender, workers or available_cores(), progress)
    if root.is_dir() and (root / generate.SHARD_WORK).is_dir() and not (root / generate.MANIFEST).exists():
        raise UsageError(f"{root}: the sharded generation is unfinished ({generate.SHARD_WORK}/, no "
                         f"{generate.MANIFEST} or {generate.INDEX}); run every shard, then the same "
                         f"command with --finalize")
    manifest = load_manifest(root)
    report = Report(root, classes=len(manifest["classes"]))
    workers = workers or available_cores()
    module, config = render_setup(root, manifest) if rerender else (None, None)
    check_files(report, manifest, workers, progress)
    find_extra(report, manifest)
    if rerender:
        rerender_classes(report, manifest, module, config, rerender, workers, progress)
    return report


def whole(text: str) -> int:
    """An argparse type: an integer 0 or more, refused in words that say what is allowed."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number 0 or more")
    return value


class OneLineParser(Parser):
    """Errors in one line, as every command's (onepfrac.argparsing)."""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__)
    p.add_argument("dataset_dir", metavar="DATASET_DIR", type=Path, help="a folder written by python -m onepfrac.generate")
    p.add_argument("--rerender", type=whole, default=0, metavar="K",
                   help="also re-render K classes, evenly spaced, and compare bytes; 0 = none, "
                        "more than the class count = all (default %(default)s)")
    p.add_argument("--workers", type=whole, default=0, metavar="N", help="processes; 0 = all cores (default %(default)s)")
    p.add_argument("--max-lines", type=whole, default=20, metavar="N",
                   help="problem lines shown before '... and N more'; 0 = all (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress (a bar on a terminal, a line every 30 s in a log)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(None if argv is None else [str(a) for a in argv])
    try:
        report = verify(args.dataset_dir, args.rerender, args.workers,
                        progress=not args.no_progress)
    except UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    problems = report.problems()
    shown = problems if args.max_lines == 0 else problems[:args.max_lines]
    for line in shown:
        print(line)
    if len(problems) > len(shown):
        print(f"... and {len(problems) - len(shown)} more")
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
