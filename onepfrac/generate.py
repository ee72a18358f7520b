"""Write a formula-driven dataset as image folders: `python -m onepfrac.generate --help`.

--dataset chooses the generator: 1p-frac (default), fractaldb, ofdb, 3d-ofdb, visualatom,
real-image; `--dataset NAME --help` lists that dataset's options.
1p-frac: BASE_SAVEDIR/sigma{S}_perturb{D}_sample{L}_seed{SEED}/{00000..}/{00000..}.png,
the others: BASE_SAVEDIR/{name}_classes{C}_..._seed{SEED}/{class}/{instance}.png,
plus manifest.json (every content argument, what the dataset shares across classes,
each class's parameters and PNG checksums). While generating, manifest.partial.jsonl records
finished classes so that a killed run resumes where it stopped; PNGs are written to
a temporary name and renamed, so no partial PNG is ever visible.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import cv2
import filelock
import numpy as np
from tqdm import tqdm

from onepfrac import __version__, datasets, lifetime, png
from onepfrac.datasets.interface import flag
from onepfrac.cores import available_cores
from onepfrac.errors import UsageError, UserError

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


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


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
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    if base_savedir.exists() and not base_savedir.is_dir():
        raise UsageError(f"--base-savedir {base_savedir} is a file, not a folder")
    ancestor = base_savedir
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"--base-savedir {base_savedir}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"--base-savedir {base_savedir} is not writable ({ancestor} denies writing)")


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
        bar = tqdm(total=classes, initial=classes - len(todo), unit="img" if instances == 1 else "class",
                   desc=root.name, disable=not progress, dynamic_ncols=True)
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


def main(argv=None) -> int:
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
        root = generate(config, Path(args.base_savedir), args.png_bits, args.png_compression,
                        args.workers, progress=not args.no_progress, dataset=dataset)
    except UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the same command again to finish the dataset", file=sys.stderr)
        return 130
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
