"""The host half of the device pipeline: every random draw of a batch, and its one copy to the device.

The augmentation (onepfrac.train.device_data.DeviceAugment, onepfrac.train.device_randaugment)
draws each sample's parameters on the host, from a CPU torch.Generator, with timm's
distributions; the device only runs kernels and never reports back, so the host runs ahead:
- the crop boxes (`crop_boxes`) and the erased boxes (`erase_boxes`), with timm's tries;
- per-sample op layers (`Layer`), which a `Schedule` sorts by op before each layer, so that
  each op's samples are one contiguous slice and the device needs no index/index_put;
- one `Packet` of host arrays, sent to the device in a single non-blocking copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

# --------------------------------------------------------------------------------------------
# Random draws, on the host


def host_generator(generator: torch.Generator | None) -> torch.Generator:
    """The CPU generator every per-sample parameter is drawn from (default: torch's global one).

    Drawing on the host lets the host know the batch's plan without asking the device, and gives
    the same parameters for a seed on every device."""
    if generator is None:
        return torch.default_generator
    if generator.device.type != "cpu":
        raise ValueError(f"the augmentation draws its parameters on the host: pass a CPU torch.Generator, "
                         f"got one on {generator.device}")
    return generator


def uniform(low, high, shape, generator) -> np.ndarray:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64).numpy()


def randint_inclusive(high: np.ndarray, generator) -> np.ndarray:
    """Python's random.randint(0, high) per element (high >= 0)."""
    u = torch.rand(np.shape(high), generator=generator, dtype=torch.float64).numpy()
    return np.minimum(np.floor(u * (high + 1)), high)


def first_valid(valid: np.ndarray, *values: np.ndarray):
    """Per row, the values at the first True column of `valid`, and whether there was one."""
    first = valid.argmax(1)[:, None]
    return (valid.any(1), *(np.take_along_axis(v, first, 1)[:, 0] for v in values))


# --------------------------------------------------------------------------------------------
# The copy to the device


_TORCH_DTYPES = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32,
                 np.dtype(np.int64): torch.int64, np.dtype(np.bool_): torch.bool}


