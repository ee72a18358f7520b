"""Specifications of the on-device dataset, sampler and augmentation (onepfrac.train.device_data).

Reference behaviour is timm's own training transform on PIL images, run here on small images
with fixed seeds, so every comparison is deterministic.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from timm.data.transforms import RandomResizedCropAndInterpolation
from torch.utils.data.distributed import DistributedSampler

from onepfrac.train.device_data import (DeviceAugment, DeviceBatches, DeviceDataset, crop_boxes,
                                        random_erase, resized_crop)

# Two-sample KS statistic above which two samples of 4,000 differ (p < 0.001 is 0.044).
KS_LIMIT = 0.05


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def smooth_image(height, width, channels=3, seed=0) -> np.ndarray:
    """A natural-looking uint8 image (C x H x W): smooth gradients plus a few sharp shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    planes = []
    for c in range(channels):
        a, b, phase = rng.uniform(2, 6, 3)
        plane = 128 + 90 * np.sin(a * x + phase) * np.cos(b * y + c)
        plane[height // 4: height // 2, width // 3: width // 2] = 30 + 60 * c
        planes.append(plane)
    return np.clip(np.stack(planes), 0, 255).round().astype(np.uint8)


def to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image.transpose(1, 2, 0)) if image.shape[0] == 3 else Image.fromarray(image[0])


def from_pil(image: Image.Image) -> np.ndarray:
    array = np.asarray(image)
    return array.transpose(2, 0, 1) if array.ndim == 3 else array[None]


def no_augment(img_size, **overrides) -> DeviceAugment:
    """Every random op off: a whole-image resize, normalised with mean = std = 0.5."""
    options = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, vflip=0.0, auto_augment=None,
                   color_jitter=0.0, re_prob=0.0, mean=(0.5,) * 3, std=(0.5,) * 3)
    options.update(overrides)
    return DeviceAugment(img_size, **options)


# --------------------------------------------------------------------------------------------
# DeviceBatches


@pytest.mark.parametrize("num_samples,world_size", [(1000, 8), (10, 3), (7, 4), (5, 1)])
def test_batches_are_distributed_sampler_order_without_the_last_partial_batch(num_samples, world_size):
    for rank in range(world_size):
        sampler = DistributedSampler(range(num_samples), num_replicas=world_size, rank=rank, shuffle=True, seed=42)
        batches = DeviceBatches(num_samples, 2, rank, world_size, seed=42)
        for epoch in (0, 3):
            sampler.set_epoch(epoch)
            batches.set_epoch(epoch)
            expected = list(sampler)
            expected = expected[:len(expected) // 2 * 2]
            got = torch.cat(list(batches)).tolist() if len(batches) else []
            assert got == expected
            assert all(len(b) == 2 for b in batches)


def test_released_recipe_sees_768_of_1000_images_an_epoch_in_3_batches_a_rank():
    ranks = [DeviceBatches(1000, 32, rank, 8, seed=42) for rank in range(8)]
    assert all(len(b) == 3 for b in ranks)
    seen = torch.cat([torch.cat(list(b)) for b in ranks])
    assert len(seen) == 768 and len(set(seen.tolist())) == 768


def test_every_sample_once_an_epoch_across_ranks_when_batches_divide():
    ranks = [DeviceBatches(96, 4, rank, 3, seed=1, drop_last=False) for rank in range(3)]
    for epoch in range(3):
        for b in ranks:
            b.set_epoch(epoch)
        seen = torch.cat([torch.cat(list(b)) for b in ranks])
        assert sorted(seen.tolist()) == list(range(96))


def test_padding_repeats_samples_so_every_rank_has_the_same_count():
    ranks = [DeviceBatches(10, 1, rank, 4, seed=0, drop_last=False) for rank in range(4)]
    seen = [torch.cat(list(b)).tolist() for b in ranks]
    assert [len(s) for s in seen] == [3, 3, 3, 3]
    assert set(sum(seen, [])) == set(range(10))


def test_same_seed_same_order_and_a_new_epoch_a_new_order():
    first, second = DeviceBatches(50, 5, seed=7), DeviceBatches(50, 5, seed=7)
    assert torch.equal(torch.cat(list(first)), torch.cat(list(second)))
    epoch0 = torch.cat(list(first))
    first.set_epoch(1)
    assert not torch.equal(torch.cat(list(first)), epoch0)
    assert not torch.equal(torch.cat(list(DeviceBatches(50, 5, seed=8))), epoch0)


def test_batches_reject_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank"):
        DeviceBatches(10, 2, rank=2, world_size=2)


# --------------------------------------------------------------------------------------------
# DeviceDataset


def write_folder(root, images_by_class):
    for name, images in images_by_class.items():
        (root / name).mkdir(parents=True)
        for i, image in enumerate(images):
            image.save(root / name / f"{i}.png")


def test_image_folder_of_gray_pngs_decodes_to_one_channel_with_imagefolder_labels(tmp_path):
    gray = [Image.fromarray(smooth_image(12, 10, 1, seed)[0]) for seed in range(3)]
    # saved as RGB, as the released generator does: still gray, so still one channel
    write_folder(tmp_path, {"10": gray[:1], "02": [gray[1].convert("RGB")], "1": gray[2:]})
    data = DeviceDataset.from_image_folder(tmp_path, "cpu", progress=False)
    assert data.images.shape == (3, 1, 12, 10) and data.images.dtype == torch.uint8
    assert data.classes == ["02", "1", "10"]
    assert data.labels.tolist() == [0, 1, 2] and data.labels.dtype == torch.int64
    assert np.array_equal(data.images[2, 0].numpy(), np.asarray(gray[0]))
    assert data.nbytes == 3 * 12 * 10 + 3 * 8


def test_image_folder_with_a_colour_image_keeps_three_channels(tmp_path):
    write_folder(tmp_path, {"a": [Image.fromarray(smooth_image(8, 8, 1)[0])], "b": [to_pil(smooth_image(8, 8))]})
    data = DeviceDataset.from_image_folder(tmp_path, "cpu", progress=False)
    assert data.images.shape == (2, 3, 8, 8)
    assert torch.equal(data.images[0, 0], data.images[0, 2])
    assert np.array_equal(data.images[1].numpy(), smooth_image(8, 8))


def test_image_folder_of_mixed_sizes_needs_a_size(tmp_path):
    write_folder(tmp_path, {"a": [to_pil(smooth_image(8, 8))], "b": [to_pil(smooth_image(9, 8))]})
    with pytest.raises(ValueError, match="size="):
        DeviceDataset.from_image_folder(tmp_path, "cpu", progress=False)
    data = DeviceDataset.from_image_folder(tmp_path, "cpu", size=6, progress=False)
    assert data.images.shape == (2, 3, 6, 6)


def test_dataset_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        DeviceDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2), "cpu")


