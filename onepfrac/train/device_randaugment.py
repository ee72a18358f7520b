"""RandAugment and colour jitter on batches, with timm's semantics and PIL's uint8 arithmetic.

Used by onepfrac.train.device_data.DeviceAugment, in two halves:
- the host draws every sample's ops and arguments (numpy, from a CPU torch.Generator) into
  `Layer`s, and a `Schedule` (both in onepfrac.train.device_plan) sorts the batch by op before
  each layer, so each op's samples are one slice;
- the device runs each op once, on its slice. The group sizes are known on the host, so the
  device never has to report them (no synchronisation), and slices need no index/index_put.

Values are floats holding 0..255 and are put back on the uint8 grid after every op, as PIL
stores its 8-bit results.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from onepfrac.train.device_plan import Layer, Packet, Schedule, host_generator, uniform


def apply_layers(x: torch.Tensor, layers: list[Layer]) -> torch.Tensor:
    """The layers on a batch, samples in and out in the same order (a standalone run)."""
    schedule = Schedule(layers, x.shape[0])
    packet = Packet()
    packet.add("rows", schedule.rows, np.int64)
    schedule.pack(packet)
    if schedule.restore is not None:
        packet.add("restore", schedule.restore, np.int64)
    sent = packet.send(x.device)
    x = schedule.run(x[sent["rows"]], sent)
    return x if schedule.restore is None else x[sent["restore"]]


# --------------------------------------------------------------------------------------------
# Device side: the ops, each on a batch with one argument per sample


def round_uint8(x: torch.Tensor) -> torch.Tensor:
    """Back onto the uint8 grid as PIL's 8-bit kernels store a result: round half up, clip."""
    return torch.floor(x + 0.5).clamp_(0, 255)


def _per_sample(value: torch.Tensor) -> torch.Tensor:
    return value.view(-1, 1, 1, 1)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # PIL's Image.blend on uint8: float32 arithmetic, then clipped and truncated (not rounded)
    return torch.trunc(degenerate + _per_sample(factor) * (x - degenerate)).clamp_(0, 255)


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
    # torchvision's uint8 equalize is PIL's ImageOps.equalize pixel for pixel (measured on RGB and L)
    return TF.equalize(x.to(torch.uint8)).to(x.dtype)


def invert(x, _=None):
    return 255 - x


def posterize(x, mask):
    """mask: 256 - 2 ** (8 - bits), the `bits` high bits kept (drawn on the host)."""
    return torch.bitwise_and(x.to(torch.int32), _per_sample(mask).to(torch.int32)).to(x.dtype)


def solarize(x, threshold):
    return torch.where(x < _per_sample(threshold), x, 255 - x)


def solarize_add(x, add, threshold=128):
    return torch.where(x < threshold, (x + _per_sample(add)).clamp_(max=255), x)


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
    smooth = round_uint8(F.conv2d(x, kernel.expand(channels, 1, 3, 3), groups=channels))
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, factor)


def warp(x: torch.Tensor, theta: torch.Tensor, fill, interpolation="bicubic") -> torch.Tensor:
    """PIL's Image.transform(AFFINE) per sample, theta (B, 2, 3) from `pil_theta`. As PIL: a point
    outside the input takes `fill` (a hard edge), a point inside reads edge-replicated neighbours.
    kornia's warp_affine fills by warping a mask, which blends fill and image over a 2-pixel band."""
    batch, channels, height, width = x.shape
    grid = F.affine_grid(theta.to(x.dtype), [batch, channels, height, width], align_corners=False)
    warped = F.grid_sample(x, grid, mode=interpolation, padding_mode="border", align_corners=False)
    inside = ((grid >= -1) & (grid < 1)).all(-1)[:, None]
    fill = torch.tensor(fill[:channels], dtype=x.dtype, device=x.device).view(1, channels, 1, 1)
    return round_uint8(torch.where(inside, warped, fill))


