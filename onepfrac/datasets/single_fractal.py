"""1p-frac: one base IFS at a sigma-factor, L perturbations of it, one class each.

Pure functions from (config, seed, class index) to images, and this dataset's side of the
interface every dataset module follows (onepfrac.datasets.interface): options, checks, names
and manifest records. Files and processes live in onepfrac.generate. Every random choice comes
from its own seeded stream, so a class's image depends only on the config and its index, never
on worker count or order.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from onepfrac import ifs, render
from onepfrac.datasets.interface import STREAMS, GenerationError, check_canvas, require, stream

NAME = "1p-frac"

_STREAMS = STREAMS[NAME]
STREAM_BASE, STREAM_PROBE, STREAM_CLASS = _STREAMS["base"], _STREAMS["probe"], _STREAMS["class"]
STREAM_MASKS, STREAM_ORBIT, STREAM_PROBE_ORBIT = _STREAMS["masks"], _STREAMS["orbit"], _STREAMS["probe-orbit"]

ORBITS = ("fixed", "per-image")
# released: a base is kept once any perturbation passes (the released code never redraws it);
# dense: only when probe_pass_rate of `probes` perturbations pass (this project's rule before 0.2.0)
BASE_RULES = ("released", "dense")
MAX_MAPS = 32


@dataclass(frozen=True)
class Config:
    sigma: float = 3.5
    delta: float = 0.1
    samples: int = 1000
    n_maps: int = 2
    size: int = 512
    points: int = 100_000
    pad: int = 6
    size_y: int = 0  # released --image_size_y; 0: square, the height is --size
    pad_y: int = -1  # released --pad_size_y; -1: the same margin as --pad
    drawing: str = "patch"
    mask_mode: str = "random"
    fill_threshold: float = 0.05
    perturbation: str = "multiplicative"
    sigma_jitter: float = 0.1  # released code: sigma ~ U(sigma - 0.1, sigma + 0.1)
    orbit: str = "fixed"
    burn_in: int = 0  # released: the start point and transient stay in the frame
    seed: int = 0
    base_rule: str = "released"
    base_probes: int = 1000  # released rule: perturbations tried before a base counts as never passing
    probes: int = 32  # dense rule: perturbations drawn to judge a base system before it is used
    probe_pass_rate: float = 0.25  # dense rule: ... of which at least this fraction must pass the fill test
    max_base_tries: int = 200
    max_class_tries: int = 10_000  # ~1 ms a rejected attempt: a base passing 1 in 1000 still finishes

    @property
    def height(self) -> int:
        return self.size_y or self.size

    @property
    def pad_top(self) -> int:
        return self.pad if self.pad_y < 0 else self.pad_y

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Base:
    """The accepted base system and how it was found."""

    system: ifs.System
    sigma_target: float
    candidate: int
    probes_drawn: int = 0  # perturbations rendered to judge it
    probes_passed: int = 0  # ... and how many of them passed the fill test

    def to_dict(self) -> dict:
        return {
            **self.system.to_dict(),
            "sigma_target": self.sigma_target,
            "sigma_factor": ifs.sigma_factor(self.system.coefficients),
            "candidate": self.candidate,
            "probes_drawn": self.probes_drawn,
            "probes_passed": self.probes_passed,
        }


def map_indices_for(config: Config, probabilities: np.ndarray, index: int,
                    fixed: np.ndarray | None = None) -> np.ndarray:
    """Map choices for class `index`: the shared released sequence, or one drawn for this image."""
    return _map_indices(config, probabilities, (STREAM_ORBIT, index), fixed)


def _map_indices(config: Config, probabilities: np.ndarray, key: tuple[int, ...],
                 fixed: np.ndarray | None) -> np.ndarray:
    if config.orbit == "fixed":
        return fixed if fixed is not None else render.released_map_choices(probabilities, config.points - 1)
    uniforms = stream(config.seed, *key).random(config.points - 1)
    return render.choose_maps(uniforms, probabilities)


def patch_masks(config: Config, mask_rng: np.random.Generator) -> np.ndarray | None:
    """One image's patch masks, one per drawn point (None for point drawing)."""
    if config.drawing != "patch":
        return None
    if config.mask_mode == "fill":
        return render.solid_masks(config.points - config.burn_in)
    return render.random_masks(config.points - config.burn_in, mask_rng)


def draw_image(config: Config, system: ifs.System, map_indices: np.ndarray,
               mask_rng: np.random.Generator) -> tuple[np.ndarray | None, float]:
    """The unflipped canvas and its fill fraction; (None, 0.0) when the orbit is not finite."""
    masks = patch_masks(config, mask_rng)
    canvas = render.render(system.coefficients, map_indices, config.size, config.pad, config.drawing, masks,
                           config.burn_in, config.height, config.pad_top)
    if canvas is None:
        return None, 0.0
    return canvas, float(render.fill_fraction(canvas))


