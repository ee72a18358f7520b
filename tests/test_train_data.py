"""Trainer data: folder loading, in-memory decoding, epoch-spanning sampler, per-sample seeding."""

import numpy as np
import pytest
import torch
from PIL import Image

from onepfrac.train import data


def make_folder(root, classes=3, per_class=4, size=8, mode="L"):
    for c in range(classes):
        (root / f"{c:05d}").mkdir(parents=True)
        for i in range(per_class):
            value = (c * per_class + i) * 7 % 256
            Image.new(mode, (size, size), value if mode == "L" else (value, 0, 255 - value)).save(
                root / f"{c:05d}" / f"{i}.png")
    return root


def test_gray_folder_is_decoded_once_into_one_channel_and_served_as_rgb(tmp_path):
    dataset = data.open_folder(make_folder(tmp_path / "d"), "--data-dir", in_memory="always", progress=False)
    assert isinstance(dataset, data.ArrayDataset)
    assert dataset.images.shape == (12, 8, 8) and dataset.images.dtype == np.uint8
    image, label = dataset[5]
    assert image.mode == "RGB" and label == 1
    assert len(set(np.asarray(image)[0, 0])) == 1  # three equal channels, as ImageFolder gives


def test_in_memory_and_file_datasets_give_the_same_samples(tmp_path):
    root = make_folder(tmp_path / "d", mode="RGB")
    memory = data.open_folder(root, "--data-dir", in_memory="always", progress=False)
    files = data.open_folder(root, "--data-dir", in_memory="never", progress=False)
    assert isinstance(files, data.FileDataset)
    for index in range(len(files)):
        (a, la), (b, lb) = memory[index], files[index]
        assert la == lb and np.array_equal(np.asarray(a), np.asarray(b))


def test_auto_keeps_files_on_disk_above_the_memory_limit(tmp_path):
    root = make_folder(tmp_path / "d")
    assert isinstance(data.open_folder(root, "--data-dir", "auto", memory_limit_gb=1e-9, progress=False),
                      data.FileDataset)


