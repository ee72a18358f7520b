"""The dataset, its sampler and its per-sample augmentation, all on the training device.

A 1p-frac dataset is small (1,000 gray 512-px images are 262 MB), so it is decoded once into a
uint8 tensor on the device and augmented there in batches, with the semantics of the released
DataLoader pipeline (timm's `create_transform` for training applied to PIL images, then
DistributedSampler). `docs/device_pipeline.md` lists every op, timm's behaviour and ours.

Pixel values stay on the uint8 grid (float tensors holding integers 0..255, rounded where PIL
rounds) until the normalisation, so thresholds, LUTs and histograms act as they do on PIL images.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

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


def _round_uint8(x: torch.Tensor) -> torch.Tensor:
    """Back onto the uint8 grid as PIL's 8-bit kernels store a result: round half up, clip."""
    return torch.floor(x + 0.5).clamp_(0, 255)


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


def _uniform(low, high, shape, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device, dtype=torch.float64)


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
# RandAugment and colour jitter ops with PIL's uint8 semantics, on float batches holding 0..255


def _apply_where(x: torch.Tensor, mask: torch.Tensor, op, *args: torch.Tensor, subset=None) -> torch.Tensor:
    """op(x, *args) for the samples where mask holds, the others unchanged. On CPU (subset=None)
    only those samples are computed; on an accelerator all are and the mask selects, since
    gathering a data-dependent subset would stall the device on a host synchronisation."""
    if subset if subset is not None else x.device.type == "cpu":
        index = mask.nonzero().squeeze(1)
        if index.numel() == 0:
            return x
        x = x.clone()
        x[index] = op(x[index], *(a[index] for a in args))
        return x
    return torch.where(mask.view(-1, 1, 1, 1), op(x, *args), x)