def passes(config: Config, fill: float) -> bool:
    """The released fill test: strictly more than `fill_threshold` of the pixels are non-zero."""
    return fill > config.fill_threshold


def sigma_target(config: Config, rng: np.random.Generator) -> float:
    """The base's sigma-factor: U(sigma - jitter, sigma + jitter), drawn inside (0, 3N).

    The released sampler raises on a target above 3N, so the released runs that finish have
    targets below it; drawing inside the valid range gives those runs' distribution, where
    clipping would pile up exact isometries (all singular values 1) at sigma = 3N.
    """
    top = 3.0 * config.n_maps
    if config.sigma_jitter == 0:
        rng.uniform(config.sigma, config.sigma)  # the draw a jittered target takes, so streams agree
        return float(config.sigma)
    low, high = config.sigma - config.sigma_jitter, min(config.sigma + config.sigma_jitter, top)
    for _ in range(64):  # numpy's uniform may round up to `high`; redraw rather than clip
        target = float(rng.uniform(low, high))
        if 0.0 < target < top:
            return target
    raise GenerationError(f"--sigma {config.sigma} with --sigma-jitter {config.sigma_jitter} leaves no valid "
                          f"target below 3 x {config.n_maps}")


def _probe_outcomes(config: Config, system: ifs.System, candidate: int, fixed: np.ndarray | None):
    """Whether each of the candidate's probe perturbations renders and passes, lazily, in order."""
    probe_rng = stream(config.seed, STREAM_PROBE, candidate)
    probe = 0
    while True:
        perturbed = ifs.perturb(system, config.delta, probe_rng, config.perturbation)
        indices = _map_indices(config, system.probabilities, (STREAM_PROBE_ORBIT, candidate, probe), fixed)
        canvas, fill = draw_image(config, perturbed, indices, probe_rng)
        yield canvas is not None and passes(config, fill)
        probe += 1


def judge_base(config: Config, system: ifs.System, candidate: int) -> tuple[bool, int, int]:
    """(usable, probes drawn, probes passed) of one candidate base under `config.base_rule`."""
    fixed = render.released_map_choices(system.probabilities, config.points - 1) if config.orbit == "fixed" else None
    outcomes = _probe_outcomes(config, system, candidate, fixed)
    if config.base_rule == "released":
        # the released code keeps its one base whatever its pass rate; bounded here
        for drawn in range(1, config.base_probes + 1):
            if next(outcomes):
                return True, drawn, 1
        return False, config.base_probes, 0
    needed = max(1, math.ceil(config.probe_pass_rate * config.probes))
    passed = failed = 0
    for drawn in range(1, config.probes + 1):
        if next(outcomes):
            passed += 1
            if passed >= needed:
                return True, drawn, passed
        else:
            failed += 1
            if failed > config.probes - needed:
                break
    return False, drawn, passed


def find_base(config: Config) -> Base:
    """Draw base systems in a fixed order until one is usable under `config.base_rule`.

    The released code tests only perturbations (never the base image) and never redraws
    the base: any base whose perturbations pass at all ends up as a dataset, and one that
    cannot pass hangs it (about 14% at sigma 3.5). The "released" rule keeps the first base
    with a passing perturbation among `base_probes`, so the bases it keeps follow the released
    runs' distribution, and moves on instead of hanging. The "dense" rule keeps a base only
    when `probe_pass_rate` of `probes` perturbations pass: denser fractals, faster classes.
    """
    for candidate in range(config.max_base_tries):
        rng = stream(config.seed, STREAM_BASE, candidate)
        target = sigma_target(config, rng)
        system = ifs.sample_system(target, config.n_maps, rng)
        usable, drawn, passed = judge_base(config, system, candidate)
        if usable:
            return Base(system, target, candidate, drawn, passed)
    if config.base_rule == "released":
        rule = f"a perturbation that passes the fill test in {config.base_probes} tries (--base-probes)"
    else:
        needed = max(1, math.ceil(config.probe_pass_rate * config.probes))
        rule = f"{needed} of {config.probes} perturbations that pass the fill test (--base-rule dense)"
    raise GenerationError(
        f"no base system had {rule} (> {config.fill_threshold}) in {config.max_base_tries} tries (--max-base-tries) "
        f"at sigma {config.sigma}, delta {config.delta}, size {config.size}, points {config.points}; try another "
        f"--seed, a lower --fill-threshold, more --points or a smaller --delta")


@dataclass(frozen=True)
class ClassImage:
    index: int
    image: np.ndarray  # uint8 (height, size), flipped top to bottom as saved
    system: ifs.System
    attempts: int
    fill: float


