"""Sharded generation (--num-shards/--shard-index, --finalize) and the WebDataset format (--format wds).

Image folders, N > 1 shards: every shard writes its classes' PNGs into the one dataset folder
and logs its finished classes, in class order, to _generation/shard-K-of-N.partial.jsonl
(renamed to .jsonl when the shard is complete); a killed shard resumes from its own log.
`--finalize` streams the N logs into manifest.json, the same bytes a one-process run writes,
and removes _generation/.

WebDataset (any N): the dataset is cut into tar shards of --shard-size samples in class-major
order (sample n is class n // I, instance n % I), `{dataset}-{j:06d}.tar`, each with its
records in `{dataset}-{j:06d}.jsonl` (first line: the tar's size and SHA-256; then, per class
the tar holds, its params, keys and PNG checksums). Each pair is written to temporary names
and renamed, the .jsonl last, so a .jsonl means a finished tar shard and a rerun skips it.
`--finalize` (automatic with one shard) writes index.json: the arguments, the shared record and
one line per tar shard. Which process made a tar shard never changes its bytes.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import signal
import sys
from collections import deque
from pathlib import Path

from tqdm import tqdm

from onepfrac import datasets, generate, shards, wds_writer
from onepfrac.cores import available_cores
from onepfrac.errors import UsageError, UserError

FORMATS = ("folder", "wds")
WORK = "_generation"  # bookkeeping of a sharded run, removed by --finalize
HEADER = "header.json"
INDEX = "index.json"
WDS_FORMAT = "onepfrac-wds/1"
DEFAULT_SHARD_SIZE = 1000
WINDOW = 8  # jobs in flight per worker: enough to hide a slow class, bounded so memory is too


# ---------------------------------------------------------------- options


def add_options(parser: argparse.ArgumentParser) -> None:
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


def wanted(args: argparse.Namespace, environ=os.environ) -> bool:
    """Whether this run needs this module (a plain one-process folder run does not)."""
    if args.format == "wds" or args.finalize:
        return True
    return shards.resolve(args.num_shards, args.shard_index, environ).sharded


# ---------------------------------------------------------------- shared pieces


def root_of(module, config, fmt: str, base_savedir: Path) -> Path:
    name = datasets.folder_name(module, config)
    return base_savedir / (name if fmt == "folder" else f"{name}_wds")


def full_header(module, config, dataset, fmt, png_bits, png_compression, shard_size) -> dict:
    header = generate.header_for(config, png_bits, png_compression, dataset)
    if fmt == "wds":
        header["format"] = WDS_FORMAT
        header["arguments"]["shard_size"] = shard_size
    return header


def check_header(work: Path, header: dict) -> None:
    """Refuse, before the (slow) shared preparation, a run whose options differ from header.json's."""
    path = work / HEADER
    if path.exists():
        diff = generate.differences(json.loads(path.read_text()), header)
        if diff:
            raise UsageError(f"{work.parent} is being generated with other settings: " + "; ".join(diff))


def claim_header(work: Path, header: dict) -> None:
    """Write header.json (header and shared record) if absent, else refuse another one (race-free: link)."""
    path = work / HEADER
    temporary = work / f"{HEADER}.{os.getpid()}{wds_writer.TEMP_SUFFIX}"
    temporary.write_text(json.dumps(header, sort_keys=True))
    try:
        os.link(temporary, path)  # fails if another shard wrote it first
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    on_disk = json.loads(path.read_text())
    diff = generate.differences(on_disk, header)
    if diff:
        raise UsageError(f"{work.parent} is being generated with other settings: " + "; ".join(diff))
    if on_disk != header:
        raise UsageError(f"{work.parent} was started with another base system (numpy or onepfrac changed?); "
                         f"move it away to start afresh")


def check_root(root: Path, marker: str, base_savedir: Path) -> None:
    """Refuse a folder that holds something other than this kind of run."""
    if root.exists() and not root.is_dir():
        raise UsageError(f"--base-savedir {base_savedir}: {root} exists and is a file")
    if (root / generate.PARTIAL).exists():
        raise UsageError(f"{root} is being generated by a one-process run ({generate.PARTIAL}); finish it with "
                         f"the same command without --num-shards, or move it away")
    if root.exists() and any(root.iterdir()) and not (root / WORK).exists() and not (root / marker).exists():
        raise UsageError(f"{root} exists and is not a dataset being generated in shards (no {WORK}/); "
                         f"move it away or choose another --base-savedir")


