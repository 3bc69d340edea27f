"""Shared helpers: closed-form games written out as schema-1 records."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping

import pytest

REPO = Path(__file__).resolve().parents[1]


def coalitions(names: Iterable[str]):
    names = sorted(names)
    for size in range(len(names) + 1):
        yield from itertools.combinations(names, size)


def make_records(images: Mapping[str, int], targets: Mapping[str, Callable[[tuple], float]],
                 *, seed: int | None = 1, skip: Iterable[tuple] = ()) -> list[dict]:
    """One ok record per coalition of ``images``; ``targets[t](coalition)`` is its mAP on t."""
    skip = {tuple(sorted(s)) for s in skip}
    out = []
    for c in coalitions(images):
        if c in skip:
            continue
        metrics = {t: {"mAP": f(c), "rank1": min(1.0, f(c) * 1.2)} for t, f in targets.items()}
        rec = {"schema_version": 1, "train_sets": list(c), "num_images": {t: images[t] for t in c},
               "metrics": metrics, "status": "ok"}
        if seed is not None:
            rec["seed"] = seed
        out.append(rec)
    return out


def write_jsonl(path: Path, records: Iterable[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def log_curve_game(images: Mapping[str, int], alpha: float, beta: float, untrained: float,
                   usefulness: Mapping[str, float] | None = None) -> Callable[[tuple], float]:
    """mAP = alpha * (ln s_eff - ln beta), s_eff = sum usefulness_i * n_i; ``untrained`` for S = {}."""
    use = usefulness or {}

    def f(c: tuple) -> float:
        eff = sum(use.get(t, 1.0) * images[t] for t in c)
        return untrained if eff <= 0 else alpha * (math.log(eff) - math.log(beta))

    return f


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess (``python -m torchreid_shapley``)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "torchreid_shapley", *map(str, args)],
                          capture_output=True, text=True, env=full_env, cwd=cwd or REPO, timeout=timeout)


PAPER_IMAGES = {"market1501": 12936, "grid": 250, "prid": 200, "sensereid": 4428, "cuhk02": 6308}


@pytest.fixture
def paper_records():
    """5 train-sets of the paper's sizes, targets market1501 and grid, an exact log-curve game."""
    use_m = {"market1501": 1.0, "grid": 0.1, "prid": 0.05, "sensereid": 0.3, "cuhk02": 0.4}
    use_g = {"market1501": 0.4, "grid": 1.0, "prid": 0.3, "sensereid": 0.2, "cuhk02": 0.2}
    return make_records(PAPER_IMAGES, {
        "market1501": log_curve_game(PAPER_IMAGES, 0.07, 2.0, 0.02, use_m),
        "grid": log_curve_game(PAPER_IMAGES, 0.05, 1.5, 0.05, use_g),
    })
