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
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import filelock
from tqdm import tqdm

from onepfrac import __version__, datasets, generate
from onepfrac.cores import available_cores
from onepfrac.datasets.interface import flag
from onepfrac.errors import UsageError, UserError

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


def load_manifest(root: Path) -> dict:
    """The folder's manifest, checked for what verify relies on; UsageError naming the problem."""
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
        text = path.read_bytes()
    except OSError as error:
        raise UsageError(f"{path}: cannot read it ({error.strerror})") from None
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
    if not isinstance(manifest.get("classes"), list):
        raise UsageError(f"{path}: 'classes' must be a list of class records")
    for position, record in enumerate(manifest["classes"]):
        files_and_sums(record, position, path)
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
    total = sum(len(datasets.record_files(r)) for r in manifest["classes"])
    workers = min(workers, max(1, -(-total // BATCH)))
    bar = tqdm(total=total, unit="file", desc=f"hashing {report.root.name}", disable=not progress, dynamic_ncols=True)
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


def find_extra(report: Report, manifest: dict) -> None:
    """Files and folders under the dataset folder that the manifest does not list."""
    expected = {name for record in manifest["classes"] for name in datasets.record_files(record)}
    folders = {parent for name in expected for parent in parents(name)}
    top = os.path.join(str(report.root), "")
    for directory, subdirs, files in os.walk(top):
        prefix = os.path.join(directory[len(top):], "").replace(os.sep, "/").lstrip("/")  # "" or "a/b/"
        for sub in sorted(subdirs):
            if f"{prefix}{sub}" not in folders:
                inside = sum(len(f) for _, _, f in os.walk(Path(directory) / sub))
                report.extra.append(f"extra: {prefix}{sub}/ (a folder the manifest does not list, "
                                    f"{inside} file{'' if inside == 1 else 's'})")
        subdirs[:] = [s for s in subdirs if f"{prefix}{s}" in folders]
        for name in sorted(files):
            path = f"{prefix}{name}"
            if path in expected or path == generate.MANIFEST:
                continue
            if name.endswith(generate.TEMP_SUFFIX) or path == generate.PARTIAL:
                report.extra.append(f"extra: {path} (unfinished: left by an interrupted generation; "
                                    f"delete it, the manifest does not need it)")
            else:
                report.extra.append(f"extra: {path} (not in the manifest)")


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
    jobs = [(i, manifest["classes"][i]) for i in spread(min(classes, report.classes), count)]
    context = (manifest["dataset"], config, shared, *(manifest["arguments"][k] for k in PNG_ARGUMENTS), str(report.root))
    made_by = (manifest.get("generator") or {}).get("version")
    if made_by != __version__:
        report.note = f" (made by onepfrac {made_by}, re-rendered by {__version__}: differences may come from that)"
    bar = tqdm(total=len(jobs), unit="class", desc=f"re-rendering {report.root.name}", disable=not progress,
               dynamic_ncols=True)
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


# ---------------------------------------------------------------- the command


def verify(root, rerender: int = 0, workers: int = 0, progress: bool = False) -> Report:
    """Check the dataset folder `root`; raise UsageError for a mistake, return the findings otherwise."""
    if rerender < 0:
        raise UsageError(f"--rerender {rerender} must be 0 (none) or more (more than the class count: all)")
    if workers < 0:
        raise UsageError(f"--workers {workers} must be 0 (all cores) or more")
    root = Path(root)
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


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset_dir", metavar="DATASET_DIR", type=Path, help="a folder written by python -m onepfrac.generate")
    p.add_argument("--rerender", type=whole, default=0, metavar="K",
                   help="also re-render K classes, evenly spaced, and compare bytes; 0 = none, "
                        "more than the class count = all (default %(default)s)")
    p.add_argument("--workers", type=whole, default=0, metavar="N", help="processes; 0 = all cores (default %(default)s)")
    p.add_argument("--max-lines", type=whole, default=20, metavar="N",
                   help="problem lines shown before '... and N more'; 0 = all (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none unless stderr is a terminal)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(None if argv is None else [str(a) for a in argv])
    try:
        report = verify(args.dataset_dir, args.rerender, args.workers,
                        progress=not args.no_progress and sys.stderr.isatty())
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