def test_one_bit_palette_pngs_decode_to_gray(tmp_path):
    folder = tmp_path / "d" / "00000"
    folder.mkdir(parents=True)
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 127, 127, 127])
    image.save(folder / "0.png")
    dataset = data.open_folder(tmp_path / "d", "--data-dir", "always", progress=False)
    assert dataset.images.shape == (1, 4, 4) and (dataset.images == 127).all()


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "is not a directory"),
    (lambda root: root.mkdir(), "has no class folders"),
    (lambda root: (root / "a").mkdir(parents=True), "but no images"),
])
def test_missing_or_empty_folders_are_named(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(data.DataError, match=message):
        data.open_folder(root, "--data-dir", progress=False)


def test_cifar_is_never_downloaded_and_its_absence_is_explained(tmp_path):
    with pytest.raises(data.DataError, match="never downloads"):
        data.open_cifar(tmp_path, "cifar100", True, "--data-dir")


def test_cifar_in_torchvision_format_loads_from_a_local_directory(tmp_path, monkeypatch):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    import torchvision.datasets.cifar as cifar
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # fake batches, other md5s
    dataset = data.open_cifar(tmp_path, "cifar10", True, "--data-dir")
    assert len(dataset) == 20 and dataset.images.shape == (20, 32, 32, 3) and len(dataset.classes) == 10


def all_batches(sampler):
    return [[key for key in batch] for batch in sampler]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_every_sample_is_seen_once_per_epoch_across_ranks_before_dropping_the_last_batch(world_size):
    samplers = [data.EpochBatchSampler(10, 1, epochs=2, seed=5, rank=r, world_size=world_size)
                for r in range(world_size)]
    for epoch in range(2):
        seen = [i for s in samplers for b in all_batches(s) for (e, i) in b if e == epoch]
        assert set(seen) == set(range(10))
        assert len(seen) == -(-10 // world_size) * world_size  # padded as DistributedSampler


@pytest.mark.parametrize("num_samples, world_size", [(1000, 8), (10, 3), (7, 4), (5, 1), (1, 3)])
def test_epochs_follow_distributed_sampler_index_for_index(num_samples, world_size):
    from torch.utils.data import DistributedSampler

    for rank in range(world_size):
        reference = DistributedSampler(range(num_samples), num_replicas=world_size, rank=rank, seed=42)
        sampler = data.EpochBatchSampler(num_samples, 1, epochs=4, seed=42, rank=rank, world_size=world_size)
        for epoch in (0, 3):
            reference.set_epoch(epoch)
            assert sampler.epoch_indices(epoch) == list(reference)


def test_released_recipe_sees_768_of_1000_images_an_epoch_in_3_batches_a_rank():
    ranks = [data.EpochBatchSampler(1000, 32, epochs=1, seed=42, rank=r, world_size=8) for r in range(8)]
    assert all(s.steps_per_epoch == 3 for s in ranks)
    seen = [i for s in ranks for batch in s for _, i in batch]
    assert len(seen) == 768 == len(set(seen))


def test_last_partial_batch_is_dropped_each_epoch():
    sampler = data.EpochBatchSampler(10, 4, epochs=3, seed=0)
    batches = all_batches(sampler)
    assert sampler.steps_per_epoch == 2 and len(sampler) == 6 == len(batches)
    assert all(len(b) == 4 for b in batches)
    assert [b[0][0] for b in batches] == [0, 0, 1, 1, 2, 2]


def test_each_epoch_is_a_new_permutation_shared_by_all_ranks():
    a = data.EpochBatchSampler(16, 16, epochs=2, seed=1)
    orders = [[i for _, i in b] for b in all_batches(a)]
    assert orders[0] != orders[1] and sorted(orders[0]) == list(range(16))
    again = [[i for _, i in b] for b in all_batches(data.EpochBatchSampler(16, 16, epochs=2, seed=1))]
    assert again == orders


def test_resumed_sampler_continues_where_the_uninterrupted_one_is():
    full = all_batches(data.EpochBatchSampler(12, 4, epochs=5, seed=3))
    resumed = all_batches(data.EpochBatchSampler(12, 4, epochs=5, seed=3, start_epoch=2))
    assert resumed == full[2 * 3:]


def test_repeats_make_an_epoch_of_several_passes():
    sampler = data.EpochBatchSampler(4, 8, epochs=1, seed=0, repeats=4)
    (first, second) = all_batches(sampler)
    indices = [i for _, i in first + second]
    assert sorted(indices) == sorted(list(range(4)) * 4)


def test_seeded_samples_give_the_same_augmentation_for_the_same_epoch_and_index():
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    dataset = data.ArrayDataset(images, np.arange(3), ["a", "b", "c"])

    def transform(image):
        return torch.rand(3), np.random.rand(), __import__("random").random()

    samples = data.SeededSamples(dataset, transform, seed=7)
    first = samples[(4, 1)][0]
    torch.manual_seed(123)  # global state in between must not matter
    again = samples[(4, 1)][0]
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
    assert not torch.equal(samples[(5, 1)][0][0], first[0])
    assert not torch.equal(samples[(4, 2)][0][0], first[0])


def test_eval_shards_cover_the_set_without_duplicates():
    shards = [data.shard(10, r, 3) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))


def test_digits_folder_has_a_balanced_training_split_and_the_rest_as_validation(tmp_path):
    from onepfrac.train.digits import write_digits

    root = write_digits(tmp_path / "digits", train=50, size=12)
    train = data.open_folder(root / "train", "--train-dir", progress=False)
    val = data.open_folder(root / "val", "--val-dir", progress=False)
    assert len(train) == 50 and np.bincount(train.labels).tolist() == [5] * 10
    assert len(train) + len(val) == 1797 and train.images.shape[1:] == (12, 12)


def test_rendered_3d_ofdb_shows_a_class_a_new_random_view_each_epoch():
    dataset = data.RenderedDataset("3d-ofdb", {"classes": 2, "seed": 0})
    samples = data.SeededSamples(dataset, lambda image: np.asarray(image), seed=0)
    views = {epoch: samples[(epoch, 0)][0] for epoch in range(6)}
    assert len(dataset) == 2  # one sample a class, as the released 3D-OFDB loader
    assert any(not np.array_equal(views[0], views[e]) for e in range(1, 6))
    assert np.array_equal(samples[(3, 0)][0], views[3])


def test_side_stream_passes_batches_through_unchanged_off_cuda():
    from onepfrac.train.device_data import on_side_stream
    batches = [(torch.full((2, 3), float(i)), torch.tensor([i, i])) for i in range(4)]
    out = list(on_side_stream(iter(batches), torch.device("cpu")))
    assert len(out) == 4 and all(a is b for pair, same in zip(out, batches) for a, b in zip(pair, same))
