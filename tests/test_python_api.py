"""The package as a library (docs/python_api.md): `from onepfrac import OnTheFlyDataset, FractalFolder`,
torchvision-style datasets for one's own training script."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, TINY_CONFIG


def test_import_onepfrac_loads_no_torch_and_lists_the_datasets():
    code = ("import sys, onepfrac; assert 'torch' not in sys.modules, 'torch'; "
            "assert {'OnTheFlyDataset', 'FractalFolder'} <= set(dir(onepfrac)); "
            "assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_an_unknown_name_is_an_attribute_error():
    import onepfrac

    with pytest.raises(AttributeError, match="no attribute 'FractalDataset'"):
        onepfrac.FractalDataset  # noqa: B018


def test_fractal_folder_is_torchvision_style(tiny_dataset):
    from onepfrac import FractalFolder

    folder = FractalFolder(tiny_dataset)
    assert folder.classes == [f"{i:05d}" for i in range(12)]
    assert folder.class_to_idx == {name: i for i, name in enumerate(folder.classes)}
    assert len(folder) == 12 and folder.targets == list(range(12))
    image, label = folder[3]
    assert image.mode == "RGB" and label == 3
    shaped = FractalFolder(tiny_dataset, transform=lambda im: np.asarray(im), target_transform=lambda t: -t)
    pixels, negative = shaped[3]
    assert np.array_equal(pixels, np.asarray(image)) and negative == -3
    in_memory = FractalFolder(tiny_dataset, transform=np.asarray, in_memory=True)
    assert all(np.array_equal(in_memory[i][0], shaped[i][0]) for i in range(len(folder)))
    assert "12 images, 12 classes" in repr(folder)


def test_fractal_folder_batches_in_a_data_loader(tiny_dataset):
    import torch
    from torchvision.transforms import ToTensor

    from onepfrac import FractalFolder

    loader = torch.utils.data.DataLoader(FractalFolder(tiny_dataset, transform=ToTensor()), batch_size=4)
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 64, 64) and labels.tolist() == [0, 1, 2, 3]


def test_a_bad_root_is_one_line_naming_it(tmp_path):
    from onepfrac import FractalFolder
    from onepfrac.train.data import DataError

    with pytest.raises(DataError) as error:
        FractalFolder(tmp_path / "nowhere")
    assert str(error.value) == f"FractalFolder root: {str(tmp_path / 'nowhere')!r} is not a directory"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        FractalFolder(tmp_path / "empty")


def test_on_the_fly_matches_the_folder_class_for_class(tiny_dataset):
    from onepfrac import FractalFolder, OnTheFlyDataset
    from onepfrac.datasets import single_fractal

    rendered = OnTheFlyDataset("1p-frac", single_fractal.Config(**TINY_CONFIG, samples=12, seed=0),
                               transform=np.asarray, target_transform=str)
    folder = FractalFolder(tiny_dataset, transform=np.asarray)
    assert rendered.classes == folder.classes and rendered.class_to_idx == folder.class_to_idx
    assert rendered.num_classes == 12 and len(rendered) == len(folder)
    for index in (0, 5, 11):
        pixels, target = rendered[index]
        expected, label = folder[index]
        assert np.array_equal(pixels, expected) and target == str(label)
    assert "12 classes" in repr(rendered)
