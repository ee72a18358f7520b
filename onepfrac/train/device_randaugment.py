"""RandAugment and colour jitter on batches, with timm's semantics and PIL's uint8 arithmetic.

Used by onepfrac.train.device_data.DeviceAugment. Every sample draws its own ops and magnitudes;
samples are grouped by op (group_by), never looped over in Python, and each op runs on its own
group. Values are floats holding 0..255 and are put back on the uint8 grid after every op, as
PIL stores its 8-bit results.
"""

from __future__ import annotations

import math
import re

import kornia
import torch
import torch.nn.functional as F


def _round_uint8(x: torch.Tensor) -> torch.Tensor:
    """Back onto the uint8 grid as PIL's 8-bit kernels store a result: round half up, clip."""
    return torch.floor(x + 0.5).clamp_(0, 255)


def _uniform(low, high, shape, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device, dtype=torch.float64)


def group_by(choice: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Indices of the samples that chose each of 0..count-1 (-1: none), in sample order.

    Costs one host synchronisation (the group sizes), so that each op then runs on its own
    samples only: computing every op on the whole batch and selecting, which needs none, made
    RandAugment 11 full-batch passes a layer instead of one (about half the step time of
    ViT-Tiny/16 at 224 on an H100)."""
    sizes = torch.bincount(choice + 1, minlength=count + 1).tolist()
    order = torch.argsort(choice, stable=True)
    return list(torch.split(order, sizes))[1:]


def apply_grouped(x: torch.Tensor, members: torch.Tensor, op, *args: torch.Tensor) -> torch.Tensor:
    """x with op(x[members], *args[members]) written back in place (x must own its memory)."""
    if members.numel():
        x[members] = op(x[members], *(a[members] for a in args))
    return x


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
        """One layer: sample i gets op[i] (-1: none) at magnitude[i]; each op runs on its group."""
        x = x.clone(memory_format=torch.contiguous_format)  # written in place below
        level = magnitude / 10.0
        groups = group_by(op, len(self.names))
        geometric, geometric_level = [], torch.zeros_like(level)
        for index, name in enumerate(self.names):
            members = groups[index]
            if members.numel() == 0:
                continue
            function, to_argument = _OPS[name]
            argument = to_argument(level, sign) if to_argument else level
            if name in _GEOMETRIC:  # all geometric ops of the layer go through one warp
                geometric.append(members)
                geometric_level[members] = argument[members]
            else:
                apply_grouped(x, members, function, argument)
        if geometric:
            matrix = _affine_matrices(self.names, op, geometric_level, *x.shape[2:])
            warp = lambda image, m: pil_affine(image, m, self.fill, self.interpolation)  # noqa: E731
            apply_grouped(x, torch.cat(geometric), warp, matrix)
        return x


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
        x = x.clone(memory_format=torch.contiguous_format)  # written in place below
        for position in range(3):
            groups = group_by(order[:, position], 3)
            for op, (function, jitter, factor) in enumerate(zip((brightness, contrast, color), self.jitter, factors)):
                if jitter:
                    apply_grouped(x, groups[op], function, factor)
        return x


