"""Datasets, samplers and transforms for the trainer.

Image folders (ImageFolder layout, labels from sorted folder names) and CIFAR in torchvision's
format are decoded once into memory when they fit; samples are drawn by an epoch-spanning
batch sampler with DistributedSampler's semantics, and each sample's augmentation is seeded by
(seed, epoch, index), so a run does not depend on the number of DataLoader workers and a
resumed run sees exactly the samples an uninterrupted run would.

What counts in a folder, as torchvision's ImageFolder counts it, plus two rules of its own:
- classes are the sub-folders of the root, sorted by name; samples are the files under a class
  folder (sub-folders included) whose names end in one of IMG_EXTENSIONS (any case); other
  files (notes, CSVs, .npy) are ignored, not decoded;
- hidden entries (names starting with '.': `.ipynb_checkpoints/`, `.DS_Store`, macOS's `._x.png`)
  are never classes nor samples;
- a class folder without images is refused, naming it, as ImageFolder refuses it;
- a folder written by `python -m onepfrac.generate` is checked against its manifest.json (class
  and file counts and names), and one whose generation was interrupted (manifest.partial.jsonl,
  no manifest.json) is refused with the command that finishes it.
An image that cannot be decoded is reported by its path, whichever process decodes it.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from onepfrac.errors import UserError
from onepfrac.progress import progress as progress_bar
from onepfrac.train.checkpoint import short_message
from onepfrac.train.options import DATASETS

# What PIL raises for a file that is not, or no longer, a whole image (truncated, junk, a bomb).
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error,
              Image.DecompressionBombError)


class DataError(UserError, ValueError):
    """A dataset is missing, empty or does not match the options; the message says which."""

    def __init__(self, message: str = ""):
        # DataLoader re-raises a worker's error as type(its traceback text): keep its last line.
        if isinstance(message, str) and "DataLoader worker" in message and "Traceback" in message:
            message = message.rstrip().splitlines()[-1].partition(": ")[2] or message
        super().__init__(message)


def _unreadable(path, error: BaseException) -> DataError:
    reason = short_message(error).replace(f" {str(path)!r}", "")  # PIL repeats the path
    return DataError(f"{path}: not a readable image ({reason}); remove or replace the file")


def load_rgb(path: str) -> Image.Image:
    """The file as an RGB PIL image, as ImageFolder's loader gives it; DataError naming it if it
    cannot be decoded."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except UNREADABLE as error:
        raise _unreadable(path, error) from None


class ArrayDataset(torch.utils.data.Dataset):
    """Decoded images in memory: uint8 (N, H, W) gray or (N, H, W, 3) colour, plus labels.

    Items are RGB PIL images, as torchvision's ImageFolder loader gives them (gray becomes
    three equal channels), so timm's transforms behave as on files.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str]):
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return Image.fromarray(self.images[index]).convert("RGB"), int(self.labels[index])

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes)


class FileDataset(torch.utils.data.Dataset):
    """ImageFolder read from disk at every access, for folders too large to keep in memory."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str]):
        self.samples = samples
        self.labels = np.array([label for _, label in samples], dtype=np.int64)
        self.classes = classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return load_rgb(path), label


def _hidden(name: str) -> bool:
    return name.startswith(".")


