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

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from onepfrac.train.device_randaugment import ColorJitter, RandAugment, _round_uint8, _uniform

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
    def from_image_folder(cls, root, device, size=None, progress=True) -> "DeviceDataset":
        """Decode an ImageFolder-layout folder once (labels = sorted folder names, as ImageFolder).

        Images go through ImageFolder's loader conversion (PIL, RGB); when every image has three
        equal channels the dataset keeps one. All images must share one size, unless `size`
        (int or (h, w)) is given: then each is resized to it (PIL bicubic) on decoding.
        """
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        classes, class_to_idx = find_classes(str(root))
        samples = make_dataset(str(root), class_to_idx, IMG_EXTENSIONS)
        if not samples:
            raise ValueError(f"no images found under {root}")
        if isinstance(size, int):
            size = (size, size)
        images = None
        labels = torch.empty(len(samples), dtype=torch.int64)
        for index, (path, label) in enumerate(tqdm(samples, desc="decoding", unit="img", disable=not progress)):
            with Image.open(path) as image:
                image = image.convert("RGB")  # ImageFolder's default loader
                if size is not None and image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.BICUBIC)
                pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
            if images is None:
                images = torch.empty((len(samples), 1, *pixels.shape[1:]), dtype=torch.uint8)
            if pixels.shape[1:] != images.shape[2:]:
                raise ValueError(f"{path} is {pixels.shape[2]} x {pixels.shape[1]} px but earlier images are "
                                 f"{images.shape[3]} x {images.shape[2]}: pass size= to resize them")
            gray = bool((pixels[0] == pixels[1]).all() and (pixels[0] == pixels[2]).all())
            if images.shape[1] == 1 and not gray:
                images = images.expand(-1, 3, -1, -1).clone()  # the first colour image: keep 3 channels
            images[index] = pixels[:1] if images.shape[1] == 1 else pixels
            labels[index] = label
        return cls(images, labels, device, classes=classes)

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


def resample_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
                     interpolation: str = "bicubic") -> torch.Tensor:
    """(B, out_size, in_size) matrices resizing the span [start, start + length) of an axis to
    out_size pixels as PIL's Image.resize does on the cropped image: the filter stretched by the
    downscale factor (antialiasing), taps clipped to the crop, weights normalised per output."""
    kernel, support = _KERNELS[interpolation]
    start = start.to(torch.float64)[:, None]
    length = length.to(torch.float64)[:, None]
    scale = length / out_size
    filterscale = scale.clamp(min=1.0)
    reach = support * filterscale
    center = start + (torch.arange(out_size, device=start.device, dtype=torch.float64) + 0.5) * scale
    first = torch.maximum(torch.floor(center - reach + 0.5), start)
    stop = torch.minimum(torch.floor(center + reach + 0.5), start + length)
    # the taps of each output form a band; its widest possible size is set by the whole axis
    taps = 2 * math.ceil(support * max(in_size / out_size, 1.0)) + 1
    position = first[..., None] + torch.arange(taps, device=start.device, dtype=torch.float64)
    weights = kernel((position - center[..., None] + 0.5) / filterscale[..., None])
    weights = weights * (position < stop[..., None])
    weights = weights / weights.sum(-1, keepdim=True)
    dense = torch.zeros((*center.shape, in_size + taps), dtype=torch.float32, device=start.device)
    dense.scatter_(-1, position.long(), weights.to(torch.float32))  # taps past the axis land in the margin
    return dense[..., :in_size]


def resized_crop(images: torch.Tensor, top, left, height, width, size: int,
                 hflip=None, vflip=None, interpolation: str = "bicubic") -> torch.Tensor:
    """Crop each image to its own box and resize it to size x size, as PIL (horizontal pass,
    uint8 rounding, vertical pass, rounding). Flips fold into the matrices' output order."""
    _, _, in_h, in_w = images.shape
    across = resample_weights(left, width, in_w, size, interpolation)  # (B, size, W)
    down = resample_weights(top, height, in_h, size, interpolation)  # (B, size, H)
    if hflip is not None:
        across = torch.where(hflip[:, None, None], across.flip(1), across)
    if vflip is not None:
        down = torch.where(vflip[:, None, None], down.flip(1), down)
    x = images.to(torch.float32)
    x = _round_uint8(x @ across.transpose(1, 2)[:, None])  # (B, C, H, size)
    return _round_uint8(down[:, None] @ x)  # (B, C, size, size)


# --------------------------------------------------------------------------------------------
# Random draws shared by the crop and the erasing


def _randint_inclusive(high: torch.Tensor, generator) -> torch.Tensor:
    """Python's random.randint(0, high) per element (high >= 0)."""
    u = torch.rand(high.shape, generator=generator, device=high.device, dtype=torch.float64)
    return torch.minimum(torch.floor(u * (high + 1)), high)


def _first_valid(valid: torch.Tensor, *values: torch.Tensor):
    """Per row, the values at the first True column of `valid`, and whether there was one."""
    first = valid.to(torch.uint8).argmax(1, keepdim=True)
    return valid.any(1), *(v.gather(1, first).squeeze(1) for v in values)


