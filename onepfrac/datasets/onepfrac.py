"""1p-frac: one base IFS at a sigma-factor, L perturbations of it, one class each.

Pure functions from (config, seed, class index) to images; files and processes live
in onepfrac.generate. Every random choice comes from its own seeded stream, so a
class's image depends only on the config and its index, never on worker count or order.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from onepfrac import ifs, render

# Independent random streams, keyed as SeedSequence(seed, spawn_key=(stream, ...)).
STREAM_BASE, STREAM_PROBE, STREAM_CLASS, STREAM_MASKS, STREAM_ORBIT, STREAM_PROBE_ORBIT = range(6)

# The released renderer re-seeds numpy's global generator with 100 before every orbit,
# so every image of a dataset follows the same sequence of map choices.
RELEASED_ORBIT_SEED = 100
ORBITS = ("fixed", "per-image")


class GenerationError(RuntimeError):
    """A bounded search ran out of tries; the message says what to change."""


@dataclass(frozen=True)
class Config:
    sigma: float = 3.5
    delta: float = 0.1
    samples: int = 1000
    n_maps: int = 2
    size: int = 512
    points: int = 100_000
    pad: int = 6
    drawing: str = "patch"
    fill_threshold: float = 0.05
    perturbation: str = "multiplicative"
    sigma_jitter: float = 0.1  # released code: sigma ~ U(sigma - 0.1, sigma + 0.1)
    orbit: str = "fixed"
    burn_in: int = 0  # released: the start point and transient stay in the frame
    seed: int = 0
    probes: int = 32  # perturbations drawn to judge a base system before it is used
    probe_pass_rate: float = 0.25  # ... of which at least this fraction must pass the fill test
    max_base_tries: int = 200
    max_class_tries: int = 100

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Base:
    """The accepted base system and how it was found."""

    system: ifs.System
    sigma_target: float
    candidate: int

    def to_dict(self) -> dict:
        return {
            **self.system.to_dict(),
            "sigma_target": self.sigma_target,
            "sigma_factor": ifs.sigma_factor(self.system.coefficients),
            "candidate": self.candidate,
        }


def stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def released_map_indices(probabilities: np.ndarray, points: int) -> np.ndarray:
    """The map choices of the released renderer: RandomState(100).random_sample(points)."""
    uniforms = np.random.RandomState(RELEASED_ORBIT_SEED).random_sample(points)
    return render.choose_maps(uniforms[: points - 1], probabilities)


def map_indices_for(config: Config, probabilities: np.ndarray, index: int,
                    fixed: np.ndarray | None = None) -> np.ndarray:
    """Map choices for class `index`: the shared released sequence, or one drawn for this image."""
    return _map_indices(config, probabilities, (STREAM_ORBIT, index), fixed)


def _map_indices(config: Config, probabilities: np.ndarray, key: tuple[int, ...],
                 fixed: np.ndarray | None) -> np.ndarray:
    if config.orbit == "fixed":
        return fixed if fixed is not None else released_map_indices(probabilities, config.points)
    uniforms = stream(config.seed, *key).random(config.points - 1)
    return render.choose_maps(uniforms, probabilities)


def patch_masks(config: Config, mask_rng: np.random.Generator) -> np.ndarray | None:
    """One image's patch masks, one per drawn point (None for point drawing)."""
    if config.drawing != "patch":
        return None
    return render.random_masks(config.points - config.burn_in, mask_rng)


def draw_image(config: Config, system: ifs.System, map_indices: np.ndarray,
               mask_rng: np.random.Generator) -> tuple[np.ndarray | None, float]:
    """The unflipped canvas and its fill fraction; (None, 0.0) when the orbit is not finite."""
    masks = patch_masks(config, mask_rng)
    canvas = render.render(system.coefficients, map_indices, config.size, config.pad, config.drawing, masks,
                           config.burn_in)
    if canvas is None:
        return None, 0.0
    return canvas, float(render.fill_fraction(canvas))


def passes(config: Config, fill: float) -> bool:
    """The released fill test: strictly more than `fill_threshold` of the pixels are non-zero."""
    return fill > config.fill_threshold


def find_base(config: Config) -> Base:
    """Draw base systems in a fixed order until one whose perturbations pass the fill test reliably.

    The released code tests only perturbations (never the base image) and never redraws
    the base, so a base whose perturbations cannot pass hangs it (about 16% at sigma 3.5).
    Here a base is used once `probe_pass_rate` of `probes` perturbations pass, so each
    class's bounded retry loop is all but certain to succeed.
    """
    top = 3.0 * config.n_maps
    needed = max(1, math.ceil(config.probe_pass_rate * config.probes))
    for candidate in range(config.max_base_tries):
        rng = stream(config.seed, STREAM_BASE, candidate)
        target = rng.uniform(config.sigma - config.sigma_jitter, config.sigma + config.sigma_jitter)
        target = float(min(max(target, 1e-6), top))
        system = ifs.sample_system(target, config.n_maps, rng)
        fixed = released_map_indices(system.probabilities, config.points) if config.orbit == "fixed" else None
        probe_rng = stream(config.seed, STREAM_PROBE, candidate)
        passed = failed = 0
        for probe in range(config.probes):
            perturbed = ifs.perturb(system, config.delta, probe_rng, config.perturbation)
            indices = _map_indices(config, system.probabilities, (STREAM_PROBE_ORBIT, candidate, probe), fixed)
            canvas, fill = draw_image(config, perturbed, indices, probe_rng)
            if canvas is not None and passes(config, fill):
                passed += 1
                if passed >= needed:
                    return Base(system, target, candidate)
            else:
                failed += 1
                if failed > config.probes - needed:
                    break
    raise GenerationError(
        f"no base system had {needed} of {config.probes} perturbations pass the fill test "
        f"(> {config.fill_threshold}) in {config.max_base_tries} tries at sigma {config.sigma}, "
        f"delta {config.delta}, size {config.size}, points {config.points}; try another --seed, "
        f"a lower --fill-threshold, more --points or a smaller --delta")


@dataclass(frozen=True)
class ClassImage:
    index: int
    image: np.ndarray  # uint8 (size, size), flipped top to bottom as saved
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