def pil_theta(matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL's output -> input matrices (B, 2, 3), pixel i spanning [i, i + 1), as grid_sample's
    normalised ones (align_corners=False: x_n = 2 x / W - 1)."""
    to_normal = np.array([[2 / width, 0, -1], [0, 2 / height, -1]])
    from_normal = np.array([[width / 2, 0, width / 2], [0, height / 2, height / 2], [0, 0, 1]])
    last_row = np.broadcast_to([[[0.0, 0.0, 1.0]]], (len(matrix), 1, 3))
    return to_normal @ np.concatenate([matrix, last_row], 1) @ from_normal


def affine_matrices(name: str, argument: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL's output -> input matrix (B, 2, 3) of a geometric op at each sample's argument."""
    matrix = np.zeros((len(argument), 2, 3))
    matrix[:, 0, 0] = matrix[:, 1, 1] = 1.0
    if name == "Rotate":  # Image.rotate about the centre, counter-clockwise degrees
        angle = -np.deg2rad(argument)
        cos, sin = np.cos(angle), np.sin(angle)
        cx, cy = width / 2, height / 2
        matrix[:] = np.stack([np.stack([cos, sin, cx - cos * cx - sin * cy], 1),
                              np.stack([-sin, cos, cy + sin * cx - cos * cy], 1)], 1)
    else:
        row, column = {"ShearX": (0, 1), "ShearY": (1, 0), "TranslateXRel": (0, 2), "TranslateYRel": (1, 2)}[name]
        matrix[:, row, column] = argument * {"TranslateXRel": width, "TranslateYRel": height}.get(name, 1)
    return matrix


def layer_function(op):
    """A photometric op(x, argument) as a `Layer` function, which also takes the warp matrices."""
    return lambda x, argument, _theta: op(x, argument)


_GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")

# name -> (op, level -> argument), on the host; level is the magnitude over 10 (timm's level /
# _LEVEL_DENOM), `sign` timm's random negation. Mirrors timm's LEVEL_TO_ARG for RandAugment.
_OPS = {
    "AutoContrast": (auto_contrast, None),
    "Equalize": (equalize, None),
    "Invert": (invert, None),
    "Rotate": (None, lambda m, sign: m * 30 * sign),
    "Posterize": (posterize, lambda m, sign: 256 - 2.0 ** (8 - np.trunc(m * 4))),
    "PosterizeIncreasing": (posterize, lambda m, sign: 256 - 2.0 ** (8 - (4 - np.trunc(m * 4)))),
    "Solarize": (solarize, lambda m, sign: np.minimum(np.trunc(m * 256), 256)),
    "SolarizeIncreasing": (solarize, lambda m, sign: 256 - np.minimum(np.trunc(m * 256), 256)),
    "SolarizeAdd": (solarize_add, lambda m, sign: np.minimum(np.trunc(m * 110), 128)),
    "Color": (color, lambda m, sign: m * 1.8 + 0.1),
    "ColorIncreasing": (color, lambda m, sign: np.maximum(1.0 + m * 0.9 * sign, 0.1)),
    "Contrast": (contrast, lambda m, sign: m * 1.8 + 0.1),
    "ContrastIncreasing": (contrast, lambda m, sign: np.maximum(1.0 + m * 0.9 * sign, 0.1)),
    "Brightness": (brightness, lambda m, sign: m * 1.8 + 0.1),
    "BrightnessIncreasing": (brightness, lambda m, sign: np.maximum(1.0 + m * 0.9 * sign, 0.1)),
    "Sharpness": (sharpness, lambda m, sign: m * 1.8 + 0.1),
    "SharpnessIncreasing": (sharpness, lambda m, sign: np.maximum(1.0 + m * 0.9 * sign, 0.1)),
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
        # key 0: no op; each photometric op its own key; the geometric ops share one warp
        self.photometric = [name for name in self.names if name not in _GEOMETRIC]
        warp_op = lambda x, _argument, theta: warp(x, theta, self.fill, self.interpolation)  # noqa: E731
        self.functions = tuple(layer_function(_OPS[name][0]) for name in self.photometric) + (warp_op,)

    def draw(self, batch: int, generator=None):
        """(op index or -1 for none, magnitude, sign), each num_ops x batch, on the host."""
        generator = host_generator(generator)
        o = self.options
        shape = (o["num_ops"], batch)
        op = torch.randint(0, len(self.names), shape, generator=generator).numpy()
        skip = torch.rand(shape, generator=generator, dtype=torch.float64).numpy() >= o["prob"]
        op = np.where(skip, -1, op)
        if o["magnitude_std"] == math.inf:
            magnitude = uniform(0.0, o["magnitude"], shape, generator)
        else:
            noise = torch.randn(shape, generator=generator, dtype=torch.float64).numpy()
            magnitude = o["magnitude"] + o["magnitude_std"] * noise
        magnitude = np.clip(magnitude, 0.0, o["magnitude_max"])
        sign = np.where(torch.rand(shape, generator=generator).numpy() < 0.5, -1.0, 1.0)
        return op, magnitude, sign

    def layers(self, op, magnitude, sign, height: int, width: int) -> list[Layer]:
        """The host plan of the drawn layers for height x width images."""
        layers = []
        geometric_key = len(self.functions)
        for layer_op, layer_magnitude, layer_sign in zip(op, magnitude, sign):
            layer_op = np.asarray(layer_op)
            level = np.asarray(layer_magnitude, dtype=np.float64) / 10.0
            layer_sign = np.asarray(layer_sign, dtype=np.float64)
            key = np.zeros(len(layer_op), dtype=np.int64)
            argument = np.zeros(len(layer_op))
            theta = None
            for index, name in enumerate(self.names):
                chosen = layer_op == index
                if not chosen.any():
                    continue
                to_argument = _OPS[name][1]
                value = to_argument(level[chosen], layer_sign[chosen]) if to_argument else level[chosen]
                if name in _GEOMETRIC:
                    key[chosen] = geometric_key
                    if theta is None:
                        theta = np.zeros((len(layer_op), 2, 3))
                    theta[chosen] = pil_theta(affine_matrices(name, value, height, width), height, width)
                else:
                    key[chosen] = self.photometric.index(name) + 1
                    argument[chosen] = value
            layers.append(Layer(key, argument, self.functions, theta))
        return layers

    def apply(self, x: torch.Tensor, op, magnitude, sign) -> torch.Tensor:
        """Given draws (num_ops x batch host arrays) on a batch."""
        return apply_layers(x, self.layers(op, magnitude, sign, *x.shape[2:]))

    def forward(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        return self.apply(x, *self.draw(x.shape[0], generator))


class ColorJitter(torch.nn.Module):
    """torchvision's ColorJitter on PIL images (as timm adds it without auto-augment): brightness,
    contrast and saturation factors U(max(0, 1 - j), 1 + j), applied in a random order per sample."""

    def __init__(self, jitter):
        super().__init__()
        jitter = (float(jitter),) * 3 if isinstance(jitter, (int, float)) else tuple(jitter)
        if len(jitter) not in (3, 4) or (len(jitter) == 4 and jitter[3]):
            raise ValueError(f"color_jitter must be a number or (brightness, contrast, saturation[, 0]), got {jitter}")
        self.jitter = jitter[:3]
        self.functions = tuple(layer_function(op) for op in (brightness, contrast, color))

    def layers(self, batch: int, generator=None) -> list[Layer]:
        """Three layers: at position p sample i gets the op its random order puts there."""
        generator = host_generator(generator)
        order = torch.rand((batch, 3), generator=generator).argsort(1).numpy()
        factors = np.stack([uniform(max(0.0, 1 - j), 1 + j, (batch,), generator) for j in self.jitter])
        active = np.array([bool(j) for j in self.jitter])
        samples = np.arange(batch)
        return [Layer(np.where(active[order[:, p]], order[:, p] + 1, 0), factors[order[:, p], samples],
                      self.functions) for p in range(3)]

    def forward(self, x, generator=None):
        return apply_layers(x, self.layers(x.shape[0], generator))
