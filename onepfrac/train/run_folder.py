"""The run folder (--output-dir): one trainer at a time, no run overwritten by accident.

A folder holds a run once it has any of RUN_FILES or a released-name checkpoint. Training into
it again needs `--resume auto` (continue) or `--overwrite` (start afresh, deleting that run's
files once the new run has got past its checks). While a trainer uses the folder it holds an
OS lock on `.train.lock` (filelock: flock on POSIX), which the kernel releases when the
process ends however it ends, kill -9 included; a second trainer is refused. The resolved
options go to `args.yaml`, which `-c` reads back to repeat the run.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from onepfrac.errors import UsageError
from onepfrac.train.checkpoint import LAST, atomic_write_text, sweep_temporaries
from onepfrac.train.export import FILES as EXPORT_FILES

LOCK = ".train.lock"
ARGS = "args.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
RUN_FILES = (ARGS, METRICS, LAST, SUMMARY, *EXPORT_FILES)
_RELEASED_CHECKPOINT = re.compile(r"^.+_\d{3,}ep\.pth$")  # checkpoint.checkpoint_name's files
# Options of one invocation, not of the run: left out of args.yaml.
NOT_RECORDED = ("mode", "config", "explicit", "resume", "overwrite", "check_only", "stop_after")


class RunFolderError(UsageError):
    """The output folder is a file, holds another run, or is in use; the message says which."""


def output_dir(args) -> Path:
    """--output-dir as a folder path, refused when it (or a folder above it) is a file."""
    path = Path(args.output_dir)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise RunFolderError(f"--output-dir: {str(folder)!r} is a file, not a folder; "
                                     "give a folder (it is created when missing)")
            break
    return path


def run_files(directory: Path) -> list[str]:
    """The files of a run in `directory` (none: the folder holds no run)."""
    if not directory.is_dir():
        return []
    return sorted(entry.name for entry in directory.iterdir()
                  if entry.name in RUN_FILES or _RELEASED_CHECKPOINT.match(entry.name))


def _refuse_existing_run(args, directory: Path) -> None:
    found = run_files(directory)
    if found and not args.resume and not args.overwrite:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise RunFolderError(f"--output-dir: {str(directory)!r} already holds a run ({shown}); "
                             "continue it with --resume auto, start afresh with --overwrite "
                             "(deletes that run's files), or choose another --output-dir")


def _in_use(directory: Path) -> RunFolderError:
    return RunFolderError(f"--output-dir: {str(directory)!r} is in use by another trainer (it "
                          f"holds {LOCK} there); wait for it to end or choose another --output-dir")


class RunLock:
    """The folder's exclusive lock, held from the checks to the end of the run."""

    def __init__(self, directory: Path):
        from filelock import FileLock

        self.directory = directory
        self._lock = FileLock(str(directory / LOCK), timeout=0)

    def acquire(self) -> RunLock:
        from filelock import Timeout

        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise _in_use(self.directory) from None
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)


def claim(args) -> RunLock:
    """Lock the run folder, refuse it if it holds a run this command neither resumes nor
    overwrites, and sweep temporary files a killed trainer left there. Main process only."""
    directory = output_dir(args)
    lock = RunLock(directory).acquire()
    try:
        _refuse_existing_run(args, directory)
        sweep_temporaries(directory)
    except BaseException:
        lock.release()
        raise
    return lock


def probe(args) -> None:
    """claim's checks without taking the lock or writing anything (for --check-only)."""
    directory = output_dir(args)
    if (directory / LOCK).is_file():
        lock = RunLock(directory)
        lock.acquire()  # refused when a trainer holds it
        lock.release()
    _refuse_existing_run(args, directory)


def clear_previous_run(directory: Path) -> None:
    """--overwrite: delete the previous run's files, once the new run is ready to start."""
    for name in run_files(directory):
        (directory / name).unlink(missing_ok=True)


def _plain(value):
    # YAML's safe dumper writes lists, not tuples
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def recorded_options(args) -> dict:
    """The resolved options as flat config keys, readable back by `-c`."""
    values = {key: _plain(value) for key, value in sorted(vars(args).items())
              if key not in NOT_RECORDED}
    if values.get("aa") is None:
        values["aa"] = "none"
    return values


def write_args(directory: Path, args) -> None:
    header = (f"# The resolved options of this run ({args.mode}). Repeat it with\n"
              f"#   python -m onepfrac.train {args.mode} -c {directory / ARGS} --output-dir NEW_FOLDER\n")
    atomic_write_text(directory / ARGS, header + yaml.safe_dump(recorded_options(args),
                                                                sort_keys=True))
