"""Scheduling and bookkeeping overhead: 64 trainings of 1 s on 4 local workers and on 4 Ray slots.

Run by hand:  python benchmarks/bench_scaleout.py [--trainings 64] [--sleep 1.0] [--skip-ray]
A test trainer sleeps ``--sleep`` seconds per training; the ideal wall time is
trainings x sleep / 4. Prints each backend's wall time, its ratio to the ideal (target: at most
1.3) and the overhead per training. Worker start-up (process spawn, Ray start) is included.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
from datetime import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torchreid_shapley", *args], capture_output=True, text=True,
                          env=env, cwd=REPO)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stderr[-3000:]}")
    return seconds


def span(out: str) -> float:
    """First training start to last training end, from the records (second resolution)."""
    recs = [json.load(open(f)) for f in glob.glob(f"{out}/runs/*.json")]
    start = min(datetime.fromisoformat(r["started_at"]) for r in recs)
    end = max(datetime.fromisoformat(r["finished_at"]) for r in recs)
    return (end - start).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainings", type=int, default=64)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--skip-ray", action="store_true")
    opts = parser.parse_args()
    n = int(math.log2(opts.trainings))
    assert 2 ** n == opts.trainings, "--trainings must be a power of two"
    sets = [f"ds{i}" for i in range(n)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"), TEST_TRAINER_SLEEP=str(opts.sleep),
               TORCHREID_SHAPLEY_RAY_ENV="TEST_TRAINER_SLEEP", RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0")
    ideal = opts.trainings * opts.sleep / 4
    common = ["-s", *sets, "-t", sets[0], "--mode", "both", "--no-report"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        seconds = run(["-p", "shapley_test_trainer", "run", "--out", f"{tmp}/local", "--workers", "4", *common], env)
        rows.append(("4 local workers", seconds, span(f"{tmp}/local")))
        if not opts.skip_ray:
            try:
                import ray  # noqa: F401
            except ImportError:
                print("ray is not installed: pip install 'torchreid-shapley[ray]' (skipping the Ray backend)")
            else:
                code = ("import ray, sys; ray.init(num_cpus=4, include_dashboard=False); "
                        "from torchreid_shapley.cli import main; sys.exit(main(sys.argv[1:]))")
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-c", code, "-p", "shapley_test_trainer", "run", "--backend",
                                       "ray", "--out", f"{tmp}/ray", *common], capture_output=True, text=True,
                                      env=env, cwd=REPO)
                if proc.returncode != 0:
                    sys.exit(proc.stderr[-3000:])
                rows.append(("Ray, 4 CPU slots (local cluster)", time.perf_counter() - t0, span(f"{tmp}/ray")))
    print(f"{opts.trainings} trainings of {opts.sleep:g} s each; ideal with 4 slots: {ideal:.1f} s")
    for name, seconds, trained in rows:
        overhead = (seconds - ideal) / opts.trainings * 4
        print(f"{name:34s} {seconds:6.1f} s  = {seconds / ideal:.2f} x ideal  "
              f"({overhead * 1e3:.0f} ms overhead per training and slot, start-up included); "
              f"first start to last finish {trained:.0f} s = {trained / ideal:.2f} x ideal")


if __name__ == "__main__":
    main()
