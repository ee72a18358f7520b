"""Sharded generation and WebDataset shards: generation rates, bytes, projections, loading, memory.

    python benchmarks/bench_shards.py                      # every part, sized for a 2-core machine
    python benchmarks/bench_shards.py --parts rates        # rates, generation: bytes and projections
    python benchmarks/bench_shards.py --parts loading      # the CPU recipe's loader: shards vs folders
    python benchmarks/bench_shards.py --parts memory --memory-images 100000

rates: images/s end to end (render, PNG, write, manifest or index) into folders and into tar
shards, on 1 worker and on all cores, for FractalDB and VisualAtom at their released sizes;
bytes per image of each format. From two runs of each dataset that differ only in instances
per class, a cost per class (FractalDB's IFS search) and per image, on one core, give the
projected wall time of the 21k-class datasets (21,000 x 1,000 images) on one 64-core node and
as a 16-task array of such nodes, assuming every core renders at this machine's per-core rate
scaled by the parallel efficiency measured here on all cores.
loading: images/s that the trainer's loader delivers (train/configs/pretrain_cpu.yaml's
transform and batch, no model) from a folder decoded in memory, from PNG files read per
access, and from tar shards.
memory: peak resident memory (ru_maxrss of the process) of --finalize, of verify, and of a
one-process generation, on a tiny 1p-frac (32 px, 500 points) of --memory-images images.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from onepfrac.argparsing import Parser
from onepfrac.cores import available_cores  # noqa: E402

PYTHON = sys.executable
FULL = 21_000 * 1_000  # images of FractalDB-21k and VisualAtom-21k
NODE_CORES, ARRAY_TASKS = 64, 16
# At their released sizes; small class and instance counts so that a run takes seconds here.
DATASETS = ("fractaldb", "visualatom")


def generate(args: list[str], env=None) -> float:
    """Seconds of `python -m onepfrac.generate ARGS` (start-up included, as a user sees it)."""
    start = time.perf_counter()
    result = subprocess.run([PYTHON, "-m", "onepfrac.generate", *map(str, args), "--no-progress"],
                            cwd=REPO, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"generation failed: {result.stderr.strip()}")
    return time.perf_counter() - start


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def timed(name: str, fmt: str, classes: int, instances: int, workers: int, base: Path) -> tuple[float, int]:
    """(seconds, bytes on disk) of one generation in this process, whose kernels are already compiled."""
    from onepfrac import datasets, generate as folders

    module = datasets.load(name)
    config = datasets.make_config(module, {"classes": classes, "instances": instances})
    start = time.perf_counter()
    if fmt == "folder":
        root = folders.generate(config, base, workers=workers, progress=False, dataset=name)
    else:
        options = argparse.Namespace(format="wds", shard_size=100, base_savedir=str(base), png_bits=8,
                                     png_compression=1, finalize=False, num_shards=1, shard_index=0,
                                     workers=workers, no_progress=True)
        root, _ = folders.generate_sharded(module, config, name, options, environ={})
    seconds = time.perf_counter() - start
    size = folder_bytes(root)
    shutil.rmtree(base)
    return seconds, size


def rates(work: Path, classes: int, small: int, large: int) -> None:
    cores = available_cores()
    print(f"== generation rates ({cores} cores, in one process whose kernels are compiled)")
    for name in DATASETS:
        timed(name, "folder", 1, 1, 1, work / "warm")  # compiles the kernels (numba) once
        per = {}
        for fmt in ("folder", "wds"):
            for workers in sorted({1, cores}):
                for instances in (small, large) if workers == 1 else (large,):
                    seconds, size = timed(name, fmt, classes, instances, workers, work / f"{name}_{fmt}")
                    images = classes * instances
                    per[(fmt, workers, instances)] = seconds
                    print(f"{name:10s} {fmt:6s} {workers} worker(s) {classes} x {instances:3d}: {images / seconds:7.2f} "
                          f"images/s, {size / images / 1024:6.1f} KiB per image")
        for fmt in ("folder", "wds"):
            one_small, one_large = per[(fmt, 1, small)], per[(fmt, 1, large)]
            per_image = (one_large - one_small) / (classes * (large - small))
            per_class = max(0.0, one_small / classes - small * per_image)
            efficiency = min(1.0, (per[(fmt, 1, large)] / per[(fmt, cores, large)]) / cores)
            core_seconds = 21_000 * per_class + FULL * per_image
            ideal, node = core_seconds / NODE_CORES, core_seconds / (NODE_CORES * efficiency)
            print(f"{name} {fmt}: {per_image * 1000:.1f} ms per image and {per_class:.2f} s per class on one core; "
                  f"21k x 1000: {core_seconds / 3600:.0f} core-hours; one {NODE_CORES}-core node "
                  f"{ideal / 3600:.1f} h at linear scaling, {node / 3600:.1f} h at the {efficiency:.0%} measured here on "
                  f"{cores} cores; a {ARRAY_TASKS}-task array of such nodes {ideal / ARRAY_TASKS / 3600:.2f} h "
                  f"({node / ARRAY_TASKS / 3600:.2f} h)")


def loading(work: Path, steps: int) -> None:
    import torch

    from onepfrac.train import data, options, wds_data

    print("== trainer loading rate, train/configs/pretrain_cpu.yaml (L = 16 at the released 512 px)")
    common = ["--samples", 16, "--workers", available_cores()]
    generate([*common, "--base-savedir", work / "folder", "--num-shards", 1])
    generate([*common, "--base-savedir", work / "wds", "--format", "wds", "--shard-size", 4])
    (folder,), (shards,) = (work / "folder").iterdir(), (work / "wds").iterdir()
    args = options.parse_args(["pretrain", "-c", str(REPO / "train/configs/pretrain_cpu.yaml"), "--data-dir",
                               str(folder), "--data-pipeline", "loader"])
    transform = data.train_transform(args)
    torch.set_num_threads(1)
    for workers in sorted({0, available_cores()}):
        sources = {
            "folder in memory": data.open_folder(folder, "--data-dir", "always", progress=False),
            "folder from files": data.open_folder(folder, "--data-dir", "never", progress=False),
        }
        for name, dataset in sources.items():
            sampler = data.EpochBatchSampler(len(dataset), args.batch_size, 10**6, 0, repeats=args.repeats)
            loader = torch.utils.data.DataLoader(data.SeededSamples(dataset, transform, 0), batch_sampler=sampler,
                                                 num_workers=workers, prefetch_factor=4 if workers else None)
            print(f"{name:18s} {workers} worker(s): {rate(iter(loader), steps, args.batch_size):8.0f} images/s")
        batches, _ = wds_data.train_batches(wds_data.open_shards(shards), transform, args.batch_size, 10**6, 0,
                                            workers=workers, repeats=args.repeats)
        print(f"{'tar shards':18s} {workers} worker(s): {rate(batches, steps, args.batch_size):8.0f} images/s")


def rate(batches, steps: int, batch_size: int) -> float:
    next(batches)  # workers started, first batch made
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * batch_size / (time.perf_counter() - start)


def peak(command: list) -> tuple[float, float]:
    """(peak MiB of the largest process, seconds) of a command run in a fresh child."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "assert r.returncode in (0, 1), r.stderr; "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)")
    out = subprocess.run([PYTHON, "-c", probe, *map(str, command)], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[0]) / 1024, float(out[1])


