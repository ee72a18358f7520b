"""Which base systems does 1p-frac keep, against those a released run finishes with?

    python benchmarks/bench_base_selection.py [--bases 200] [--sigmas 3.5 5.0 6.0] [--workers N]

The released generator draws one base (sigma-factor target ~ U(sigma - 0.1, sigma + 0.1)) and
never redraws it: a target above 3N makes its sampler raise, and a base whose perturbations
never pass the fill test hangs it. The bases of the runs that finish are therefore the raw
sampler's bases with a target below 3N and a pass rate above zero. For each sigma this script
draws `--bases` such raw bases (the reference), and `--bases` bases kept by our generator
(one per seed) under each base rule, and compares them at the released defaults (N = 2,
delta 0.1, 512 px, 100,000 points, random patches, the fixed released orbit):

- the pass rate of every base, estimated on `--estimate-probes` perturbations of its own
  (a stream neither the generator nor the reference used);
- the sigma-factor target, the singular values s1 and s2 of every map, the probability of
  the first map and the translations (e, f) of every map;
- two-sample Kolmogorov-Smirnov statistics D and p-values (scipy), and means.

A raw base whose estimate passes 0 probes is kept as "pass rate > 0" when one of up to
`--zero-probes` more perturbations passes (the released run would finish, slowly).
Takes about 10 minutes on 2 cores at the defaults; `--bases 50` for a quick look.
`--unselected N` checks the premise instead: the generator's sampling path and the raw released
draws, both without any selection, give the same pass rates.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import replace

import numpy as np
from scipy import stats

from onepfrac.argparsing import Parser
from onepfrac import ifs, render
from onepfrac.cores import available_cores
from onepfrac.datasets import single_fractal as F
from onepfrac.datasets.interface import stream

KINDS = ("reference", "released", "dense")
BENCH_SEED = 20241001


def estimate(config: F.Config, system: ifs.System, key: tuple[int, ...], probes: int) -> int:
    """How many of `probes` fresh perturbations of `system` render and pass the fill test."""
    rng = np.random.default_rng([BENCH_SEED, *key])
    fixed = render.released_map_choices(system.probabilities, config.points - 1)
    passed = 0
    for _ in range(probes):
        perturbed = ifs.perturb(system, config.delta, rng, config.perturbation)
        canvas, fill = F.draw_image(config, perturbed, fixed, rng)
        passed += canvas is not None and F.passes(config, fill)
    return passed


def raw_base(config: F.Config, index: int, sigma_key: int) -> tuple[ifs.System | None, float, int]:
    """One draw of the released sampler: (system or None if its target is above 3N, target, draws)."""
    rng = np.random.default_rng([BENCH_SEED, 0, sigma_key, index])
    draws = 0
    while True:  # a target above 3N is a released run that raises: it never makes a dataset
        draws += 1
        target = float(rng.uniform(config.sigma - 0.1, config.sigma + 0.1))
        if target < 3.0 * config.n_maps:
            return ifs.sample_system(target, config.n_maps, rng), target, draws


def measure_one(task: tuple[str, float, int, int, int]) -> dict:
    kind, sigma, index, estimate_probes, zero_probes = task
    config = F.Config(sigma=sigma)
    sigma_key = int(round(sigma * 1000))
    started = time.perf_counter()
    record = {"kind": kind, "sigma": sigma, "index": index}
    if kind == "reference":
        system, target, draws = raw_base(config, index, sigma_key)
        record["raised_draws"] = draws - 1
        passed = estimate(config, system, (1, sigma_key, index), estimate_probes)
        if passed == 0:  # does any perturbation pass at all? (the released run finishes iff so)
            passed_later = estimate(config, system, (2, sigma_key, index), zero_probes)
            record["usable"] = passed_later > 0
        else:
            record["usable"] = True
    else:
        base = F.find_base(replace(config, seed=10_000 + index, base_rule=kind))
        system, target = base.system, base.sigma_target
        record["usable"] = True
        record["candidate"] = base.candidate
        passed = estimate(config, system, (3, sigma_key, KINDS.index(kind), index), estimate_probes)
    singular = np.linalg.svd(ifs.linear_parts(system.coefficients), compute_uv=False)
    record.update(
        pass_rate=passed / estimate_probes, target=target,
        s1=singular[:, 0].tolist(), s2=singular[:, 1].tolist(),
        p_first=float(system.probabilities[0]),
        translations=system.coefficients[:, 4:].ravel().tolist(),
        isometry=bool(np.all(np.abs(singular - 1.0) < 1e-9)),
        seconds=time.perf_counter() - started)
    return record


def unselected_pair(task: tuple[float, int, int]) -> tuple[int, int]:
    """Pass counts of the generator's first candidate for one seed and of one raw released draw, unselected."""
    sigma, index, probes = task
    config = F.Config(sigma=sigma)
    rng = stream(50_000 + index, F.STREAM_BASE, 0)
    ours = ifs.sample_system(F.sigma_target(config, rng), config.n_maps, rng)
    raw, _, _ = raw_base(config, 5_000 + index, int(round(sigma * 1000)))
    return estimate(config, ours, (5, index), probes), estimate(config, raw, (6, index), probes)


