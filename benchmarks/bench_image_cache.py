"""How much the decoded-image cache saves in a small synthetic study (one process, one run).

Trains every coalition of 4 synthetic train-sets (16 trainings, 1 epoch each, the demo's model and
image size), evaluating every training on the 4 targets, by calling the built-in trainer directly:
once with ``shapley.image_cache False`` and once with it on (starting empty), and prints the wall
and CPU time of each and their ratio (CPU time is the steadier figure on a shared machine)::

    python benchmarks/bench_image_cache.py [--epochs 1] [--repeat 1] [--cache-dir DIR] [--order off-on|on-off]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torchreid_shapley.config import load_config, to_dict  # noqa: E402
from torchreid_shapley.jobs import TrainJob  # noqa: E402
from torchreid_shapley.plugins import image_cache, synthetic, torchreid_trainer  # noqa: E402


def study(config: dict, train_sets, targets, *, cached: bool) -> tuple[float, float, dict]:
    """Wall and CPU seconds of all 16 trainings, and the cache's counters."""
    config = dict(config, shapley=dict(config["shapley"], image_cache=cached))
    image_cache.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    for size in range(len(train_sets) + 1):
        for coalition in itertools.combinations(sorted(train_sets), size):
            torchreid_trainer.train_coalition(TrainJob(train_sets=coalition, seed=1, targets=tuple(targets),
                                                       config=config))
    return time.perf_counter() - wall, time.process_time() - cpu, image_cache.stats()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--cache-dir", default="", help="synthetic datasets (default: a temporary directory)")
    parser.add_argument("--order", choices=("off-on", "on-off"), default="off-on")
    parser.add_argument("--repeat", type=int, default=1, help="measure each mode this many times (best is kept)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="bench-image-cache-")
    train_sets = targets = synthetic.DEMO_TRAIN_SETS
    config = to_dict(load_config(None, [*synthetic.DEMO_OPTS, "train.max_epoch", str(args.epochs)]))
    config["shapley"]["cache_dir"] = cache_dir
    config["data"]["sources"] = list(train_sets)
    config["data"]["targets"] = list(targets)
    synthetic.ensure_generated(train_sets, cache_dir, 0)
    synthetic.register_synthetic(cache_dir, 0)
    # warm-up: imports, first-call overheads and the OS file cache, outside the measurement
    torchreid_trainer.train_coalition(TrainJob(train_sets=(), seed=1, targets=tuple(targets), config=config))

    walls: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    order = (False, True) if args.order == "off-on" else (True, False)
    for repeat in range(args.repeat):
        for cached in (order if repeat % 2 == 0 else order[::-1]):  # alternate, so drift hits both
            wall, cpu, stats = study(config, train_sets, targets, cached=cached)
            walls[cached].append(wall)
            cpus[cached].append(cpu)
            label = "with cache   " if cached else "without cache"
            extra = (f", {stats['hits']} hits, {stats['misses']} misses, {stats['bytes'] / 2**20:.1f} MiB"
                     if cached else "")
            print(f"{label}: {wall:7.1f} s wall, {cpu:7.1f} s CPU for 16 trainings{extra}", flush=True)
    off_wall, on_wall = min(walls[False]), min(walls[True])
    off_cpu, on_cpu = min(cpus[False]), min(cpus[True])
    print(f"ratio without/with: {off_wall / on_wall:.2f}x wall ({(off_wall - on_wall) / 16:+.2f} s per training), "
          f"{off_cpu / on_cpu:.2f}x CPU ({(off_cpu - on_cpu) / 16:+.2f} s per training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
