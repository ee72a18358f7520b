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
import fcntl
import hashlib
import json
import multiprocessing
import os
import signal
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from onepfrac import __version__, datasets, ifs, png, render
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


PROG = "python -m onepfrac.generate"
# What a user who reaches for another dataset's count option most likely meant.
COUNT_HINTS = {("1p-frac", "--classes"): "1p-frac counts its classes with --samples",
               ("1p-frac", "--instances"): "1p-frac has one image per class",
               ("ofdb", "--instances"): "2D-OFDB has one image per category",
               ("*", "--samples"): "--samples is 1p-frac's; this dataset counts classes with --classes"}


def _new_parser(dataset: str) -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=list(datasets.DATASETS), default=dataset,
                   help="which generator; `--dataset NAME --help` shows its options (default %(default)s)")
    return p


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--png-bits", type=int, choices=png.BITS, default=8, help="8-bit grayscale or 1-bit palette PNGs, same pixels (default %(default)s)")
    p.add_argument("--png-compression", type=int, default=1, help="zlib level 0..9 (default %(default)s)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=0, help="processes; 0 = all cores (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser(dataset: str = datasets.DEFAULT, module=None) -> argparse.ArgumentParser:
    """The options of one dataset: 1p-frac's as written below, the others' from their Config fields."""
    if dataset != datasets.DEFAULT:
        return _dataset_parser(dataset, module or datasets.load(dataset))
    d = onepfrac_dataset.Config()
    p = _new_parser(dataset)
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
    _add_output_options(p)
    p.add_argument("--probes", type=int, default=d.probes, help="perturbations drawn to judge a base system (default %(default)s)")
    p.add_argument("--probe-pass-rate", type=float, default=d.probe_pass_rate,
                   help="fraction of the probes that must pass the fill test for a base to be used, in (0, 1] (default %(default)s)")
    p.add_argument("--max-base-tries", type=int, default=d.max_base_tries, help="base systems to try before giving up (default %(default)s)")
    p.add_argument("--max-class-tries", type=int, default=d.max_class_tries, help="perturbations to try per class before giving up (default %(default)s)")
    _add_run_options(p)
    return p


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _dataset_parser(dataset: str, module) -> argparse.ArgumentParser:
    """Options from the module's Config: `--field-name`, typed by the default, CHOICES and HELP if given."""
    p = _new_parser(dataset)
    p.add_argument("--base-savedir", default="./data", help="folder that receives the dataset folder (default %(default)s)")
    choices, helps = getattr(module, "CHOICES", {}), getattr(module, "HELP", {})
    for field in fields(module.Config):
        if field.default is MISSING or field.name.startswith("_"):
            continue  # not settable from the command line
        default = field.default
        kind = _boolean if isinstance(default, bool) else type(default) if isinstance(default, (int, float, str)) else str
        text = helps.get(field.name, "seed of everything random" if field.name == "seed" else "")
        p.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=kind, default=default,
                       choices=choices.get(field.name), help=f"{text} (default %(default)s)".strip())
    _add_output_options(p)
    _add_run_options(p)
    return p


def options_of(parser: argparse.ArgumentParser) -> list[str]:
    return [a.option_strings[-1] for a in parser._actions if a.option_strings and a.option_strings[-1] != "--help"]


def refuse_extra(dataset: str, parser: argparse.ArgumentParser, extra: list[str]) -> None:
    """Options that belong to no option of this dataset: name the first, its value and what is allowed."""
    option, _, value = extra[0].partition("=")
    if not value and len(extra) > 1 and not extra[1].startswith("--"):
        value = extra[1]
    if not option.startswith("-"):
        raise UsageError(f"unexpected argument {option!r}: every setting is an --option")
    hint = COUNT_HINTS.get((dataset, option)) or (COUNT_HINTS.get(("*", option)) if dataset != datasets.DEFAULT else None)
    given = f"{option} {value}" if value else option
    hint = f" ({hint})" if hint else ""
    raise UsageError(f"{given} does not apply to --dataset {dataset}{hint}; its options are {', '.join(options_of(parser))}")


def selected_dataset(argv: list[str]) -> str:
    """The --dataset value, read before the dataset's own options are known."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--dataset", default=datasets.DEFAULT)
    known, _ = pre.parse_known_args(argv)
    return known.dataset


def dataset_name(config: onepfrac_dataset.Config) -> str:
    """1p-frac's folder name, as the released generator names it."""
    return datasets.folder_name(datasets.load(datasets.DEFAULT), config)


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


def validate_dataset(module, args: argparse.Namespace):
    """The chosen module's Config from the options; raise UsageError naming the first bad one."""
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed} must be 0 or more")
    if not 0 <= args.png_compression <= 9:
        raise UsageError(f"--png-compression {args.png_compression} is outside 0..9")
    if args.workers < 0:
        raise UsageError(f"--workers {args.workers} must be 0 (all cores) or more")
    names = {f.name for f in fields(module.Config)}
    try:
        config = module.Config(**{k: v for k, v in vars(args).items() if k in names})
        if hasattr(module, "check"):
            module.check(config)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return config


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


