"""The dataset and its per-sample augmentation, both on the training device.

A 1p-frac dataset is small (1,000 gray 512-px images are 262 MB), so it is decoded once into a
uint8 tensor on the device and augmented there in batches, with the semantics of the released
DataLoader pipeline (timm's `create_transform` for training applied to PIL images, then
DistributedSampler). `docs/device_pipeline.md` lists every op, timm's behaviour and ours.

Pixel values stay on the uint8 grid (float tensors holding integers 0..255, rounded where PIL
rounds) until the normalisation, so thresholds, LUTs and histograms act as they do on PIL images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from onepfrac.train.data import ArrayDataset, EpochBatchSampler, open_folder, sample_seed
from onepfrac.train.device_plan import Packet, Schedule, crop_boxes, draw_seed, erase_boxes, host_generator, is_identity
from onepfrac.train.device_randaugment import ColorJitter, RandAugment, round_uint8
from onepfrac.train.options import RE_MODES, either

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# Dataset


class DeviceDataset:
    """Decoded images (uint8, N x C x H x W, C = 1 for gray) and int64 labels on one device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, device, classes=None):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be a uint8 tensor N x C x H x W with C 1 or 3, "
                             f"got {images.dtype} {tuple(images.shape)}")
        labels = torch.as_tensor(labels)
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must hold one label per image ({images.shape[0]}), got {tuple(labels.shape)}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.classes = classes

    @classmethod
    def from_image_folder(cls, root, device, progress=True) -> "DeviceDataset":
        """Decode an ImageFolder-layout folder once, as the trainer does (onepfrac.train.data:
        labels = sorted folder names, gray images (RGB ones with equal channels too) one channel)."""
        return to_device_dataset(open_folder(root, "root", in_memory="always", progress=progress), device)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size() + self.labels.numel() * self.labels.element_size()


# --------------------------------------------------------------------------------------------
# Resampling with PIL's antialiased filters (the crop-and-resize of RandomResizedCrop)


def _bicubic_kernel(x: torch.Tensor) -> torch.Tensor:
    # PIL's resampling cubic has a = -0.5 (torch and kornia use -0.75)
    a = -0.5
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _bilinear_kernel(x: torch.Tensor) -> torch.Tensor:
    return (1 - x.abs()).clamp(min=0)


_KERNELS = {"bicubic": (_bicubic_kernel, 2.0), "bilinear": (_bilinear_kernel, 1.0)}

# columns of an axis plan (host, float64): the crop's span, output order, and the filter's size
_START, _STOP, _FIRST, _STEP, _SCALE, _REACH, _INVERSE_FILTER_SCALE = range(7)


def axis_plan(start, length, flip, out_size: int, interpolation: str = "bicubic") -> np.ndarray:
    """(B, 7) host numbers resampling the span [start, start + length) of an axis to out_size
    pixels, mirrored where `flip`: output i reads output j = first + step * i of the unflipped
    resize, so a flip reuses exactly the unflipped weights."""
    _, support = _KERNELS[interpolation]
    start = np.asarray(start, dtype=np.float64)
    length = np.asarray(length, dtype=np.float64)
    flip = np.broadcast_to(np.asarray(flip, dtype=bool), start.shape)
    scale = length / out_size
    filter_scale = np.maximum(scale, 1.0)
    return np.stack([start, start + length, np.where(flip, out_size - 1, 0.0), np.where(flip, -1.0, 1.0),
                     scale, support * filter_scale, 1 / filter_scale], 1)


