"""Bookkeeping cost of the study store per training (claim, heartbeat thread, publish, release).

Run by hand:  python benchmarks/bench_store.py [N]
Runs a whole study of 2^N coalitions (default N = 9: 512 trainings) in-process with a trainer
that returns at once, so the wall time is the runner's and the store's own cost, and prints the
milliseconds per training next to the 50 ms target. Also times one resume pass (nothing to train).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from torchreid_shapley import hookimpl
from torchreid_shapley.config import default_config, to_dict
from torchreid_shapley.manager import get_plugin_manager
from torchreid_shapley.runner import prepare_study, run_study


class InstantTrainer:
    @hookimpl
    def shapley_describe_train_sets(self, train_sets, config):
        return {t: {"num_images": 100 + i, "num_ids": 10} for i, t in enumerate(sorted(train_sets))}

    @hookimpl
    def shapley_train_coalition(self, job):
        return {"metrics": {t: {"mAP": 0.5, "rank1": 0.5} for t in job.targets}}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    sets = [f"ds{i}" for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        pm = get_plugin_manager(builtins=("torchreid_shapley.plugins.plan",), entry_points=False, env=False)
        pm.register(InstantTrainer())
        spec, pm, _ = prepare_study(out=os.path.join(tmp, "study"), train_sets=sets, targets=sets[:1],
                                    modes="both", seeds=[1], config=to_dict(default_config()), pm=pm)
        with open(os.devnull, "w") as null:
            t0 = time.perf_counter()
            summary = run_study(spec, pm=pm, stream=null, use_bar=False)
            t1 = time.perf_counter()
            again = run_study(spec, pm=pm, stream=null, use_bar=False)
            t2 = time.perf_counter()
    assert summary.trained == len(spec.plan) and again.skipped == len(spec.plan)
    per_run = (t1 - t0) / summary.trained * 1e3
    print(f"{summary.trained} trainings with an instant trainer: {t1 - t0:.2f} s, {per_run:.1f} ms of store and "
          f"runner bookkeeping per training (target: under 50 ms)")
    print(f"resume pass over {len(spec.plan)} published trainings: {t2 - t1:.3f} s")


if __name__ == "__main__":
    main()
