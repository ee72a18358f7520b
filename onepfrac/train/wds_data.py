"""Pre-training from WebDataset tar shards (`python -m onepfrac.generate --format wds`).

The shards are read with the webdataset library. An epoch is a fixed number of samples,
the same as for an image folder of the same images: ceil(samples x repeats / world size)
per process, cut into whole batches (steps per epoch = that // batch size, the rest is
dropped). Who reads what in epoch e:
  - the tar shards are permuted by (seed, e); process r takes every world-size-th from r,
    DataLoader worker w of it every workers-th of those (split by node, then by worker);
  - each worker streams its tar shards through a shuffle buffer (--shuffle-buffer samples,
    seeded by (seed, e, r, w)) and yields its share of the epoch's batches; a worker that
    runs out of shards reads them again (re-permuted), one that needs fewer stops early;
  - so a process sees each sample of its shards once per epoch when they number at least its
    workers, and every sample is seen once when the shards' samples divide evenly between the
    processes (full shards, a shard count that is a multiple of the world size); otherwise a
    few samples repeat or are skipped in an epoch, and across epochs they even out.
With fewer tar shards than processes (or workers) every process (worker) reads all of its
list, with its own shuffle. The samples of epoch e depend on (seed, e, world size, workers),
never on earlier epochs, so a run resumed at an epoch boundary reads what an uninterrupted
one would. Each sample's augmentation is seeded from (seed, e, r, w, position), as in
onepfrac.train.data.SeededSamples.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from onepfrac import extras
from onepfrac.train.data import DataError, sample_seed, seed_everything

INDEX = "index.json"
FORMAT = "onepfrac-wds/1"
DEFAULT_SHUFFLE_BUFFER = 1000


class ShardSet:
    """A WebDataset folder's index: the tar shards, their sample counts, the classes."""

    def __init__(self, root: Path, shards: list[tuple[str, int]], classes: int, dataset: str):
        self.root = Path(root)
        self.shards = shards  # (tar path, samples), in index order
        self.classes = [f"{index:05d}" for index in range(classes)]
        self.dataset = dataset
        self.samples = sum(count for _, count in shards)

    def __len__(self) -> int:
        return self.samples


def open_shards(root, option: str = "--data-dir") -> ShardSet:
    """The ShardSet of a folder written by --format wds; DataError naming `option` otherwise."""
    root = Path(root)
    path = root / INDEX
    if not root.is_dir():
        raise DataError(f"{option}: {str(root)!r} is not a directory")
    if not path.exists():
        hint = (f" (it has {len(list(root.glob('*.tar')))} .tar files: an unfinished generation? "
                f"run the generator again with --finalize)") if any(root.glob("*.tar")) else ""
        raise DataError(f"{option}: {str(root)!r} has no {INDEX}: --dataset wds reads a folder written by "
                        f"python -m onepfrac.generate --format wds{hint}")
    try:
        index = json.loads(path.read_text())
        if index.get("format") != FORMAT:
            raise ValueError(f"format {index.get('format')!r}, expected {FORMAT!r}")
        shards = [(str(root / entry["tar"]), int(entry["samples"])) for entry in index["shards"]]
        classes = int(index["classes"])
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{option}: {path} is not a onepfrac WebDataset index ({error})") from None
    missing = [tar for tar, _ in shards if not Path(tar).exists()]
    if missing:
        raise DataError(f"{option}: {len(missing)} tar shard(s) listed in {path} are missing, "
                        f"the first {missing[0]}")
    if not shards:
        raise DataError(f"{option}: {path} lists no tar shards")
    return ShardSet(root, shards, classes, index.get("dataset", ""))