def prepared(module, config, dataset, header) -> dict:
    shared = datasets.prepare(module, config)
    clash = set(shared) & (set(header) | {"classes", "shards"})
    if clash:
        raise RuntimeError(f"{dataset}.prepare returned reserved manifest keys {sorted(clash)}")
    return {**header, **shared}


class Lock:
    """An exclusive lock on a file for as long as the shard runs: one process per shard."""

    def __init__(self, path: Path, what: str):
        self.file = open(path, "a+b")
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise UsageError(f"another process is generating {what}; wait for it or stop it") from None

    def close(self) -> None:
        self.file.close()


def run_jobs(function, jobs, workers: int, initializer, initargs, ordered: bool):
    """function(job) for each job, in a pool when workers > 1, with a bounded number in flight."""
    initializer(*initargs, ignore_sigint=False)
    if workers == 1:
        yield from map(function, jobs)
        return
    with generate._pool_context().Pool(workers, initializer, initargs) as pool:
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
    work = root / WORK
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
    lock = Lock(partial, f"shard {shard.index} of {root}")
    try:
        done, valid = read_log(partial, header, mine, root)
        with open(partial, "r+b") as log:
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
            bar = tqdm(total=len(mine), initial=done, unit="img" if instances == 1 else "class",
                       desc=f"{root.name} shard {shard.index}/{shard.count}", disable=not progress, dynamic_ncols=True)
            logged = 0
            try:
                for record in run_jobs(generate._make_class, todo, workers, generate._init_worker, initargs, True):
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
            (root / (datasets.file_name(module, config, index, i) + generate.TEMP_SUFFIX)).unlink(missing_ok=True)


def missing_message(root: Path, missing: list[int], count: int, fmt: str) -> str:
    return (f"--finalize: {root} is not complete: shard{'s' if len(missing) > 1 else ''} "
            f"{shards.ranges_text(missing)} of {count} {'are' if len(missing) > 1 else 'is'} not finished "
            f"(still running or killed: run each again with --num-shards {count} --shard-index K"
            f"{' --format wds' if fmt == 'wds' else ''})")


def finalize_folder(module, config, root: Path, header: dict, num_shards: int | None) -> Path:
    work = root / WORK
    classes, _ = datasets.counts(module, config)
    counts = existing_counts(work) if work.is_dir() else set()
    if num_shards is None:
        if len(counts) != 1:
            raise UsageError(f"--finalize: {root} holds shard logs for --num-shards {sorted(counts)}; "
                             f"say which with --num-shards" if counts else
                             f"--finalize: {root} has no shard logs ({WORK}/); generate it first")
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

    wds_writer.write_manifest(root / generate.MANIFEST, header, records())
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
    w = generate._WORK
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
            data = generate.encode_image(image, w["png_bits"], w["png_compression"])
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
    wds_writer.write_atomic(root / head["tar"], data)
    lines = [json.dumps(head, sort_keys=True)] + [json.dumps(r, sort_keys=True) for r in records]
    wds_writer.write_atomic(root / tar_name(dataset, index, ".jsonl"), ("\n".join(lines) + "\n").encode())
    return stop - start


def _init_tar_worker(dataset, config, shared, png_bits, png_compression, root, shard_size, ignore_sigint=True):
    generate._init_worker(dataset, config, shared, png_bits, png_compression, root, ignore_sigint)
    generate._WORK.update(shard_size=shard_size, dataset=dataset)


def tar_done(root: Path, dataset: str, index: int) -> bool:
    """A tar shard is finished when its .jsonl exists and names a tar of the recorded size."""
    try:
        with open(root / tar_name(dataset, index, ".jsonl"), "rb") as f:
            head = json.loads(f.readline())
        return (root / head["tar"]).stat().st_size == head["bytes"]
    except (OSError, ValueError, KeyError):
        return False


