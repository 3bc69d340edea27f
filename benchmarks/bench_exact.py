"""Exact Shapley values: seconds for N = 12, 16, 20 train-sets, and `value` on 2^16 records.

Run by hand:  python benchmarks/bench_exact.py
Prints the seconds of the vectorised exact values (linear and data scale, one target), the ratio
against a plain textbook loop at N = 12, and where `value` on a JSONL of 2^16 records spends
its time (reading and validating the file vs the math).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from math import factorial

import numpy as np

from torchreid_shapley.game import build_game
from torchreid_shapley.records import load_records
from torchreid_shapley.scaling import data_scale, fit_log_curve
from torchreid_shapley.shapley import popcount, shapley_values
from torchreid_shapley.valuation import value_game


def dataset_like_game(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(100, 13000, size=n)
    use = rng.uniform(0.05, 1.0, size=n)
    masks = np.arange(1 << n)
    eff = np.zeros(1 << n)
    size = np.zeros(1 << n, dtype=np.int64)
    for i in range(n):
        bit = (masks >> i) & 1
        eff += bit * use[i] * images[i]
        size += bit * images[i]
    acc = np.where(eff > 0, 0.07 * (np.log(np.maximum(eff, 1)) - np.log(2.0)), 0.02)
    acc = np.clip(acc + rng.normal(0, 0.005, size=acc.size), 0, 1)
    return acc, size


def exact_both_scales(acc, size):
    phi = shapley_values(acc)
    fit = fit_log_curve(size, acc)
    psi = shapley_values(data_scale(fit, acc))
    return phi, psi


def textbook(v):
    n = int(np.log2(len(v)))
    phi = np.zeros(n)
    for i in range(n):
        for mask in range(1 << n):
            if not mask >> i & 1:
                k = bin(mask).count("1")
                phi[i] += factorial(k) * factorial(n - k - 1) / factorial(n) * (v[mask | 1 << i] - v[mask])
    return phi


def best_of(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    print(f"exact Shapley values, one target, both scales (best of 3), python {sys.version.split()[0]}, "
          f"numpy {np.__version__}, {os.cpu_count()} cpus")
    print(f"{'N':>3} {'coalitions':>11} {'seconds':>9}")
    for n in (12, 16, 20):
        acc, size = dataset_like_game(n)
        seconds, (phi, psi) = best_of(lambda: exact_both_scales(acc, size))
        assert abs(phi.sum() - (acc[-1] - acc[0])) < 1e-9
        print(f"{n:>3} {1 << n:>11,} {seconds:>9.4f}")
    acc, size = dataset_like_game(12)
    vec, phi = best_of(lambda: shapley_values(acc))
    slow, ref = best_of(lambda: textbook(acc), repeat=1)
    assert np.allclose(phi, ref)
    print(f"N = 12 linear scale: vectorised {vec * 1e3:.2f} ms vs textbook loop {slow * 1e3:.0f} ms "
          f"-> {slow / vec:,.0f}x faster")

    # `value` on a JSONL of 2^16 records: reading vs math
    n = 16
    acc, size = dataset_like_game(n, seed=1)
    names = [f"ds{i:02d}" for i in range(n)]
    images = {}
    for i, name in enumerate(names):
        images[name] = int(size[1 << i])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "runs.jsonl")
        with open(path, "w") as fh:
            for mask in range(1 << n):
                members = [names[i] for i in range(n) if mask >> i & 1]
                fh.write(json.dumps({"schema_version": 1, "train_sets": members,
                                     "num_images": {m: images[m] for m in members},
                                     "metrics": {"target": {"mAP": float(acc[mask]), "rank1": float(acc[mask])}},
                                     "status": "ok"}) + "\n")
        megabytes = os.path.getsize(path) / 1e6
        t0 = time.perf_counter()
        records = load_records(path)
        t1 = time.perf_counter()
        game = build_game(records, target="target")
        t2 = time.perf_counter()
        val = value_game(game)
        t3 = time.perf_counter()
    assert all(c.passed for c in val.checks)
    total = t3 - t0
    print(f"value on {1 << n:,} records ({megabytes:.1f} MB of JSONL): read+validate "
          f"{t1 - t0:.2f} s, build game {t2 - t1:.2f} s, exact values both scales {t3 - t2:.3f} s "
          f"(math {100 * (t3 - t2) / total:.1f}% of {total:.2f} s)")


if __name__ == "__main__":
    main()