def render_class(config: Config, base: Base, index: int, fixed: np.ndarray | None = None) -> ClassImage:
    """Class `index`: perturbations are drawn from its own stream until one renders and passes."""
    perturb_rng = stream(config.seed, STREAM_CLASS, index)
    mask_rng = stream(config.seed, STREAM_MASKS, index)
    indices = map_indices_for(config, base.system.probabilities, index, fixed)
    for attempt in range(1, config.max_class_tries + 1):
        system = ifs.perturb(base.system, config.delta, perturb_rng, config.perturbation)
        canvas, fill = draw_image(config, system, indices, mask_rng)
        if canvas is not None and passes(config, fill):
            return ClassImage(index, np.ascontiguousarray(canvas[::-1]), system, attempt, fill)
    raise GenerationError(
        f"class {index}: no perturbation within delta {config.delta} passed the fill test "
        f"(> {config.fill_threshold}) in {config.max_class_tries} tries; try a smaller --delta "
        f"or a lower --fill-threshold")


def render_base(config: Config, base: Base) -> np.ndarray:
    """The unperturbed base system's image (flipped as saved), with no fill test: for figures."""
    canvas, _ = draw_image(config, base.system, map_indices_for(config, base.system.probabilities, 0),
                           stream(config.seed, STREAM_MASKS, 0))
    if canvas is None:
        raise GenerationError("the base system does not render")
    return np.ascontiguousarray(canvas[::-1])


def rerender(config: Config, system: ifs.System, index: int, attempts: int,
             fixed: np.ndarray | None = None) -> np.ndarray:
    """The saved image of class `index` from the coefficients recorded in a manifest.

    The patch masks of rejected attempts were drawn first, so they are skipped.
    """
    mask_rng = stream(config.seed, STREAM_MASKS, index)
    for _ in range(attempts - 1):
        patch_masks(config, mask_rng)
    indices = map_indices_for(config, system.probabilities, index, fixed)
    canvas, _ = draw_image(config, system, indices, mask_rng)
    if canvas is None:
        raise GenerationError(f"class {index}: the recorded system does not render")
    return np.ascontiguousarray(canvas[::-1])


# ---- this dataset's side of the interface (onepfrac.datasets.interface) ----

CHOICES = {"drawing": render.DRAWINGS, "mask_mode": render.MASK_MODES, "perturbation": ifs.PERTURBATIONS,
           "orbit": ORBITS, "base_rule": BASE_RULES}
HELP = {
    "sigma": "sigma-factor of the base system, in (0, 3 x n-maps]",
    "delta": "perturbation size, in [0, 1)",
    "samples": "L: number of perturbations = classes",
    "n_maps": f"N: maps of the base system, 2..{MAX_MAPS}",
    "size": "image side in pixels",
    "points": "orbit length including the start point",
    "pad": "margin of the rescaled orbit in pixels",
    "size_y": "image height in pixels (released --image_size_y); 0: the same as --size",
    "pad_y": "top and bottom margin in pixels (released --pad_size_y); -1: the same as --pad",
    "drawing": "3 x 3 random patches or single points",
    "mask_mode": "random: each patch's 9 cells follow a random mask (released default); fill: solid 3 x 3 patches",
    "fill_threshold": "a class needs more than this fraction of non-zero pixels",
    "perturbation": "multiplicative: x U(1-delta, 1+delta) (released code); additive: + U(-delta/2, delta/2) (paper)",
    "sigma_jitter": "the base's sigma is drawn from U(sigma - j, sigma + j), as released",
    "orbit": "fixed: every image uses the released map-choice sequence (numpy seed 100); per-image: its own",
    "burn_in": "drop the first points (start point and transient) before framing and drawing; "
               "the released renderer keeps them",
    "seed": "seed of the base system, perturbations and patch masks",
    "base_rule": "released: keep the first base with any perturbation that passes the fill test, the released "
                 "code's distribution; dense: only bases that pass --probe-pass-rate of --probes (denser fractals)",
    "base_probes": "released rule: perturbations tried before a base counts as never passing and is redrawn",
    "probes": "dense rule: perturbations drawn to judge a base system",
    "probe_pass_rate": "dense rule: fraction of the probes that must pass the fill test, in (0, 1]",
    "max_base_tries": "base systems to try before giving up",
    "max_class_tries": "perturbations to try per class before giving up",
}
# What a user who reaches for another dataset's count option most likely meant.
HINTS = {"--classes": "1p-frac counts its classes with --samples",
         "--instances": "1p-frac has one image per class"}