def resample_weights(plan: torch.Tensor, in_size: int, out_size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """(B, out_size, in_size) matrices from `axis_plan` rows, resizing as PIL's Image.resize does
    on the cropped image: the filter stretched by the downscale factor (antialiasing), taps
    clipped to the crop, weights normalised per output."""
    kernel, support = _KERNELS[interpolation]
    start, stop, first_output, step, scale, reach, inverse_filter_scale = plan[:, :, None].unbind(1)
    output = torch.addcmul(first_output, step, torch.arange(out_size, device=plan.device, dtype=plan.dtype))
    center = torch.addcmul(start, output + 0.5, scale)
    first = torch.maximum(torch.floor(center - reach + 0.5), start)
    last = torch.minimum(torch.floor(center + reach + 0.5), stop)
    # the taps of each output form a band; its widest possible size is set by the whole axis
    taps = 2 * math.ceil(support * max(in_size / out_size, 1.0)) + 1
    position = first[..., None] + torch.arange(taps, device=plan.device, dtype=plan.dtype)
    weights = kernel((position - center[..., None] + 0.5) * inverse_filter_scale[..., None])
    weights = weights * (position < last[..., None])
    weights = weights / weights.sum(-1, keepdim=True)
    dense = torch.zeros((*center.shape, in_size + taps), dtype=torch.float32, device=plan.device)
    dense.scatter_(-1, position.long(), weights.to(torch.float32))  # taps past the axis land in the margin
    return dense[..., :in_size]


def crop_plan(top, left, height, width, size: int, hflip=False, vflip=False,
              interpolation: str = "bicubic") -> np.ndarray:
    """(2, B, 7) host plan of `resized_crop`: the horizontal axis, then the vertical one."""
    return np.stack([axis_plan(left, width, hflip, size, interpolation),
                     axis_plan(top, height, vflip, size, interpolation)])


def resized_crop(images: torch.Tensor, plan: torch.Tensor, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Crop each image to its own box and resize it to size x size, as PIL (horizontal pass,
    uint8 rounding, vertical pass, rounding); plan: `crop_plan` on the images' device."""
    _, _, in_h, in_w = images.shape
    if in_h == in_w:  # both axes' matrices in one pass
        across, down = resample_weights(plan.flatten(0, 1), in_w, size, interpolation).unflatten(0, plan.shape[:2])
    else:
        across = resample_weights(plan[0], in_w, size, interpolation)  # (B, size, W)
        down = resample_weights(plan[1], in_h, size, interpolation)  # (B, size, H)
    x = round_uint8(images.to(torch.float32) @ across.transpose(1, 2)[:, None])  # (B, C, H, size)
    return round_uint8(down[:, None] @ x)  # (B, C, size, size)


# --------------------------------------------------------------------------------------------
# Random erasing (its boxes drawn by device_plan.erase_boxes)


def erase(x: torch.Tensor, positions: torch.Tensor, boxes: torch.Tensor, mode: str, generator=None) -> torch.Tensor:
    """Samples x[positions] (in place) with their boxes (E, count, 4) filled: per-pixel N(0, 1)
    (`pixel`), one N(0, 1) colour per box (`rand`) or zero (`const`), as timm's RandomErasing."""
    _, channels, height, width = x.shape
    part = x[positions]
    rows = torch.arange(height, device=x.device, dtype=boxes.dtype)
    cols = torch.arange(width, device=x.device, dtype=boxes.dtype)
    for box in boxes.unbind(1):
        top, bottom, left, right = box[:, :, None].unbind(1)
        inside = (((rows >= top) & (rows < bottom))[:, None, :, None]
                  & ((cols >= left) & (cols < right))[:, None, None, :])
        if mode == "pixel":
            fill = torch.randn(part.shape, generator=generator, device=x.device, dtype=x.dtype)
        elif mode == "rand":
            fill = torch.randn((len(part), channels, 1, 1), generator=generator, device=x.device, dtype=x.dtype)
        else:
            fill = torch.zeros((), device=x.device, dtype=x.dtype)
        part = torch.where(inside, fill, part)
    x[positions] = part
    return x


def noise_generator(device, seed: int, cache: dict | None = None):
    """A generator on `device` seeded with `seed` (kept in `cache` to be reseeded next time);
    None on the meta device, which has none."""
    device = torch.device(device)
    if device.type == "meta":
        return None
    generator = None if cache is None else cache.get(device)
    if generator is None:
        generator = torch.Generator(device=device)
        if cache is not None:
            cache[device] = generator
    return generator.manual_seed(seed)


def random_erase(x: torch.Tensor, probability: float, mode: str, max_count: int, generator=None,
                 **limits) -> torch.Tensor:
    """timm's RandomErasing on a normalised batch (a copy), each sample on its own draws."""
    erased, boxes = erase_boxes(x.shape[0], *x.shape[2:], probability, max_count, generator, **limits)
    positions = np.flatnonzero(erased)
    x = x.clone()
    if len(positions):
        packet = Packet()
        packet.add("positions", positions, np.int64)
        packet.add("boxes", boxes[positions], np.float32)
        sent = packet.send(x.device)
        erase(x, sent["positions"], sent["boxes"], mode, noise_generator(x.device, draw_seed(generator)))
    return x


# --------------------------------------------------------------------------------------------
# The train transform


@dataclass
class BatchPlan:
    """A batch's draws on the host: the packet for the device, the op schedule, and what the
    device runs without asking (whether to gather rows, how many samples are erased)."""
    packet: Packet
    schedule: Schedule
    gather: bool
    erased: int
    noise_seed: int | None


class DeviceAugment(torch.nn.Module):
    """timm's create_transform(is_training=True) for a batch on its device, each sample drawn alone.

    forward(uint8 B x C x H x W, generator) -> float B x 3 x img_size x img_size, normalised. Order
    as the released recipe: random-resized-crop -> hflip -> vflip -> RandAugment (or colour jitter
    when auto_augment is None, as timm) -> to float, normalise -> random erasing.

    Every random parameter is drawn on the host from the CPU `generator` and reaches the device in
    one non-blocking copy; the device never reports back, so the host runs ahead of it.
    """

    def __init__(self, img_size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bicubic",
                 hflip=0.5, vflip=0.0, auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.4,
                 re_prob=0.25, re_mode="pixel", re_count=1,
                 mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD):
        super().__init__()
        if interpolation not in _KERNELS:
            raise ValueError(f"interpolation must be one of {sorted(_KERNELS)}, got {interpolation!r}")
        if re_mode not in RE_MODES:
            raise ValueError(f"re_mode must be {either([repr(m) for m in RE_MODES])}, got {re_mode!r}")
        self.img_size, self.scale, self.ratio = int(img_size), tuple(scale), tuple(ratio)
        self.interpolation, self.hflip, self.vflip = interpolation, hflip, vflip
        self.re_prob, self.re_mode, self.re_count = re_prob, re_mode, re_count
        self.mean, self.std = tuple(mean), tuple(std)
        # (x / 255 - mean) / std as (x - 255 mean) / (255 std): two kernels, and 0 and 255 land exactly
        self.register_buffer("mean_", 255 * torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std_", 255 * torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        # timm's RandAugment fill: the mean on the uint8 scale (Python's round)
        self.fill = tuple(min(255, round(255 * m)) for m in self.mean)
        self.rand_augment = RandAugment(auto_augment, self.fill, interpolation) if auto_augment else None
        if self.rand_augment is None and color_jitter:
            self.color_jitter = ColorJitter(color_jitter)
        else:
            self.color_jitter = None  # timm adds ColorJitter only without auto-augment
        self._noise_generators = {}  # the erasing noise's, one per device, reseeded each batch

    def layers(self, batch: int, generator) -> list:
        size = self.img_size
        if self.rand_augment is not None:
            return self.rand_augment.layers(*self.rand_augment.draw(batch, generator), size, size)
        if self.color_jitter is not None:
            return self.color_jitter.layers(batch, generator)
        return []

    def plan(self, batch: int, height: int, width: int, generator=None, index=None) -> BatchPlan:
        """Every random parameter of a batch of height x width images, drawn on the host.

        `index`: host integers, the batch's rows in the dataset (folded into the plan's gather),
        or None (the rows are given to `run`, or the batch is the images themselves)."""
        generator = host_generator(generator)
        top, left, h, w = crop_boxes(batch, height, width, self.scale, self.ratio, generator)
        hflip = torch.rand(batch, generator=generator).numpy() < self.hflip
        vflip = torch.rand(batch, generator=generator).numpy() < self.vflip
        schedule = Schedule(self.layers(batch, generator), batch)
        rows = schedule.rows  # the batch enters sorted by its first layer's ops
        packet = Packet()
        packet.add("rows", rows if index is None else np.asarray(index, dtype=np.int64)[rows], np.int64)
        packet.add("crop", crop_plan(top[rows], left[rows], h[rows], w[rows], self.img_size, hflip[rows],
                                     vflip[rows], self.interpolation), np.float64)
        schedule.pack(packet)
        erased, noise_seed = 0, None
        if self.re_prob > 0:
            flags, boxes = erase_boxes(batch, self.img_size, self.img_size, self.re_prob, self.re_count, generator)
            positions = np.flatnonzero(flags[schedule.order])  # where the erased samples sit at the end
            packet.add("erase.positions", positions, np.int64)
            packet.add("erase.boxes", boxes[schedule.order[positions]], np.float32)
            erased = len(positions)
            noise_seed = draw_seed(generator)
        if schedule.restore is not None:
            packet.add("restore", schedule.restore, np.int64)
        return BatchPlan(packet, schedule, gather=index is not None or not is_identity(rows),
                         erased=erased, noise_seed=noise_seed)

    def run(self, images: torch.Tensor, plan: BatchPlan, index: torch.Tensor | None = None) -> torch.Tensor:
        """The plan on the device: one copy in, then kernels only (nothing is read back)."""
        device = images.device
        sent = plan.packet.send(device)
        if index is not None:
            images = images[index[sent["rows"]]]
        elif plan.gather:
            images = images[sent["rows"]]
        x = resized_crop(images, sent["crop"], self.img_size, self.interpolation)
        if x.shape[1] == 1 and len(set(self.fill)) > 1 and self.rand_augment is not None:
            x = x.expand(-1, 3, -1, -1)  # a coloured fill makes gray images colour
        x = plan.schedule.run(x, sent)
        x = (x - self.mean_) / self.std_  # gray broadcasts to 3 channels here
        if plan.erased:
            erase(x, sent["erase.positions"], sent["erase.boxes"], self.re_mode,
                  noise_generator(device, plan.noise_seed, self._noise_generators))
        return x if plan.schedule.restore is None else x[sent["restore"]]

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None,
                index=None) -> torch.Tensor:
        """images: the batch, or with `index` the whole dataset and index the batch's rows (a tensor
        on the images' device, or host integers)."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected a uint8 batch B x C x H x W, got {images.dtype} {tuple(images.shape)}")
        on_device = isinstance(index, torch.Tensor) and index.device == images.device
        batch = images.shape[0] if index is None else len(index)
        plan = self.plan(batch, *images.shape[2:], generator, None if on_device else index)
        return self.run(images, plan, index if on_device else None)


# --------------------------------------------------------------------------------------------
# The trainer's device pipeline (chosen by onepfrac.train.data.choose_pipeline)


def to_device_dataset(dataset: ArrayDataset, device: torch.device):
    """uint8 N x C x H x W on `device`: gray stays one channel until the model input, also when
    it was saved as RGB (as the released generator does), a third of the memory and the work."""
    images = torch.from_numpy(dataset.images)
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    if images.shape[1] == 3 and bool((images[:, :1] == images[:, 1:]).all()):
        images = images[:, :1]
    return DeviceDataset(images.contiguous(), torch.from_numpy(dataset.labels), device,
                         classes=dataset.classes)


def device_augment(args):
    return DeviceAugment(args.img_size, scale=tuple(args.scale), ratio=tuple(args.ratio),
                         interpolation=args.interpolation, hflip=args.hflip, vflip=args.vflip,
                         auto_augment=args.aa, color_jitter=args.color_jitter,
                         re_prob=args.reprob, re_mode=args.remode, re_count=args.recount,
                         mean=tuple(args.mean), std=tuple(args.std))


def device_batches(dataset, sampler: EpochBatchSampler, augment, seed: int):
    """Augmented batches on the dataset's device for the sampler's epochs, as one iterator.

    Each epoch's random draws come from a host generator seeded by (seed, epoch, rank), so a
    resumed run continues exactly; nothing is set up again between epochs, and the epoch's order
    reaches the device in one non-blocking copy (from pinned memory on a GPU), so the host never
    waits for the device at an epoch boundary.
    """
    device = dataset.images.device
    augment = augment.to(device)
    for epoch in range(sampler.start_epoch, sampler.epochs):
        order = torch.tensor(sampler.epoch_indices(epoch), dtype=torch.int64)
        if device.type == "cuda":
            order = order.pin_memory()
        order = order.to(device, non_blocking=True)
        generator = torch.Generator()
        generator.manual_seed(sample_seed(seed, epoch, 2**31 + sampler.rank))
        for step in range(sampler.steps_per_epoch):
            index = order[step * sampler.batch_size:(step + 1) * sampler.batch_size]
            yield augment(dataset.images, generator, index=index), dataset.labels[index]


def on_side_stream(batches, device: torch.device):
    """The batches, each made on a second CUDA stream while the model trains on the previous one.

    The device pipeline's augmentation is many small kernels; on the training stream they run
    between two steps, on their own stream they fill the GPU beside the model's (ViT-Tiny at
    batch 256 leaves most of an H100 idle). Elsewhere the batches pass through unchanged."""
    if device.type != "cuda":
        yield from batches
        return
    side, main = torch.cuda.Stream(device), torch.cuda.current_stream(device)
    side.wait_stream(main)  # the dataset and everything before the loop are ready

    def make_next():
        with torch.cuda.stream(side):
            return next(batches, None)

    pending = make_next()
    while pending is not None:
        main.wait_stream(side)  # this batch is finished before the step that reads it
        for tensor in pending:
            tensor.record_stream(main)  # its memory is not reused before the step is done
        current, pending = pending, make_next()  # the next batch is queued before this step
        yield current
