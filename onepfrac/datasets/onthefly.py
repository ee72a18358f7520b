"""Render any registered dataset inside DataLoader workers instead of reading its files.

    dataset = OnTheFlyDataset("fractaldb", fractaldb.Config(classes=100), transform=...)
    image, label = dataset[index]      # index -> (class, instance) = divmod(index, instances)
    dataset.classes                    # ['00000', '00001', ...]: the generator's folder names

torchvision-style: `classes`, `class_to_idx`, `transform` and `target_transform`, so it drops in
where an ImageFolder of the generated files was (`from onepfrac import OnTheFlyDataset`).

Every sample is a pure function of (config, class, instance): the pixels equal those the
generator writes for the same config (after ImageFolder's RGB conversion), whatever the
number of workers, and two workers never render the same sample unless the sampler asks
them to. `one_instance_per_class=True` is the released 3D-OFDB loader: an epoch visits each
class once and takes one of its instances (views) at random, drawn from (seed, epoch, class).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from onepfrac import datasets
from onepfrac.datasets.interface import STREAMS, stream

STREAM_PICK = STREAMS["on-the-fly"]["pick"]  # the random instance of a class in one_instance_per_class mode


class OnTheFlyDataset(Dataset):
    def __init__(self, name: str, config=None, transform=None, one_instance_per_class: bool = False,
                 mode: str = "RGB", target_transform=None):
        self.name = name
        self.module = datasets.load(name)
        self.config = config if config is not None else self.module.Config()
        datasets.check(self.module, self.config)  # refused as the CLI refuses it (ConfigError)
        self.num_classes, self.instances = datasets.counts(self.module, self.config)
        # the class folders the generator writes, so labels mean the same on disk and on the fly
        self.classes = [f"{index:05d}" for index in range(self.num_classes)]
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.transform = transform
        self.target_transform = target_transform
        self.one_instance_per_class = one_instance_per_class
        self.mode = mode  # ImageFolder's default loader gives RGB
        self.epoch = 0
        self.shared = datasets.prepare(self.module, self.config)  # once, in the main process; workers get a copy
        self._params: dict[int, dict] = {}  # per process: a class's search runs once per worker

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["module"]  # modules do not pickle (spawned workers); reload it by name
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.module = datasets.load(self.name)

    def __len__(self) -> int:
        return self.num_classes if self.one_instance_per_class else self.num_classes * self.instances

    def set_epoch(self, epoch: int) -> None:
        """The epoch that seeds the random instance of each class (call before each epoch's iterator)."""
        self.epoch = epoch

    def locate(self, index: int) -> tuple[int, int]:
        """(class, instance) of sample `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is outside 0..{len(self) - 1}")
        if self.one_instance_per_class:
            pick = stream(self.config.seed, STREAM_PICK, self.epoch, index).integers(self.instances)
            return index, int(pick)
        return divmod(index, self.instances)

    def params(self, class_index: int) -> dict:
        if class_index not in self._params:
            self._params[class_index] = self.module.class_params(self.config, self.shared, class_index)
        return self._params[class_index]

    def render(self, class_index: int, instance_index: int) -> np.ndarray:
        """The sample's pixels, as the generator writes them."""
        if self.instances == 1 and hasattr(self.module, "class_images"):
            return self.module.class_images(self.config, self.shared, class_index)[1][0]  # one pass, no re-render
        return self.module.render_instance(self.config, self.shared, self.params(class_index), instance_index)

    def __getitem__(self, index: int):
        class_index, instance_index = self.locate(index)
        image = Image.fromarray(self.render(class_index, instance_index))
        if self.mode:
            image = image.convert(self.mode)
        if self.transform is not None:
            image = self.transform(image)
        target = class_index if self.target_transform is None else self.target_transform(class_index)
        return image, target

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, {len(self)} samples, {self.num_classes} classes"
                f" x {self.instances} instances)")
