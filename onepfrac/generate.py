"""Write a formula-driven dataset as image folders: `python -m onepfrac.generate --help`.

--dataset chooses the generator: 1p-frac (default), fractaldb, ofdb, 3d-ofdb, visualatom,
real-image; `--dataset NAME --help` lists that dataset's options.
1p-frac: BASE_SAVEDIR/sigma{S}_perturb{D}_sample{L}_seed{SEED}/{00000..}/{00000..}.png,
the others: BASE_SAVEDIR/{name}_classes{C}_..._seed{SEED}/{class}/{instance}.png,
plus manifest.json (every content argument, what the dataset shares across classes,
each class's parameters and PNG checksums). While generating, manifest.partial.jsonl records
finished classes so that a killed run resumes where it stopped; PNGs are written to
a temporary name and renamed, so no partial PNG is ever visible.
--format wds writes WebDataset tar shards instead, and --num-shards/--shard-index split one
dataset between processes (SLURM array tasks, MPI ranks) that --finalize assembles
(docs/shards.md).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import multiprocessing
import os
import re
import signal
import sys
from collections import deque
from pathlib import Path

import cv2
import filelock
import numpy as np

from onepfrac import __version__, datasets, lifetime, png, shards, wds_writer
from onepfrac.datasets.interface import flag
from onepfrac.cores import available_cores
from onepfrac.argparsing import Parser
from onepfrac.errors import UsageError, UserError
from onepfrac.paths import check_writable_folder
from onepfrac.progress import progress as progress_bar

MANIFEST = "manifest.json"
PARTIAL = "manifest.partial.jsonl"
LOCK = "manifest.lock"  # held while generating; removed once manifest.json is written
TEMP_SUFFIX = ".tmp"
FORMAT = "onepfrac-dataset/1"


class WriteError(UserError, OSError):
    """The disk refused a write (full, over quota, read-only, not permitted): nothing half-written is left."""

    exit_code = 1


# errno -> what the user reads; any other OSError is a bug worth its traceback
WRITE_ERRORS = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
                errno.EACCES: "permission denied", errno.EPERM: "permission denied"}
if hasattr(errno, "EDQUOT"):
    WRITE_ERRORS[errno.EDQUOT] = "disk quota exceeded"


def write_error(error: OSError, path: Path) -> WriteError:
    reason = WRITE_ERRORS[error.errno]
    remedy = "free space" if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) else "make it writable"
    return WriteError(f"{reason} writing {path}: {remedy} or choose another --base-savedir")


class writes_to:
    """Context manager: an OSError of WRITE_ERRORS inside becomes a one-line WriteError naming `path`."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        if isinstance(error, OSError) and not isinstance(error, UserError) and error.errno in WRITE_ERRORS:
            raise write_error(error, self.path) from None
        return False


class ManifestError(UsageError):
    """manifest.json or manifest.partial.jsonl that cannot be read: refused, never overwritten."""


def read_manifest(path: Path) -> dict:
    """A finished dataset's manifest.json, or ManifestError saying how to recover."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else f"not valid JSON: {error}"
        raise ManifestError(f"{path} cannot be read ({reason}); delete {path.parent} to generate the "
                            "dataset again") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("arguments"), dict):
        raise ManifestError(f"{path} is not a dataset manifest (no arguments); delete {path.parent} to "
                            "generate the dataset again")
    return manifest


class OneLineParser(Parser):
    """Errors in one line, as every command's (onepfrac.argparsing)."""


