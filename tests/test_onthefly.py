"""On-the-fly rendering: the same pixels as the generated files, any worker count, no repeats."""

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from onepfrac import datasets, generate, png  # noqa: E402
from onepfrac.datasets import fractaldb, ofdb, ofdb3d, single_fractal  # noqa: E402
from onepfrac.datasets.onthefly import OnTheFlyDataset  # noqa: E402

CONFIGS = {
    "1p-frac": single_fractal.Config(samples=3, size=64, points=3000, pad=2),
    "fractaldb": fractaldb.Config(classes=2, instances=6, size=64, points=3000, pad=2, search_size=64, search_points=3000),
    "ofdb": ofdb.Config(classes=3, size=64, points=3000, pad=2, search_size=64, search_points=3000),
    "3d-ofdb": ofdb3d.Config(classes=2, instances=4, size=48, points=2000),
}
# The other owners' modules, when installed: their configs come from their own defaults.
for _name, _counts in (("visualatom", dict(classes=2, instances=3, size=48)), ("real-image", dict(classes=3, size=48))):
    try:
        CONFIGS[_name] = datasets.load(_name).Config(**_counts)
    except datasets.UnknownDataset:
        pass


def as_array(sample):
    image, label = sample
    return np.asarray(image), label


@pytest.mark.parametrize("name", CONFIGS)
def test_on_the_fly_samples_equal_the_generated_files_as_imagefolder_loads_them(tmp_path, name):
    config = CONFIGS[name]
    root = generate.generate(config, tmp_path, workers=1, progress=False, dataset=name)
    manifest = generate.json.loads((root / generate.MANIFEST).read_text())
    dataset = OnTheFlyDataset(name, config)
    files = [f for record in manifest["classes"] for f in (record.get("files") or [record["file"]])]
    assert len(dataset) == len(files)
    for index, relative in enumerate(files):
        pixels, label = as_array(dataset[index])
        with Image.open(root / relative) as saved:
            expected = np.asarray(saved.convert("RGB"))  # ImageFolder's default loader
        assert np.array_equal(pixels, expected), relative
        assert label == int(relative.split("/")[0])


def test_index_maps_to_class_then_instance():
    dataset = OnTheFlyDataset("fractaldb", CONFIGS["fractaldb"])
    assert [dataset.locate(i) for i in (0, 5, 6, 11)] == [(0, 0), (0, 5), (1, 0), (1, 5)]
    with pytest.raises(IndexError):
        dataset.locate(12)


def test_two_dataloader_workers_render_every_sample_once_and_match_one_process():
    dataset = OnTheFlyDataset("fractaldb", CONFIGS["fractaldb"], transform=lambda image: torch.from_numpy(np.asarray(image).copy()))
    single = [dataset[i][0] for i in range(len(dataset))]
    loader = DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    batches = [(images, labels) for images, labels in loader]
    images = torch.cat([images for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    assert labels.tolist() == [0] * 6 + [1] * 6
    assert all(torch.equal(a, b) for a, b in zip(images, single))
    assert len({image.numpy().tobytes() for image in images}) == len(dataset)  # no worker repeats another


def test_one_instance_per_class_visits_each_class_once_with_a_seeded_random_view():
    dataset = OnTheFlyDataset("3d-ofdb", CONFIGS["3d-ofdb"], one_instance_per_class=True)
    assert len(dataset) == 2
    picks = {}
    for epoch in range(8):
        dataset.set_epoch(epoch)
        picks[epoch] = [dataset.locate(c) for c in range(2)]
        assert [c for c, _ in picks[epoch]] == [0, 1]
    dataset.set_epoch(3)
    assert [dataset.locate(c) for c in range(2)] == picks[3]  # reproducible
    assert len({view for epoch in picks.values() for _, view in epoch}) > 1  # and not always the same view


def test_dataset_pickles_for_spawned_workers_and_gives_the_same_samples():
    dataset = OnTheFlyDataset("ofdb", CONFIGS["ofdb"])
    copy = pickle.loads(pickle.dumps(dataset))
    assert np.array_equal(as_array(copy[1])[0], as_array(dataset[1])[0])


def test_an_out_of_range_config_is_refused_when_the_dataset_is_built():
    with pytest.raises(ValueError, match="--instances"):
        OnTheFlyDataset("fractaldb", fractaldb.Config(instances=2000))


def test_gray_mode_keeps_the_rendered_values():
    dataset = OnTheFlyDataset("ofdb", CONFIGS["ofdb"], mode="L")
    pixels, _ = as_array(dataset[0])
    assert pixels.ndim == 2 and set(np.unique(pixels)) <= {0, 127}
    assert np.array_equal(pixels, png.decode_gray(png.encode_png(pixels)))
