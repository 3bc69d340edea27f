"""Trainings per hour and GPU utilisation for 1, 2 and 4 concurrent trainings on one GPU.

Each concurrent training is a separate process running the built-in torchreid trainer on the
synthetic datasets at 256x128 (the stored images are resized by torchreid's transforms), the way
``torchreid-shapley run --devices 0 --per-device K`` shares a GPU. While they run, the GPU's
utilisation and memory are sampled every half second (``nvidia-smi``, else
``torch.cuda.utilization``). Prints one row per ``--per-device`` value::

    python benchmarks/gpu_throughput.py [--per-device 1 2 4] [--device cuda:0] [--trainings 3]
        [--model osnet_x1_0] [--epochs 1] [--train-sets synth_cuhk synth_grid synth_market synth_prid]

Run it by hand on a GPU machine; without CUDA it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)


def worker(args) -> int:
    """One process: ``--trainings`` trainings of the full coalition, one JSON line each."""
    import warnings

    warnings.filterwarnings("ignore")
    from torchreid_shapley.config import load_config, to_dict
    from torchreid_shapley.jobs import TrainJob
    from torchreid_shapley.plugins import synthetic, torchreid_trainer

    config = to_dict(load_config(None, [
        *synthetic.DEMO_OPTS, "model.name", args.model, "data.height", str(args.height),
        "data.width", str(args.width), "train.max_epoch", str(args.epochs), "train.batch_size", str(args.batch_size),
        "test.batch_size", "256", "use_gpu", "True", "data.workers", str(args.workers)]))
    config["shapley"]["cache_dir"] = args.cache_dir
    config["data"]["sources"] = list(args.train_sets)
    config["data"]["targets"] = list(args.train_sets)
    synthetic.register_synthetic(args.cache_dir, 0)
    for i in range(args.trainings):
        started = time.time()
        result = torchreid_trainer.train_coalition(TrainJob(
            train_sets=tuple(sorted(args.train_sets)), seed=i + 1, targets=tuple(args.train_sets), config=config,
            device=args.device, workdir=tempfile.mkdtemp(prefix="gpu-throughput-")))
        print(json.dumps({"seconds": time.time() - started, "train_seconds": result["train_seconds"],
                          "eval_seconds": result["eval_seconds"], "steps": result["steps"]}), flush=True)
    return 0


class Sampler(threading.Thread):
    """GPU utilisation (%) and memory (MiB) of one device, every ``interval`` seconds."""

    def __init__(self, index: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.index, self.interval = index, interval
        self.util: list[float] = []
        self.memory: list[float] = []
        self.stop = threading.Event()
        self.smi = shutil.which("nvidia-smi")

    def sample(self):
        if self.smi:
            out = subprocess.run([self.smi, "-i", str(self.index), "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
            util, memory = (float(x) for x in out.stdout.strip().split(",")[:2])
            return util, memory
        import torch
        return float(torch.cuda.utilization(self.index)), float(torch.cuda.memory_reserved(self.index)) / 2 ** 20

    def run(self):
        while not self.stop.is_set():
            try:
                util, memory = self.sample()
                self.util.append(util)
                self.memory.append(memory)
            except Exception:  # a failed sample is skipped, never fatal
                pass
            self.stop.wait(self.interval)


def measure(args, concurrent: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--device", args.device, "--model", args.model,
           "--epochs", str(args.epochs), "--trainings", str(args.trainings), "--height", str(args.height),
           "--width", str(args.width), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
           "--cache-dir", args.cache_dir, "--train-sets", *args.train_sets]
    index = int(args.device.split(":")[1]) if ":" in args.device else 0
    sampler = Sampler(index)
    sampler.start()
    started = time.time()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(concurrent)]
    outputs = [p.communicate() for p in procs]
    wall = time.time() - started
    sampler.stop.set()
    sampler.join()
    failed = [err[-2000:] for p, (_, err) in zip(procs, outputs) if p.returncode != 0]
    if failed:
        raise SystemExit(f"error: a training process failed:\n{failed[0]}")
    runs = [json.loads(line) for out, _ in outputs for line in out.splitlines() if line.startswith("{")]
    # the first training of each process pays for imports and CUDA start-up: report both
    steady = [r["seconds"] for r in runs[1::args.trainings]] if args.trainings > 1 else [r["seconds"] for r in runs]
    return {
        "per_device": concurrent, "trainings": len(runs), "wall_s": round(wall, 1),
        "trainings_per_hour": round(len(runs) / wall * 3600, 1),
        "mean_training_s": round(statistics.mean(r["seconds"] for r in runs), 2),
        "steady_training_s": round(statistics.mean(steady), 2),
        "gpu_util_mean": round(statistics.mean(sampler.util), 1) if sampler.util else None,
        "gpu_util_max": max(sampler.util) if sampler.util else None,
        "gpu_mem_max_mib": max(sampler.memory) if sampler.memory else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-device", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--trainings", type=int, default=3, help="trainings per process")
    parser.add_argument("--model", default="osnet_x1_0")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4, help="data loader processes per training")
    parser.add_argument("--train-sets", nargs="+", default=None)
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from torchreid_shapley.plugins import synthetic

    args.train_sets = args.train_sets or list(synthetic.DEMO_TRAIN_SETS)
    if args.worker:
        return worker(args)
    try:
        import torch
    except ImportError:
        print("error: torch is not installed; this benchmark needs torch with CUDA on a GPU machine", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: CUDA is not available on this machine (torch.cuda.is_available() is False); run this "
              "benchmark by hand on a GPU machine", file=sys.stderr)
        return 2
    args.cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="gpu-throughput-cache-")
    synthetic.ensure_generated(args.train_sets, args.cache_dir, 0)
    print(f"{torch.cuda.get_device_name(args.device)}; model {args.model}, {args.height}x{args.width}, "
          f"{args.epochs} epoch(s) on {'+'.join(sorted(args.train_sets))}, {args.trainings} trainings per process",
          flush=True)
    header = ("per_device", "trainings", "wall_s", "trainings_per_hour", "mean_training_s", "steady_training_s",
              "gpu_util_mean", "gpu_util_max", "gpu_mem_max_mib")
    print("  ".join(header), flush=True)
    for k in args.per_device:
        row = measure(args, k)
        print("  ".join(str(row[h]) for h in header), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