def memory(work: Path, images: int) -> None:
    print(f"== peak memory on {images:,} images (1p-frac, 32 px, 500 points)")
    tiny = ["--samples", images, "--size", 32, "--points", 500, "--pad", 2, "--no-progress"]
    gen = [PYTHON, "-m", "onepfrac.generate", *tiny]
    workers = ["--workers", available_cores()]
    mib, seconds = peak([*gen, "--base-savedir", work / "one", *workers, "--num-shards", 1])
    print(f"one-process folder generation (records held, manifest.json at the end): {mib:7.0f} MiB, {seconds:6.1f} s")
    for k in range(4):
        mib, seconds = peak([*gen, "--base-savedir", work / "sharded", *workers, "--num-shards", 4, "--shard-index", k])
    print(f"one of 4 folder shards:                                 {mib:7.0f} MiB, {seconds:6.1f} s")
    mib, seconds = peak([*gen, "--base-savedir", work / "sharded", "--finalize"])
    print(f"--finalize of 4 folder shards (streamed):               {mib:7.0f} MiB, {seconds:6.1f} s")
    (one,), (sharded,) = (work / "one").iterdir(), (work / "sharded").iterdir()
    same = subprocess.run(["cmp", one / "manifest.json", sharded / "manifest.json"]).returncode == 0
    print(f"manifest.json: {(one / 'manifest.json').stat().st_size / 2**20:.1f} MiB, sharded == one-process: {same}")
    mib, seconds = peak([*gen, "--base-savedir", work / "wds", *workers, "--format", "wds", "--shard-size", 1000])
    print(f"wds generation, one process, shards of 1000:            {mib:7.0f} MiB, {seconds:6.1f} s")
    for k in range(4):
        peak([*gen, "--base-savedir", work / "wds4", *workers, "--format", "wds", "--shard-size", 1000,
              "--num-shards", 4, "--shard-index", k])
    mib, seconds = peak([*gen, "--base-savedir", work / "wds4", "--format", "wds", "--shard-size", 1000, "--finalize"])
    print(f"wds --finalize of 4 shards:                             {mib:7.0f} MiB, {seconds:6.1f} s")
    (wds,) = (work / "wds").iterdir()
    for name, root in (("folder", one), ("wds", wds)):
        for count in (1, available_cores()):
            mib, seconds = peak([PYTHON, "-m", "onepfrac.verify", root, "--workers", count, "--no-progress"])
            print(f"verify {name:6s} {count} worker(s) (largest process):       {mib:7.0f} MiB, {seconds:6.1f} s")
    print(f"this benchmark's own process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def main() -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--parts", nargs="+", choices=("rates", "loading", "memory"), default=["rates", "loading", "memory"],
                        help="which measurements to make")
    parser.add_argument("--classes", type=int, default=2, help="rates: classes of each run")
    parser.add_argument("--instances", type=int, nargs=2, default=[8, 32], metavar=("FEW", "MORE"),
                        help="rates: instances per class of the two runs")
    parser.add_argument("--steps", type=int, default=30, help="loading: batches timed")
    parser.add_argument("--memory-images", type=int, default=100_000, help="memory: images of the set measured")
    parser.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_shards_"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        for part in args.parts:
            (work / part).mkdir(parents=True, exist_ok=True)
            if part == "rates":
                rates(work / part, args.classes, *args.instances)
            elif part == "loading":
                loading(work / part, args.steps)
            else:
                memory(work / part, args.memory_images)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"cores": available_cores()}))


if __name__ == "__main__":
    main()