def scan_folder(root: Path, option: str) -> tuple[list[tuple[str, int]], list[str]]:
    """Files and classes of an ImageFolder-layout directory, with errors that name `option`
    (what counts: the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{option}: {str(root)!r} is not a directory")
    check_unfinished(root, option)
    with os.scandir(root) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not _hidden(e.name))
    if not classes:
        raise DataError(f"{option}: {str(root)!r} has no class folders (expected "
                        f"{root}/<class>/<image>.png, as torchvision's ImageFolder; hidden "
                        "folders such as .ipynb_checkpoints are not classes)")
    samples, empty = [], []
    for index, name in enumerate(classes):
        found = _class_images(root / name)
        if not found:
            empty.append(name)
        samples.extend((path, index) for path in found)
    extensions = f"{', '.join(IMG_EXTENSIONS[:4])}, ..."
    if len(empty) == len(classes):
        raise DataError(f"{option}: {str(root)!r} has {len(classes)} class folder(s) but no "
                        f"images ({extensions})")
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise DataError(f"{option}: class folder {str(root / empty[0])!r}{more} has no images "
                        f"({extensions}; other files and hidden ones are ignored): add images "
                        "or remove the folder")
    check_manifest(root, option, samples, classes)
    return samples, classes


def _class_images(folder: Path) -> list[str]:
    """Image files under a class folder, in ImageFolder's order (sorted walk, sorted names)."""
    walked = []
    for where, folders, files in os.walk(folder, followlinks=True):
        folders[:] = [name for name in folders if not _hidden(name)]  # never descend into them
        walked.append((where, files))
    return [os.path.join(where, name) for where, files in sorted(walked) for name in sorted(files)
            if not _hidden(name) and name.lower().endswith(IMG_EXTENSIONS)]


# ---------------------------------------------------------------- datasets of the generator

# The names onepfrac.generate writes (MANIFEST, PARTIAL), kept here so that reading a folder
# does not import the generator and OpenCV.
MANIFEST = "manifest.json"
PARTIAL = "manifest.partial.jsonl"


def check_unfinished(root: Path, option: str) -> None:
    """Refuse a dataset whose generation was interrupted: some classes are missing."""
    partial = root / PARTIAL
    if (root / MANIFEST).exists() or not partial.exists():
        return
    try:
        lines = partial.read_bytes().split(b"\n")
        header = json.loads(lines[0])
        done = sum(1 for line in lines[1:] if line.strip())
    except (OSError, ValueError):
        header, done = None, None
    command = generate_command(root, header) if isinstance(header, dict) else None
    recorded = f" ({done} class(es) written so far)" if done is not None else ""
    how = (f"finish it by running the same command again: {command}" if command
           else "finish it by running the same `python -m onepfrac.generate` command again")
    raise DataError(f"{option}: {str(root)!r} is an unfinished dataset{recorded}: its generation "
                    f"was interrupted ({PARTIAL} and no {MANIFEST}); {how}")


def generate_command(root: Path, header: dict) -> str | None:
    """The generator's command line that wrote (and finishes) `root`, from the arguments its
    partial manifest records; options at their defaults are left out."""
    arguments = header.get("arguments")
    if not isinstance(arguments, dict):
        return None
    from onepfrac import datasets
    from onepfrac.datasets.interface import flag

    dataset = header.get("dataset", datasets.DEFAULT)
    defaults = {"png_bits": 8, "png_compression": 1}
    try:
        defaults.update({f.name: f.default for f in datasets.options(datasets.load(dataset))})
    except (ImportError, UserError):
        defaults = {}  # an unknown dataset: spell out every argument
    words = ["python -m onepfrac.generate"]
    if dataset != datasets.DEFAULT:
        words.append(f"--dataset {shlex.quote(str(dataset))}")
    words.append(f"--base-savedir {shlex.quote(str(root.parent))}")
    words += [f"{flag(key)} {shlex.quote(str(value))}" for key, value in sorted(arguments.items())
              if key not in defaults or defaults[key] != value]
    return " ".join(words)


