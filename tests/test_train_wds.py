"""The trainer's WebDataset reader: the same images and classes as the folder, a fixed epoch,
shards split by node and worker, epochs that depend only on their number (resume)."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from onepfrac import generate
from onepfrac.train import data, wds_data

ARGS = ["--samples", "12", "--size", "32", "--points", "500", "--pad", "2", "--no-progress", "--workers", "1"]


def pixels(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy())


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(wds folder with tar shards of 3, image folder) of the same 12-image 1p-frac."""
    base = tmp_path_factory.mktemp("train_wds")
    assert generate.main(["--base-savedir", str(base / "wds"), *ARGS, "--format", "wds", "--shard-size", "3"],
                                environ={}) == 0
    assert generate.main(["--base-savedir", str(base / "folder"), *ARGS]) == 0
    (wds,) = (base / "wds").iterdir()
    (folder,) = (base / "folder").iterdir()
    return wds, folder


def epoch_samples(shard_set, epoch=0, batch=4, workers=0, rank=0, world=1, start=0, epochs=1, buffer=5):
    batches, steps = wds_data.train_batches(shard_set, pixels, batch, epochs, seed=0, rank=rank, world_size=world,
                                            start_epoch=start, workers=workers, shuffle_buffer=buffer)
    return [(bytes(x.numpy().tobytes()), int(y)) for images, labels in batches for x, y in zip(images, labels)], steps


def folder_samples(folder):
    dataset = data.open_folder(folder, "--data-dir", progress=False)
    return sorted((pixels(image).numpy().tobytes(), label) for image, label in (dataset[i] for i in range(len(dataset))))


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_reads_every_image_of_the_folder_once_with_its_class(both, workers):
    wds, folder = both
    shard_set = wds_data.open_shards(wds)
    assert shard_set.classes == data.open_folder(folder, "--data-dir", progress=False).classes
    samples, steps = epoch_samples(shard_set, workers=workers)
    sampler = data.EpochBatchSampler(12, 4, 1, 0)
    assert steps == sampler.steps_per_epoch == 3
    assert sorted(samples) == folder_samples(folder)


def test_two_ranks_read_disjoint_shards_and_take_the_same_number_of_steps(both):
    shard_set = wds_data.open_shards(both[0])
    first, steps0 = epoch_samples(shard_set, batch=2, rank=0, world=2)
    second, steps1 = epoch_samples(shard_set, batch=2, rank=1, world=2)
    assert steps0 == steps1 == data.EpochBatchSampler(12, 2, 1, 0, rank=1, world_size=2).steps_per_epoch == 3
    assert sorted(first + second) == folder_samples(both[1])


def test_an_epoch_depends_on_its_number_only_so_a_resumed_run_reads_the_same(both):
    shard_set = wds_data.open_shards(both[0])
    whole, _ = epoch_samples(shard_set, epochs=3)
    resumed, _ = epoch_samples(shard_set, start=2, epochs=3)
    assert resumed == whole[24:]
    assert whole[:12] != whole[12:24]  # epochs are shuffled differently
    assert sorted(whole[:12]) == sorted(whole[12:24])


def test_repeats_and_the_padding_make_the_folder_samplers_epoch_size(both):
    shard_set = wds_data.open_shards(both[0])
    samples, steps = wds_data.train_batches(shard_set, pixels, 5, 1, 0, world_size=1, repeats=3)
    assert steps == data.EpochBatchSampler(12, 5, 1, 0, repeats=3).steps_per_epoch == 7
    assert sum(len(labels) for _, labels in samples) == 35


def test_a_batch_larger_than_an_epoch_is_refused_in_words(both):
    with pytest.raises(data.DataError, match="--batch-size 64 x 2 process"):
        wds_data.train_batches(wds_data.open_shards(both[0]), pixels, 64, 1, 0, world_size=2)


def test_samples_are_shared_in_proportion_to_what_each_worker_holds_and_rebatched_whole():
    chunks = [(torch.arange(n), torch.arange(n)) for n in (4, 3, 4, 1, 2, 2)]
    assert [len(labels) for _, labels in wds_data.rebatch(iter(chunks), 4)] == [4, 4, 4, 4]
    assert wds_data.share(5, [6, 4]) == [3, 2]
    assert wds_data.share(7, [1, 1, 1]) == [3, 2, 2]
    assert sum(wds_data.share(100, [999, 1000, 3])) == 100