PROG = "python -m onepfrac.generate"


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def build_parser(dataset: str = datasets.DEFAULT, module=None) -> argparse.ArgumentParser:
    """The options of one dataset, from its Config fields: `--field-name`, typed by the default,
    with the module's CHOICES and HELP; then the output and run options every dataset shares."""
    module = module or datasets.load(dataset)
    p = OneLineParser(prog=PROG, description=__doc__)
    p.add_argument("--dataset", choices=list(datasets.DATASETS), default=dataset,
                   help="which generator; `--dataset NAME --help` shows its options (default %(default)s)")
    p.add_argument("--base-savedir", default="./data", help="folder that receives the dataset folder (default %(default)s)")
    choices, helps = getattr(module, "CHOICES", {}), getattr(module, "HELP", {})
    for field in datasets.options(module):
        default = field.default
        kind = _boolean if isinstance(default, bool) else type(default) if isinstance(default, (int, float, str)) else str
        text = helps.get(field.name, "seed of everything random" if field.name == "seed" else "")
        p.add_argument(flag(field.name), dest=field.name, type=kind, default=default,
                       choices=choices.get(field.name), help=f"{text} (default %(default)s)".strip())
    p.add_argument("--png-bits", type=int, choices=png.BITS, default=8, help="8-bit grayscale or 1-bit palette PNGs, same pixels (default %(default)s)")
    p.add_argument("--png-compression", type=int, default=1, help="zlib level 0..9 (default %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="processes; 0 = all cores (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_shard_options(p)
    return p


def options_of(parser: argparse.ArgumentParser) -> list[str]:
    return [a.option_strings[-1] for a in parser._actions if a.option_strings and a.option_strings[-1] != "--help"]


def owners(option: str, but: str) -> list[str]:
    """The other datasets that have `option`."""
    found = []
    for name in datasets.DATASETS:
        if name != but:
            try:
                if option in {flag(f.name) for f in datasets.options(datasets.load(name))}:
                    found.append(name)
            except (ImportError, datasets.UnknownDataset):
                continue  # a dataset whose dependencies are missing has no say here
    return found


def refuse_extra(dataset: str, module, parser: argparse.ArgumentParser, extra: list[str]) -> None:
    """Options that belong to no option of this dataset: name the first, its value and what is allowed."""
    option, _, value = extra[0].partition("=")
    if not value and len(extra) > 1 and not extra[1].startswith("--"):
        value = extra[1]
    if not option.startswith("-"):
        raise UsageError(f"unexpected argument {option!r}: every setting is an --option")
    hint = getattr(module, "HINTS", {}).get(option)
    others = owners(option, dataset) if hint is None else []
    if others:
        hint = f"{option} is an option of --dataset {', '.join(others)}"
    given = f"{option} {value}" if value else option
    hint = f" ({hint})" if hint else ""
    raise UsageError(f"{given} does not apply to --dataset {dataset}{hint}; its options are {', '.join(options_of(parser))}")


def selected_dataset(argv: list[str]) -> str:
    """The --dataset value, read before the dataset's own options are known."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--dataset", default=datasets.DEFAULT)
    known, _ = pre.parse_known_args(argv)
    return known.dataset


def validate(module, args: argparse.Namespace):
    """The chosen module's Config from the options; raise UsageError naming the first bad one."""
    if not 0 <= args.png_compression <= 9:
        raise UsageError(f"--png-compression {args.png_compression} is outside 0..9")
    if args.workers < 0:
        raise UsageError(f"--workers {args.workers} must be 0 (all cores) or more")
    names = {f.name for f in datasets.options(module)}
    return datasets.make_config(module, {k: v for k, v in vars(args).items() if k in names})


def check_destination(base_savedir: Path) -> None:
    """The folder that will receive the dataset must be a folder we can write, or creatable."""
    check_writable_folder(base_savedir, "--base-savedir")


def header_for(config, png_bits: int, png_compression: int, dataset: str = datasets.DEFAULT) -> dict:
    """Everything that decides the dataset's bytes (not --workers, which never changes them)."""
    return {
        "format": FORMAT,
        "dataset": dataset,
        "generator": {"name": "onepfrac", "version": __version__},
        "arguments": {**config.to_dict(), "png_bits": png_bits, "png_compression": png_compression},
    }


def differences(on_disk: dict, header: dict) -> list[str]:
    """What differs between a header on disk and this run's: options, then generator version."""
    old, new = on_disk.get("arguments", {}), header["arguments"]
    found = [f"{flag(k)} {old.get(k)} (on disk) vs {new.get(k)} (now)"
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if on_disk.get("generator") != header["generator"]:
        found.append(f"generator {on_disk.get('generator')} (on disk) vs {header['generator']} (now)")
    return found


class Progress:
    """manifest.partial.jsonl: the header, then one record per finished class (append-only).

    Opening takes an exclusive lock and reads what is there without writing anything;
    `check` compares the arguments (before the base search), `start` the base system,
    and only then is a tail cut by a kill trimmed and the log written.
    """

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[int, dict] = {}
        # a lock file beside the log (a lock library may truncate what it locks); the kernel drops the lock
        # of a process that dies, so a killed run never blocks the next one
        self.lock = filelock.FileLock(str(path.with_name(LOCK)), timeout=0)
        try:
            with writes_to(path.with_name(LOCK)):
                self.lock.acquire()
        except filelock.Timeout:
            raise UsageError(f"another process is generating {path.parent}; wait for it or stop it") from None
        self.file = None
        self.lines, self.valid_bytes = [], 0
        # another run may have finished the dataset before we got the lock: then touch nothing
        self.complete = path.with_name(MANIFEST).exists()
        if self.complete:
            return
        try:
            with writes_to(path):
                self.file = open(path, "a+b")
            self.file.seek(0)
            self.lines, self.valid_bytes = self._parse(self.file.read())
        except BaseException:
            if self.file is not None:
                self.file.close()
            self.lock.release()
            raise

    def _parse(self, data: bytes) -> tuple[list[dict], int]:
        """The records and the length of the valid prefix; only a last line without its newline
        (cut by a kill) is dropped, anything else unreadable is refused rather than overwritten."""
        lines, valid = [], 0
        pieces = data.split(b"\n")
        for number, line in enumerate(pieces[:-1], 1):  # the last piece has no newline: cut by a kill
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if not isinstance(record, dict) or (number == 1 and not isinstance(record.get("arguments"), dict)) \
                    or (number > 1 and not isinstance(record.get("index"), int)):
                raise ManifestError(f"{self.path} line {number} is not a valid record (damaged file?); delete "
                                    f"{self.path.parent} to generate the dataset again")
            lines.append(record)
            valid += len(line) + 1
        return lines, valid

    def check(self, header: dict) -> None:
        """Refuse a log started with other arguments or another generator version."""
        if not self.lines:
            return
        diff = differences(self.lines[0], header)
        if diff:
            raise UsageError(f"{self.path.parent} is being generated with other settings: " + "; ".join(diff))

    def start(self, header: dict) -> None:
        """Begin a new log, or continue one whose header (base system included) equals `header`."""
        self.check(header)
        if self.lines and self.lines[0] != header:
            raise UsageError(f"{self.path.parent} was started with another base system "
                             f"(numpy or onepfrac changed?); move it away to start afresh")
        self.file.truncate(self.valid_bytes)
        if not self.lines:
            self._append(header)
        for record in self.lines[1:]:
            self.records[record["index"]] = record

    def _append(self, record: dict) -> None:
        end = self.file.seek(0, os.SEEK_END)
        try:
            with writes_to(self.path):
                self.file.write(json.dumps(record, sort_keys=True).encode() + b"\n")
                self.file.flush()
        except WriteError:
            self._cut(end)  # no half record left behind for the next run to trip over
            raise

    def _cut(self, size: int) -> None:
        try:
            self.file.truncate(size)
        except OSError:
            pass  # then the next run drops the cut last line, as after a kill

    def finish(self) -> None:
        """The dataset is complete (manifest.json written): remove the log and then the lock."""
        self.path.unlink()
        self.complete = True  # close() removes the lock file

    def add(self, record: dict) -> None:
        self.records[record["index"]] = record
        self._append(record)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.complete:
            self._remove_lock_file()  # the lock file we created after the other run removed its own
        self.lock.release()

    def _remove_lock_file(self) -> None:
        try:
            os.unlink(self.path.with_name(LOCK))  # only once manifest.json exists, so a waiter sees it
        except OSError:
            pass  # Windows cannot remove an open file; filelock removes it on release there


def write_atomic(path: Path, data: bytes) -> None:
    """`data` at `path` in full or not at all; a refused write leaves no temporary file."""
    temporary = path.with_name(path.name + TEMP_SUFFIX)
    try:
        with writes_to(path):
            with open(temporary, "wb") as f:
                f.write(data)
            os.replace(temporary, path)
    except BaseException:
        try:
            temporary.unlink()
        except OSError:
            pass  # never created, or already renamed
        raise


def remove_temporaries(root: Path) -> None:
    for pattern in (f"*{TEMP_SUFFIX}", f"*/*{TEMP_SUFFIX}"):  # manifest.json.tmp and class PNGs
        for leftover in root.glob(pattern):
            leftover.unlink(missing_ok=True)


def encode_image(image: np.ndarray, bits: int, compression: int) -> bytes:
    """PNG bytes of a gray (H, W) or RGB (H, W, 3) uint8 image."""
    if image.ndim == 3:
        if bits != 8:
            raise ValueError(f"--png-bits {bits}: this dataset's images are RGB, which need 8-bit PNGs")
        ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, compression])
        if not ok:
            raise RuntimeError("OpenCV could not encode the PNG")
        return buffer.tobytes()
    return png.encode_png(image, bits, compression)


# Worker state, set once per process by _init_worker (inherited on fork).
_WORK: dict = {}


def _init_worker(dataset, config, shared, png_bits, png_compression, root, ignore_sigint=True, parent=None):
    if parent is not None:
        lifetime.die_with_parent(parent)  # a killed generator must not leave workers writing PNGs
        lifetime.quiet_broken_pipe()  # and a worker whose parent is gone has no one to tell
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cleans up
    _WORK.update(module=datasets.load(dataset), config=config, shared=shared, png_bits=png_bits,
                 png_compression=png_compression, root=Path(root))
    if parent is not None:
        _WORK["parent"] = parent


def _make_class(index: int) -> dict:
    """Render class `index`, write each instance as soon as it is drawn, return its manifest record."""
    module, config = _WORK["module"], _WORK["config"]
    params, images = datasets.class_images(module, config, _WORK["shared"], index)
    files, checksums = [], []
    for instance, image in enumerate(images):
        data = encode_image(image, _WORK["png_bits"], _WORK["png_compression"])
        relative = datasets.file_name(module, config, index, instance)
        path = _WORK["root"] / relative
        with writes_to(path.parent):
            path.parent.mkdir(exist_ok=True)
        if "parent" in _WORK:
            lifetime.exit_if_orphaned(_WORK["parent"])  # no PNG after the parent died
        write_atomic(path, data)
        files.append(relative)
        checksums.append(hashlib.sha256(data).hexdigest())
    return datasets.class_record(module, index, params, files, checksums)


def _pool_context():
    # fork shares the already-compiled numba kernels; elsewhere, spawn loads them from numba's cache
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def generate(config, base_savedir: Path, png_bits=8, png_compression=1, workers=0, progress=True,
             dataset: str = datasets.DEFAULT) -> Path:
    """Generate (or finish) the dataset and return its folder. Raises UsageError or GenerationError."""
    module = datasets.load(dataset)
    datasets.check(module, config)  # a config built in code is refused as the CLI refuses it
    check_destination(base_savedir)
    root = base_savedir / datasets.folder_name(module, config)
    classes, instances = datasets.counts(module, config)
    header = header_for(config, png_bits, png_compression, dataset)
    manifest_path = root / MANIFEST
    if manifest_path.exists():
        return finished(root, header)
    if root.exists() and not root.is_dir():
        raise UsageError(f"--base-savedir {base_savedir}: {root} exists and is a file")
    if root.exists() and not (root / PARTIAL).exists() and any(p.name != LOCK for p in root.iterdir()):
        raise UsageError(f"{root} exists and is not a dataset being generated (no {PARTIAL}); "
                         f"move it away or choose another --base-savedir")

    log = None
    if (root / PARTIAL).exists():
        log = Progress(root / PARTIAL)  # locks; nothing written yet
    try:
        if log is not None:
            if log.complete:  # another run finished it just before we took the lock
                return finished(root, header)
            log.check(header)
        shared = datasets.prepare(module, config)  # may raise; nothing is written before this succeeds
        clash = set(shared) & (set(header) | {"classes"})
        if clash:
            raise RuntimeError(f"{dataset}.prepare returned reserved manifest keys {sorted(clash)}")
        if log is None:
            with writes_to(root):
                root.mkdir(parents=True, exist_ok=True)
            log = Progress(root / PARTIAL)
            if log.complete:  # a concurrent run finished it first
                return finished(root, header)
        log.start({**header, **shared})
        remove_temporaries(root)
        todo = [i for i in range(classes)
                if not (i in log.records and all((root / f).exists() for f in datasets.record_files(log.records[i])))]
        workers = workers or available_cores()
        workers = min(workers, max(1, len(todo)))
        bar = progress_bar(total=classes, initial=classes - len(todo), unit="img" if instances == 1 else "class",
                           desc=root.name, enabled=progress)
        context = (shared, png_bits, png_compression, str(root))
        _init_worker(dataset, config, *context, ignore_sigint=False)
        _WORK.pop("parent", None)
        try:
            if workers == 1:
                for index in todo:
                    log.add(_make_class(index))
                    bar.update()
            else:
                # fork shares the kernels compiled above; 1p-frac's classes are tiny, so hand them out in fours
                chunksize = 4 if instances == 1 else 1
                initargs = (dataset, config, *context, True, os.getpid())
                with _pool_context().Pool(workers, _init_worker, initargs) as pool:
                    for record in pool.imap_unordered(_make_class, todo, chunksize=chunksize):
                        log.add(record)
                        bar.update()
        finally:
            bar.close()
        manifest = {**header, **shared, "classes": [log.records[i] for i in range(classes)]}
        write_atomic(manifest_path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
        log.finish()
    except BaseException:
        if root.is_dir() and log is not None:  # the pool is gone: no worker writes any more
            remove_temporaries(root)
        raise
    finally:
        if log is not None:
            log.close()
    return root


def finished(root: Path, header: dict) -> Path:
    """A complete dataset is left as it is; one made with other settings is refused."""
    diff = differences(read_manifest(root / MANIFEST), header)
    if diff:
        raise UsageError(f"{root} already holds a dataset made with other settings: " + "; ".join(diff))
    return root


# ---------------------------------------------------------------- sharded generation, WebDataset shards
# docs/shards.md: --num-shards/--shard-index/--finalize for both formats, --format wds/--shard-size.

FORMATS = ("folder", "wds")
SHARD_WORK = "_generation"  # bookkeeping of a sharded run, removed by --finalize
HEADER = "header.json"
INDEX = "index.json"
WDS_FORMAT = "onepfrac-wds/1"
DEFAULT_SHARD_SIZE = 1000
WINDOW = 8  # jobs in flight per worker: enough to hide a slow class, bounded so memory is too


# ---------------------------------------------------------------- options


def add_shard_options(parser: argparse.ArgumentParser) -> None:
    """The sharding and format options, added to the generator's parser."""
    group = parser.add_argument_group("sharded generation and WebDataset output (docs/shards.md)")
    group.add_argument("--format", choices=FORMATS, default="folder",
                       help="folder: PNG folders + manifest.json; wds: WebDataset tar shards (default %(default)s)")
    group.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                       help="--format wds: samples per tar shard (default %(default)s)")
    group.add_argument("--num-shards", type=int, default=None,
                       help="generation shards (processes, array tasks); default: from SLURM_ARRAY_TASK_COUNT, "
                            "WORLD_SIZE, OMPI_COMM_WORLD_SIZE or PMI_SIZE, else 1")
    group.add_argument("--shard-index", type=int, default=None,
                       help="this process's shard, 0..N-1; default: from SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN, "
                            "RANK, OMPI_COMM_WORLD_RANK or PMI_RANK")
    group.add_argument("--finalize", action="store_true",
                       help="assemble the manifest (folder) or index.json (wds) once every shard is done")


def sharded_run(args: argparse.Namespace, environ=os.environ) -> bool:
    """Whether this run is sharded, writes tar shards or finalizes (a plain folder run is none of them)."""
    if args.format == "folder" and args.shard_size != DEFAULT_SHARD_SIZE:
        raise UsageError(f"--shard-size {args.shard_size} applies to --format wds only")
    if args.format == "wds" or args.finalize:
        return True
    return shards.resolve(args.num_shards, args.shard_index, environ).sharded


# ---------------------------------------------------------------- shared pieces


def root_of(module, config, fmt: str, base_savedir: Path) -> Path:
    name = datasets.folder_name(module, config)
    return base_savedir / (name if fmt == "folder" else f"{name}_wds")


def full_header(module, config, dataset, fmt, png_bits, png_compression, shard_size) -> dict:
    header = header_for(config, png_bits, png_compression, dataset)
    if fmt == "wds":
        header["format"] = WDS_FORMAT
        header["arguments"]["shard_size"] = shard_size
    return header


def check_header(work: Path, header: dict) -> None:
    """Refuse, before the (slow) shared preparation, a run whose options differ from header.json's."""
    path = work / HEADER
    if path.exists():
        diff = differences(json.loads(path.read_text()), header)
        if diff:
            raise UsageError(f"{work.parent} is being generated with other settings: " + "; ".join(diff))


def claim_header(work: Path, header: dict) -> None:
    """Write header.json (header and shared record) if absent, else refuse another one (race-free: link)."""
    path = work / HEADER
    temporary = work / f"{HEADER}.{os.getpid()}{TEMP_SUFFIX}"
    write_atomic(temporary, json.dumps(header, sort_keys=True).encode())
    try:
        os.link(temporary, path)  # fails if another shard wrote it first
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    on_disk = json.loads(path.read_text())
    diff = differences(on_disk, header)
    if diff:
        raise UsageError(f"{work.parent} is being generated with other settings: " + "; ".join(diff))
    if on_disk != header:
        raise UsageError(f"{work.parent} was started with another base system (numpy or onepfrac changed?); "
                         f"move it away to start afresh")


def check_root(root: Path, marker: str, base_savedir: Path) -> None:
    """Refuse a folder that holds something other than this kind of run."""
    if root.exists() and not root.is_dir():
        raise UsageError(f"--base-savedir {base_savedir}: {root} exists and is a file")
    if (root / PARTIAL).exists():
        raise UsageError(f"{root} is being generated by a one-process run ({PARTIAL}); finish it with "
                         f"the same command without --num-shards, or move it away")
    if root.exists() and any(root.iterdir()) and not (root / SHARD_WORK).exists() and not (root / marker).exists():
        raise UsageError(f"{root} exists and is not a dataset being generated in shards (no {SHARD_WORK}/); "
                         f"move it away or choose another --base-savedir")


def prepared(module, config, dataset, header) -> dict:
    shared = datasets.prepare(module, config)
    clash = set(shared) & (set(header) | {"classes", "shards"})
    if clash:
        raise RuntimeError(f"{dataset}.prepare returned reserved manifest keys {sorted(clash)}")
    return {**header, **shared}


class ShardLock:
    """A lock file held while a shard runs: one process per shard; the kernel drops a killed one's."""

    def __init__(self, path: Path, what: str):
        self.lock = filelock.FileLock(str(path), timeout=0)
        try:
            with writes_to(path):
                self.lock.acquire()
        except filelock.Timeout:
            raise UsageError(f"another process is generating {what}; wait for it or stop it") from None

    def close(self) -> None:
        self.lock.release()


def run_jobs(function, jobs, workers: int, initializer, initargs, ordered: bool):
    """function(job) for each job, in a pool when workers > 1, with a bounded number in flight."""
    initializer(*initargs, ignore_sigint=False)
    _WORK.pop("parent", None)
    if workers == 1:
        yield from map(function, jobs)
        return
    with _pool_context().Pool(workers, initializer, (*initargs, True, os.getpid())) as pool:
        pending = deque()
        jobs = iter(jobs)
        for job in jobs:
            pending.append(pool.apply_async(function, (job,)))
            while len(pending) >= workers * WINDOW:
                if ordered:
                    yield pending.popleft().get()
                else:
                    ready = next((p for p in pending if p.ready()), None)
                    if ready is None:
                        pending[0].wait(0.05)
                        continue
                    pending.remove(ready)
                    yield ready.get()
        while pending:
            yield pending.popleft().get()


# ---------------------------------------------------------------- folder format


LOG_NAME = re.compile(r"shard-(\d{5})-of-(\d{5})(\.partial)?\.jsonl$")


def log_name(index: int, count: int, done: bool) -> str:
    return f"shard-{index:05d}-of-{count:05d}{'' if done else '.partial'}.jsonl"


def existing_counts(work: Path) -> set[int]:
    return {int(m.group(2)) for p in work.iterdir() if (m := LOG_NAME.match(p.name))}


def read_log(path: Path, header: dict, expected: range, root: Path) -> tuple[int, int]:
    """(classes recorded, valid bytes) of a shard's log: its header must equal `header`, records must
    follow `expected` in order with their files present; a torn or out-of-order tail is not counted."""
    done = valid = 0
    if not path.exists():
        return done, valid
    with open(path, "rb") as f:
        for number, line in enumerate(f):
            if not line.endswith(b"\n"):
                break  # cut by a kill
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            if number == 0:
                if record != header:
                    raise UsageError(f"{path}: its header differs from this run's settings; move {root} away "
                                     f"to start afresh")
            elif (done >= len(expected) or record.get("index") != expected[done]
                  or not all((root / name).exists() for name in datasets.record_files(record))):
                break
            else:
                done += 1
            valid += len(line)
    return done, valid


def generate_folder_shard(module, config, dataset, header, root, shard, workers, progress) -> bool:
    """Make (or finish) this shard's classes; True when its log is complete."""
    work = root / SHARD_WORK
    classes, instances = datasets.counts(module, config)
    mine = shards.part(classes, shard.count, shard.index)
    others = existing_counts(work) - {shard.count}
    if others:
        raise UsageError(f"--num-shards {shard.count}: {root} is being generated with --num-shards "
                         f"{', '.join(map(str, sorted(others)))}; use that, or move the folder away")
    done_log = work / log_name(shard.index, shard.count, True)
    if done_log.exists():
        return True
    partial = work / log_name(shard.index, shard.count, False)
    lock = ShardLock(work / f"shard-{shard.index:05d}-of-{shard.count:05d}.lock", f"shard {shard.index} of {root}")
    try:
        done, valid = read_log(partial, header, mine, root)
        with writes_to(partial), open(partial, "a+b") as log:
            log.truncate(valid)
            log.seek(0, os.SEEK_END)
            if valid == 0:
                log.write(json.dumps(header, sort_keys=True).encode() + b"\n")
                log.flush()
            todo = mine[done:]
            shared = {k: v for k, v in header.items() if k not in ("format", "dataset", "generator", "arguments")}
            initargs = (dataset, config, shared, header["arguments"]["png_bits"],
                        header["arguments"]["png_compression"], str(root))
            workers = min(workers, max(1, len(todo)))
            bar = progress_bar(total=len(mine), initial=done, unit="img" if instances == 1 else "class",
                               desc=f"{root.name} shard {shard.index}/{shard.count}", enabled=progress)
            logged = 0
            try:
                for record in run_jobs(_make_class, todo, workers, _init_worker, initargs, True):
                    log.write(json.dumps(record, sort_keys=True).encode() + b"\n")
                    log.flush()
                    logged += 1
                    bar.update()
            except KeyboardInterrupt:  # only the classes in flight can have temporary files
                remove_class_temporaries(module, config, root, todo[logged:logged + workers * WINDOW + 1], instances)
                raise
            finally:
                bar.close()
        os.replace(partial, done_log)
    finally:
        lock.close()
    return True


def remove_class_temporaries(module, config, root: Path, todo: range, instances: int) -> None:
    """Temporary PNGs of this shard's unfinished classes (other shards' are theirs to finish)."""
    for index in todo:
        for i in range(instances):
            (root / (datasets.file_name(module, config, index, i) + TEMP_SUFFIX)).unlink(missing_ok=True)


def missing_message(root: Path, missing: list[int], count: int, fmt: str) -> str:
    return (f"--finalize: {root} is not complete: shard{'s' if len(missing) > 1 else ''} "
            f"{shards.ranges_text(missing)} of {count} {'are' if len(missing) > 1 else 'is'} not finished "
            f"(still running or killed: run each again with --num-shards {count} --shard-index K"
            f"{' --format wds' if fmt == 'wds' else ''})")


def finalize_folder(module, config, root: Path, header: dict, num_shards: int | None) -> Path:
    work = root / SHARD_WORK
    classes, _ = datasets.counts(module, config)
    counts = existing_counts(work) if work.is_dir() else set()
    if num_shards is None:
        if len(counts) != 1:
            raise UsageError(f"--finalize: {root} holds shard logs for --num-shards {sorted(counts)}; "
                             f"say which with --num-shards" if counts else
                             f"--finalize: {root} has no shard logs ({SHARD_WORK}/); generate it first")
        num_shards = counts.pop()
    missing = [k for k in range(num_shards) if not (work / log_name(k, num_shards, True)).exists()]
    if missing:
        raise UsageError(missing_message(root, missing, num_shards, "folder"))
    claim_header(work, header)

    def records():
        expected = 0
        for k in range(num_shards):
            for number, record in enumerate(wds_writer.read_jsonl(work / log_name(k, num_shards, True))):
                if number == 0:
                    if record != header:
                        raise UsageError(f"{work / log_name(k, num_shards, True)} was made with other settings")
                    continue
                if record.get("index") != expected:
                    raise UsageError(f"{work / log_name(k, num_shards, True)}: class {record.get('index')} where "
                                     f"class {expected} was expected; rerun that shard after deleting its log")
                expected += 1
                yield record
        if expected != classes:
            raise UsageError(f"--finalize: the shard logs hold {expected} classes, the arguments make {classes}")

    with writes_to(root / MANIFEST):
        wds_writer.write_manifest(root / MANIFEST, header, records())
    remove_work(work)
    return root


def remove_work(work: Path) -> None:
    for path in work.iterdir():
        path.unlink()
    work.rmdir()


# ---------------------------------------------------------------- WebDataset format


def tar_name(dataset: str, index: int, suffix: str = ".tar") -> str:
    return f"{dataset}-{index:06d}{suffix}"


def tar_count(samples: int, shard_size: int) -> int:
    return -(-samples // shard_size)


def _instances(module, config, shared, class_index: int, first: int, stop: int):
    """(params, images of instances first..stop-1); renders only those when the module can."""
    if not hasattr(module, "class_images") and first > 0:
        params = module.class_params(config, shared, class_index)
        return params, (module.render_instance(config, shared, params, i) for i in range(first, stop))
    params, images = datasets.class_images(module, config, shared, class_index)
    return params, (image for i, image in enumerate(images) if first <= i < stop)


def _make_tar(index: int) -> int:
    """Render tar shard `index`, write it and its records atomically; return its sample count."""
    w = _WORK
    module, config, root = w["module"], w["config"], w["root"]
    classes, instances = datasets.counts(module, config)
    size, dataset = w["shard_size"], w["dataset"]
    start, stop = index * size, min((index + 1) * size, classes * instances)
    members, records = [], []
    for class_index in range(start // instances, (stop - 1) // instances + 1):
        first = max(start - class_index * instances, 0)
        last = min(stop - class_index * instances, instances)
        params, images = _instances(module, config, w["shared"], class_index, first, last)
        keys, sums = [], []
        for instance, image in zip(range(first, last), images):
            data = encode_image(image, w["png_bits"], w["png_compression"])
            key = wds_writer.sample_key(class_index, instance, classes, instances)
            meta = {"class": class_index, "instance": instance,
                    "file": datasets.file_name(module, config, class_index, instance)}
            members += [(f"{key}.png", data), (f"{key}.cls", str(class_index).encode()),
                        (f"{key}.json", json.dumps(meta, sort_keys=True).encode())]
            keys.append(key)
            sums.append(hashlib.sha256(data).hexdigest())
        records.append({"class": class_index, "params": params, "first_instance": first, "keys": keys, "sha256": sums})
    data = wds_writer.tar_bytes(members)
    head = {"shard": index, "tar": tar_name(dataset, index), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "first_sample": start, "samples": stop - start}
    write_atomic(root / head["tar"], data)
    lines = [json.dumps(head, sort_keys=True)] + [json.dumps(r, sort_keys=True) for r in records]
    write_atomic(root / tar_name(dataset, index, ".jsonl"), ("\n".join(lines) + "\n").encode())
    return stop - start


def _init_tar_worker(dataset, config, shared, png_bits, png_compression, root, shard_size, ignore_sigint=True,
                     parent=None):
    _init_worker(dataset, config, shared, png_bits, png_compression, root, ignore_sigint, parent)
    _WORK.update(shard_size=shard_size, dataset=dataset)


def tar_done(root: Path, dataset: str, index: int) -> bool:
    """A tar shard is finished when its .jsonl exists and names a tar of the recorded size."""
    try:
        with open(root / tar_name(dataset, index, ".jsonl"), "rb") as f:
            head = json.loads(f.readline())
        return (root / head["tar"]).stat().st_size == head["bytes"]
    except (OSError, ValueError, KeyError):
        return False


def generate_wds_shard(module, config, dataset, header, root, shard, workers, progress) -> bool:
    work = root / SHARD_WORK
    classes, instances = datasets.counts(module, config)
    size = header["arguments"]["shard_size"]
    mine = shards.part(tar_count(classes * instances, size), shard.count, shard.index)
    lock = ShardLock(work / f"shard-{shard.index:05d}-of-{shard.count:05d}.lock", f"shard {shard.index} of {root}")
    try:
        for index in mine:  # leftovers of a kill: only this shard's, others may be writing theirs
            for suffix in (".tar", ".jsonl"):
                (root / (tar_name(dataset, index, suffix) + TEMP_SUFFIX)).unlink(missing_ok=True)
        todo = [j for j in mine if not tar_done(root, dataset, j)]
        shared = {k: v for k, v in header.items() if k not in ("format", "dataset", "generator", "arguments")}
        initargs = (dataset, config, shared, header["arguments"]["png_bits"], header["arguments"]["png_compression"],
                    str(root), size)  # a pool adds ignore_sigint and the parent's pid
        workers = min(workers, max(1, len(todo)))
        bar = progress_bar(total=len(mine), initial=len(mine) - len(todo), unit="tar",
                           desc=f"{root.name} shard {shard.index}/{shard.count}", enabled=progress)
        try:
            for _ in run_jobs(_make_tar, todo, workers, _init_tar_worker, initargs, False):
                bar.update()
        except KeyboardInterrupt:
            for index in todo:
                for suffix in (".tar", ".jsonl"):
                    (root / (tar_name(dataset, index, suffix) + TEMP_SUFFIX)).unlink(missing_ok=True)
            raise
        finally:
            bar.close()
    finally:
        lock.close()
    return True


def finalize_wds(module, config, dataset, root: Path, header: dict, num_shards: int | None) -> Path:
    work = root / SHARD_WORK
    classes, instances = datasets.counts(module, config)
    size = header["arguments"]["shard_size"]
    total = tar_count(classes * instances, size)
    missing = [j for j in range(total) if not tar_done(root, dataset, j)]
    if missing:
        if num_shards is None:
            counts = {int(m.group(1)) for p in work.glob("*.lock") if (m := re.search(r"-of-(\d{5})", p.name))}
            num_shards = counts.pop() if len(counts) == 1 else None
        if num_shards is None:
            raise UsageError(f"--finalize: {root} is not complete: tar shards {shards.ranges_text(missing)} of "
                             f"0..{total - 1} are missing (pass --num-shards to see which generation shards)")
        owners = sorted({shards.owner(total, num_shards, j) for j in missing})
        raise UsageError(missing_message(root, owners, num_shards, "wds") +
                         f"; tar shards {shards.ranges_text(missing)} are missing")
    if work.is_dir():
        claim_header(work, header)
    entries = []
    for j in range(total):
        with open(root / tar_name(dataset, j, ".jsonl"), "rb") as f:
            head = json.loads(f.readline())
        entries.append({"tar": head["tar"], "jsonl": tar_name(dataset, j, ".jsonl"), "bytes": head["bytes"],
                        "sha256": head["sha256"], "samples": head["samples"]})
    index = {**header, "classes": classes, "instances": instances, "samples": classes * instances}
    with writes_to(root / INDEX):
        wds_writer.write_manifest(root / INDEX, index, iter(entries), key="shards")
    if work.is_dir():
        remove_work(work)
    return root


# ---------------------------------------------------------------- the command


def generate_sharded(module, config, dataset: str, args: argparse.Namespace, environ=os.environ) -> tuple[Path, str]:
    """Generate this process's shard or finalize; (dataset folder, what to print)."""
    if args.format == "wds" and args.shard_size < 1:
        raise UsageError(f"--shard-size {args.shard_size} must be 1 or more")
    if args.format == "folder" and args.shard_size != DEFAULT_SHARD_SIZE:
        raise UsageError(f"--shard-size {args.shard_size} applies to --format wds only")
    base = Path(args.base_savedir)
    datasets.check(module, config)
    check_destination(base)
    root = root_of(module, config, args.format, base)
    header = full_header(module, config, dataset, args.format, args.png_bits, args.png_compression, args.shard_size)
    final = root / (MANIFEST if args.format == "folder" else INDEX)
    if final.exists():
        diff = differences(read_manifest(final), header)
        if diff:
            raise UsageError(f"{root} already holds a dataset made with other settings: " + "; ".join(diff))
        return root, str(root)
    check_root(root, INDEX, base)
    if args.finalize:
        if not (root / SHARD_WORK).is_dir() and args.format == "folder":
            raise UsageError(f"--finalize: {root} has no shard logs ({SHARD_WORK}/); generate its shards first")
        if args.num_shards is not None and args.num_shards < 1:
            raise UsageError(f"--num-shards {args.num_shards} must be 1 or more")
        if (root / SHARD_WORK).is_dir():
            check_header(root / SHARD_WORK, header)
        full = prepared(module, config, dataset, header)
        if args.format == "folder":
            return finalize_folder(module, config, root, full, args.num_shards), str(root)
        return finalize_wds(module, config, dataset, root, full, args.num_shards), str(root)
    shard = shards.resolve(args.num_shards, args.shard_index, environ)
    workers = args.workers or available_cores()
    work = root / SHARD_WORK
    if work.is_dir():
        check_header(work, header)  # a settings clash is refused before the shared preparation
    full = prepared(module, config, dataset, header)
    with writes_to(work):
        work.mkdir(parents=True, exist_ok=True)
    claim_header(work, full)
    make = generate_folder_shard if args.format == "folder" else generate_wds_shard
    make(module, config, dataset, full, root, shard, workers, not args.no_progress)
    if shard.count == 1:
        if args.format == "folder":
            return finalize_folder(module, config, root, full, 1), str(root)
        return finalize_wds(module, config, dataset, root, full, 1), str(root)
    return root, f"{root}: shard {shard.index} of {shard.count} done ({shard.source}); when all are, run the " \
                 f"same command with --finalize"


def main(argv=None, environ=os.environ) -> int:
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        dataset = selected_dataset(argv)
        module = datasets.load(dataset)
        parser = build_parser(dataset, module)
        args, extra = parser.parse_known_args(argv)
        if extra:
            refuse_extra(dataset, module, parser, extra)
        if args.dataset != dataset:  # an abbreviation (--data X) escapes the first look at --dataset
            raise UsageError(f"--dataset {args.dataset}: write --dataset in full, it chooses the other options")
        config = validate(module, args)
        if sharded_run(args, environ):
            _, line = generate_sharded(module, config, dataset, args, environ)
        else:
            root = generate(config, Path(args.base_savedir), args.png_bits, args.png_compression,
                            args.workers, progress=not args.no_progress, dataset=dataset)
            line = str(root)
    except UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the same command again to finish the dataset", file=sys.stderr)
        return 130
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