def quantities(records: list[dict]) -> dict[str, np.ndarray]:
    return {
        "pass rate": np.array([r["pass_rate"] for r in records]),
        "sigma target": np.array([r["target"] for r in records]),
        "s1 (every map)": np.concatenate([r["s1"] for r in records]),
        "s2 (every map)": np.concatenate([r["s2"] for r in records]),
        "p of map 1": np.array([r["p_first"] for r in records]),
        "translations": np.concatenate([r["translations"] for r in records]),
    }


def report(sigma: float, records: list[dict]) -> list[str]:
    by_kind = {kind: [r for r in records if r["kind"] == kind and r["sigma"] == sigma] for kind in KINDS}
    drawn = by_kind["reference"]
    reference = [r for r in drawn if r["usable"]]
    raised = sum(r["raised_draws"] for r in drawn)
    lines = [f"## sigma {sigma}",
             f"reference: {len(drawn)} raw bases drawn ({raised} further targets above 3N would have raised), "
             f"{len(drawn) - len(reference)} never pass ({100 * (len(drawn) - len(reference)) / len(drawn):.1f}%), "
             f"{len(reference)} kept",
             *(f"{kind} rule: {len(by_kind[kind])} bases, mean candidate {np.mean([r['candidate'] for r in by_kind[kind]]):.2f}, "
               f"{sum(r['isometry'] for r in by_kind[kind])} exact isometries, "
               f"{np.mean([r['seconds'] for r in by_kind[kind]]):.2f} s a base" for kind in ("released", "dense")),
             "",
             "| quantity | reference mean | released rule mean | D | p | dense rule mean | D | p |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    ref = quantities(reference)
    ours = {kind: quantities(by_kind[kind]) for kind in ("released", "dense")}
    for name, values in ref.items():
        cells = [name, f"{values.mean():.4f}"]
        for kind in ("released", "dense"):
            test = stats.ks_2samp(values, ours[kind][name])
            cells += [f"{ours[kind][name].mean():.4f}", f"{test.statistic:.3f}", f"{test.pvalue:.2g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def main() -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--bases", type=int, default=200, help="bases per kind and sigma (default %(default)s)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[3.5, 5.0, 6.0], help="sigma-factors measured")
    parser.add_argument("--estimate-probes", type=int, default=64,
                        help="perturbations that estimate a base's pass rate (default %(default)s)")
    parser.add_argument("--zero-probes", type=int, default=1000,
                        help="further perturbations that decide 'pass rate > 0' for a raw base (default %(default)s)")
    parser.add_argument("--workers", type=int, default=0, help="processes; 0 = all cores")
    parser.add_argument("--json", default=None, help="also write every base's record to this file (default: none)")
    parser.add_argument("--unselected", type=int, default=0, metavar="N",
                        help="instead: N bases of the generator's sampling path and N raw released draws, no "
                             "selection, 16 probes each: do the two samplers agree? (seeds apart from the above)")
    args = parser.parse_args()
    if args.unselected:
        with multiprocessing.Pool(args.workers or available_cores()) as pool:
            for sigma in args.sigmas:
                pairs = np.array(pool.map(unselected_pair, [(sigma, i, 16) for i in range(args.unselected)]))
                test = stats.ks_2samp(pairs[:, 0], pairs[:, 1])
                print(f"sigma {sigma}: {args.unselected} bases each, unselected mean pass rate: generator's sampler "
                      f"{pairs[:, 0].mean() / 16:.4f}, raw released sampler {pairs[:, 1].mean() / 16:.4f}; "
                      f"KS D {test.statistic:.3f}, p {test.pvalue:.2g}")
        return
    tasks = [(kind, sigma, index, args.estimate_probes, args.zero_probes)
             for sigma in args.sigmas for kind in KINDS for index in range(args.bases)]
    started = time.perf_counter()
    with multiprocessing.Pool(args.workers or available_cores()) as pool:
        records = pool.map(measure_one, tasks, chunksize=4)
    print(f"# base selection: {args.bases} bases per kind and sigma, pass rates on {args.estimate_probes} probes, "
          f"{time.perf_counter() - started:.0f} s on {args.workers or available_cores()} processes\n")
    for sigma in args.sigmas:
        print("\n".join(report(sigma, records)))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(records, out)


if __name__ == "__main__":
    main()