def _per_sample(value: torch.Tensor) -> torch.Tensor:
    return value.view(-1, 1, 1, 1)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # PIL's Image.blend on uint8: float32 arithmetic, then clipped and truncated (not rounded)
    factor = _per_sample(factor.to(torch.float32))
    return torch.trunc(degenerate + factor * (x - degenerate)).clamp_(0, 255)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L (ITU-R 601-2 in 16-bit fixed point, rounded); exact in float32."""
    if x.shape[1] == 1:
        return x
    weighted = x[:, 0:1] * 19595 + x[:, 1:2] * 38470 + x[:, 2:3] * 7471
    return torch.floor((weighted + 32768) / 65536)


def auto_contrast(x, _=None):
    low, high = x.amin((2, 3), keepdim=True).double(), x.amax((2, 3), keepdim=True).double()
    scale = 255.0 / (high - low).clamp(min=1)
    stretched = torch.floor(x.double() * scale + (-low * scale)).clamp_(0, 255).to(x.dtype)
    return torch.where(high > low, stretched, x)  # a flat channel is left as is


def equalize(x, _=None):
    return _round_uint8(kornia.enhance.equalize(x / 255) * 255)


def invert(x, _=None):
    return 255 - x


def posterize(x, bits):
    mask = (256 - 2 ** (8 - bits.clamp(0, 8))).to(torch.int32)  # keep the `bits` high bits
    return torch.bitwise_and(x.to(torch.int32), _per_sample(mask)).to(x.dtype)


def solarize(x, threshold):
    return torch.where(x < _per_sample(threshold).to(x.dtype), x, 255 - x)


def solarize_add(x, add, threshold=128):
    return torch.where(x < threshold, (x + _per_sample(add).to(x.dtype)).clamp(max=255), x)


def color(x, factor):
    if x.shape[1] == 1:
        return x  # the luma of a gray pixel is the pixel: PIL's Color leaves gray images alone
    return _blend(_luma(x), x, factor)


def contrast(x, factor):
    # PIL blends with a flat image at the rounded mean of the image's luma
    mean = torch.floor(_luma(x).double().mean((1, 2, 3)) + 0.5).to(x.dtype)
    return _blend(_per_sample(mean), x, factor)


def brightness(x, factor):
    return _blend(torch.zeros((), dtype=x.dtype, device=x.device), x, factor)


def sharpness(x, factor):
    # PIL's SMOOTH filter (1 1 1 / 1 5 1 / 1 1 1) / 13, rounded to uint8, border pixels kept;
    # kornia's sharpness has the same kernel but blends with the unrounded smoothing, untruncated
    channels = x.shape[1]
    kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
    smooth = _round_uint8(F.conv2d(x, kernel.expand(channels, 1, 3, 3), groups=channels))
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, factor)


def pil_affine(x: torch.Tensor, matrix: torch.Tensor, fill, interpolation="bicubic") -> torch.Tensor:
    """PIL's Image.transform(AFFINE, matrix) per sample: matrix (B, 2, 3) maps output pixel centres
    to input ones in PIL's coordinates (pixel i spans [i, i + 1)). As PIL: a point outside the
    input takes `fill` (a hard edge), a point inside reads edge-replicated neighbours. kornia's
    warp_affine fills by warping a mask, which blends fill and image over a 2-pixel band."""
    batch, channels, height, width = x.shape
    # PIL coordinates -> grid_sample's normalised ones (align_corners=False): x_n = 2 x / W - 1
    to_normal = torch.tensor([[2 / width, 0, -1], [0, 2 / height, -1], [0, 0, 1]],
                             dtype=torch.float64, device=x.device)
    from_normal = torch.tensor([[width / 2, 0, width / 2], [0, height / 2, height / 2], [0, 0, 1]],
                               dtype=torch.float64, device=x.device)
    theta = to_normal[:2] @ torch.cat([matrix.to(torch.float64), _last_row(batch, x.device)], 1) @ from_normal
    grid = F.affine_grid(theta.to(x.dtype), [batch, channels, height, width], align_corners=False)
    warped = F.grid_sample(x, grid, mode=interpolation, padding_mode="border", align_corners=False)
    inside = ((grid >= -1) & (grid < 1)).all(-1)[:, None]
    fill = torch.tensor(fill[:channels], dtype=x.dtype, device=x.device).view(1, channels, 1, 1)
    return _round_uint8(torch.where(inside, warped, fill))


def _last_row(batch, device):
    return torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64, device=device).expand(batch, 1, 3)


def _affine_matrices(names, op, level, height, width) -> torch.Tensor:
    """PIL's output -> input matrix of each sample's geometric op (identity for the others)."""
    batch = op.shape[0]
    matrix = torch.eye(2, 3, dtype=torch.float64, device=op.device).repeat(batch, 1, 1)
    for name in names:
        chosen = op == names.index(name)
        if name == "Rotate":  # Image.rotate about the centre, counter-clockwise degrees
            angle = -torch.deg2rad(level)
            cos, sin = torch.cos(angle), torch.sin(angle)
            cx, cy = width / 2, height / 2
            rotation = torch.stack([torch.stack([cos, sin, cx - cos * cx - sin * cy], 1),
                                    torch.stack([-sin, cos, cy + sin * cx - cos * cy], 1)], 1)
            matrix = torch.where(chosen[:, None, None], rotation, matrix)
        elif name in ("ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
            row, column = {"ShearX": (0, 1), "ShearY": (1, 0), "TranslateXRel": (0, 2), "TranslateYRel": (1, 2)}[name]
            value = level * {"TranslateXRel": width, "TranslateYRel": height}.get(name, 1)
            matrix[:, row, column] = torch.where(chosen, value, matrix[:, row, column])
    return matrix


_GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")

# name -> (op, level -> argument); level is the magnitude over 10 (timm's level / _LEVEL_DENOM),
# `sign` timm's random negation. Mirrors timm's LEVEL_TO_ARG for the RandAugment op sets.
_OPS = {
    "AutoContrast": (auto_contrast, None),
    "Equalize": (equalize, None),
    "Invert": (invert, None),
    "Rotate": (None, lambda m, sign: m * 30 * sign),
    "Posterize": (posterize, lambda m, sign: torch.trunc(m * 4)),
    "PosterizeIncreasing": (posterize, lambda m, sign: 4 - torch.trunc(m * 4)),
    "Solarize": (solarize, lambda m, sign: torch.trunc(m * 256).clamp(max=256)),
    "SolarizeIncreasing": (solarize, lambda m, sign: 256 - torch.trunc(m * 256).clamp(max=256)),
    "SolarizeAdd": (solarize_add, lambda m, sign: torch.trunc(m * 110).clamp(max=128)),
    "Color": (color, lambda m, sign: m * 1.8 + 0.1),
    "ColorIncreasing": (color, lambda m, sign: (1.0 + m * 0.9 * sign).clamp(min=0.1)),
    "Contrast": (contrast, lambda m, sign: m * 1.8 + 0.1),
    "ContrastIncreasing": (contrast, lambda m, sign: (1.0 + m * 0.9 * sign).clamp(min=0.1)),
    "Brightness": (brightness, lambda m, sign: m * 1.8 + 0.1),
    "BrightnessIncreasing": (brightness, lambda m, sign: (1.0 + m * 0.9 * sign).clamp(min=0.1)),
    "Sharpness": (sharpness, lambda m, sign: m * 1.8 + 0.1),
    "SharpnessIncreasing": (sharpness, lambda m, sign: (1.0 + m * 0.9 * sign).clamp(min=0.1)),
    "ShearX": (None, lambda m, sign: m * 0.3 * sign),
    "ShearY": (None, lambda m, sign: m * 0.3 * sign),
    "TranslateXRel": (None, lambda m, sign: m * 0.45 * sign),
    "TranslateYRel": (None, lambda m, sign: m * 0.45 * sign),
}

# timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, in timm's order
RAND_TRANSFORMS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
                   "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
                   "TranslateYRel")
RAND_INCREASING_TRANSFORMS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                              "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                              "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
                              "TranslateXRel", "TranslateYRel")


def parse_rand_augment(config: str) -> dict:
    """timm's 'rand-m9-n2-mstd0.5-mmax10-inc1-p0.5' string: magnitude, num_ops, magnitude_std,
    magnitude_max, increasing, prob (timm's defaults: m 10, n 2, mstd 0, mmax 10, inc 0, p 0.5)."""
    sections = config.split("-")
    if sections[0] != "rand":
        raise ValueError(f"auto_augment {config!r}: only timm's RandAugment ('rand-...') runs on the device")
    options = dict(magnitude=10.0, num_ops=2, magnitude_std=0.0, magnitude_max=10.0, increasing=False, prob=0.5)
    keys = {"m": "magnitude", "n": "num_ops", "mstd": "magnitude_std", "mmax": "magnitude_max",
            "inc": "increasing", "p": "prob"}
    for section in sections[1:]:
        match = re.fullmatch(r"([a-z]+)(\d.*)", section)
        if match is None or match.group(1) not in keys:
            raise ValueError(f"auto_augment {config!r}: unknown section {section!r}")
        key, value = keys[match.group(1)], float(match.group(2))
        options[key] = {"num_ops": int, "increasing": lambda v: bool(int(v))}.get(key, float)(value)
    if options["magnitude_std"] > 100:
        options["magnitude_std"] = math.inf  # timm: uniform magnitudes
    return options


class RandAugment(torch.nn.Module):
    """timm's RandAugment per sample: num_ops ops drawn uniformly with replacement, each applied
    with probability prob at magnitude N(m, mstd) clipped to [0, mmax]."""

    def __init__(self, config: str, fill=(128, 128, 128), interpolation="bicubic"):
        super().__init__()
        self.options = parse_rand_augment(config)
        self.names = RAND_INCREASING_TRANSFORMS if self.options["increasing"] else RAND_TRANSFORMS
        self.fill, self.interpolation = tuple(fill), interpolation

    def draw(self, batch: int, generator, device):
        """(op index or -1 for none, magnitude, sign), each num_ops x batch."""
        o = self.options
        shape = (o["num_ops"], batch)
        op = torch.randint(0, len(self.names), shape, generator=generator, device=device)
        skip = torch.rand(shape, generator=generator, device=device, dtype=torch.float64) >= o["prob"]
        op = torch.where(skip, torch.full_like(op, -1), op)
        if o["magnitude_std"] == math.inf:
            magnitude = _uniform(0.0, o["magnitude"], shape, generator, device)
        else:
            noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float64)
            magnitude = o["magnitude"] + o["magnitude_std"] * noise
        magnitude = magnitude.clamp(0.0, o["magnitude_max"])
        sign = torch.where(torch.rand(shape, generator=generator, device=device) < 0.5, -1.0, 1.0)
        return op, magnitude, sign.to(torch.float64)

    def forward(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        ops, magnitudes, signs = self.draw(x.shape[0], generator, x.device)
        for op, magnitude, sign in zip(ops, magnitudes, signs):
            x = self.apply_ops(x, op, magnitude, sign)
        return x

    def apply_ops(self, x, op, magnitude, sign):
        """One layer: sample i gets op[i] (-1: none) at magnitude[i]; samples grouped by op."""
        level = magnitude / 10.0
        geometric = torch.zeros_like(op, dtype=torch.bool)
        geometric_level = torch.zeros_like(level)
        for index, name in enumerate(self.names):
            function, to_argument = _OPS[name]
            chosen = op == index
            argument = to_argument(level, sign) if to_argument else level
            if name in _GEOMETRIC:  # all geometric ops of the layer go through one warp
                geometric |= chosen
                geometric_level = torch.where(chosen, argument, geometric_level)
            else:
                x = _apply_where(x, chosen, function, argument)
        matrix = _affine_matrices(self.names, op, geometric_level, *x.shape[2:])
        return _apply_where(x, geometric, lambda image, m: pil_affine(image, m, self.fill, self.interpolation),
                            matrix)


class ColorJitter(torch.nn.Module):
    """torchvision's ColorJitter on PIL images (as timm adds it without auto-augment): brightness,
    contrast and saturation factors U(max(0, 1 - j), 1 + j), applied in a random order per sample."""

    def __init__(self, jitter):
        super().__init__()
        jitter = (float(jitter),) * 3 if isinstance(jitter, (int, float)) else tuple(jitter)
        if len(jitter) not in (3, 4) or (len(jitter) == 4 and jitter[3]):
            raise ValueError(f"color_jitter must be a number or (brightness, contrast, saturation[, 0]), got {jitter}")
        self.jitter = jitter[:3]

    def forward(self, x, generator=None):
        batch, device = x.shape[0], x.device
        order = torch.rand((batch, 3), generator=generator, device=device).argsort(1)
        factors = [_uniform(max(0.0, 1 - j), 1 + j, (batch,), generator, device) for j in self.jitter]
        for position in range(3):
            for op, (function, jitter, factor) in enumerate(zip((brightness, contrast, color), self.jitter, factors)):
                if jitter:
                    x = _apply_where(x, order[:, position] == op, function, factor)
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
