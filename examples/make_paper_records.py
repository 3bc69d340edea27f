"""Write a records file shaped like the paper's study: 5 ReID train-sets, 4 targets, 2^5 runs.

The accuracies are made up (no training): each target sees an "effective" number of images,
sum_i w_ij n_i, where w_ij says how useful train-set i is for target j (1 for its own train-set),
and accuracy follows a log curve of it plus a little noise. Use it to try `value` and `matrix`:

    python examples/make_paper_records.py > examples/paper_records.jsonl
    torchreid-shapley value examples/paper_records.jsonl --target market1501
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np

IMAGES = {"market1501": 12936, "grid": 250, "prid": 200, "sensereid": 4428, "cuhk02": 6308}
IDS = {"market1501": 751, "grid": 125, "prid": 100, "sensereid": 1718, "cuhk02": 1577}
TARGETS = ("market1501", "grid", "prid", "cuhk02")  # SenseReID is used for training only
# usefulness of train-set (row) for target (column)
USEFUL = {
    "market1501": {"market1501": 1.0, "grid": 0.5, "prid": 0.9, "cuhk02": 0.35},
    "grid": {"market1501": 0.08, "grid": 1.0, "prid": 0.6, "cuhk02": 0.05},
    "prid": {"market1501": 0.03, "grid": 0.3, "prid": 1.0, "cuhk02": 0.04},
    "sensereid": {"market1501": 0.25, "grid": 0.1, "prid": 0.8, "cuhk02": 0.12},
    "cuhk02": {"market1501": 0.3, "grid": 0.15, "prid": 0.95, "cuhk02": 1.0},
}
CURVE = {"market1501": (0.075, 3.0), "grid": (0.04, 2.0), "prid": (0.05, 8.0), "cuhk02": (0.06, 5.0)}
UNTRAINED = {"market1501": 0.03, "grid": 0.06, "prid": 0.05, "cuhk02": 0.04}


def accuracy(target: str, coalition: tuple[str, ...], rng: np.random.Generator) -> float:
    effective = sum(USEFUL[t][target] * IMAGES[t] for t in coalition)
    alpha, beta = CURVE[target]
    base = UNTRAINED[target]
    a = base if effective <= 0 else max(base, alpha * (math.log(effective) - math.log(beta)))
    return float(min(1.0, max(0.0, a + rng.normal(0, 0.004))))


def main() -> None:
    rng = np.random.default_rng(2022)
    names = sorted(IMAGES)
    for size in range(len(names) + 1):
        for coalition in itertools.combinations(names, size):
            metrics = {}
            for target in TARGETS:
                m = accuracy(target, coalition, rng)
                metrics[target] = {"mAP": round(m, 6), "rank1": round(min(1.0, m * 1.35 + 0.02), 6)}
            print(json.dumps({"schema_version": 1, "train_sets": list(coalition),
                              "num_images": {t: IMAGES[t] for t in coalition},
                              "metrics": metrics, "status": "ok", "seed": 1}))


if __name__ == "__main__":
    main()