def check_manifest(root: Path, option: str, samples: list[tuple[str, int]],
                   classes: list[str]) -> None:
    """A generated folder must hold what its manifest.json lists: no class or file lost or added."""
    path = root / MANIFEST
    if not path.exists():
        return  # real data (CIFAR as images, ImageNet): nothing to check against
    try:
        records = json.loads(path.read_text())["classes"]
        from onepfrac.datasets import record_files

        listed = sorted(f for record in records for f in record_files(record))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{option}: {path} is not a readable manifest ({short_message(error)}); "
                        "regenerate the dataset or remove the file to train on the folder as "
                        "it is") from None
    # String slicing, not Path objects: FractalDB-1k lists a million files.
    listed_classes = sorted({f.split("/", 1)[0] for f in listed})
    prefix = len(os.path.join(str(root), ""))
    on_disk = sorted(p[prefix:].replace(os.sep, "/") for p, _ in samples)
    fix = "restore the folder or regenerate it with `python -m onepfrac.generate`"
    if listed_classes != classes:
        gone = sorted(set(listed_classes) - set(classes))
        extra = sorted(set(classes) - set(listed_classes))
        first = f"first missing: {gone[0]!r}" if gone else f"first not listed: {extra[0]!r}"
        raise DataError(f"{option}: {str(root)!r} has {len(classes)} class folder(s) but its "
                        f"{MANIFEST} lists {len(listed_classes)} ({first}); {fix}")
    if listed != on_disk:
        gone = sorted(set(listed) - set(on_disk))
        extra = sorted(set(on_disk) - set(listed))
        first = f"first missing: {gone[0]}" if gone else f"first not listed: {extra[0]}"
        raise DataError(f"{option}: {str(root)!r} has {len(on_disk)} image(s) but its "
                        f"{MANIFEST} lists {len(listed)} ({first}); {fix}")


def dataset_classes(kind: str, root: Path, option: str) -> list[str]:
    """The classes a dataset has, from its listing alone (nothing decoded)."""
    if kind == "folder":
        return scan_folder(root, option)[1]
    return open_dataset(kind, root, False, option, "always", 0.0, False).classes


def _decode(path: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if image.mode in ("L", "RGB"):
                return np.asarray(image)
            if image.mode in ("1", "I", "I;16", "F", "LA"):
                return np.asarray(image.convert("L"))
            array = np.asarray(image.convert("RGB"))
    except UNREADABLE as error:
        raise _unreadable(path, error) from None
    # A palette image with gray entries (the generator's --png-bits 1) stays one channel.
    if (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all():
        return np.ascontiguousarray(array[..., 0])
    return array


def decode_all(samples: list[tuple[str, int]], progress: bool) -> np.ndarray:
    """Decode every image once into one uint8 array (all images must share their shape)."""
    paths = [path for path, _ in samples]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arrays = list(progress_bar(pool.map(_decode, paths), total=len(paths), enabled=progress,
                                   desc="decoding", unit="img", leave=False))
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        # Mixed gray and colour images, or sizes: fall back to RGB so one array holds all.
        if len({shape[:2] for shape in shapes}) > 1:
            size = arrays[0].shape[:2]
            odd = next(i for i, a in enumerate(arrays) if a.shape[:2] != size)
            raise DataError(f"images differ in size: {paths[odd]} is {arrays[odd].shape[1]}x"
                            f"{arrays[odd].shape[0]}, {paths[0]} {size[1]}x{size[0]}; one array "
                            "cannot hold them: use --in-memory never")
        arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return np.stack(arrays)


def estimate_decoded_bytes(samples: list[tuple[str, int]]) -> int:
    try:
        with Image.open(samples[0][0]) as image:
            width, height = image.size
            channels = 1 if image.mode in ("L", "1") else 3
    except UNREADABLE as error:
        raise _unreadable(samples[0][0], error) from None
    return width * height * channels * len(samples)


def open_folder(root: Path, option: str, in_memory: str = "auto",
                memory_limit_gb: float = 16.0, progress: bool = True):
    """An ImageFolder as an ArrayDataset (decoded once) or a FileDataset (read per access)."""
    samples, classes = scan_folder(root, option)
    if in_memory == "auto":
        in_memory = "always" if estimate_decoded_bytes(samples) <= memory_limit_gb * 2**30 else "never"
    if in_memory == "never":
        return FileDataset(samples, classes)
    images = decode_all(samples, progress)
    return ArrayDataset(images, np.array([label for _, label in samples]), classes)


class FractalFolder(torch.utils.data.Dataset):
    """A dataset folder the generator wrote (or any ImageFolder layout), torchvision-style, for
    your own training script: `from onepfrac import FractalFolder`.

        dataset = FractalFolder("data/sigma3.5_perturb0.1_sample1000_seed0", transform=...)
        image, label = dataset[0]          # an RGB PIL image through `transform`, an int

    The trainer's checks come with it: hidden folders are not classes, a folder still being
    generated or missing files of its manifest is refused with one line (DataError).
    `in_memory=True` decodes every image once (fast epochs, RAM: width x height x 3 per image).
    """

    def __init__(self, root, transform=None, target_transform=None, in_memory: bool = False,
                 progress: bool = False):
        self.root = Path(root)
        self.samples, self.classes = scan_folder(self.root, "FractalFolder root")
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.targets = [label for _, label in self.samples]
        self.transform, self.target_transform = transform, target_transform
        self.images = decode_all(self.samples, progress) if in_memory else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        image = (load_rgb(path) if self.images is None
                 else Image.fromarray(self.images[index]).convert("RGB"))
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self)} images, {len(self.classes)} classes)"