def generate_wds_shard(module, config, dataset, header, root, shard, workers, progress) -> bool:
    work = root / WORK
    classes, instances = datasets.counts(module, config)
    size = header["arguments"]["shard_size"]
    mine = shards.part(tar_count(classes * instances, size), shard.count, shard.index)
    lock = Lock(work / f"shard-{shard.index:05d}-of-{shard.count:05d}.lock", f"shard {shard.index} of {root}")
    try:
        for index in mine:  # leftovers of a kill: only this shard's, others may be writing theirs
            for suffix in (".tar", ".jsonl"):
                (root / (tar_name(dataset, index, suffix) + wds_writer.TEMP_SUFFIX)).unlink(missing_ok=True)
        todo = [j for j in mine if not tar_done(root, dataset, j)]
        shared = {k: v for k, v in header.items() if k not in ("format", "dataset", "generator", "arguments")}
        initargs = (dataset, config, shared, header["arguments"]["png_bits"], header["arguments"]["png_compression"],
                    str(root), size)
        workers = min(workers, max(1, len(todo)))
        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit="tar",
                   desc=f"{root.name} shard {shard.index}/{shard.count}", disable=not progress, dynamic_ncols=True)
        try:
            for _ in run_jobs(_make_tar, todo, workers, _init_tar_worker, initargs, False):
                bar.update()
        except KeyboardInterrupt:
            for index in todo:
                for suffix in (".tar", ".jsonl"):
                    (root / (tar_name(dataset, index, suffix) + wds_writer.TEMP_SUFFIX)).unlink(missing_ok=True)
            raise
        finally:
            bar.close()
    finally:
        lock.close()
    return True


def finalize_wds(module, config, dataset, root: Path, header: dict, num_shards: int | None) -> Path:
    work = root / WORK
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
    wds_writer.write_manifest(root / INDEX, index, iter(entries), key="shards")
    if work.is_dir():
        remove_work(work)
    return root


# ---------------------------------------------------------------- the command


def run(module, config, dataset: str, args: argparse.Namespace, environ=os.environ) -> tuple[Path, str]:
    """Generate this process's shard or finalize; (dataset folder, what to print)."""
    if args.format == "wds" and args.shard_size < 1:
        raise UsageError(f"--shard-size {args.shard_size} must be 1 or more")
    if args.format == "folder" and args.shard_size != DEFAULT_SHARD_SIZE:
        raise UsageError(f"--shard-size {args.shard_size} applies to --format wds only")
    base = Path(args.base_savedir)
    datasets.check(module, config)
    generate.check_destination(base)
    root = root_of(module, config, args.format, base)
    header = full_header(module, config, dataset, args.format, args.png_bits, args.png_compression, args.shard_size)
    final = root / (generate.MANIFEST if args.format == "folder" else INDEX)
    if final.exists():
        diff = generate.differences(json.loads(final.read_text()), header)
        if diff:
            raise UsageError(f"{root} already holds a dataset made with other settings: " + "; ".join(diff))
        return root, str(root)
    check_root(root, INDEX, base)
    if args.finalize:
        if not (root / WORK).is_dir() and args.format == "folder":
            raise UsageError(f"--finalize: {root} has no shard logs ({WORK}/); generate its shards first")
        if args.num_shards is not None and args.num_shards < 1:
            raise UsageError(f"--num-shards {args.num_shards} must be 1 or more")
        if (root / WORK).is_dir():
            check_header(root / WORK, header)
        full = prepared(module, config, dataset, header)
        if args.format == "folder":
            return finalize_folder(module, config, root, full, args.num_shards), str(root)
        return finalize_wds(module, config, dataset, root, full, args.num_shards), str(root)
    shard = shards.resolve(args.num_shards, args.shard_index, environ)
    workers = args.workers or available_cores()
    work = root / WORK
    if work.is_dir():
        check_header(work, header)  # a settings clash is refused before the shared preparation
    full = prepared(module, config, dataset, header)
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
    """The generator's command line with the sharding options (what generate.main does once merged)."""
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        dataset = generate.selected_dataset(argv)
        module = datasets.load(dataset)
        parser = generate.build_parser(dataset, module)
        if not any(a.dest == "num_shards" for a in parser._actions):
            add_options(parser)
        args, extra = parser.parse_known_args(argv)
        if extra:
            generate.refuse_extra(dataset, module, parser, extra)
        config = generate.validate(module, args)
        if not wanted(args, environ):
            root = generate.generate(config, Path(args.base_savedir), args.png_bits, args.png_compression,
                                     args.workers, progress=not args.no_progress, dataset=dataset)
            print(root)
            return 0
        _, line = run(module, config, dataset, args, environ)
    except UserError as error:
        print(f"{generate.PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{generate.PROG}: interrupted; run the same command again to finish this shard", file=sys.stderr)
        return 130
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
