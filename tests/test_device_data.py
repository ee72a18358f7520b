"""Specifications of the on-device dataset, sampler and augmentation (onepfrac.train.device_data).

Reference behaviour is timm's own training transform on PIL images, run here on small images
with fixed seeds, so every comparison is deterministic.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from timm.data.transforms import RandomResizedCropAndInterpolation

from onepfrac.train.device_data import DeviceAugment, DeviceDataset, crop_plan, random_erase, resized_crop
from onepfrac.train.device_plan import crop_boxes

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


def test_image_folder_of_mixed_sizes_is_refused(tmp_path):
    write_folder(tmp_path, {"a": [to_pil(smooth_image(8, 8))], "b": [to_pil(smooth_image(9, 8))]})
    with pytest.raises(ValueError, match="differ in size"):
        DeviceDataset.from_image_folder(tmp_path, "cpu", progress=False)


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
        ours = np.stack(crop_boxes(4000, height, width, scale, ratio, generator(1)), 1)
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
        plan = torch.from_numpy(crop_plan([top], [left], [h], [w], size))
        ours = resized_crop(torch.from_numpy(image)[None], plan, size)
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


# --------------------------------------------------------------------------------------------
# RandAugment: timm's op semantics and draws

import timm.data.auto_augment as timm_auto_augment  # noqa: E402

from onepfrac.train.device_plan import Layer, Schedule  # noqa: E402
from onepfrac.train.device_randaugment import (RAND_INCREASING_TRANSFORMS, RAND_TRANSFORMS,  # noqa: E402
                                              ColorJitter, RandAugment, apply_layers, parse_rand_augment)

PHOTOMETRIC = sorted(set(RAND_TRANSFORMS + RAND_INCREASING_TRANSFORMS)
                     - {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"})
GEOMETRIC = ["Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]
# Geometric ops differ from PIL only by the cubic's coefficient (torch's grid_sample -0.75):
# measured means 0.3 to 0.5 gray levels, maxima 5 to 9 on sharp edges.
GEOMETRIC_MEAN_TOLERANCE, GEOMETRIC_MAX_TOLERANCE = 0.6, 12


def op_inputs():
    """(ours, PIL's) pairs: three colour images and a gray one (1 channel here, RGB for PIL)."""
    pairs = [(smooth_image(40, 48, 3, seed),) * 2 for seed in range(3)]
    gray = smooth_image(40, 48, 1, 5)
    return pairs + [(gray, np.repeat(gray, 3, 0))]


def ours_op(name, image, magnitude, sign, fill=(128, 128, 128)):
    augment = RandAugment("rand-m9-inc1" if name in RAND_INCREASING_TRANSFORMS else "rand-m9", fill)
    op = torch.tensor([augment.names.index(name)])
    x = torch.from_numpy(image)[None].float()
    out = augment.apply(x, op[None].numpy(), np.array([[magnitude]]), np.array([[float(sign)]]))
    return out[0].numpy()


def timm_op(name, image, magnitude, sign, monkeypatch, fill=(128, 128, 128)):
    monkeypatch.setattr(timm_auto_augment, "_randomly_negate", (lambda v: -v) if sign < 0 else (lambda v: v))
    hparams = dict(translate_const=100, img_mean=fill, interpolation=Image.BICUBIC)
    op = timm_auto_augment.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=hparams)
    return from_pil(op(to_pil(image))).astype(np.float64)


@pytest.mark.parametrize("name", PHOTOMETRIC)
def test_photometric_op_equals_timms_pil_op_pixel_for_pixel(name, monkeypatch):
    for magnitude in (0.0, 3.3, 9.0, 10.0):
        for sign in (1, -1):
            for ours, pil in op_inputs():
                expected = timm_op(name, pil, magnitude, sign, monkeypatch)[:ours.shape[0]]
                assert np.array_equal(ours_op(name, ours, magnitude, sign), expected), (magnitude, sign)


@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometric_op_matches_timms_pil_op_within_tolerance(name, monkeypatch):
    for magnitude in (3.3, 9.0, 10.0):
        for sign in (1, -1):
            for ours, pil in op_inputs():
                expected = timm_op(name, pil, magnitude, sign, monkeypatch)[:ours.shape[0]]
                difference = np.abs(ours_op(name, ours, magnitude, sign) - expected)
                assert difference.mean() < GEOMETRIC_MEAN_TOLERANCE, (magnitude, sign, difference.mean())
                assert difference.max() <= GEOMETRIC_MAX_TOLERANCE, (magnitude, sign, difference.max())