def crop_boxes(batch: int, height: int, width: int, scale, ratio, generator, device):
    """(top, left, h, w) per sample with timm's RandomResizedCropAndInterpolation.get_params
    distribution: 10 tries of uniform area and log-uniform aspect, else a ratio-clamped centre crop."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    target_area = _uniform(scale[0], scale[1], (batch, 10), generator, device) * area
    aspect = torch.exp(_uniform(log_ratio[0], log_ratio[1], (batch, 10), generator, device))
    w = torch.round(torch.sqrt(target_area * aspect))  # round half to even, as Python's round
    h = torch.round(torch.sqrt(target_area / aspect))
    found, w, h = _first_valid((w <= width) & (h <= height), w, h)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = int(round(height * max(ratio))), height
    else:
        fallback_w, fallback_h = width, height
    w = torch.where(found, w, torch.full_like(w, fallback_w)).clamp(min=1)
    h = torch.where(found, h, torch.full_like(h, fallback_h)).clamp(min=1)
    top = torch.where(found, _randint_inclusive(height - h, generator), (height - h) // 2)
    left = torch.where(found, _randint_inclusive(width - w, generator), (width - w) // 2)
    return top, left, h, w


def random_erase(x: torch.Tensor, probability: float, mode: str, max_count: int, generator,
                 min_area=0.02, max_area=1 / 3, min_aspect=0.3) -> torch.Tensor:
    """timm's RandomErasing on a normalised batch, each sample on its own draws."""
    batch, channels, height, width = x.shape
    device = x.device
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    erase = torch.rand(batch, generator=generator, device=device) < probability
    if max_count > 1:
        count = torch.randint(1, max_count + 1, (batch,), generator=generator, device=device)
    else:
        count = torch.ones(batch, dtype=torch.int64, device=device)
    rows = torch.arange(height, device=device)[:, None]
    cols = torch.arange(width, device=device)
    for box in range(max_count):
        target_area = _uniform(min_area, max_area, (batch, 10), generator, device) * (height * width)
        target_area = target_area / count[:, None]
        aspect = torch.exp(_uniform(log_aspect[0], log_aspect[1], (batch, 10), generator, device))
        h = torch.round(torch.sqrt(target_area * aspect))
        w = torch.round(torch.sqrt(target_area / aspect))
        found, h, w = _first_valid((w < width) & (h < height), h, w)
        top = _randint_inclusive((height - h).clamp(min=0), generator)
        left = _randint_inclusive((width - w).clamp(min=0), generator)
        active = (erase & found & (box < count))[:, None, None]
        inside = ((rows >= top[:, None, None]) & (rows < (top + h)[:, None, None])
                  & (cols >= left[:, None, None]) & (cols < (left + w)[:, None, None]) & active)
        if mode == "pixel":
            fill = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
        elif mode == "rand":
            fill = torch.randn((batch, channels, 1, 1), generator=generator, device=device, dtype=x.dtype)
        else:
            fill = torch.zeros((), device=device, dtype=x.dtype)
        x = torch.where(inside[:, None], fill, x)
    return x


# --------------------------------------------------------------------------------------------
# The train transform


class DeviceAugment(torch.nn.Module):
    """timm's create_transform(is_training=True) for a batch on its device, each sample drawn alone.

    forward(uint8 B x C x H x W, generator) -> float B x 3 x img_size x img_size, normalised. Order
    as the released recipe: random-resized-crop -> hflip -> vflip -> RandAugment (or colour jitter
    when auto_augment is None, as timm) -> to float, normalise -> random erasing.
    """

    def __init__(self, img_size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation="bicubic",
                 hflip=0.5, vflip=0.0, auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.4,
                 re_prob=0.25, re_mode="pixel", re_count=1,
                 mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD):
        super().__init__()
        if interpolation not in _KERNELS:
            raise ValueError(f"interpolation must be one of {sorted(_KERNELS)}, got {interpolation!r}")
        if re_mode not in ("pixel", "rand", "const"):
            raise ValueError(f"re_mode must be 'pixel', 'rand' or 'const', got {re_mode!r}")
        self.img_size, self.scale, self.ratio = int(img_size), tuple(scale), tuple(ratio)
        self.interpolation, self.hflip, self.vflip = interpolation, hflip, vflip
        self.re_prob, self.re_mode, self.re_count = re_prob, re_mode, re_count
        self.mean, self.std = tuple(mean), tuple(std)
        self.register_buffer("mean_", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std_", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        # timm's RandAugment fill: the mean on the uint8 scale (Python's round)
        self.fill = tuple(min(255, round(255 * m)) for m in self.mean)
        self.rand_augment = RandAugment(auto_augment, self.fill, interpolation) if auto_augment else None
        if self.rand_augment is None and color_jitter:
            self.color_jitter = ColorJitter(color_jitter)
        else:
            self.color_jitter = None  # timm adds ColorJitter only without auto-augment

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected a uint8 batch B x C x H x W, got {images.dtype} {tuple(images.shape)}")
        batch, _, height, width = images.shape
        device = images.device
        top, left, h, w = crop_boxes(batch, height, width, self.scale, self.ratio, generator, device)
        hflip = torch.rand(batch, generator=generator, device=device) < self.hflip
        vflip = torch.rand(batch, generator=generator, device=device) < self.vflip
        x = resized_crop(images, top, left, h, w, self.img_size, hflip, vflip, self.interpolation)
        if x.shape[1] == 1 and len(set(self.fill)) > 1 and self.rand_augment is not None:
            x = x.expand(-1, 3, -1, -1)  # a coloured fill makes gray images colour
        if self.rand_augment is not None:
            x = self.rand_augment(x, generator)
        elif self.color_jitter is not None:
            x = self.color_jitter(x, generator)
        x = (x.expand(-1, 3, -1, -1) / 255 - self.mean_) / self.std_
        if self.re_prob > 0:
            x = random_erase(x, self.re_prob, self.re_mode, self.re_count, generator)
        return x
