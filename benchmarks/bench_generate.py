"""Generator throughput at the released defaults (sigma 3.5, delta 0.1, 512 px, 100k points, patches).

    python benchmarks/bench_generate.py [--samples 1000] [--repeats 3]

Prints images/s end to end (render + PNG + write + manifest) on 1 worker and on all
cores, and a per-stage breakdown of one image on one core, whose sum is the floor
of this implementation. The released generator makes about 0.28 images/s on one core
(docs/released-code.md, "Measurements on a 2-core CPU machine").
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from onepfrac.argparsing import Parser
from onepfrac import png, render
from onepfrac.datasets import single_fractal
from onepfrac.cores import available_cores
from onepfrac.generate import generate

RELEASED_IMAGES_PER_S = 0.28


def end_to_end(samples: int, workers: int, repeats: int) -> float:
    """Best images/s over `repeats` fresh datasets (the numba kernels are already compiled)."""
    config = single_fractal.Config(samples=samples)
    rates = []
    for _ in range(repeats):
        folder = Path(tempfile.mkdtemp(prefix="bench_generate_"))
        try:
            start = time.perf_counter()
            generate(config, folder, workers=workers, progress=False)
            rates.append(samples / (time.perf_counter() - start))
        finally:
            shutil.rmtree(folder)
    return max(rates)


def stages(repeats: int = 200) -> dict[str, float]:
    """Milliseconds per image for each step of one class on one core."""
    config = single_fractal.Config()
    base = single_fractal.find_base(config)
    indices = render.released_map_choices(base.system.probabilities, config.points - 1)
    rng = np.random.default_rng(0)
    coefficients = base.system.coefficients
    timings = {}

    def measure(name, function):
        function()
        start = time.perf_counter()
        for _ in range(repeats):
            result = function()
        timings[name] = (time.perf_counter() - start) / repeats * 1e3
        return result

    points = measure("chaos game (100k points)", lambda: render.iterate(coefficients, indices))
    pixels = measure("rescale to pixels", lambda: render.to_pixels(points, config.size, config.pad)[1])
    masks = measure("patch masks (numpy)", lambda: render.random_masks(config.points, rng))
    image = measure("rasterise 3x3 patches", lambda: render.rasterize_patch(pixels, masks, config.size))
    measure("fill test", lambda: render.fill_fraction(image))
    data = measure("PNG encode (8-bit, level 1)", lambda: png.encode_png(image[::-1].copy(), 8, 1))
    folder = Path(tempfile.mkdtemp(prefix="bench_write_"))

    def write_and_rename():
        (folder / "a.tmp").write_bytes(data)
        os.replace(folder / "a.tmp", folder / "a.png")

    try:
        measure("write + rename", write_and_rename)
    finally:
        shutil.rmtree(folder)
    return timings


def main() -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--samples", type=int, default=1000, help="classes generated per timing")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    args = parser.parse_args()
    cores = available_cores()

    timings = stages()
    print("per-image stages on one core (ms):")
    for name, ms in timings.items():
        print(f"  {name:30s} {ms:7.3f}")
    floor = 1e3 / sum(timings.values())
    print(f"  {'sum':30s} {sum(timings.values()):7.3f}  -> floor about {floor:.0f} images/s per core")

    one = end_to_end(args.samples, 1, args.repeats)
    every = end_to_end(args.samples, cores, args.repeats)
    print(f"end to end, {args.samples} classes at the released defaults (best of {args.repeats}):")
    print(f"  1 worker:         {one:8.1f} images/s  ({one / RELEASED_IMAGES_PER_S:,.0f}x the released generator)")
    print(f"  {cores} workers (all): {every:8.1f} images/s  ({every / cores:.1f} per core)")


if __name__ == "__main__":
    main()
