"""Rendering rate of every registered dataset at its released defaults, on one core.

    python benchmarks/bench_datasets.py [--scale 1.0] [--datasets fractaldb ofdb ...]

For each dataset prints, on one process: the class-parameter time (search or draw) per
class, the render-only rate (images/s, what an on-the-fly DataLoader worker can deliver
once a class's parameters are cached), and the end-to-end generator rate (render + PNG +
write + manifest, images/s). --scale multiplies the number of classes timed.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from onepfrac.argparsing import Parser
from onepfrac import datasets
from onepfrac.generate import generate

# (classes, instances) timed per dataset: a few seconds each on one core.
WORK = {"1p-frac": (100, 1), "fractaldb": (2, 80), "ofdb": (40, 1), "3d-ofdb": (8, 12),
        "visualatom": (2, 10), "real-image": (40, 1)}


def sized(module, config, classes: int, instances: int):
    """The default config with only the counts changed (1p-frac counts classes with `samples`)."""
    if hasattr(config, "samples"):
        return replace(config, samples=classes)
    changes = {"classes": classes}
    if hasattr(config, "instances"):
        changes["instances"] = instances
    return replace(config, **changes)


def measure(name: str, scale: float) -> dict:
    module = datasets.load(name)
    classes, instances = WORK[name]
    classes = max(1, round(classes * scale))
    config = sized(module, module.Config(), classes, instances)
    classes, instances = datasets.counts(module, config)

    start = time.perf_counter()
    shared = datasets.prepare(module, config)
    prepare_s = time.perf_counter() - start
    datasets.class_images(module, config, shared, 0)  # compiles the kernels outside the timings

    start = time.perf_counter()
    params = [module.class_params(config, shared, c) for c in range(classes)]
    params_s = (time.perf_counter() - start) / classes

    start = time.perf_counter()
    for c in range(classes):
        for i in range(instances):
            image = module.render_instance(config, shared, params[c], i)
    render_rate = classes * instances / (time.perf_counter() - start)

    folder = Path(tempfile.mkdtemp(prefix="bench_datasets_"))
    try:
        start = time.perf_counter()
        generate(config, folder, workers=1, progress=False, dataset=name)
        end_to_end = classes * instances / (time.perf_counter() - start)
    finally:
        shutil.rmtree(folder)
    return {"name": name, "classes": classes, "instances": instances, "shape": "x".join(map(str, image.shape)),
            "prepare_s": prepare_s, "params_ms": params_s * 1e3, "render": render_rate, "end_to_end": end_to_end}


def main() -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the classes timed")
    parser.add_argument("--datasets", nargs="+", default=list(WORK), choices=list(WORK), help="datasets timed")
    args = parser.parse_args()
    print(f"{'dataset':<11} {'timed':>9} {'image':>11} {'prepare s':>9} {'params ms/class':>15} "
          f"{'render img/s':>12} {'generate img/s':>14}")
    for name in args.datasets:
        try:
            r = measure(name, args.scale)
        except datasets.UnknownDataset as missing:
            print(f"{name:<11} skipped: {missing}")
            continue
        print(f"{r['name']:<11} {r['classes']:>4}x{r['instances']:<4} {r['shape']:>11} {r['prepare_s']:>9.2f} "
              f"{r['params_ms']:>15.1f} {r['render']:>12.1f} {r['end_to_end']:>14.1f}")
    print("one process; the generator's --workers multiplies the last two columns by about the core count")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
