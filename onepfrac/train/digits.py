"""Write scikit-learn's 8 x 8 digits as an ImageFolder (train/ and val/): real data that ships
offline, for fine-tuning checks on a laptop or in CI.

    python -m onepfrac.train.digits OUT [--train 200] [--size 32] [--seed 0]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from onepfrac.argparsing import Parser
from onepfrac import extras
from onepfrac.errors import UserError


def split_digits(train: int, seed: int):
    """A class-balanced training split of `train` images; every other image is validation."""
    load_digits = extras.require("sklearn.datasets", "train", "python -m onepfrac.train.digits").load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values are 0..16
    labels = digits.target
    rng = np.random.default_rng(seed)
    per_class = train // 10
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                             for c in range(10)])
    is_train = np.zeros(len(labels), dtype=bool)
    is_train[chosen] = True
    return images, labels, is_train


def write_digits(out: Path, train: int = 200, size: int = 32, seed: int = 0) -> Path:
    out = Path(out)
    images, labels, is_train = split_digits(train, seed)
    for index, (image, label, in_train) in enumerate(zip(images, labels, is_train)):
        folder = out / ("train" if in_train else "val") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        # Upscaled once here so random-resized crops keep some structure at the model's size.
        Image.fromarray(image).resize((size, size), Image.BICUBIC).save(folder / f"{index:04d}.png")
    return out


def main(argv=None) -> int:
    parser = Parser(prog="python -m onepfrac.train.digits", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder that receives train/ and val/")
    parser.add_argument("--train", type=int, default=200, help="training images (balanced over 10 classes)")
    parser.add_argument("--size", type=int, default=32, help="side of the square PNGs, in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    args = parser.parse_args(argv)
    if not 10 <= args.train <= 1500:
        print(f"error: --train: {args.train} is not allowed; expected 10..1500 (1,797 digits in all)",
              file=sys.stderr)
        return 2
    if not 8 <= args.size <= 1024:
        print(f"error: --size: {args.size} is not allowed; expected 8..1024", file=sys.stderr)
        return 2
    out = Path(args.out)
    if (out / "train").exists() or (out / "val").exists():
        print(f"error: {out} already holds train/ or val/; choose an empty folder", file=sys.stderr)
        return 2
    try:
        write_digits(out, args.train, args.size, args.seed)
    except UserError as error:  # scikit-learn missing
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
