"""A cheap trainer plugin for runner tests: a closed-form value function, no torch.

Train-set images come from their names (``ds3`` has 100 * 4 images: ``100 * (k + 1)``); accuracy on
a target follows a log curve of the coalition's images. Environment knobs (inherited by worker
processes): ``TEST_TRAINER_SLEEP`` seconds per training, ``TEST_TRAINER_FAIL`` a coalition label
(``a+b``; ``(untrained)`` for the empty one) that always fails, ``TEST_TRAINER_LOG`` a file that
gets one line per training started (to count trainings across processes), ``TEST_TRAINER_CRASH`` a
coalition label whose first attempt kills its own process (SIGKILL).
"""

from __future__ import annotations

import hashlib
import math
import os
import time

from torchreid_shapley import hookimpl


def images_of(name: str) -> int:
    digits = "".join(ch for ch in name if ch.isdigit())
    if digits:
        return 100 * (int(digits) + 1)
    return 50 + int(hashlib.sha256(name.encode()).hexdigest(), 16) % 500


def accuracy(target: str, train_sets) -> float:
    s = sum(images_of(t) * (1.0 if t == target else 0.6) for t in train_sets)
    if s <= 0:
        return 0.02
    return min(1.0, 0.05 * (math.log(s) - math.log(10.0)))


@hookimpl
def shapley_describe_train_sets(train_sets, config):
    return {t: {"num_images": images_of(t), "num_ids": max(1, images_of(t) // 4)} for t in train_sets}


@hookimpl
def shapley_train_coalition(job):
    label = "+".join(job.train_sets) if job.train_sets else "(untrained)"
    log = os.environ.get("TEST_TRAINER_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{label} seed={job.seed} pid={os.getpid()}\n")
    sleep = float(os.environ.get("TEST_TRAINER_SLEEP", "0") or 0)
    if sleep:
        time.sleep(sleep)
    if label == os.environ.get("TEST_TRAINER_CRASH") and job.attempt == 1:
        os.kill(os.getpid(), 9)  # the worker process dies mid-training (first attempt only)
    if label == os.environ.get("TEST_TRAINER_FAIL"):
        raise RuntimeError(f"simulated failure of {label}")
    metrics = {}
    for target in job.targets:
        a = accuracy(target, job.train_sets) + 0.001 * (job.seed - 1)
        metrics[target] = {"mAP": a, "rank1": min(1.0, a * 1.3)}
    return {"metrics": metrics, "num_ids": {t: images_of(t) // 4 for t in job.train_sets},
            "steps": 10 * len(job.train_sets), "model": "closed-form"}