def open_cifar(root: Path, name: str, train: bool, option: str) -> ArrayDataset:
    """CIFAR-10/100 in torchvision's on-disk format, never downloaded."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        data = cls(str(root), train=train, download=False)
    except RuntimeError:
        raise DataError(f"{option}: no {name.upper()} in torchvision's format under "
                        f"{str(root)!r} (expected {root}/{cls.base_folder}/); this program "
                        "never downloads: fetch it once with torchvision "
                        f"(datasets.{cls.__name__}(root, download=True)) and point here") from None
    return ArrayDataset(np.asarray(data.data), np.asarray(data.targets), list(data.classes))


def open_dataset(kind: str, root: Path, train: bool, option: str, in_memory: str,
                 memory_limit_gb: float, progress: bool):
    if kind not in DATASETS:
        raise DataError(f"--dataset: {kind!r} is not one of {', '.join(DATASETS)}")
    if kind == "folder":
        return open_folder(root, option, in_memory, memory_limit_gb, progress)
    return open_cifar(root, kind, train, option)


class RenderedDataset(torch.utils.data.Dataset):
    """A formula-driven dataset rendered inside the DataLoader workers instead of read from
    files (onepfrac.datasets.onthefly): each sample is a pure function of its config, class and
    instance, equal to the file the generator would write."""

    def __init__(self, name: str, config_kwargs: dict):
        from onepfrac import datasets
        from onepfrac.datasets.onthefly import OnTheFlyDataset

        if name not in datasets.DATASETS:
            raise DataError(f"--render: {name!r} is not one of {', '.join(datasets.DATASETS)}")
        module = datasets.load(name)
        try:  # checked as `python -m onepfrac.generate` checks the same options
            config = datasets.make_config(module, config_kwargs)
        except datasets.ConfigError as error:
            raise DataError(f"--render-kwargs: {error}") from None
        self.source = OnTheFlyDataset(name, config, one_instance_per_class=(name == "3d-ofdb"))
        self.classes = list(self.source.classes)

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """3D-OFDB shows one random view of each class an epoch, drawn from (seed, epoch, class)."""
        self.source.set_epoch(epoch)

    def __getitem__(self, index: int):
        return self.source[index]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class SeededSamples(torch.utils.data.Dataset):
    """Applies `transform` to dataset[index] with every RNG seeded from (seed, epoch, index).

    Indexed by (epoch, index) pairs from EpochBatchSampler. timm's transforms draw from
    Python's `random`, numpy's and torch's global generators; seeding all three per sample
    makes the augmentation independent of worker count and of where a run was resumed.
    """

    def __init__(self, dataset, transform, seed: int):
        self.dataset = dataset
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            # Set per sample, not per epoch, so DataLoader workers (copies) see it too.
            self.dataset.set_epoch(epoch)
        image, label = self.dataset[index]
        in_main_process = torch.utils.data.get_worker_info() is None
        if in_main_process:
            # Without workers the sample's seeds must not leak into the training step's
            # randomness (drop path, Mixup), or the result would depend on the worker count.
            saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        seed_everything(sample_seed(self.seed, epoch, index))
        sample = self.transform(image), label
        if in_main_process:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])
        return sample


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of (epoch, index) for epochs [start_epoch, epochs), one iterator for the run.

    Each epoch follows DistributedSampler(shuffle=True, seed) with set_epoch: one permutation
    per epoch shared by all ranks, padded to a multiple of the world size, rank r taking every
    world_size-th index from r; then the last partial batch is dropped (drop_last=True).
    `repeats` concatenates that many permutations into one epoch, for datasets smaller than
    a batch (1p-frac with small L). Spanning all epochs keeps DataLoader workers alive across
    thousands of 3-step epochs.
    """

    def __init__(self, num_samples: int, batch_size: int, epochs: int, seed: int, rank: int = 0,
                 world_size: int = 1, start_epoch: int = 0, repeats: int = 1, shuffle: bool = True):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_epoch = start_epoch
        self.repeats = repeats
        self.shuffle = shuffle
        total = num_samples * repeats
        self.per_rank = -(-total // world_size)
        self.steps_per_epoch = self.per_rank // batch_size

    def epoch_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + epoch)
            order = torch.cat([torch.randperm(self.num_samples, generator=generator)
                               for _ in range(self.repeats)]).tolist()
        else:
            order = list(range(self.num_samples)) * self.repeats
        total = self.per_rank * self.world_size
        order = (order * -(-total // len(order)))[:total]  # pad by wrapping, as DistributedSampler
        return order[self.rank::self.world_size]

    def __iter__(self):
        for epoch in range(self.start_epoch, self.epochs):
            indices = self.epoch_indices(epoch)
            for step in range(self.steps_per_epoch):
                chunk = indices[step * self.batch_size:(step + 1) * self.batch_size]
                yield [(epoch, index) for index in chunk]

    def __len__(self) -> int:
        return self.steps_per_epoch * (self.epochs - self.start_epoch)


class EvalSamples(torch.utils.data.Dataset):
    def __init__(self, dataset, transform):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.transform(image), label


def shard(num_samples: int, rank: int, world_size: int) -> list[int]:
    """Rank's share of an evaluation set, without DistributedSampler's padding duplicates."""
    return list(range(rank, num_samples, world_size))


# `auto` puts the dataset on the GPU when it takes at most this share of the free memory.
DEVICE_MEMORY_SHARE = 0.25


def choose_pipeline(requested: str, dataset, device: torch.device) -> tuple[str, str]:
    """(`loader` or `device`, why): the DataLoader with timm's transforms, or the dataset kept
    on the training device and augmented there in batches (onepfrac.train.device_data)."""
    in_memory = isinstance(dataset, ArrayDataset)
    if requested == "device":
        if not in_memory:
            raise DataError("--data-pipeline device needs the dataset decoded in memory: "
                            "use --in-memory always (or raise --memory-limit-gb)")
        return "device", "asked for"
    if requested == "loader":
        return "loader", "asked for"
    if device.type != "cuda":
        return "loader", "auto: no GPU (timm's PIL transforms are faster than batched ones on a CPU at 224 px)"
    if not in_memory:
        return "loader", "auto: the dataset is not held in memory"
    free, _ = torch.cuda.mem_get_info(device)
    if dataset.nbytes > DEVICE_MEMORY_SHARE * free:
        return "loader", (f"auto: {dataset.nbytes / 2**30:.1f} GiB is more than "
                          f"{DEVICE_MEMORY_SHARE:.0%} of the GPU's free {free / 2**30:.1f} GiB")
    return "device", f"auto: {dataset.nbytes / 2**20:.0f} MiB fits on the GPU"


def train_transform(args):
    from timm.data import create_transform

    return create_transform(
        args.img_size, is_training=True, scale=tuple(args.scale), ratio=tuple(args.ratio),
        hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter,
        auto_augment=args.aa or None, interpolation=args.interpolation, mean=tuple(args.mean),
        std=tuple(args.std), re_prob=args.reprob, re_mode=args.remode, re_count=args.recount)


def eval_transform(args):
    from timm.data import create_transform

    return create_transform(args.img_size, is_training=False, interpolation=args.interpolation,
                            mean=tuple(args.mean), std=tuple(args.std), crop_pct=args.crop_pct)
