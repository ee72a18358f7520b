"""Training checkpoints: the state a run saves, atomic writes, and exact resume.

A training checkpoint written here is a dict with `model`, `optimizer`, `lr_scheduler`, `scaler`,
`epoch`, as the released 1p-frac trainer writes them (its `model` entry is a timm state dict),
plus `args`, `best`, `format` and RNG states. It is saved every --save-every epochs and at the
end under the released name (`checkpoint_name`) and as `checkpoint_last.pth`, which
`--resume auto` continues from. It holds only tensors and plain data (RNG states included), so
`torch.load(path, weights_only=True)` reads it; files of the first format (numpy's RNG state
pickled as numpy objects) are still read, as numpy data only (`load_checkpoint`).

Pre-trained weights of every published format (this project's checkpoints among them) are read
and loaded into a model by onepfrac.train.pretrained.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import secrets
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from onepfrac.errors import UserError
from onepfrac.train.options import UsageError

__all__ = ["CheckpointError", "FORMAT", "LAST", "atomic_write", "checkpoint_name", "checkpoint_state",
           "find_resume", "restore_training_state", "rng_state", "set_rng_state", "save_checkpoint",
           "load_checkpoint", "sweep_temporaries"]

# /2: RNG states as tensors and plain data (/1 pickled numpy's), so weights_only=True reads it
FORMAT = "onepfrac-checkpoint/2"
LAST = "checkpoint_last.pth"


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says which and why."""


# ---------------------------------------------------------------- what a run saves and resumes

def checkpoint_name(model: str, experiment: str, epoch: int) -> str:
    """The released file name of the checkpoint after `epoch` epochs, e.g.
    vit_tiny_patch16_224_sigma3.5_perturb0.1_sample1000_seed0_080ep.pth."""
    return f"{model}_{experiment}_{epoch:03d}ep.pth"


def checkpoint_state(args, model, optimizer, scheduler, scaler, model_ema, epoch, best) -> dict:
    """The released format (model, optimizer, lr_scheduler, scaler, epoch) plus what resumes.

    The RNG states are a record only: a resumed run reseeds every epoch from (seed, epoch, rank)
    (onepfrac.train.trainer), which is what makes it continue exactly."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,  # epochs completed; training resumes at this epoch index
        "args": {k: v for k, v in vars(args).items()},
        "best": best,
        "format": FORMAT,
        "rng": rng_state(),
    }
    if model_ema is not None:
        state["model_ema"] = model_ema.module.state_dict()
    return state


def rng_state() -> dict:
    """Python's, numpy's, torch's and every CUDA device's global RNG state as tensors, ints,
    floats and strings. The data pipeline keeps no generator across epochs (each is reseeded
    from (seed, epoch)), so these are all the RNG state a run has."""
    version, internal, gauss_next = random.getstate()
    bit_generator, key, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {"python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                       "gauss_next": gauss_next},
            "numpy": {"bit_generator": str(bit_generator),
                      "key": torch.from_numpy(key.astype(np.int64)), "pos": int(position),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(rng: dict) -> None:
    """Restore the global RNGs from `rng_state()`'s dict, or from the tuples of format /1."""
    python, numpy_state = rng["python"], rng["numpy"]
    if isinstance(python, dict):
        python = (python["version"], tuple(python["state"].tolist()), python["gauss_next"])
    random.setstate(python)
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["bit_generator"], numpy_state["key"].numpy().astype(np.uint32),
                       numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def find_resume(resume: str | None, output_dir) -> Path | None:
    """The checkpoint --resume names: None without it, the output folder's last checkpoint for
    'auto' (None when there is none yet: a fresh start), else the path, which must exist."""
    if resume is None:
        return None
    if resume == "auto":
        path = Path(output_dir) / LAST
        return path if path.exists() else None
    path = Path(resume)
    if not path.is_file():
        raise UsageError(f"--resume: {resume!r} does not exist")
    return path


def restore_training_state(resumed: dict, model, optimizer, scheduler, scaler=None, model_ema=None,
                           best: dict | None = None) -> dict:
    """Load a training checkpoint's model, optimizer, schedule, loss scaler and EMA weights into
    the run's (the scaler and EMA where both the run and the file have them); returns the best
    evaluation it recorded, or `best` for a file without one."""
    model.load_state_dict(resumed["model"])
    optimizer.load_state_dict(resumed["optimizer"])
    scheduler.load_state_dict(resumed["lr_scheduler"])
    if scaler is not None and resumed.get("scaler"):
        scaler.load_state_dict(resumed["scaler"])
    if model_ema is not None and "model_ema" in resumed:
        model_ema.module.load_state_dict(resumed["model_ema"])
    return resumed.get("best", best)


