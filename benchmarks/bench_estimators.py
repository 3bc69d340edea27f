"""Budgeted estimators against exact values: paired kernel regression vs permutation sampling.

Run by hand:  python benchmarks/bench_estimators.py [--quick] [--seeds 30]

Games (a fresh one per seed): ``dataset`` (accuracy on a log curve of an effective image count,
train-sets from 3 domains of different usefulness, a bonus for covering several domains, noise
0.005 per coalition), ``unanimity`` (a dense sum of unanimity games: every coalition T carries a
coefficient z_T 0.7^|T|), ``pairwise`` (additive plus pairwise). N in {8, 10, 12, 14}; budgets of
10, 25 and 50% of the 2^N coalitions. Every method gets the same number of DISTINCT coalitions
(trainings): ``kernel`` (the default: paired kernel plan + kernel regression with the design's
weights), ``perm`` (memoised Monte Carlo permutation sampling), ``anti`` (antithetic permutations).

Metrics, averaged over the seeds: relative squared error ||est - exact||^2 / ||exact||^2 on the
linear scale and (dataset game) on the data scale, where the exact psi uses the log curve fitted
on all coalitions and an estimate the curve fitted on the coalitions it has; Spearman correlation
and top-3 precision against the exact ranking (data scale for the dataset game). Also: coverage
of the +-1.96 se intervals, the log-curve weighting, and the seconds for N = 20 at a budget of
2,000. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# thousands of tiny linear-algebra calls: BLAS threads only contend (set the variables to override)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from torchreid_shapley.estimators import estimate, estimate_valuation  # noqa: E402
from torchreid_shapley.game import Game  # noqa: E402
from torchreid_shapley.sampling import kernel_design, permutation_design  # noqa: E402
from torchreid_shapley.scaling import data_scale, fit_log_curve  # noqa: E402
from torchreid_shapley.shapley import shapley_values  # noqa: E402

METHODS = ("kernel", "perm", "anti")
FRACTIONS = (0.10, 0.25, 0.50)


def indicators(n: int) -> np.ndarray:
    masks = np.arange(1 << n)
    return ((masks[:, None] >> np.arange(n)) & 1).astype(float)


def dataset_game(n: int, seed: int, noise: float = 0.005):
    rng = np.random.default_rng([seed, n, 1])
    per_set = np.exp(rng.uniform(np.log(200), np.log(13000), size=n)).astype(np.int64)
    domain = rng.integers(0, 3, size=n)
    use = np.array([1.0, 0.4, 0.15])[domain] * rng.uniform(0.7, 1.3, size=n)
    X = indicators(n)
    eff = X @ (use * per_set)
    domains = sum((X[:, domain == d].sum(axis=1) > 0) for d in range(3))
    eff = eff * (1 + 0.15 * np.maximum(domains - 1, 0))
    acc = np.where(eff > 0, 0.07 * (np.log(np.maximum(eff, 1)) - np.log(2.0)), 0.02)
    acc = np.clip(acc + rng.normal(0, noise, size=acc.size), 0, 1)
    return acc, (X @ per_set).astype(np.int64), per_set


def unanimity_game(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, n, 2])
    v = rng.normal(size=1 << n) * 0.7 ** indicators(n).sum(axis=1)
    v[0] = 0.0
    for i in range(n):  # v(S) = sum over T subset of S of c_T (zeta transform)
        view = v.reshape(-1, 2, 1 << i)
        view[:, 1, :] += view[:, 0, :]
    return v


def pairwise_game(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, n, 3])
    X = indicators(n)
    return X @ rng.normal(size=n) + np.einsum("ki,ij,kj->k", X, np.triu(rng.normal(0, 0.5, (n, n)), 1), X)


def as_game(values, images, per_set) -> Game:
    n = len(per_set)
    players = tuple(f"ds{i:02d}" for i in range(n))
    return Game(target="t", mode="without", metric="mAP", players=players,
                num_images={p: int(per_set[i]) for i, p in enumerate(players)}, values=values,
                images=np.asarray(images), runs=np.ones(1 << n, dtype=np.int64))


def only(v: np.ndarray, masks: np.ndarray) -> np.ndarray:
    out = np.full(v.shape, np.nan)
    out[masks] = v[masks]
    return out


def rel_err(est, exact) -> float:
    return float(np.sum((est - exact) ** 2) / np.sum(exact ** 2))


def top3(est, exact) -> float:
    return len(set(np.argsort(-est)[:3]) & set(np.argsort(-exact)[:3])) / 3


def spearman(est, exact) -> float:
    return float(spearmanr(est, exact).statistic)


def designs(n: int, budget: int, seed: int) -> dict:
    return {"kernel": kernel_design(n, budget, seed=seed),
            "perm": permutation_design(n, budget, seed=seed, antithetic=False),
            "anti": permutation_design(n, budget, seed=seed, antithetic=True)}


def run_accuracy(ns, seeds):
    """rows[(game, n, fraction)][method] -> dict of metric lists."""
    rows = {}
    for n in ns:
        for frac in FRACTIONS:
            budget = int(round(frac * (1 << n)))
            for seed in seeds:
                plans = designs(n, budget, seed)
                acc, images, per_set = dataset_game(n, seed)
                phi = shapley_values(acc)
                psi = shapley_values(data_scale(fit_log_curve(images, acc), acc))
                others = {"unanimity": unanimity_game(n, seed), "pairwise": pairwise_game(n, seed)}
                exact_other = {k: shapley_values(v) for k, v in others.items()}
                for method, design in plans.items():
                    masks = design.mask_array()
                    out = estimate_valuation(as_game(only(acc, masks), images, per_set), design=design,
                                             uncertainty="none")
                    lin = out["estimates"]["linear"].values
                    dat = out["estimates"]["data"].values
                    cell = rows.setdefault(("dataset", n, frac), {}).setdefault(method, _metrics())
                    cell["lin"].append(rel_err(lin, phi))
                    cell["data"].append(rel_err(dat, psi))
                    cell["rho"].append(spearman(dat, psi))
                    cell["top3"].append(top3(dat, psi))
                    for game, v in others.items():
                        est = estimate(only(v, masks), n, design=design, uncertainty="none").values
                        cell = rows.setdefault((game, n, frac), {}).setdefault(method, _metrics())
                        cell["lin"].append(rel_err(est, exact_other[game]))
                        cell["rho"].append(spearman(est, exact_other[game]))
                        cell["top3"].append(top3(est, exact_other[game]))
    return rows


def _metrics():
    return {"lin": [], "data": [], "rho": [], "top3": []}


EXACT = 1e-20  # relative squared errors below this are rounding: the estimate is exact


def fmt(x: float) -> str:
    if x != x:
        return "-"
    return "0" if x < EXACT else (f"{x:.2e}" if x < 1e-3 else f"{x:.4f}")


def ratio(a: float, b: float) -> float:
    return float("nan") if b < EXACT else a / b


def accuracy_table(rows) -> str:
    lines = ["| game | N | budget | kernel err | perm err | anti err | kernel / perm | kernel / anti | "
             "kernel data err | perm data err | anti data err | Spearman k / p / a | top-3 k / p / a |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for (game, n, frac), cell in rows.items():
        mean = {m: {k: float(np.mean(v)) if v else float("nan") for k, v in cell[m].items()} for m in METHODS}
        ratio_p = ratio(mean["kernel"]["lin"], mean["perm"]["lin"])
        ratio_a = ratio(mean["kernel"]["lin"], mean["anti"]["lin"])
        budget = int(round(frac * (1 << n)))
        lines.append(
            f"| {game} | {n} | {budget} ({frac:.0%}) | {fmt(mean['kernel']['lin'])} | {fmt(mean['perm']['lin'])} | "
            f"{fmt(mean['anti']['lin'])} | {fmt(ratio_p)} | {fmt(ratio_a)} | {fmt(mean['kernel']['data'])} | "
            f"{fmt(mean['perm']['data'])} | {fmt(mean['anti']['data'])} | "
            + " / ".join(f"{mean[m]['rho']:.3f}" for m in METHODS) + " | "
            + " / ".join(f"{mean[m]['top3']:.2f}" for m in METHODS) + " |")
    return "\n".join(lines)


def coverage_table(configs, seeds) -> str:
    lines = ["| N | budget | se method | linear coverage | data coverage | linear rms err / rms se |",
             "|---:|---:|---|---:|---:|---:|"]
    for n, frac in configs:
        budget = int(round(frac * (1 << n)))
        for method in ("jackknife", "bootstrap"):
            hits = {"linear": [], "data": []}
            err2, se2 = [], []
            for seed in seeds:
                acc, images, per_set = dataset_game(n, seed)
                exact = {"linear": shapley_values(acc),
                         "data": shapley_values(data_scale(fit_log_curve(images, acc), acc))}
                design = kernel_design(n, budget, seed=seed)
                out = estimate_valuation(as_game(only(acc, design.mask_array()), images, per_set),
                                         design=design, uncertainty=method, bootstrap=200, seed=seed)
                for scale in hits:
                    est = out["estimates"][scale]
                    hits[scale].append(np.abs(est.values - exact[scale]) <= 1.96 * est.stderr)
                lin = out["estimates"]["linear"]
                err2.append((lin.values - exact["linear"]) ** 2)
                se2.append(lin.stderr ** 2)
            ratio = np.sqrt(np.mean(err2) / np.mean(se2))
            lines.append(f"| {n} | {budget} ({frac:.0%}) | {method} | {np.mean(hits['linear']):.3f} | "
                         f"{np.mean(hits['data']):.3f} | {ratio:.2f} |")
    return "\n".join(lines)


def curve_table(n, frac, seeds) -> str:
    budget = int(round(frac * (1 << n)))
    curves = ("model", "weighted", "present")
    lines = [f"| N = {n}, budget {budget} | curve model (default) | curve weighted | curve present | "
             "curve fitted on all coalitions (oracle) |", "|---|---:|---:|---:|---:|"]
    for method in METHODS:
        errs = {c: [] for c in curves + ("oracle",)}
        for seed in seeds:
            acc, images, per_set = dataset_game(n, seed)
            fit = fit_log_curve(images, acc)
            psi = shapley_values(data_scale(fit, acc))
            design = designs(n, budget, seed)[method]
            game = as_game(only(acc, design.mask_array()), images, per_set)
            for curve in curves:
                out = estimate_valuation(game, design=design, uncertainty="none", curve=curve)
                errs[curve].append(rel_err(out["estimates"]["data"].values, psi))
            g = only(data_scale(fit, acc), design.mask_array())
            oracle = estimate(g, n, design=design, uncertainty="none")
            errs["oracle"].append(rel_err(oracle.values, psi))
        lines.append(f"| {method} | " + " | ".join(fmt(np.mean(errs[c])) for c in curves + ("oracle",)) + " |")
    return "\n".join(lines)


def design_table(n, frac, seeds) -> str:
    budget = int(round(frac * (1 << n)))
    with_design, bare = [], []
    for seed in seeds:
        acc, _, _ = dataset_game(n, seed)
        phi = shapley_values(acc)
        design = kernel_design(n, budget, seed=seed)
        values = only(acc, design.mask_array())
        with_design.append(rel_err(estimate(values, n, design=design, uncertainty="none").values, phi))
        bare.append(rel_err(estimate(values, n, uncertainty="none").values, phi))
    return (f"| N = {n}, budget {budget} | kernel with the design's weights | same coalitions, no design "
            f"(kernel weight per coalition) |\n|---|---:|---:|\n| linear err | {fmt(np.mean(with_design))} | "
            f"{fmt(np.mean(bare))} |")


def timing(n: int = 20, budget: int = 2000) -> str:
    rng = np.random.default_rng(0)
    per_set = rng.integers(100, 13000, size=n)
    use = rng.uniform(0.05, 1.0, size=n)
    t0 = time.perf_counter()
    design = kernel_design(n, budget, seed=0)
    t1 = time.perf_counter()
    masks = design.mask_array()
    X = ((masks[:, None] >> np.arange(n)) & 1).astype(float)
    values = np.full(1 << n, np.nan)
    eff = np.maximum(X @ (use * per_set), 1)
    values[masks] = 0.07 * (np.log(eff) - np.log(2.0)) + rng.normal(0, 0.005, masks.size)
    values[0] = 0.02
    images = np.zeros(1 << n, dtype=np.int64)
    for i in range(n):  # the game's image counts (the study knows them for every coalition)
        images[1 << i: 1 << (i + 1)] = images[: 1 << i] + per_set[i]
    game = as_game(values, images, per_set)
    t2 = time.perf_counter()
    lin = estimate(values, n, design=design)
    t3 = time.perf_counter()
    out = estimate_valuation(game, design=design)
    t4 = time.perf_counter()
    perm = permutation_design(n, budget, seed=0)
    t5 = time.perf_counter()
    assert np.all(np.isfinite(out["estimates"]["data"].stderr))
    assert abs(lin.efficiency_gap) < 1e-9
    return (f"N = {n}, budget {budget}: kernel plan {t1 - t0:.3f} s; estimate with jackknife se, linear "
            f"{t3 - t2:.3f} s; both scales (fit, transform, se with curve refits) {t4 - t3:.3f} s; plan + "
            f"both scales {t1 - t0 + t4 - t3:.3f} s (target < 5 s). Permutation plan {t5 - t4:.3f} s.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N in {8, 10}, 5 seeds: a smoke run")
    parser.add_argument("--seeds", type=int, default=30)
    args = parser.parse_args()
    ns = (8, 10) if args.quick else (8, 10, 12, 14)
    seeds = range(5 if args.quick else args.seeds)
    start = time.perf_counter()
    print(f"# Budgeted Shapley estimators ({len(seeds)} seeds; python {sys.version.split()[0]}, "
          f"numpy {np.__version__}, {os.cpu_count()} cpus, OPENBLAS_NUM_THREADS="
          f"{os.environ['OPENBLAS_NUM_THREADS']})\n")
    rows = run_accuracy(ns, seeds)
    print("Relative squared error ||est - exact||^2 / ||exact||^2 (mean over seeds) at equal numbers of "
          "distinct coalitions; k = kernel (default), p = memoised permutations, a = antithetic "
          "permutations. Spearman and top-3 on the data scale for the dataset game.\n")
    print(accuracy_table(rows))
    key = ("dataset", 10, 0.25)
    if key in rows:
        cell = rows[key]
        k, p, a = (np.mean(cell[m]["lin"]) for m in METHODS)
        kd, pd, ad = (np.mean(cell[m]["data"]) for m in METHODS)
        print(f"\nTarget (dataset, N = 10, 25%): kernel / permutation error = {k / p:.3f} linear, {kd / pd:.3f} "
              f"data (kernel / antithetic: {k / a:.3f} linear, {kd / ad:.3f} data); target <= 0.3.")
    print("\nCoverage of +-1.96 se (dataset game, share of player-draws covering the exact value):\n")
    cov_seeds = range(10 if args.quick else 50)
    configs = [(10, 0.10), (10, 0.25)] if args.quick else [(8, 0.25), (10, 0.10), (10, 0.25), (10, 0.50),
                                                          (12, 0.25)]
    print(coverage_table(configs, cov_seeds))
    print("\nLog curve for the data scale (dataset game, relative squared data-scale error):\n")
    print(curve_table(10, 0.25, seeds))
    print("\nWhat the design's weights are worth (dataset game):\n")
    print(design_table(10, 0.25, seeds))
    print("\n" + timing())
    print(f"\nTotal {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