def check(config: Config) -> None:
    """Raise ValueError naming the first option outside its allowed range."""
    require(2 <= config.n_maps <= MAX_MAPS, f"--n-maps {config.n_maps} is outside the allowed range 2..{MAX_MAPS}")
    top = 3 * config.n_maps
    require(np.isfinite(config.sigma) and 0 < config.sigma <= top,
            f"--sigma {config.sigma} is outside (0, {top}]: the sigma-factor of {config.n_maps} maps is at most "
            f"3 x {config.n_maps}")
    require(np.isfinite(config.delta) and 0 <= config.delta < 1, f"--delta {config.delta} is outside [0, 1)")
    require(config.samples >= 1, f"--samples {config.samples} must be at least 1")
    check_canvas(config)
    require(config.size_y == 0 or 4 <= config.size_y <= 16384,
            f"--size-y {config.size_y} is outside 4..16384 (or 0 for a square image)")
    require(config.pad_y >= -1, f"--pad-y {config.pad_y} must be at least 0 (or -1 for the same margin as --pad)")
    require(config.height >= 2 * config.pad_top + 4,
            f"--size-y {config.height} is too small for --pad-y {config.pad_top}: it must be at least 2 x pad + 4 = "
            f"{2 * config.pad_top + 4}")
    require(0 <= config.burn_in <= config.points - 2,
            f"--burn-in {config.burn_in} is outside 0..{config.points - 2} (--points {config.points} minus the "
            f"2 points a frame needs)")
    require(np.isfinite(config.fill_threshold) and 0 <= config.fill_threshold < 1,
            f"--fill-threshold {config.fill_threshold} is outside [0, 1)")
    require(np.isfinite(config.sigma_jitter) and 0 <= config.sigma_jitter < config.sigma,
            f"--sigma-jitter {config.sigma_jitter} is outside [0, sigma) = [0, {config.sigma})")
    require(config.base_probes >= 1, f"--base-probes {config.base_probes} must be at least 1")
    require(config.probes >= 1, f"--probes {config.probes} must be at least 1")
    require(np.isfinite(config.probe_pass_rate) and 0 < config.probe_pass_rate <= 1,
            f"--probe-pass-rate {config.probe_pass_rate} is outside (0, 1]")
    require(config.max_base_tries >= 1, f"--max-base-tries {config.max_base_tries} must be at least 1")
    require(config.max_class_tries >= 1, f"--max-class-tries {config.max_class_tries} must be at least 1")


def counts(config: Config) -> tuple[int, int]:
    return config.samples, 1


def folder_name(config: Config) -> str:
    """The released generator's folder pattern, with the seed where it puts 8 random characters."""
    return (f"sigma{float(config.sigma)!r}_perturb{float(config.delta)!r}_sample{config.samples}"
            f"_seed{config.seed}")


def file_name(config: Config, class_index: int, instance_index: int) -> str:
    """`{class}/{class}.png`, zero-padded to 5 digits or more so names sort in numeric order."""
    width = max(5, len(str(config.samples - 1)))
    return f"{class_index:0{width}d}/{class_index:0{width}d}.png"


def prepare(config: Config) -> dict:
    return {"base_system": find_base(config).to_dict()}


def _base_and_orbit(config: Config, shared: dict) -> tuple[Base, np.ndarray | None]:
    return _prepared(config, json.dumps(shared["base_system"], sort_keys=True))


@functools.lru_cache(maxsize=4)
def _prepared(config: Config, base_record: str) -> tuple[Base, np.ndarray | None]:
    """The base and its fixed map sequence, rebuilt once per process from the manifest record."""
    record = json.loads(base_record)
    system = ifs.System.from_dict(record)
    fixed = render.released_map_choices(system.probabilities, config.points - 1) if config.orbit == "fixed" else None
    return Base(system, record["sigma_target"], record["candidate"]), fixed


def class_images(config: Config, shared: dict, class_index: int) -> tuple[dict, list[np.ndarray]]:
    """The class's params and its image: the fill search already renders it, so it is kept."""
    base, fixed = _base_and_orbit(config, shared)
    result = render_class(config, base, class_index, fixed)
    params = {"class_index": class_index, "coefficients": result.system.to_dict()["coefficients"],
              "attempts": result.attempts, "fill": result.fill}
    return params, [result.image]


def class_params(config: Config, shared: dict, class_index: int) -> dict:
    return class_images(config, shared, class_index)[0]


def render_instance(config: Config, shared: dict, params: dict, instance_index: int) -> np.ndarray:
    if instance_index != 0:
        raise IndexError(f"1p-frac has one image per class, not {instance_index + 1}")
    base, fixed = _base_and_orbit(config, shared)
    system = ifs.System(np.asarray(params["coefficients"], dtype=np.float64), base.system.probabilities)
    return rerender(config, system, params["class_index"], params["attempts"], fixed)


def class_record(index: int, params: dict, files: list[str], checksums: list[str]) -> dict:
    """The manifest record of the released 1p-frac layout (one file per class, flat)."""
    return {"index": index, "file": files[0], "sha256": checksums[0], "coefficients": params["coefficients"],
            "attempts": params["attempts"], "fill": params["fill"]}