def class_path(index: int, samples: int) -> str:
    """1p-frac's file of class `index`: `{index}/{index}.png`, zero-padded to sort numerically."""
    module = datasets.load(datasets.DEFAULT)
    return datasets.file_name(module, onepfrac_dataset.Config(samples=samples), index, 0)


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


def _init_worker(dataset, config, shared, png_bits, png_compression, root, ignore_sigint=True):
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cleans up
    _WORK.update(module=datasets.load(dataset), config=config, shared=shared, png_bits=png_bits,
                 png_compression=png_compression, root=Path(root))


def _make_class(index: int) -> dict:
    """Render class `index`, write each instance as soon as it is drawn, return its manifest record."""
    module, config = _WORK["module"], _WORK["config"]
    params, images = datasets.class_images(module, config, _WORK["shared"], index)
    files, checksums = [], []
    for instance, image in enumerate(images):
        data = encode_image(image, _WORK["png_bits"], _WORK["png_compression"])
        relative = datasets.file_name(module, config, index, instance)
        path = _WORK["root"] / relative
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, data)
        files.append(relative)
        checksums.append(hashlib.sha256(data).hexdigest())
    return datasets.class_record(module, index, params, files, checksums)


def available_cores() -> int:
    """Cores this process may run on (respects affinity masks and container CPU sets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _pool_context():
    # fork shares the already-compiled numba kernels; elsewhere, spawn loads them from numba's cache
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def generate(config, base_savedir: Path, png_bits=8, png_compression=1, workers=0, progress=True,
             dataset: str = datasets.DEFAULT) -> Path:
    """Generate (or finish) the dataset and return its folder. Raises UsageError or GenerationError."""
    module = datasets.load(dataset)
    check_destination(base_savedir)
    root = base_savedir / datasets.folder_name(module, config)
    classes, instances = datasets.counts(module, config)
    header = header_for(config, png_bits, png_compression, dataset)
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
        shared = module.prepare(config)  # may raise; nothing is written before this succeeds
        clash = set(shared) & (set(header) | {"classes"})
        if clash:
            raise RuntimeError(f"{dataset}.prepare returned reserved manifest keys {sorted(clash)}")
        if log is None:
            root.mkdir(parents=True, exist_ok=True)
            log = Progress(root / PARTIAL)
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
        try:
            if workers == 1:
                for index in todo:
                    log.add(_make_class(index))
                    bar.update()
            else:
                # fork shares the kernels compiled above; 1p-frac's classes are tiny, so hand them out in fours
                chunksize = 4 if instances == 1 else 1
                with _pool_context().Pool(workers, _init_worker, (dataset, config, *context)) as pool:
                    for record in pool.imap_unordered(_make_class, todo, chunksize=chunksize):
                        log.add(record)
                        bar.update()
        finally:
            bar.close()
        manifest = {**header, **shared, "classes": [log.records[i] for i in range(classes)]}
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
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        dataset = selected_dataset(argv)
        module = datasets.load(dataset)
        parser = build_parser(dataset, module)
        args, extra = parser.parse_known_args(argv)
        if extra:
            refuse_extra(dataset, parser, extra)
        if args.dataset != dataset:  # an abbreviation (--data X) escapes the first look at --dataset
            raise UsageError(f"--dataset {args.dataset}: write --dataset in full, it chooses the other options")
        config = validate(args) if dataset == datasets.DEFAULT else validate_dataset(module, args)
        root = generate(config, Path(args.base_savedir), args.png_bits, args.png_compression,
                        args.workers, progress=not args.no_progress, dataset=dataset)
    except (UsageError, datasets.UnknownDataset) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except datasets.GenerationError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the same command again to finish the dataset", file=sys.stderr)
        return 130
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
