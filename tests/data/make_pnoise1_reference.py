"""Record reference values of `noise.pnoise1` in tests/data/pnoise1_reference.json.

Needs the PyPI `noise` package (a C extension; the released VisualAtom renderer lists
noise==1.2.2) and numpy. It is NOT run by the tests: they only read the JSON it wrote.
Rerun it, from the repository root, only to re-record:

    python3 -m venv /tmp/noisevenv && /tmp/noisevenv/bin/pip install noise==1.2.2 numpy
    /tmp/noisevenv/bin/python tests/data/make_pnoise1_reference.py

pnoise1 is called exactly as the released renderer calls it, `noise.pnoise1(u)`: one
argument, so the package's defaults (octaves=1, persistence=0.5, lacunarity=2.0,
repeat=1024, base=0) apply; the JSON records them.
"""

from __future__ import annotations

import json
import platform
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import noise
import numpy as np

OUTPUT = Path(__file__).with_name("pnoise1_reference.json")
DEFAULTS = {"octaves": 1, "persistence": 0.5, "lacunarity": 2.0, "repeat": 1024, "base": 0}


def inputs() -> dict[str, list[float]]:
    """Named groups of inputs: the range VisualAtom draws from and the edge cases around it."""
    rng = np.random.default_rng(20240917)
    cells = np.arange(256, dtype=np.float64)
    return {
        # the released renderer's u = random.uniform(0, 10000), a Python float (float64)
        "uniform_0_10000": (rng.random(3000) * 10_000.0).tolist(),
        # every lattice cell at three offsets: each permutation entry's slope on both sides
        "cells_0_255": np.concatenate([cells + 0.125, cells + 0.5, cells + 0.8125]).tolist(),
        # integers (noise is zero there), the ends of the range and of the 256/1024 periods
        "integers": [0.0, 1.0, 2.0, 17.0, 255.0, 256.0, 257.0, 1023.0, 1024.0, 1025.0, 5000.0, 9999.0, 10000.0],
        # float64 values that round to another float32 (pnoise1 parses its argument as a C float)
        "float32_rounding": [9999.99995, 9999.9996, 9999.0004, 4096.00024, 1234.56789, 0.1, 0.7, 1e-8],
        # negatives: not used by VisualAtom, but the same function
        "negative": [-0.5, -1.0, -1.5, -255.25, -256.5, -1023.75, -1024.5, -5000.3,
                     *(-rng.random(200) * 10_000.0).tolist()],
        # past the periods, for completeness
        "beyond_10000": (10_000.0 + rng.random(100) * 90_000.0).tolist(),
    }


def main() -> None:
    groups = inputs()
    record = {
        "description": "noise.pnoise1(u) with the package defaults, as the released VisualAtom renderer calls it",
        "arguments": DEFAULTS,
        "how_obtained": {
            "package": f"noise {metadata.version('noise')} (C extension, built by pip from the PyPI sdist)",
            "compiler": f"{sysconfig.get_config_var('CC')} (Python built with {platform.python_compiler()})",
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "command": "python tests/data/make_pnoise1_reference.py",
            "call": "float(noise.pnoise1(u)) for each input u (a Python float); JSON floats round-trip exactly",
        },
        "groups": {name: {"inputs": us, "outputs": [float(noise.pnoise1(u)) for u in us]}
                   for name, us in groups.items()},
    }
    # the defaults passed explicitly must give the same values as the one-argument call
    for us in groups.values():
        for u in us[:50]:
            assert noise.pnoise1(u) == noise.pnoise1(u, **DEFAULTS)
    OUTPUT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {sum(len(g) for g in groups.values())} values to {OUTPUT}")


if __name__ == "__main__":
    main()
