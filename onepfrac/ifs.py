"""Iterated function systems: sampling at a sigma-factor, perturbing, measuring.

A system of N affine maps w_j(v) = A_j v + t_j is held as an (N, 6) array of
coefficients (a, b, c, d, e, f), with A_j = [[a, b], [c, d]] and t_j = (e, f),
plus the probability p_j of choosing each map. Everything here is pure numpy
with an explicit generator: no files, no images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERTURBATIONS = ("multiplicative", "additive")
SEARCH_MAPS = (2, 7)  # N ~ U{2..7}: numpy randint(2, 8) in the released category searches


@dataclass(frozen=True)
class System:
    """An IFS: coefficients (N, 6) as (a, b, c, d, e, f) and map probabilities (N,)."""

    coefficients: np.ndarray
    probabilities: np.ndarray

    @property
    def n_maps(self) -> int:
        return self.coefficients.shape[0]

    def to_dict(self) -> dict:
        # Python floats are written with repr, so a JSON round trip is exact.
        return {
            "coefficients": [[float(v) for v in row] for row in self.coefficients],
            "probabilities": [float(p) for p in self.probabilities],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "System":
        return cls(
            np.asarray(data["coefficients"], dtype=np.float64),
            np.asarray(data["probabilities"], dtype=np.float64),
        )


def linear_parts(coefficients: np.ndarray, dimension: int = 2) -> np.ndarray:
    """The matrices A_j of every map, shape (N, d, d): the first d x d coefficients, row by row."""
    return coefficients[:, :dimension * dimension].reshape(-1, dimension, dimension)


def map_probabilities(coefficients: np.ndarray, dimension: int = 2) -> np.ndarray:
    """p_j proportional to |det A_j| (FractalDB, 1p-frac, 3D-OFDB); uniform if all are singular."""
    determinants = np.abs(np.linalg.det(linear_parts(coefficients, dimension)))
    total = determinants.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(len(coefficients), 1.0 / len(coefficients))
    return determinants / total


def search_system(rng: np.random.Generator, dimension: int, score, accept, max_tries: int,
                  n_maps: tuple[int, int] = SEARCH_MAPS):
    """The released category search of FractalDB, 2D-OFDB and 3D-OFDB.

    Draws N ~ U{n_maps} maps with every coefficient U(-1, 1) (d x d matrix row by row, then the
    translation) and p from |det A_j|, until `accept(score(coefficients, probabilities))`.
    Returns (coefficients, probabilities, score, tries), or None after `max_tries` systems.
    """
    width = dimension * dimension + dimension
    for tries in range(1, max_tries + 1):
        count = int(rng.integers(n_maps[0], n_maps[1] + 1))
        coefficients = rng.uniform(-1.0, 1.0, size=(count, width))
        probabilities = map_probabilities(coefficients, dimension)
        measured = score(coefficients, probabilities)
        if accept(measured):
            return coefficients, probabilities, measured, tries
    return None


def sigma_factor(coefficients: np.ndarray) -> float:
    """sum_j (s1_j + 2 s2_j) over the singular values s1 >= s2 of each A_j (Anderson & Farrell 2022)."""
    singular_values = np.linalg.svd(linear_parts(coefficients), compute_uv=False)
    return float(np.sum(singular_values[:, 0] + 2.0 * singular_values[:, 1]))


def sample_singular_values(sigma: float, n_maps: int, rng: np.random.Generator) -> np.ndarray:
    """Singular values (N, 2), 0 <= s2 <= s1 <= 1, with sum_j (s1_j + 2 s2_j) == sigma exactly.

    Each map takes a share of the remaining budget; the bounds keep what is left
    reachable by the maps still to come (each of which contributes between 0 and 3).
    """
    if not 0.0 < sigma <= 3.0 * n_maps:
        raise ValueError(f"sigma {sigma} is outside (0, {3 * n_maps}] for {n_maps} maps")
    values = np.empty((n_maps, 2))
    remaining = float(sigma)
    for j in range(n_maps):
        later = 3.0 * (n_maps - j - 1)  # the most the maps after this one can still take
        s1 = rng.uniform(max(0.0, (remaining - later) / 3.0), min(1.0, remaining))
        if j == n_maps - 1:
            s2 = (remaining - s1) / 2.0
        else:
            s2 = rng.uniform(max(0.0, (remaining - later - s1) / 2.0), min(s1, (remaining - s1) / 2.0))
        s2 = min(max(s2, 0.0), s1)
        values[j] = s1, s2
        remaining -= s1 + 2.0 * s2
    return values


def _rotation(angle: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, -sin], [sin, cos]])


def sample_system(sigma: float, n_maps: int, rng: np.random.Generator) -> System:
    """A random system whose sigma-factor is `sigma`: A_j = R(theta) diag(s1, s2) R(phi) D, t ~ U(-1, 1).

    D is a random reflection diag(+-1, +-1), as in Anderson & Farrell's sampler.
    """
    singular_values = sample_singular_values(sigma, n_maps, rng)
    coefficients = np.empty((n_maps, 6))
    for j, (s1, s2) in enumerate(singular_values):
        theta, phi = rng.uniform(0.0, 2.0 * np.pi, size=2)
        reflection = np.diag(rng.choice([-1.0, 1.0], size=2))
        matrix = _rotation(theta) @ np.diag([s1, s2]) @ _rotation(phi) @ reflection
        coefficients[j, :4] = matrix.ravel()
        coefficients[j, 4:] = rng.uniform(-1.0, 1.0, size=2)
    return System(coefficients, map_probabilities(coefficients))


def perturb(system: System, delta: float, rng: np.random.Generator, mode: str = "multiplicative") -> System:
    """One of the L perturbed copies of a base system; the probabilities stay the base's.

    multiplicative (released code): every coefficient times its own U(1 - delta, 1 + delta).
    additive (the paper's notation): every coefficient plus its own U(-delta / 2, delta / 2).
    """
    shape = system.coefficients.shape
    if mode == "multiplicative":
        coefficients = system.coefficients * rng.uniform(1.0 - delta, 1.0 + delta, size=shape)
    elif mode == "additive":
        coefficients = system.coefficients + rng.uniform(-delta / 2.0, delta / 2.0, size=shape)
    else:
        raise ValueError(f"perturbation mode {mode!r} is not one of {PERTURBATIONS}")
    return System(coefficients, system.probabilities.copy())