def steps_per_epoch(samples: int, batch_size: int, world_size: int, repeats: int = 1) -> int:
    """EpochBatchSampler's count: ceil(samples x repeats / world) per process, in whole batches."""
    return -(-samples * repeats // world_size) // batch_size


def split(items: list, count: int, index: int) -> list:
    """Every count-th item from index; all items when there are fewer than count."""
    return items[index::count] if len(items) >= count else list(items)


def share(wanted: int, sizes: list[int]) -> list[int]:
    """`wanted` samples shared in proportion to `sizes` (largest remainders first), summing to `wanted`:
    a worker whose shards hold more samples yields more, so none skips or repeats samples needlessly."""
    total = sum(sizes)
    exact = [wanted * size / total for size in sizes]
    counts = [int(x) for x in exact]
    for position in sorted(range(len(sizes)), key=lambda i: (counts[i] - exact[i], i))[:wanted - sum(counts)]:
        counts[position] += 1
    return counts


def rebatch(chunks, batch_size: int):
    """Whole batches from the workers' chunks (each worker's last one is short): a full chunk passes
    as it is, short ones are joined in arrival order."""
    images, labels, held = [], [], 0
    for chunk_images, chunk_labels in chunks:
        if held == 0 and len(chunk_labels) == batch_size:
            yield chunk_images, chunk_labels
            continue
        images.append(chunk_images)
        labels.append(chunk_labels)
        held += len(chunk_labels)
        while held >= batch_size:
            joined_images, joined_labels = torch.cat(images), torch.cat(labels)
            yield joined_images[:batch_size], joined_labels[:batch_size]
            images, labels = [joined_images[batch_size:]], [joined_labels[batch_size:]]
            held -= batch_size
            if held == 0:
                images, labels = [], []


def epoch_shards(shard_set: ShardSet, seed: int, epoch: int, rank: int, world_size: int) -> list[tuple[str, int]]:
    """This process's tar shards in epoch `epoch`: a (seed, epoch) permutation, split by node."""
    order = list(range(len(shard_set.shards)))
    random.Random(f"{seed}/{epoch}").shuffle(order)
    return [shard_set.shards[i] for i in split(order, world_size, rank)]


def decode(sample: dict) -> tuple[Image.Image, int]:
    """(RGB image, class) of a WebDataset sample, as the image-folder datasets give them."""
    with Image.open(io.BytesIO(sample["png"])) as image:
        return image.convert("RGB"), int(sample["cls"])


class ShardStream(torch.utils.data.IterableDataset):
    """One epoch of one process: each DataLoader worker yields its share of whole batches."""

    def __init__(self, shard_set: ShardSet, transform, batch_size: int, steps: int, seed: int,
                 rank: int = 0, world_size: int = 1, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER):
        extras.require("webdataset", "wds", "--dataset wds")  # in the main process, not in a worker
        self.shard_set, self.transform = shard_set, transform
        self.batch_size, self.steps, self.seed = batch_size, steps, seed
        self.rank, self.world_size, self.shuffle_buffer = rank, world_size, shuffle_buffer
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def worker_plan(self, worker: int, workers: int) -> tuple[list[tuple[str, int]], int]:
        """(this worker's tar shards, how many samples it yields) in the current epoch."""
        rank_shards = epoch_shards(self.shard_set, self.seed, self.epoch, self.rank, self.world_size)
        parts = [split(rank_shards, workers, w) for w in range(workers)]
        return parts[worker], share(self.steps * self.batch_size, [sum(n for _, n in p) for p in parts])[worker]

    def raw(self, worker: int, workers: int):
        """This worker's samples of the epoch, undecoded, from the shuffle buffer."""
        import webdataset as wds

        shards, wanted = self.worker_plan(worker, workers)
        rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{worker}")
        order, count = list(shards), 0
        while True:  # a worker that needs more samples than its shards hold reads them again
            # one pass at a time through the buffer, so a pass ends before the next begins
            stream = wds.tarfile_samples({"url": tar} for tar, _ in order)
            if self.shuffle_buffer > 1:
                stream = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(stream)
            for sample in stream:
                if count == wanted:
                    return
                count += 1
                yield sample
            if count == wanted:
                return
            rng.shuffle(order)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for position, sample in enumerate(self.raw(worker, workers)):
            image, label = decode(sample)
            if info is None:  # the sample's seeds must not leak into the training step's randomness
                saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
            seed_everything(sample_seed(self.seed, self.epoch, ((self.rank * workers + worker) << 32) + position))
            item = self.transform(image), label
            if info is None:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])
            yield item


def train_batches(shard_set: ShardSet, transform, batch_size: int, epochs: int, seed: int, rank: int = 0,
                  world_size: int = 1, start_epoch: int = 0, workers: int = 0, repeats: int = 1,
                  shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, pin_memory: bool = False):
    """(iterator of (images, targets) over epochs [start_epoch, epochs), steps per epoch)."""
    steps = steps_per_epoch(len(shard_set), batch_size, world_size, repeats)
    if steps == 0:
        raise DataError(f"--batch-size {batch_size} x {world_size} process(es) is more than the "
                        f"{len(shard_set) * repeats} images of one epoch: lower --batch-size or raise --repeats")
    stream = ShardStream(shard_set, transform, batch_size, steps, seed, rank, world_size, shuffle_buffer)
    workers = min(workers, len(shard_set.shards))  # a worker without a shard of its own would repeat others

    def batches():
        for epoch in range(start_epoch, epochs):
            stream.set_epoch(epoch)  # copied into the workers, which start afresh each epoch
            loader = torch.utils.data.DataLoader(stream, batch_size=batch_size, num_workers=workers,
                                                 pin_memory=pin_memory, prefetch_factor=4 if workers else None)
            yield from rebatch(loader, batch_size)

    return batches(), steps
