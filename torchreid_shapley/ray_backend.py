"""``run --backend ray``: every planned training becomes a Ray task; the launcher publishes.

The launcher (the Ray driver) claims each training in the study store exactly like a local worker
does, submits it as a task with its GPU or CPU share, renews the leases while tasks run, and
publishes the records the tasks return, so Ray workers need no shared filesystem. A task whose
worker dies is recorded as a failed attempt and retried up to ``--max-attempts``. A killed driver
leaves stale leases behind; the next ``run`` takes them over and trains only what is missing.
Ray is optional: ``pip install 'torchreid-shapley[ray]'``.
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Callable

from .errors import ConfigError
from .runner import Event, StudySpec, failure_record, train_one
from .store import StudyStore

INSTALL_HINT = "pip install 'torchreid-shapley[ray]'"
#: Environment variables forwarded to Ray workers (plus every TORCHREID_SHAPLEY_* variable and the
#: names listed in TORCHREID_SHAPLEY_RAY_ENV, comma-separated).
FORWARDED_ENV = ("PYTHONPATH", "TORCH_HOME", "XDG_CACHE_HOME")


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--backend ray needs Ray, which is not installed; install it with: {INSTALL_HINT}") from None
    return ray


def forwarded_env(environ=os.environ) -> dict[str, str]:
    names = set(FORWARDED_ENV)
    names.update(k for k in environ if k.startswith("TORCHREID_SHAPLEY"))
    names.update(n.strip() for n in environ.get("TORCHREID_SHAPLEY_RAY_ENV", "").split(",") if n.strip())
    return {k: environ[k] for k in sorted(names) if k in environ}


def _train_task(spec: StudySpec, run, attempt: int, worker_tag: str) -> dict:
    """Runs on a Ray worker: build the plugins, train, return the record (raise on failure)."""
    import tempfile

    import ray

    from .manager import get_plugin_manager

    gpu_ids = ray.get_gpu_ids()
    device = f"cuda:{0}" if gpu_ids else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
    pm = get_plugin_manager(spec.plugins)
    pm.hook.shapley_register_datasets(config=spec.config)
    with tempfile.TemporaryDirectory(prefix="torchreid-shapley-") as workdir:
        record = train_one(pm, spec, run, attempt=attempt, device=device, worker=worker_tag, workdir=workdir)
    if gpu_ids:
        record["device"] = f"cuda:{gpu_ids[0]} ({record.get('host')})"
    return record


def run_ray(spec: StudySpec, *, address: str | None, gpus_per_training: float, cpus_per_training: float = 1.0,
            emit: Callable[[Event], None], num_cpus: int | None = None) -> dict:
    """Train what the plan still needs on a Ray cluster; returns cluster facts for the summary."""
    ray = import_ray()
    if gpus_per_training < 0 or cpus_per_training <= 0:
        raise ConfigError(f"--gpus-per-training must be >= 0 (got {gpus_per_training}) and CPUs per training > 0")
    init_kwargs = dict(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                       runtime_env={"env_vars": forwarded_env()})
    if address:
        init_kwargs["address"] = address
    elif num_cpus:
        init_kwargs["num_cpus"] = num_cpus
    try:
        ray.init(**init_kwargs)
    except ConnectionError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at --address {address!r}: {exc}; start it with "
                          "'ray start --head' or give its HOST:PORT") from None
    resources = ray.cluster_resources()
    if gpus_per_training > resources.get("GPU", 0) + 1e-9:
        raise ConfigError(f"--gpus-per-training {gpus_per_training} asks for more GPUs than the Ray cluster has "
                          f"({resources.get('GPU', 0):g}); use a fraction such as 0.5 or 0 for CPU trainings")
    slots = max(1, int(min(resources.get("CPU", 1) / cpus_per_training,
                           resources.get("GPU", 0) / gpus_per_training if gpus_per_training else 1e9)))
    remote = ray.remote(_train_task).options(num_cpus=cpus_per_training, num_gpus=gpus_per_training,
                                             max_retries=0)
    store = StudyStore(spec.out, lease_seconds=spec.lease_seconds)
    pending = list(spec.plan)
    in_flight: dict = {}   # ObjectRef -> (run, lease, attempt, started)
    deferred: list = []    # claimed by another launcher right now
    interval = max(0.2, spec.lease_seconds / 4)
    last_beat = time.time()
    try:
        while pending or in_flight or deferred:
            published = store.published_keys()
            while pending and len(in_flight) < slots:
                run = pending.pop(0)
                if run.key in published or store.attempts(run.key) >= spec.max_attempts:
                    continue
                lease = store.try_claim(run.key)
                if lease is None:
                    deferred.append(run)
                    continue
                if store.is_published(run.key):
                    store.release(lease)
                    continue
                attempt = store.attempts(run.key) + 1
                ref = remote.remote(spec, run, attempt, f"ray:{len(in_flight)}")
                in_flight[ref] = (run, lease, attempt, time.time())
                emit(Event("start", run, 0, message=f"attempt {attempt}"))
            if not in_flight:
                if deferred:
                    time.sleep(0.5)
                    pending, deferred = deferred, []
                    continue
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=interval)
            if time.time() - last_beat >= interval:
                for _, lease, _, _ in in_flight.values():
                    store.heartbeat(lease)
                last_beat = time.time()
            for ref in ready:
                run, lease, attempt, started = in_flight.pop(ref)
                try:
                    record = ray.get(ref)
                except Exception as exc:  # the task raised, or its worker died
                    cause = getattr(exc, "cause", None) or exc
                    detail = "".join(traceback.format_exception_only(type(cause), cause)).strip()
                    rec = failure_record(spec, run, detail, attempt=attempt, device="ray", worker="ray",
                                         started=started)
                    store.record_failure(run.key, rec)
                    store.release(lease)
                    emit(Event("failed", run, 0, record=rec, seconds=time.time() - started,
                               message=detail.splitlines()[0][:200]))
                    if store.attempts(run.key) < spec.max_attempts:
                        pending.append(run)
                    continue
                if not store.holds(lease):
                    store.record_duplicate(run.key, record)
                    emit(Event("duplicate", run, 0, record=record, seconds=time.time() - started))
                elif store.publish(run.key, record):
                    emit(Event("ok", run, 0, record=record, seconds=time.time() - started))
                else:
                    emit(Event("duplicate", run, 0, record=record, seconds=time.time() - started))
                store.release(lease)
    except KeyboardInterrupt:
        for ref, (run, lease, attempt, started) in in_flight.items():
            ray.cancel(ref, force=True)
            store.record_failure(run.key, failure_record(spec, run, "interrupted (Ctrl-C) before the training "
                                                         "finished", attempt=attempt, device="ray", worker="ray",
                                                         started=started, interrupted=True))
            store.release(lease)
            emit(Event("interrupted", run, 0, seconds=time.time() - started))
        raise
    return {"slots": slots, "resources": {k: resources[k] for k in ("CPU", "GPU") if k in resources}}