def test_folders_that_are_not_shards_are_refused_naming_the_option(both, tmp_path):
    with pytest.raises(data.DataError, match="--data-dir: .* has no index.json"):
        wds_data.open_shards(both[1])
    (tmp_path / "x-000000.tar").write_bytes(b"")
    with pytest.raises(data.DataError, match="unfinished generation"):
        wds_data.open_shards(tmp_path)
    (tmp_path / "index.json").write_text("{}")
    with pytest.raises(data.DataError, match="not a onepfrac WebDataset index"):
        wds_data.open_shards(tmp_path)


def test_gray_and_one_bit_pngs_decode_to_rgb_as_the_folder_loader_gives_them():
    buffer = io.BytesIO()
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).save(buffer, format="PNG")
    image, label = wds_data.decode({"png": buffer.getvalue(), "cls": b"4"})
    assert image.mode == "RGB" and label == 4 and np.asarray(image)[0, 1].tolist() == [255, 255, 255]


# ---------------------------------------------------------------- the trainer end to end

import re  # noqa: E402

from conftest import LIGHT_RECIPE, TINY_MODEL, read_metrics, run_train  # noqa: E402


def summary_line(stdout: str) -> str:
    """'pretrain: MODEL on N images, C classes, ... S steps/epoch' without the device and timing."""
    line = next(line for line in stdout.splitlines() if line.startswith("pretrain: "))
    return re.sub(r"lr [0-9.e-]+", "", line)


@pytest.mark.slow  # trains end to end
def test_training_on_shards_sees_the_folders_classes_and_samples_and_resumes_exactly(both, tmp_path):
    wds, folder = both
    common = ["pretrain", *TINY_MODEL, *LIGHT_RECIPE, "--batch-size", "4", "--data-pipeline", "loader",
              "--save-every", "1"]
    on_folder = run_train([*common, "--data-dir", folder, "--epochs", "2", "--output-dir", tmp_path / "folder"])
    on_shards = run_train([*common, "--dataset", "wds", "--data-dir", wds, "--shuffle-buffer", "4", "--epochs", "2",
                           "--output-dir", tmp_path / "wds"])
    assert on_folder.returncode == 0 and on_shards.returncode == 0, on_folder.stderr + on_shards.stderr
    assert summary_line(on_shards.stdout) == summary_line(on_folder.stdout)
    assert "on 12 images, 12 classes" in on_shards.stdout and "3 steps/epoch" in on_shards.stdout
    part = tmp_path / "part"
    stopped = run_train([*common, "--dataset", "wds", "--data-dir", wds, "--shuffle-buffer", "4", "--epochs", "2",
                         "--stop-after", "1", "--output-dir", part])
    assert stopped.returncode == 0, stopped.stderr
    resumed = run_train([*common, "--dataset", "wds", "--data-dir", wds, "--shuffle-buffer", "4", "--epochs", "2",
                         "--resume", "auto", "--output-dir", part])
    assert resumed.returncode == 0 and "resuming after epoch 1" in resumed.stdout, resumed.stderr

    def untimed(records):
        return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]
    assert untimed(read_metrics(part)) == untimed(read_metrics(tmp_path / "wds"))


def test_the_trainer_refuses_wds_outside_pretraining_and_with_the_device_pipeline(both, tmp_path):
    from onepfrac.errors import UserError
    from onepfrac.train import options

    with pytest.raises(UserError, match="--dataset wds reads pre-training shards; finetune"):
        options.parse_args(["finetune", "--dataset", "wds", "--data-dir", str(both[0])])
    with pytest.raises(UserError, match="--data-pipeline: 'device' is not allowed; --dataset wds streams"):
        options.parse_args(["pretrain", "--dataset", "wds", "--data-dir", str(both[0]), "--data-pipeline", "device"])
    with pytest.raises(UserError, match="--shuffle-buffer: 0 is not allowed"):
        options.parse_args(["pretrain", "--dataset", "wds", "--data-dir", str(both[0]), "--shuffle-buffer", "0"])