# --------------------------------------------------------------------------------------------
# Random-resized-crop, flips


def test_crop_boxes_have_timms_distribution():
    """KS statistics over 4,000 boxes of ours against 4,000 of timm's get_params, on a square
    image and on a wide one (where all 10 tries often fail and the centre-crop fallback runs)."""
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    for height, width in [(64, 64), (20, 80)]:
        random.seed(0)
        image = Image.new("L", (width, height))
        timm_boxes = np.array([RandomResizedCropAndInterpolation.get_params(image, scale, ratio)
                               for _ in range(4000)], dtype=np.float64)
        ours = torch.stack(crop_boxes(4000, height, width, scale, ratio, generator(1), "cpu"), 1).numpy()
        for column, name in enumerate(["top", "left", "height", "width"]):
            statistic = ks_2samp(ours[:, column], timm_boxes[:, column]).statistic
            assert statistic < KS_LIMIT, (height, width, name, statistic)
        area = lambda boxes: boxes[:, 2] * boxes[:, 3] / (height * width)  # noqa: E731
        aspect = lambda boxes: np.log(boxes[:, 3] / boxes[:, 2])  # noqa: E731
        assert ks_2samp(area(ours), area(timm_boxes)).statistic < KS_LIMIT
        assert ks_2samp(aspect(ours), aspect(timm_boxes)).statistic < KS_LIMIT
        assert ((ours[:, 0] + ours[:, 2] <= height) & (ours[:, 1] + ours[:, 3] <= width)).all()


@pytest.mark.parametrize("source,size", [(64, 32), (32, 56), (48, 48)])
def test_resized_crop_is_pils_bicubic_resize_of_the_crop(source, size):
    image = smooth_image(source, source)
    rng = np.random.default_rng(source)
    for _ in range(4):
        h, w = (int(v) for v in rng.integers(4, source + 1, 2))
        top, left = int(rng.integers(0, source - h + 1)), int(rng.integers(0, source - w + 1))
        pil = to_pil(image).crop((left, top, left + w, top + h)).resize((size, size), Image.BICUBIC)
        ours = resized_crop(torch.from_numpy(image)[None], *(torch.tensor([v]) for v in (top, left, h, w)), size)
        difference = np.abs(ours[0].numpy() - from_pil(pil).astype(np.float64))
        assert difference.max() <= 1 and difference.mean() < 0.05  # PIL's fixed-point weights