# ---------------------------------------------------------------- files

def save_checkpoint(path, state: dict) -> None:
    """Write `state` to `path` atomically: a crash at any moment leaves the old file or the new one."""
    atomic_write(path, lambda stream: torch.save(state, stream))


# Temporary files are `.NAME.<token>.tmp` beside their target; a stale one (kill -9 mid-write)
# is swept by the next run in that folder (`sweep_temporaries`).
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8,}\.tmp$")


def atomic_write(path, write) -> None:
    """Call `write(binary stream)` into a temporary file beside `path`, fsync it, then rename it
    onto `path` (same file system, so the rename is atomic); the temporary file is removed on any
    exception or signal turned into one (KeyboardInterrupt, the trainer's SIGTERM handler).

    The file is created with mode 0o666 less the umask, as open() would: mkstemp's 0o600 would
    make checkpoints unreadable to a group that reads every other file of the run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        _test_pause()
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


def atomic_write_text(path, text: str) -> None:
    atomic_write(path, lambda stream: stream.write(text.encode()))


def _test_pause() -> None:
    # Test-only: hold a finished temporary file this long before the rename, so a test can signal
    # a trainer in the middle of a save.
    seconds = os.environ.get("ONEPFRAC_TEST_SAVE_PAUSE")
    if seconds:
        time.sleep(float(seconds))


def sweep_temporaries(directory) -> list[Path]:
    """Remove the temporary files a killed writer left in `directory`; call it only while holding
    the folder's run lock, so no live writer's file is taken."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if _TEMPORARY.match(entry.name) and entry.is_file():
            try:
                entry.unlink()
                removed.append(entry)
            except FileNotFoundError:
                pass
    return removed


def _fsync_directory(directory: Path) -> None:
    # makes the rename itself durable; not possible on every platform, and not needed for atomicity
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a training checkpoint written by `save_checkpoint` (to resume a run), with
    `weights_only=True`: no code of the file runs.

    A file of format /1 (numpy's RNG state as numpy objects) is read allowing numpy's array and
    scalar types only, which rebuild as data (its tensors on the CPU).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file" if not path.exists()
                              else f"{path}: not a file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError as error:
        raise CheckpointError(f"{path}: not readable ({error.strerror})") from error
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error):
            raise _corrupt(path, error) from error
        state = _read_first_format(path)
    except (EOFError, RuntimeError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise _corrupt(path, error) from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a training checkpoint (a dict), found {type(state).__name__}")
    return state


def _corrupt(path: Path, error: BaseException) -> CheckpointError:
    return CheckpointError(f"{path}: corrupt or truncated checkpoint ({short_message(error)}); "
                           "resume from an earlier one or start afresh")


def _read_first_format(path: Path) -> dict:
    try:
        with torch.serialization.safe_globals(numpy_data_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found is None:
            raise _corrupt(path, error) from error
        raise CheckpointError(f"{path}: holds a Python object of type {found.group(1)}, which this "
                              "trainer's checkpoints never hold; resume only from a checkpoint "
                              "this trainer wrote") from error
    except (EOFError, RuntimeError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise _corrupt(path, error) from error


def numpy_data_globals() -> list:
    """What unpickles numpy arrays and scalars (format /1's RNG state) as data: rebuilding them
    runs no code of the file's choosing."""
    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:
        from numpy.core import multiarray
    return [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
            *(type(np.dtype(name)) for name in ("bool", "int8", "int16", "int32", "int64", "uint8",
                                                 "uint16", "uint32", "uint64", "float16", "float32",
                                                 "float64"))]


def read_progress(path) -> dict:
    """A training checkpoint's `epoch` and `args` without reading its tensors (memory-mapped),
    for the checks of --check-only on a checkpoint of any size."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, ValueError, OSError, pickle.UnpicklingError):  # format /1, or not a zip: in full
        state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a training checkpoint (a dict), found {type(state).__name__}")
    return {"epoch": state.get("epoch"), "args": state.get("args")}


def short_message(error: BaseException, limit: int = 160) -> str:
    """An exception's text on one line of at most `limit` characters, for an error message."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
