"""Write a 1p-frac dataset as image folders: `python -m onepfrac.generate --help`.

Layout: BASE_SAVEDIR/sigma{S}_perturb{D}_sample{L}_seed{SEED}/{00000..}/{00000..}.png
plus manifest.json (every content argument, the base system, each class's
coefficients and PNG checksum). While generating, manifest.partial.jsonl records
finished classes so that a killed run resumes where it stopped; PNGs are written to
a temporary name and renamed, so no partial PNG is ever visible.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import multiprocessing
import os
import signal
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from onepfrac import __version__, ifs, png, render
from onepfrac.datasets import onepfrac as onepfrac_dataset

MANIFEST = "manifest.json"
PARTIAL = "manifest.partial.jsonl"
TEMP_SUFFIX = ".tmp"
FORMAT = "onepfrac-dataset/1"


class UsageError(Exception):
    """Bad input: reported as one line, exit code 2, before anything is written."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    d = onepfrac_dataset.Config()
    p = OneLineParser(prog="python -m onepfrac.generate", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-savedir", default="./data", help="folder that receives the dataset folder (default %(default)s)")
    p.add_argument("--sigma", type=float, default=d.sigma, help="sigma-factor of the base system, in (0, 3 x n-maps] (default %(default)s)")
    p.add_argument("--delta", type=float, default=d.delta, help="perturbation size, in [0, 1) (default %(default)s)")
    p.add_argument("--samples", type=int, default=d.samples, help="L: number of perturbations = classes (default %(default)s)")
    p.add_argument("--n-maps", type=int, default=d.n_maps, help="N: maps of the base system, 2..32 (default %(default)s)")
    p.add_argument("--size", type=int, default=d.size, help="image side in pixels (default %(default)s)")
    p.add_argument("--points", type=int, default=d.points, help="orbit length including the start point (default %(default)s)")
    p.add_argument("--pad", type=int, default=d.pad, help="margin of the rescaled orbit in pixels (default %(default)s)")
    p.add_argument("--drawing", choices=render.DRAWINGS, default=d.drawing, help="3 x 3 random patches or single points (default %(default)s)")
    p.add_argument("--fill-threshold", type=float, default=d.fill_threshold, help="a class needs more than this fraction of non-zero pixels (default %(default)s)")
    p.add_argument("--perturbation", choices=ifs.PERTURBATIONS, default=d.perturbation,
                   help="multiplicative: x U(1-delta, 1+delta) (released code); additive: + U(-delta/2, delta/2) (paper) (default %(default)s)")
    p.add_argument("--sigma-jitter", type=float, default=d.sigma_jitter, help="the base's sigma is drawn from U(sigma - j, sigma + j), as released (default %(default)s)")
    p.add_argument("--orbit", choices=onepfrac_dataset.ORBITS, default=d.orbit,
                   help="fixed: every image uses the released map-choice sequence (numpy seed 100); per-image: its own (default %(default)s)")
    p.add_argument("--burn-in", type=int, default=d.burn_in,
                   help="drop the first points (start point and transient) before framing and drawing; "
                        "the released renderer keeps them (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the base system, perturbations and patch masks (default %(default)s)")
    p.add_argument("--png-bits", type=int, choices=png.BITS, default=8, help="8-bit grayscale or 1-bit palette PNGs, same pixels (default %(default)s)")
    p.add_argument("--png-compression", type=int, default=1, help="zlib level 0..9 (default %(default)s)")
    p.add_argument("--probes", type=int, default=d.probes, help="perturbations drawn to judge a base system (default %(default)s)")
    p.add_argument("--probe-pass-rate", type=float, default=d.probe_pass_rate,
                   help="fraction of the probes that must pass the fill test for a base to be used, in (0, 1] (default %(default)s)")
    p.add_argument("--max-base-tries", type=int, default=d.max_base_tries, help="base systems to try before giving up (default %(default)s)")
    p.add_argument("--max-class-tries", type=int, default=d.max_class_tries, help="perturbations to try per class before giving up (default %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="processes; 0 = all cores (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _number(value: float) -> str:
    return repr(float(value))


def dataset_name(config: onepfrac_dataset.Config) -> str:
    return f"sigma{_number(config.sigma)}_perturb{_number(config.delta)}_sample{config.samples}_seed{config.seed}"


def validate(args: argparse.Namespace) -> onepfrac_dataset.Config:
    """Check every option against its allowed range; raise UsageError naming the first bad one."""
    def need(ok: bool, message: str):
        if not ok:
            raise UsageError(message)

    need(2 <= args.n_maps <= 32, f"--n-maps {args.n_maps} is outside the allowed range 2..32")
    top = 3 * args.n_maps
    need(np.isfinite(args.sigma) and 0 < args.sigma <= top,
         f"--sigma {args.sigma} is outside (0, {top}]: the sigma-factor of {args.n_maps} maps is at most 3 x {args.n_maps}")
    need(np.isfinite(args.delta) and 0 <= args.delta < 1, f"--delta {args.delta} is outside [0, 1)")
    need(args.seed >= 0, f"--seed {args.seed} must be 0 or more")
    need(args.samples >= 1, f"--samples {args.samples} must be at least 1")
    need(args.pad >= 0, f"--pad {args.pad} must be at least 0")
    need(args.size <= 16384, f"--size {args.size} is above the largest allowed, 16384")
    need(args.size >= 2 * args.pad + 4,
         f"--size {args.size} is too small for --pad {args.pad}: it must be at least 2 x pad + 4 = {2 * args.pad + 4}")
    need(args.points >= 2, f"--points {args.points} must be at least 2")
    need(0 <= args.burn_in <= args.points - 2,
         f"--burn-in {args.burn_in} is outside 0..{args.points - 2} (--points {args.points} minus the 2 points a frame needs)")
    need(np.isfinite(args.fill_threshold) and 0 <= args.fill_threshold < 1,
         f"--fill-threshold {args.fill_threshold} is outside [0, 1)")
    need(np.isfinite(args.sigma_jitter) and 0 <= args.sigma_jitter < args.sigma,
         f"--sigma-jitter {args.sigma_jitter} is outside [0, sigma) = [0, {args.sigma})")
    need(0 <= args.png_compression <= 9, f"--png-compression {args.png_compression} is outside 0..9")
    need(args.probes >= 1, f"--probes {args.probes} must be at least 1")
    need(np.isfinite(args.probe_pass_rate) and 0 < args.probe_pass_rate <= 1,
         f"--probe-pass-rate {args.probe_pass_rate} is outside (0, 1]")
    need(args.max_base_tries >= 1, f"--max-base-tries {args.max_base_tries} must be at least 1")
    need(args.max_class_tries >= 1, f"--max-class-tries {args.max_class_tries} must be at least 1")
    need(args.workers >= 0, f"--workers {args.workers} must be 0 (all cores) or more")
    names = {f.name for f in fields(onepfrac_dataset.Config)}
    return onepfrac_dataset.Config(**{k: v for k, v in vars(args).items() if k in names})


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


def header_for(config: onepfrac_dataset.Config, png_bits: int, png_compression: int) -> dict:
    """Everything that decides the dataset's bytes (not --workers, which never changes them)."""
    return {
        "format": FORMAT,
        "dataset": "1p-frac",
        "generator": {"name": "onepfrac", "version": __version__},
        "arguments": {**config.to_dict(), "png_bits": png_bits, "png_compression": png_compression},
    }


def class_path(index: int, samples: int) -> str:
    width = max(5, len(str(samples - 1)))
    return f"{index:0{width}d}/{index:0{width}d}.png"


def differences(on_disk: dict, header: dict) -> list[str]:
    """What differs between a header on disk and this run's: options, then generator version."""
    old, new = on_disk.get("arguments", {}), header["arguments"]
    found = [f"--{k.replace('_', '-')} {old.get(k)} (on disk) vs {new.get(k)} (now)"
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
        self.file = open(path, "a+b")
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise UsageError(f"another process is generating {path.parent}; wait for it or stop it") from None
        self.file.seek(0)
        self.lines: list[dict] = []
        self.valid_bytes = 0
        for line in self.file.read().split(b"\n")[:-1]:  # the last piece has no newline: cut by a kill
            try:
                self.lines.append(json.loads(line))
            except json.JSONDecodeError:
                break
            self.valid_bytes += len(line) + 1

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
        self.file.seek(0, os.SEEK_END)
        self.file.write(json.dumps(record, sort_keys=True).encode() + b"\n")
        self.file.flush()

    def add(self, record: dict) -> None:
        self.records[record["index"]] = record
        self._append(record)

    def close(self) -> None:
        self.file.close()


def write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + TEMP_SUFFIX)
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, path)


def remove_temporaries(root: Path) -> None:
    for pattern in (f"*{TEMP_SUFFIX}", f"*/*{TEMP_SUFFIX}"):  # manifest.json.tmp and class PNGs
        for leftover in root.glob(pattern):
            leftover.unlink(missing_ok=True)


# Worker state, set once per process by _init_worker (inherited on fork).
_WORK: dict = {}


def _init_worker(config, base, png_bits, png_compression, root, ignore_sigint=True):
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cleans up
    fixed = None
    if config.orbit == "fixed":
        fixed = onepfrac_dataset.released_map_indices(base.system.probabilities, config.points)
    _WORK.update(config=config, base=base, png_bits=png_bits, png_compression=png_compression,
                 root=Path(root), fixed=fixed)


def _make_class(index: int) -> dict:
    config = _WORK["config"]
    result = onepfrac_dataset.render_class(config, _WORK["base"], index, _WORK["fixed"])
    data = png.encode_png(result.image, _WORK["png_bits"], _WORK["png_compression"])
    relative = class_path(index, config.samples)
    path = _WORK["root"] / relative
    path.parent.mkdir(exist_ok=True)
    write_atomic(path, data)
    return {
        "index": index,
        "file": relative,
        "coefficients": result.system.to_dict()["coefficients"],
        "attempts": result.attempts,
        "fill": result.fill,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def available_cores() -> int:
    """Cores this process may run on (respects affinity masks and container CPU sets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _pool_context():
    # fork shares the already-compiled numba kernels; elsewhere, spawn loads them from numba's cache
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def generate(config, base_savedir: Path, png_bits=8, png_compression=1, workers=0, progress=True) -> Path:
    """Generate (or finish) the dataset and return its folder. Raises UsageError or GenerationError."""
    check_destination(base_savedir)
    root = base_savedir / dataset_name(config)
    header = header_for(config, png_bits, png_compression)
    manifest_path = root / MANIFEST
    if manifest_path.exists():
        diff = differences(json.loads(manifest_path.read_text()), header)
        if diff:
            raise UsageError(f"{root} already holds a dataset made with other settings: " + "; ".join(diff))
        return root
    if root.exists() and not root.is_dir():
        raise UsageError(f"--base-savedir {base_savedir}: {root} exists and is a file")
    if root.exists() and any(root.iterdir()) and not (root / PARTIAL).exists():
        raise UsageError(f"{root} exists and is not a dataset being generated (no {PARTIAL}); "
                         f"move it away or choose another --base-savedir")

    log = None
    if (root / PARTIAL).exists():
        log = Progress(root / PARTIAL)  # locks; nothing written yet
    try:
        if log is not None:
            log.check(header)
        base = onepfrac_dataset.find_base(config)  # may raise; nothing is written before this succeeds
        if log is None:
            root.mkdir(parents=True, exist_ok=True)
            log = Progress(root / PARTIAL)
        log.start({**header, "base_system": base.to_dict()})
        remove_temporaries(root)
        todo = [i for i in range(config.samples)
                if not (i in log.records and (root / log.records[i]["file"]).exists())]
        workers = workers or available_cores()
        workers = min(workers, max(1, len(todo)))
        bar = tqdm(total=config.samples, initial=config.samples - len(todo), unit="img",
                   desc=root.name, disable=not progress, dynamic_ncols=True)
        context = (base, png_bits, png_compression, str(root))
        _init_worker(config, *context, ignore_sigint=False)  # also compiles the kernels once, before any fork
        try:
            if workers == 1:
                for index in todo:
                    log.add(_make_class(index))
                    bar.update()
            else:
                with _pool_context().Pool(workers, _init_worker, (config, *context)) as pool:
                    for record in pool.imap_unordered(_make_class, todo, chunksize=4):
                        log.add(record)
                        bar.update()
        finally:
            bar.close()
        manifest = {**header, "base_system": base.to_dict(),
                    "classes": [log.records[i] for i in range(config.samples)]}
        write_atomic(manifest_path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
        (root / PARTIAL).unlink()
    except KeyboardInterrupt:
        if root.is_dir():
            remove_temporaries(root)
        raise
    finally:
        if log is not None:
            log.close()
    return root


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    prog = "python -m onepfrac.generate"
    try:
        config = validate(args)
        root = generate(config, Path(args.base_savedir), args.png_bits, args.png_compression,
                        args.workers, progress=not args.no_progress)
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except onepfrac_dataset.GenerationError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to finish the dataset", file=sys.stderr)
        return 130
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
