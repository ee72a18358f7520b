"""onepfrac.ifs: sigma-factor sampling, perturbations, map probabilities."""

import json

import numpy as np
import pytest

from onepfrac import ifs


def sigmas_for(n_maps):
    top = 3.0 * n_maps
    return [1e-9, 1e-3, 0.5, 1.0, 2.0, 3.5, top / 2, top - 1.0, top - 1e-6, top]


@pytest.mark.parametrize("n_maps", range(2, 8))
def test_sampled_system_has_exactly_the_requested_sigma_factor(n_maps):
    rng = np.random.default_rng(n_maps)
    for sigma in sigmas_for(n_maps) + list(rng.uniform(1e-6, 3.0 * n_maps, size=40)):
        system = ifs.sample_system(float(sigma), n_maps, rng)
        assert system.coefficients.shape == (n_maps, 6)
        assert abs(ifs.sigma_factor(system.coefficients) - sigma) <= 1e-9


@pytest.mark.parametrize("n_maps", range(2, 8))
def test_singular_values_are_ordered_within_the_unit_interval_and_sum_to_sigma(n_maps):
    rng = np.random.default_rng(100 + n_maps)
    for sigma in sigmas_for(n_maps) + list(rng.uniform(1e-6, 3.0 * n_maps, size=40)):
        values = ifs.sample_singular_values(float(sigma), n_maps, rng)
        s1, s2 = values[:, 0], values[:, 1]
        assert np.all(0.0 <= s2) and np.all(s2 <= s1) and np.all(s1 <= 1.0)
        assert abs(np.sum(s1 + 2.0 * s2) - sigma) <= 1e-9
        # the matrices really have these singular values
        system = ifs.sample_system(float(sigma), n_maps, rng)
        svd = np.linalg.svd(ifs.linear_parts(system.coefficients), compute_uv=False)
        assert np.all(svd >= -1e-12) and np.all(svd <= 1.0 + 1e-12)


def test_translations_are_drawn_from_minus_one_to_one():
    rng = np.random.default_rng(0)
    translations = np.concatenate([ifs.sample_system(3.5, 2, rng).coefficients[:, 4:] for _ in range(300)])
    assert np.all(translations >= -1.0) and np.all(translations <= 1.0)
    assert translations.min() < -0.9 and translations.max() > 0.9


@pytest.mark.parametrize("sigma, n_maps", [(0.0, 2), (-1.0, 2), (6.0 + 1e-9, 2), (9.5, 3), (float("nan"), 2)])
def test_sigma_outside_the_reachable_range_is_rejected(sigma, n_maps):
    with pytest.raises(ValueError, match="sigma"):
        ifs.sample_system(sigma, n_maps, np.random.default_rng(0))


def test_same_generator_state_gives_the_same_system():
    a = ifs.sample_system(3.5, 2, np.random.default_rng(7))
    b = ifs.sample_system(3.5, 2, np.random.default_rng(7))
    c = ifs.sample_system(3.5, 2, np.random.default_rng(8))
    assert np.array_equal(a.coefficients, b.coefficients)
    assert not np.array_equal(a.coefficients, c.coefficients)


def test_map_probabilities_are_proportional_to_absolute_determinants():
    coefficients = np.array([[1.0, 0.0, 0.0, 0.5, 0.1, 0.2],    # det 0.5
                             [0.0, 1.0, 1.0, 0.0, 0.0, 0.0],    # det -1
                             [0.5, 0.5, 0.5, 0.0, 0.3, 0.3]])   # det -0.25
    assert np.allclose(ifs.map_probabilities(coefficients), [0.5 / 1.75, 1.0 / 1.75, 0.25 / 1.75], rtol=0, atol=1e-15)
    system = ifs.sample_system(3.5, 3, np.random.default_rng(1))
    assert np.allclose(system.probabilities, ifs.map_probabilities(system.coefficients), rtol=0, atol=1e-15)
    assert abs(system.probabilities.sum() - 1.0) < 1e-12


def test_map_probabilities_are_uniform_when_every_map_is_singular():
    coefficients = np.array([[1.0, 2.0, 2.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]])
    assert np.array_equal(ifs.map_probabilities(coefficients), [0.5, 0.5])


@pytest.mark.parametrize("delta", [0.0, 0.01, 0.1, 0.5, 0.99])
def test_multiplicative_perturbation_scales_each_coefficient_within_one_plus_minus_delta(delta):
    rng = np.random.default_rng(3)
    base = ifs.sample_system(3.5, 4, rng)
    ratios = []
    for _ in range(200):
        perturbed = ifs.perturb(base, delta, rng, "multiplicative")
        ratio = perturbed.coefficients / base.coefficients
        assert np.all(ratio >= 1.0 - delta - 1e-12) and np.all(ratio <= 1.0 + delta + 1e-12)
        assert np.array_equal(perturbed.probabilities, base.probabilities)
        ratios.append(ratio)
    ratios = np.array(ratios)
    if delta > 0:  # each coefficient gets its own factor, spread over the whole interval
        assert ratios.min() < 1.0 - 0.9 * delta and ratios.max() > 1.0 + 0.9 * delta
        assert len(np.unique(ratios[0].round(12))) == ratios[0].size


@pytest.mark.parametrize("delta", [0.0, 0.01, 0.1, 0.5])
def test_additive_perturbation_moves_each_coefficient_within_half_delta(delta):
    rng = np.random.default_rng(4)
    base = ifs.sample_system(3.5, 3, rng)
    shifts = []
    for _ in range(200):
        perturbed = ifs.perturb(base, delta, rng, "additive")
        shift = perturbed.coefficients - base.coefficients
        assert np.all(np.abs(shift) <= delta / 2 + 1e-12)
        assert np.array_equal(perturbed.probabilities, base.probabilities)
        shifts.append(shift)
    if delta > 0:
        shifts = np.array(shifts)
        assert shifts.min() < -0.45 * delta and shifts.max() > 0.45 * delta


def test_perturbation_does_not_modify_the_base_system():
    base = ifs.sample_system(3.5, 2, np.random.default_rng(5))
    coefficients, probabilities = base.coefficients.copy(), base.probabilities.copy()
    perturbed = ifs.perturb(base, 0.3, np.random.default_rng(6))
    perturbed.probabilities[0] = 42.0
    assert np.array_equal(base.coefficients, coefficients)
    assert np.array_equal(base.probabilities, probabilities)


def test_unknown_perturbation_mode_is_rejected():
    base = ifs.sample_system(3.5, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="perturbation mode"):
        ifs.perturb(base, 0.1, np.random.default_rng(0), "gaussian")


def test_system_survives_a_json_round_trip_exactly():
    system = ifs.sample_system(3.5, 5, np.random.default_rng(9))
    again = ifs.System.from_dict(json.loads(json.dumps(system.to_dict())))
    assert np.array_equal(again.coefficients, system.coefficients)
    assert np.array_equal(again.probabilities, system.probabilities)
    assert again.n_maps == 5