def test_geometric_op_fills_with_the_mean_colour(monkeypatch):
    image = smooth_image(40, 48)
    fill = (124, 116, 104)  # round(255 x ImageNet mean)
    ours = ours_op("TranslateXRel", image, 10.0, 1, fill)
    assert (ours[:, :, -10:] == np.array(fill)[:, None, None]).all()
    expected = timm_op("TranslateXRel", image, 10.0, 1, monkeypatch, fill)
    assert np.abs(ours - expected).mean() < GEOMETRIC_MEAN_TOLERANCE


@pytest.mark.parametrize("name", GEOMETRIC + ["ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                                              "SharpnessIncreasing", "SolarizeAdd"])
def test_op_at_magnitude_zero_is_the_identity(name):
    for ours, _ in op_inputs():
        assert np.array_equal(ours_op(name, ours, 0.0, 1), ours)


def test_rand_augment_with_probability_zero_is_the_identity():
    x = torch.from_numpy(np.stack([smooth_image(24, 24, 3, s) for s in range(8)])).float()
    assert torch.equal(RandAugment("rand-m9-mstd0.5-inc1-p0")(x, generator()), x)


def test_parse_reads_timms_config_string():
    options = parse_rand_augment("rand-m9-mstd0.5-inc1")
    assert options == dict(magnitude=9.0, num_ops=2, magnitude_std=0.5, magnitude_max=10.0, increasing=True, prob=0.5)
    assert parse_rand_augment("rand-n3-mstd101")["magnitude_std"] == float("inf")
    with pytest.raises(ValueError, match="only timm's RandAugment"):
        DeviceAugment(32, auto_augment="augmix-m5")
    with pytest.raises(ValueError, match="unknown section"):
        parse_rand_augment("rand-m9-x3")


def test_released_config_draws_ops_and_magnitudes_as_timm():
    augment = RandAugment("rand-m9-mstd0.5-inc1")
    assert augment.names == tuple(timm_auto_augment._RAND_INCREASING_TRANSFORMS)
    op, magnitude, sign = (torch.from_numpy(a) for a in augment.draw(50_000, generator()))
    assert op.shape == (2, 50_000)
    applied = op >= 0
    assert abs(applied.float().mean().item() - 0.5) < 0.005  # each layer with p 0.5
    counts = torch.bincount(op[applied], minlength=15).float() / applied.sum()
    assert (counts - 1 / 15).abs().max() < 0.005  # uniform over the 15 ops (std 0.0011)
    assert abs((sign < 0).float().mean().item() - 0.5) < 0.005
    # timm: magnitude = clip(random.gauss(9, 0.5), 0, 10), drawn for each applied op
    random.seed(0)
    timm_magnitudes = np.clip([random.gauss(9, 0.5) for _ in range(4000)], 0, 10)
    assert ks_2samp(magnitude[applied][:4000].numpy(), timm_magnitudes).statistic < KS_LIMIT
    assert magnitude.max() <= 10 and abs((magnitude == 10).float().mean().item() - 0.0228) < 0.003


def test_uniform_magnitude_when_mstd_is_infinite():
    _, magnitude, _ = RandAugment("rand-m7-mstd101").draw(20_000, generator())
    assert magnitude.min() >= 0 and magnitude.max() <= 7 and abs(magnitude.mean() - 3.5) < 0.05


def test_schedule_sorts_each_layer_so_every_op_is_one_slice():
    first = Layer(np.array([2, 0, 1, 2, 1, 0, 2]), np.zeros(7), (None, None))
    second = Layer(np.array([1, 1, 0, 0, 0, 1, 0]), np.zeros(7), (None,))
    schedule = Schedule([first, second], 7)
    assert schedule.rows.tolist() == [1, 5, 2, 4, 0, 3, 6]  # stable, by the first layer's key
    assert schedule.bounds[0] == [0, 2, 4, 7]
    # the second layer sorts from where the first left the samples
    assert schedule.order.tolist() == [2, 4, 3, 6, 1, 5, 0]
    assert schedule.bounds[1] == [0, 4, 7]
    assert (schedule.order[schedule.restore] == np.arange(7)).all()


def test_grouped_ops_equal_each_sample_on_its_own_in_sample_order():
    from onepfrac.train.device_randaugment import brightness, contrast, layer_function
    key = np.array([2, 0, 1, 2, 1, 0, 2])
    factor = np.linspace(0.2, 1.8, 7)
    x = torch.from_numpy(np.stack([smooth_image(16, 16, 3, s) for s in range(7)])).float()
    out = apply_layers(x, [Layer(key, factor, (layer_function(contrast), layer_function(brightness)))])
    for i, k in enumerate(key):
        alone = x[i:i + 1] if k == 0 else (contrast, brightness)[k - 1](x[i:i + 1], torch.tensor([factor[i]]))
        assert torch.equal(out[i:i + 1], alone), i


def test_host_draws_are_independent_of_the_device():
    # the meta device holds no data: any value read back from the device would fail here
    augment = DeviceAugment(32, hflip=0.5, vflip=0.5, re_prob=0.5, mean=(0.5,) * 3, std=(0.5,) * 3).to("meta")
    images = torch.empty((1000, 1, 64, 64), dtype=torch.uint8, device="meta")
    index = torch.arange(16, device="meta")
    out = augment(images, generator(), index=index)
    assert out.shape == (16, 3, 32, 32) and out.device.type == "meta"


def test_index_into_the_dataset_equals_augmenting_the_gathered_batch():
    images = torch.from_numpy(np.stack([smooth_image(40, 40, 1, s) for s in range(10)]))
    augment = DeviceAugment(24, hflip=0.5, vflip=0.5, re_prob=0.5, mean=(0.5,) * 3, std=(0.5,) * 3)
    index = [7, 2, 2, 9, 0, 4]
    expected = augment(images[index], generator(5))
    assert torch.equal(augment(images, generator(5), index=torch.tensor(index)), expected)
    assert torch.equal(augment(images, generator(5), index=np.array(index)), expected)


def test_a_generator_on_another_device_is_refused():
    augment = DeviceAugment(24, auto_augment=None, re_prob=0.0)
    on_gpu = SimpleNamespace(device=torch.device("cuda"))  # stands in for a CUDA generator
    with pytest.raises(ValueError, match="CPU torch.Generator"):
        augment(torch.zeros((2, 1, 8, 8), dtype=torch.uint8), on_gpu)


def test_color_jitter_only_without_auto_augment_as_timm():
    assert DeviceAugment(32, auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.4).color_jitter is None
    assert isinstance(DeviceAugment(32, auto_augment=None, color_jitter=0.4).color_jitter, ColorJitter)
    x = torch.from_numpy(np.stack([smooth_image(16, 16, 3, s) for s in range(4)])).float()
    assert torch.equal(ColorJitter((0.0, 0.0, 0.0))(x, generator()), x)
    jittered = ColorJitter(0.4)(x, generator())
    assert not torch.equal(jittered, x) and jittered.min() >= 0 and jittered.max() <= 255


def test_released_pretraining_recipe_on_gray_images():
    images = torch.from_numpy(np.stack([smooth_image(64, 64, 1, s) for s in range(16)]))
    augment = DeviceAugment(32, hflip=0.5, vflip=0.5, re_prob=0.5, mean=(0.5,) * 3, std=(0.5,) * 3)
    out = augment(images, generator())
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    unerased = (out[:, 0] == out[:, 1]).all(-1).all(-1)
    assert unerased.any() and out[unerased].min() >= -1 and out[unerased].max() <= 1
    assert torch.equal(out, augment(images, generator()))


def test_finetuning_recipe_makes_gray_images_colour_when_the_fill_is_coloured():
    images = torch.from_numpy(np.stack([smooth_image(32, 32, 1, s) for s in range(32)]))
    augment = DeviceAugment(64, auto_augment="rand-m9-mstd0.5-inc1-p1", re_prob=0.0)
    out = augment(images, generator())
    assert out.shape == (32, 3, 64, 64)
    assert not torch.equal(out[:, 0], out[:, 1])  # a geometric op's fill differs per channel
