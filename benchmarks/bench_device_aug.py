"""Augmented images per second: DeviceAugment on a batch against timm's DataLoader transform.

Two settings: the CPU protocol (32 px from 64-px sources) and the released one (224 px from
512-px gray sources), batch 64 each, with the released recipe's augmentation (mean = std = 0.5,
RandAugment rand-m9-mstd0.5-inc1, vflip 0.5, random erasing). timm's figure is one process on
one thread (a DataLoader worker's share); multiply by the worker count for a loader's rate.

    python benchmarks/bench_device_aug.py [--device cuda] [--threads 1] [--batches 5] [--batch 64]
    python benchmarks/bench_device_aug.py --device cuda --batch 1024 --profile   # where the time goes
    python benchmarks/bench_device_aug.py --count-ops    # kernels a batch launches; runs without a GPU

--count-ops runs the released setting on the meta device (shapes, no data), so it needs no GPU:
every op that reaches the device is counted, and any value read back from it would fail there.
"""

from __future__ import annotations

import collections
import time

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform

from onepfrac.argparsing import Parser
from onepfrac.train.device_data import DeviceAugment

RECIPE = dict(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bicubic", hflip=0.5, vflip=0.5,
              auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.4, re_prob=0.5, re_mode="pixel",
              re_count=1, mean=(0.5,) * 3, std=(0.5,) * 3)


def fractal_like(count, size, seed=0) -> np.ndarray:
    """Gray images of sparse 3 x 3 stamps of value 127, like 1p-frac renderings."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, size, size), dtype=np.uint8)
    for image in images:
        points = rng.integers(1, size - 4, (size * size // 40, 2))
        for dy in range(3):
            for dx in range(3):
                image[points[:, 0] + dy, points[:, 1] + dx] = 127 * rng.integers(0, 2, len(points))
    return images


def device_rate(images, img_size, batch, batches, device) -> float:
    augment = DeviceAugment(img_size, **RECIPE).to(device)
    data = torch.from_numpy(images)[:, None].to(device)
    generator = torch.Generator().manual_seed(0)  # parameters are drawn on the host
    index = torch.randint(0, len(data), (batches + 1, batch), generator=generator).to(device)
    augment(data, generator, index=index[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(1, batches + 1):
        augment(data, generator, index=index[step])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch / (time.perf_counter() - start)


def count_ops(batches=(64, 256, 1024), img_size=224, source=512) -> None:
    """Device kernels (ops that are not views) and host ops per batch, with the host's planning time."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            on_device = any(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in tree_leaves(out))
            self.counts["view" if func.is_view else ("device" if on_device else "host")] += 1
            return out

    augment = DeviceAugment(img_size, **RECIPE).to("meta")
    data = torch.empty((1000, 1, source, source), dtype=torch.uint8, device="meta")
    generator = torch.Generator().manual_seed(0)
    for batch in batches:
        index = torch.randint(0, len(data), (batch,), generator=generator).to("meta")
        with Count() as counter:
            augment(data, generator, index=index)
        start = time.perf_counter()
        for _ in range(20):
            augment.plan(batch, source, source, generator)
        planning = (time.perf_counter() - start) / 20
        print(f"batch {batch:5d}: {counter.counts['device']} device kernels, {counter.counts['view']} views, "
              f"{counter.counts['host']} host ops, host planning {planning * 1e3:.2f} ms, "
              f"{sum(a.nbytes for a in augment.plan(batch, source, source, generator).packet.arrays.values())} "
              "bytes in one copy, 0 reads back")


def timm_rate(images, img_size, count) -> float:
    transform = create_transform(img_size, is_training=True, **RECIPE)
    pils = [Image.fromarray(image).convert("RGB") for image in images]  # ImageFolder's loader
    transform(pils[0])
    start = time.perf_counter()
    for i in range(count):
        transform(pils[i % len(pils)])
    return count / (time.perf_counter() - start)


def main():
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--batches", type=int, default=5, help="batches timed")
    parser.add_argument("--batch", type=int, default=64, help="images per batch")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's top ops for the released setting")
    parser.add_argument("--count-ops", action="store_true",
                        help="only count the kernels and host work of one batch (meta device, no GPU needed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.count_ops:
        count_ops()
        return
    device = torch.device(args.device)
    print(f"device {device}, torch threads {args.threads}, batch {args.batch}")
    for name, source, img_size in [("CPU protocol", 64, 32), ("released", 512, 224)]:
        images = fractal_like(256 if source == 64 else 64, source)
        ours = device_rate(images, img_size, args.batch, args.batches, device)
        theirs = timm_rate(images, img_size, args.batch * (args.batches if source == 64 else 2))
        print(f"{name:13s} {source:3d} px gray -> {img_size:3d}: DeviceAugment {ours:9.0f} img/s   "
              f"timm transform (1 thread) {theirs:7.0f} img/s   ratio {ours / theirs:5.1f}")
    if args.profile:
        profile(fractal_like(64, 512), 224, args.batch, device)


def profile(images, img_size, batch, device, rows=15):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    augment = DeviceAugment(img_size, **RECIPE).to(device)
    data = torch.from_numpy(images)[:, None].to(device)
    generator = torch.Generator().manual_seed(0)
    index = torch.randint(0, len(data), (batch,), generator=generator).to(device)
    augment(data, generator, index=index)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(3):
            augment(data, generator, index=index)
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows))


if __name__ == "__main__":
    main()