def test_whole_image_resize_with_everything_off_is_timms_transform():
    from timm.data import create_transform
    image = smooth_image(64, 64)
    reference = create_transform(32, is_training=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0,
                                 interpolation="bicubic", color_jitter=None, mean=(0.5,) * 3, std=(0.5,) * 3)
    expected = reference(to_pil(image))
    ours = no_augment(32)(torch.from_numpy(image)[None], generator())[0]
    assert ours.dtype == torch.float32 and ours.shape == (3, 32, 32)
    assert (ours - expected).abs().max() <= 1 / 127.5 + 1e-6


def test_flips_with_probability_one_mirror_the_image():
    image = torch.from_numpy(smooth_image(16, 16))[None]
    plain = no_augment(16)(image, generator())
    assert torch.equal(no_augment(16, hflip=1.0)(image, generator()), plain.flip(-1))
    assert torch.equal(no_augment(16, vflip=1.0)(image, generator()), plain.flip(-2))


def test_flip_probability_is_per_sample():
    image = torch.from_numpy(smooth_image(8, 8)).expand(400, -1, -1, -1)
    out = no_augment(8, hflip=0.5)(image, generator())
    flipped = (out != out[:1]).flatten(1).any(1).float().mean().item()
    assert 0.4 < flipped < 0.6


def test_gray_batch_becomes_three_equal_normalised_channels():
    image = torch.from_numpy(smooth_image(40, 40, 1)).expand(4, -1, -1, -1)
    out = DeviceAugment(24, auto_augment=None, color_jitter=0.0, re_prob=0.0, mean=(0.5,) * 3, std=(0.5,) * 3)(
        image, generator())
    assert out.shape == (4, 3, 24, 24)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert out.min() >= -1 and out.max() <= 1


def test_cifar_sized_images_upscale_to_the_model_size_with_imagenet_statistics():
    images = torch.from_numpy(np.stack([smooth_image(32, 32, 3, s) for s in range(8)]))
    out = DeviceAugment(224, auto_augment=None, color_jitter=0.0, re_prob=0.25)(images, generator())
    assert out.shape == (8, 3, 224, 224) and out.dtype == torch.float32 and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------
# Random erasing


def test_erasing_with_probability_zero_is_the_identity():
    x = torch.randn(8, 3, 16, 16, generator=generator())
    assert torch.equal(random_erase(x, 0.0, "pixel", 1, generator()), x)


def test_erasing_boxes_have_timms_distribution_and_per_pixel_normal_fill():
    from timm.data.random_erasing import RandomErasing
    x = torch.full((4000, 3, 24, 32), 100.0)
    out = random_erase(x, 0.5, "pixel", 1, generator())
    random.seed(0)
    torch.manual_seed(0)
    reference = RandomErasing(0.5, mode="pixel", device="cpu")(x.clone())
    erased, timm_erased = out != 100.0, reference != 100.0
    ours_box = [erased[:, 0].any(dim).sum(1).float().numpy() for dim in (2, 1)]  # box height, width
    timm_box = [timm_erased[:, 0].any(dim).sum(1).float().numpy() for dim in (2, 1)]
    for ours, theirs in zip(ours_box, timm_box):
        assert ks_2samp(ours, theirs).statistic < KS_LIMIT
    values = out[erased]
    assert abs(values.mean().item()) < 0.02 and abs(values.std().item() - 1) < 0.02
    assert torch.equal(erased[:, 0], erased[:, 1])  # one box for all channels, noise per channel
    assert not torch.equal(out[:, 0][erased[:, 0]], out[:, 1][erased[:, 1]])


def test_erasing_count_splits_the_area_between_boxes():
    out = random_erase(torch.ones(500, 3, 32, 32), 1.0, "const", 3, generator())
    assert ((out == 0).flatten(1).float().mean(1) <= 1 / 3 + 0.05).all()


def test_same_seed_gives_the_same_augmented_batch():
    images = torch.from_numpy(np.stack([smooth_image(48, 48, 3, s) for s in range(6)]))
    augment = DeviceAugment(32, auto_augment=None, color_jitter=0.0, re_prob=0.5)
    first, second = augment(images, generator(3)), augment(images, generator(3))
    assert torch.equal(first, second)
    assert not torch.equal(first, augment(images, generator(4)))
