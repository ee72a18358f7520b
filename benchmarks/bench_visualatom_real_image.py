"""Images per second of the VisualAtom and real-image dataset modules, in memory, on one core.

    python benchmarks/bench_visualatom_real_image.py [--images 100] [--size 512]

Rendering only (no PNG encoding, no files): class parameters are drawn first, then the
instances are timed. OpenCV is held to one thread so the figure is per core.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from onepfrac.argparsing import Parser
from onepfrac import datasets
from onepfrac.datasets import real_image, visualatom


def rate(module, config, images: int) -> tuple[float, float]:
    """(images/s, mean fraction of non-zero values) over `images` renders: classes 0.. with instance 0."""
    shared = datasets.prepare(module, config)
    params = [module.class_params(config, shared, i) for i in range(images)]
    module.render_instance(config, shared, params[0], 0)  # compile numba kernels, load the image
    fills = []
    start = time.perf_counter()
    for p in params:
        image = module.render_instance(config, shared, p, 0)
        fills.append(np.count_nonzero(image) / image.size)
    elapsed = time.perf_counter() - start
    return images / elapsed, float(np.mean(fills))


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="images rendered per dataset")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    cases = [("visualatom", visualatom, visualatom.Config(size=args.size, classes=args.images))]
    for transform in real_image.TRANSFORMS:
        for representation in real_image.REPRESENTATIONS:
            config = real_image.Config(size=args.size, classes=args.images, transform=transform,
                                       representation=representation)
            cases.append((f"real-image {transform:10s} {representation:5s}", real_image, config))
    print(f"{'dataset':34s} {'images/s':>9s} {'non-zero':>9s}   (size {args.size}, one core)")
    for name, module, config in cases:
        per_second, fill = rate(module, config, args.images)
        print(f"{name:34s} {per_second:9.1f} {fill:9.3f}")


if __name__ == "__main__":
    main()