class Packet:
    """A batch's host arrays, sent to the device in one copy.

    Packed as bytes at 8-byte offsets and viewed back with their own dtypes there: one pinned,
    non-blocking copy instead of one per parameter, and no conversion kernels. (A copy from
    pageable memory would make the host wait for the device's queue.)"""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, name: str, array, dtype) -> None:
        self.arrays[name] = np.ascontiguousarray(array, dtype=dtype)

    def send(self, device) -> dict[str, torch.Tensor]:
        device = torch.device(device)
        offsets, total = {}, 0
        for name, array in self.arrays.items():
            offsets[name] = total
            total += -(-array.nbytes // 8) * 8
        buffer = np.zeros(max(total, 8), dtype=np.uint8)
        for name, array in self.arrays.items():
            buffer[offsets[name]:offsets[name] + array.nbytes] = array.reshape(-1).view(np.uint8)
        host = torch.from_numpy(buffer)
        if device.type == "cuda":
            host = host.pin_memory()
        sent = host.to(device, non_blocking=True)
        return {name: sent[offsets[name]:offsets[name] + array.nbytes].view(_TORCH_DTYPES[array.dtype])
                .view(array.shape) for name, array in self.arrays.items()}


# --------------------------------------------------------------------------------------------
# Per-sample op layers and the order the batch runs them in


@dataclass
class Layer:
    """One op per sample, on the host: sample i gets functions[key[i] - 1](x, argument[i],
    theta[i]) and key 0 leaves it alone. theta: (B, 2, 3) warp matrices, for geometric ops."""
    key: np.ndarray
    argument: np.ndarray
    functions: tuple[Callable, ...]
    theta: np.ndarray | None = None


def is_identity(order: np.ndarray) -> bool:
    return bool((order == np.arange(len(order))).all())


class Schedule:
    """Where each sample sits before each layer: sorted by the layer's key (stably, from where
    the previous layer left it), so every op's samples form one contiguous slice.

    `rows` is the arrangement the batch must enter in (position -> sample), `order` where it
    leaves (position -> sample) and `restore` the gather back to sample order (None: none needed).
    """

    def __init__(self, layers: list[Layer], batch: int):
        self.layers = layers
        self.moves, self.bounds, self.positions = [], [], []
        current = np.arange(batch)
        for layer in layers:
            move = np.argsort(layer.key[current], kind="stable")
            current = current[move]
            self.moves.append(None if is_identity(move) else move)
            # bounds[k]:bounds[k + 1] holds key k
            self.bounds.append(np.searchsorted(layer.key[current], np.arange(len(layer.functions) + 2)).tolist())
            self.positions.append(current)
        self.rows = self.positions[0] if layers else np.arange(batch)
        self.order = current
        self.restore = None if is_identity(current) else np.argsort(current)

    def pack(self, packet: Packet, name: str = "layer") -> None:
        for index, (layer, move, current) in enumerate(zip(self.layers, self.moves, self.positions)):
            if index and move is not None:  # the first move is the caller's (`rows`)
                packet.add(f"{name}{index}.move", move, np.int64)
            packet.add(f"{name}{index}.argument", layer.argument[current], np.float32)
            if layer.theta is not None:
                packet.add(f"{name}{index}.theta", layer.theta[current], np.float32)

    def run(self, x: torch.Tensor, sent: dict, name: str = "layer") -> torch.Tensor:
        """Each layer on the device, x arriving in `rows` order and leaving in `order`."""
        for index, (layer, bounds) in enumerate(zip(self.layers, self.bounds)):
            if index and self.moves[index] is not None:
                x = x[sent[f"{name}{index}.move"]]
            if bounds[1] == len(x):
                continue  # every sample left alone
            argument, theta = sent[f"{name}{index}.argument"], sent.get(f"{name}{index}.theta")
            pieces = []
            for key, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
                if start == stop:
                    continue
                part = x[start:stop]
                if key:
                    part = layer.functions[key - 1](part, argument[start:stop],
                                                    None if theta is None else theta[start:stop])
                pieces.append(part)
            x = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return x


# --------------------------------------------------------------------------------------------
# The crop and the erasing boxes


def crop_boxes(batch: int, height: int, width: int, scale, ratio, generator=None):
    """(top, left, h, w) host arrays with timm's RandomResizedCropAndInterpolation.get_params
    distribution: 10 tries of uniform area and log-uniform aspect, else a ratio-clamped centre crop."""
    generator = host_generator(generator)
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    target_area = uniform(scale[0], scale[1], (batch, 10), generator) * area
    aspect = np.exp(uniform(log_ratio[0], log_ratio[1], (batch, 10), generator))
    w = np.round(np.sqrt(target_area * aspect))  # round half to even, as Python's round
    h = np.round(np.sqrt(target_area / aspect))
    found, w, h = first_valid((w <= width) & (h <= height), w, h)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = int(round(height * max(ratio))), height
    else:
        fallback_w, fallback_h = width, height
    w = np.maximum(np.where(found, w, fallback_w), 1)
    h = np.maximum(np.where(found, h, fallback_h), 1)
    top = np.where(found, randint_inclusive(height - h, generator), (height - h) // 2)
    left = np.where(found, randint_inclusive(width - w, generator), (width - w) // 2)
    return top, left, h, w


def erase_boxes(batch: int, height: int, width: int, probability: float, max_count: int, generator=None,
                min_area=0.02, max_area=1 / 3, min_aspect=0.3):
    """timm's RandomErasing draws, on the host: whether each sample is erased, and its boxes
    (B, max_count, 4) as (top, bottom, left, right); a box not drawn is empty."""
    generator = host_generator(generator)
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    erase = torch.rand(batch, generator=generator).numpy() < probability
    if max_count > 1:
        count = torch.randint(1, max_count + 1, (batch,), generator=generator).numpy()
    else:
        count = np.ones(batch, dtype=np.int64)
    boxes = np.zeros((batch, max_count, 4))
    for box in range(max_count):
        target_area = uniform(min_area, max_area, (batch, 10), generator) * (height * width) / count[:, None]
        aspect = np.exp(uniform(log_aspect[0], log_aspect[1], (batch, 10), generator))
        h = np.round(np.sqrt(target_area * aspect))
        w = np.round(np.sqrt(target_area / aspect))
        found, h, w = first_valid((w < width) & (h < height), h, w)
        top = randint_inclusive(np.maximum(height - h, 0), generator)
        left = randint_inclusive(np.maximum(width - w, 0), generator)
        active = found & (box < count)
        boxes[:, box] = np.where(active[:, None], np.stack([top, top + h, left, left + w], 1), 0)
    return erase & (boxes[:, :, 1] > boxes[:, :, 0]).any(1), boxes


def draw_seed(generator=None) -> int:
    """A seed for a device generator, drawn on the host so the batch stays reproducible."""
    return int(torch.randint(0, 2**62, (), generator=host_generator(generator)))
