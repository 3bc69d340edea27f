"""How much the decoded-image cache saves in a small synthetic study (one process, one run).

Trains every coalition of 4 synthetic train-sets (16 trainings, 1 epoch each, the demo's model and
image size), evaluating every training on the 4 targets, by calling the built-in trainer directly:
with ``shapley.image_cache False`` and with it on (starting empty, kept across the 16 trainings as a
worker keeps it), interleaved coalition by coalition, and prints the total wall and CPU time of each
and their ratio::

    python benchmarks/bench_image_cache.py [--epochs 1] [--cache-dir DIR] [--order off-on|on-off]
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


def coalitions(train_sets):
    for size in range(len(train_sets) + 1):
        yield from itertools.combinations(sorted(train_sets), size)


def train(config: dict, coalition, targets, *, cached: bool) -> tuple[float, float]:
    """Wall and CPU seconds of one training with the image cache on or off."""
    config = dict(config, shapley=dict(config["shapley"], image_cache=cached))
    wall, cpu = time.perf_counter(), time.process_time()
    torchreid_trainer.train_coalition(TrainJob(train_sets=coalition, seed=1, targets=tuple(targets), config=config))
    return time.perf_counter() - wall, time.process_time() - cpu


def loading_passes(config: dict, train_sets, targets, passes: int = 3) -> dict[bool, float]:
    """Best seconds of one pass over the full coalition's train loader and every target's query and
    gallery loaders, without any model: the part of a training the cache can speed up."""
    from torchreid_shapley.plugins import torchreid_compat

    tr = torchreid_compat.load()
    with torchreid_trainer._torchreid_output(None):
        manager = torchreid_trainer._data_manager(tr, config, list(train_sets), list(targets), use_gpu=False,
                                                  workers=0)
    loaders = [manager.train_loader] + [manager.test_loader[t][s] for t in targets for s in ("query", "gallery")]
    best = {False: float("inf"), True: float("inf")}
    image_cache.clear()
    for i in range(2 * passes):
        cached = i % 2 == 1
        with image_cache.cached_reads(cached):
            started = time.perf_counter()
            for loader in loaders:
                for _ in loader:
                    pass
            best[cached] = min(best[cached], time.perf_counter() - started)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--cache-dir", default="", help="synthetic datasets (default: a temporary directory)")
    parser.add_argument("--order", choices=("off-on", "on-off"), default="off-on")
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

    # The two studies are interleaved coalition by coalition (alternating which goes first), so that
    # a machine that gets busier or quieter during the run slows both alike. The cached study keeps
    # its cache from one coalition to the next, as a worker does; the other never touches it.
    image_cache.clear()
    totals = {False: [0.0, 0.0], True: [0.0, 0.0]}
    first = args.order == "on-off"
    for i, coalition in enumerate(coalitions(train_sets)):
        for cached in ((first, not first) if i % 2 == 0 else (not first, first)):
            wall, cpu = train(config, coalition, targets, cached=cached)
            totals[cached][0] += wall
            totals[cached][1] += cpu
        print(f"{'+'.join(coalition) or '(untrained)':55s} done", flush=True)
    stats = image_cache.stats()
    for cached in (False, True):
        label = "with cache   " if cached else "without cache"
        extra = (f" ({stats['hits']} hits, {stats['misses']} misses, {stats['bytes'] / 2**20:.1f} MiB cached)"
                 if cached else "")
        print(f"{label}: {totals[cached][0]:7.1f} s wall, {totals[cached][1]:7.1f} s CPU for 16 trainings{extra}")
    (off_wall, off_cpu), (on_wall, on_cpu) = totals[False], totals[True]
    print(f"ratio without/with: {off_wall / on_wall:.2f}x wall ({(off_wall - on_wall) / 16:+.2f} s per training), "
          f"{off_cpu / on_cpu:.2f}x CPU ({(off_cpu - on_cpu) / 16:+.2f} s per training)")
    best = loading_passes(config, train_sets, targets)
    print(f"data loading only (one pass over the full coalition's train images and every target's query and "
          f"gallery): {best[False]:.2f} s without, {best[True]:.2f} s with the cache ({best[False] / best[True]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
