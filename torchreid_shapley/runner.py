"""Running a study: the plan, through the hooks, on local workers, resumable at any moment.

The launcher writes the manifest, quarantines corrupt files, builds the plan and starts ``--workers``
worker processes (or works in-process for one worker). Every worker walks the plan and trains each
coalition it can claim in the store; the store's leases make sure no two workers (processes here,
or launchers on other machines sharing the directory) train the same coalition at once, and its
atomic publishing makes sure a finished record is never rewritten. Killing anything at any moment
loses at most the trainings in flight; running the same command again resumes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import queue as queue_module
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from . import __version__
from .config import fingerprint, fingerprint_payload
from .errors import ConfigError, RecordsError, ShapleyError
from .jobs import TrainJob
from .manager import get_plugin_manager
from .plan import PlannedRun, expand_modes
from .records import SCHEMA_VERSION, validate_record
from .store import HOST, StudyStore

POLL_SECONDS = 0.5


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s"


@dataclass(frozen=True)
class StudySpec:
    """Everything a worker needs to train its share of a study (picklable)."""

    out: str
    train_sets: tuple[str, ...]
    targets: tuple[str, ...]
    modes: tuple[str, ...]
    seeds: tuple[int, ...]
    config: Mapping[str, Any]
    counts: Mapping[str, Mapping[str, int]]
    fingerprint: str
    plan: tuple[PlannedRun, ...]
    plugins: tuple[str, ...] = ()
    max_attempts: int = 3
    lease_seconds: float = 60.0
    backend: str = "local"


@dataclass
class Event:
    kind: str                # "start", "ok", "failed", "duplicate", "interrupted", "progress"
    run: PlannedRun
    worker: int
    record: dict | None = None
    seconds: float = 0.0
    message: str = ""


@dataclass
class Summary:
    planned: int
    skipped: int = 0          # published before this invocation
    trained: int = 0
    failed: int = 0           # attempts that failed in this invocation
    exhausted: list = field(default_factory=list)  # runs that reached --max-attempts
    duplicates: int = 0
    interrupted: bool = False
    quarantined: list = field(default_factory=list)
    seconds: float = 0.0
    out: str = ""
    where: str = ""           # backend, workers and devices that trained

    def line(self) -> str:
        text = f"{self.trained} trained, {self.failed} failed, {self.skipped} skipped in {format_duration(self.seconds)}"
        if self.where and self.trained + self.failed:
            text += f" on {self.where}"
        extras = []
        if self.exhausted:
            extras.append(f"{len(self.exhausted)} gave up after max attempts")
        if self.duplicates:
            extras.append(f"{self.duplicates} duplicate attempts kept aside")
        if self.quarantined:
            extras.append(f"{len(self.quarantined)} corrupt files quarantined")
        if self.interrupted:
            extras.append("interrupted: run the same command again to resume")
        return text + (f" ({'; '.join(extras)})" if extras else "")


# -- one worker -------------------------------------------------------------------------------------
class _Heartbeat(threading.Thread):
    def __init__(self, store: StudyStore, lease):
        super().__init__(daemon=True)
        self.store, self.lease = store, lease
        self.stop = threading.Event()
        self.lost = False

    def run(self) -> None:
        interval = max(0.05, self.store.lease_seconds / 4)
        while not self.stop.wait(interval):
            try:
                if not self.store.heartbeat(self.lease):
                    self.lost = True
                    return
            except OSError:
                pass


def _versions() -> dict:
    return {"python": platform.python_version(), "torchreid_shapley": __version__}


def build_record(spec: StudySpec, run: PlannedRun, result: Mapping[str, Any], *, attempt: int, device: str,
                 worker: int, started: float, finished: float) -> dict:
    record = {k: v for k, v in result.items() if k not in ("metrics", "num_images", "train_sets", "status")}
    versions = dict(_versions(), **dict(result.get("versions") or {}))
    record.update({
        "schema_version": SCHEMA_VERSION,
        "train_sets": list(run.train_sets),
        "num_images": {t: int(spec.counts[t]["num_images"]) for t in run.train_sets},
        "metrics": result.get("metrics"),
        "status": "ok",
        "seed": run.seed,
        "fingerprint": spec.fingerprint,
        "attempt": attempt,
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "finished_at": datetime.fromtimestamp(finished, timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(finished - started, 3),
        "host": HOST,
        "device": result.get("device", device),
        "backend": spec.backend,
        "worker": worker,
        "versions": versions,
    })
    return record


def failure_record(spec: StudySpec, run: PlannedRun, error: str, *, attempt: int, device: str, worker: int,
                   started: float, interrupted: bool = False) -> dict:
    return {
        "schema_version": SCHEMA_VERSION, "train_sets": list(run.train_sets),
        "num_images": {t: int(spec.counts[t]["num_images"]) for t in run.train_sets},
        "metrics": {}, "status": "failed", "error": error, "interrupted": interrupted,
        "seed": run.seed, "fingerprint": spec.fingerprint, "attempt": attempt,
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 3), "host": HOST, "device": device,
        "backend": spec.backend, "worker": worker, "versions": _versions(),
    }


def train_one(pm, spec: StudySpec, run: PlannedRun, *, attempt: int, device: str, worker: int,
              workdir: str, progress: Callable[[float, str], None] | None = None) -> dict:
    """Call the training hook for one run and build its record (raises on failure)."""
    job = TrainJob(train_sets=run.train_sets, seed=run.seed, targets=spec.targets, config=spec.config,
                   device=device, attempt=attempt, workdir=workdir, study_dir=spec.out,
                   num_images={t: int(spec.counts[t]["num_images"]) for t in run.train_sets},
                   progress=progress, hook=pm.hook)
    started = time.time()
    result = pm.hook.shapley_train_coalition(job=job)
    finished = time.time()
    if result is None:
        raise ConfigError("no plugin trained the coalition: no shapley_train_coalition implementation "
                          "returned a result; install torchreid or register a trainer plugin")
    if not isinstance(result, Mapping) or not isinstance(result.get("metrics"), Mapping):
        raise ShapleyError(f"the trainer returned {type(result).__name__} without a 'metrics' mapping; a "
                           "trainer returns {'metrics': {target: {'mAP': x, 'rank1': y}}}")
    missing = [t for t in spec.targets if t not in result["metrics"]]
    if missing:
        raise ShapleyError(f"the trainer returned no metrics for target(s) {missing}; every target is evaluated")
    record = build_record(spec, run, result, attempt=attempt, device=device, worker=worker,
                          started=started, finished=finished)
    validate_record(record, f"trainer result for {run.label}")
    return record


def work(spec: StudySpec, *, worker: int = 0, device: str = "cpu", emit: Callable[[Event], None],
         pm=None, stop: threading.Event | None = None) -> None:
    """Train every run of the plan this worker can claim, until nothing is left to do."""
    pm = pm or get_plugin_manager(spec.plugins)
    pm.hook.shapley_register_datasets(config=spec.config)
    store = StudyStore(spec.out, lease_seconds=spec.lease_seconds)
    pending = list(spec.plan)
    while pending:
        published = store.published_keys()
        failures = store.failure_counts()
        waiting = []
        progressed = False
        for run in pending:
            if stop is not None and stop.is_set():
                return
            if run.key in published or failures.get(run.key, 0) >= spec.max_attempts:
                continue
            lease = store.try_claim(run.key)
            if lease is None:
                waiting.append(run)  # someone else trains it; check again later
                continue
            progressed = True
            attempt = store.attempts(run.key) + 1
            if store.is_published(run.key) or attempt > spec.max_attempts:
                store.release(lease)
                continue
            _train_claimed(pm, spec, store, lease, run, attempt=attempt, device=device, worker=worker, emit=emit)
            if not store.is_published(run.key) and store.attempts(run.key) < spec.max_attempts:
                waiting.append(run)  # failed: retried on the next pass
        pending = waiting
        if pending and not progressed:
            time.sleep(POLL_SECONDS)


def _train_claimed(pm, spec, store, lease, run, *, attempt, device, worker, emit) -> None:
    heartbeat = _Heartbeat(store, lease)
    heartbeat.start()
    started = time.time()
    emit(Event("start", run, worker, message=f"attempt {attempt}"))
    workdir = tempfile.mkdtemp(prefix=f"train-{run.key}-", dir=store.path("tmp"))

    def progress(fraction: float, message: str = "") -> None:
        emit(Event("progress", run, worker, seconds=fraction, message=message))

    try:
        record = train_one(pm, spec, run, attempt=attempt, device=device, worker=worker, workdir=workdir,
                           progress=progress)
    except KeyboardInterrupt:
        heartbeat.stop.set()
        store.record_failure(run.key, failure_record(spec, run, "interrupted (Ctrl-C) before the training finished",
                                                     attempt=attempt, device=device, worker=worker,
                                                     started=started, interrupted=True))
        store.release(lease)
        emit(Event("interrupted", run, worker, seconds=time.time() - started))
        raise
    except Exception as exc:  # a failed training is recorded, never fatal to the study
        heartbeat.stop.set()
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if not isinstance(exc, ShapleyError):
            detail += "\n" + "".join(traceback.format_tb(exc.__traceback__)[-3:])
        rec = failure_record(spec, run, detail, attempt=attempt, device=device, worker=worker, started=started)
        store.record_failure(run.key, rec)
        store.release(lease)
        emit(Event("failed", run, worker, record=rec, seconds=time.time() - started,
                   message=str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        return
    finally:
        heartbeat.stop.set()
        shutil.rmtree(workdir, ignore_errors=True)
    if heartbeat.lost or not store.holds(lease):
        store.record_duplicate(run.key, record)  # another worker took over: it owns the key
        emit(Event("duplicate", run, worker, record=record, seconds=time.time() - started))
        return
    if store.publish(run.key, record):
        emit(Event("ok", run, worker, record=record, seconds=time.time() - started))
    else:
        emit(Event("duplicate", run, worker, record=record, seconds=time.time() - started))
    store.release(lease)


def _worker_main(spec: StudySpec, worker: int, device: str, events) -> None:
    """Entry point of a worker process."""
    try:
        work(spec, worker=worker, device=device, emit=events.put)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # report, never hang the launcher
        events.put(Event("crash", PlannedRun((), 0), worker,
                         message="".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
    finally:
        events.put(Event("exit", PlannedRun((), 0), worker))


# -- progress -------------------------------------------------------------------------------------
class Progress:
    """tqdm on a terminal, pytest-style lines otherwise."""

    def __init__(self, total: int, done: int, *, stream=None, use_bar: bool | None = None):
        self.total, self.done = total, done
        self.stream = stream or sys.stdout
        self.bar = None
        if use_bar is None:
            use_bar = self.stream.isatty()
        if use_bar:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=done, unit="training", file=sys.stderr, dynamic_ncols=True)
            except ImportError:  # pragma: no cover - tqdm is a dependency
                self.bar = None
        self.width = len(str(total))

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def finished(self, event: Event) -> None:
        if event.kind in ("ok",):
            self.done += 1
        status = {"ok": "ok", "failed": "FAILED", "duplicate": "duplicate", "interrupted": "interrupted"}[event.kind]
        head = f"[{self.done:>{self.width}}/{self.total}] {event.run.label} seed={event.run.seed} ... {status} {event.seconds:.1f}s"
        if event.kind == "ok" and event.record:
            target, metrics = next(iter(event.record["metrics"].items()))
            head += f" mAP({target})={metrics['mAP']:.3f}"
        elif event.kind == "failed":
            head += f" {event.message}"
        if self.bar is not None:
            self.bar.update(1 if event.kind == "ok" else 0)
            self.bar.set_postfix_str(event.run.label[:40])
        self.line(head)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- the launcher -----------------------------------------------------------------------------------
def prepare_study(*, out: str, train_sets: Sequence[str], targets: Sequence[str], modes: Sequence[str] | str,
                  seeds: Sequence[int], config: Mapping[str, Any], plugins: Sequence[str] = (), pm=None,
                  max_attempts: int = 3, lease_seconds: float = 60.0, backend: str = "local",
                  budget: int | None = None, sampler: str = "kernel",
                  sample_seed: int = 0) -> tuple[StudySpec, Any, dict]:
    """Describe the datasets, fingerprint the study, open its store and build its plan."""
    if max_attempts < 1:
        raise ConfigError(f"--max-attempts must be at least 1, got {max_attempts}")
    pm = pm or get_plugin_manager(plugins)
    train_sets = tuple(sorted(dict.fromkeys(train_sets)))
    targets = tuple(dict.fromkeys(targets))
    modes = expand_modes(modes)
    config = dict(config)
    pm.hook.shapley_register_datasets(config=config)
    counts = pm.hook.shapley_describe_train_sets(train_sets=list(train_sets), config=config)
    if counts is None:
        raise ConfigError(f"no plugin could describe the train-sets {list(train_sets)} (image counts); check "
                          "the dataset names and --root, or install the plugin that provides them")
    missing = [t for t in train_sets if t not in counts]
    if missing:
        raise ConfigError(f"no image count for train-set(s) {missing}; check the dataset names")
    counts = {t: {k: int(v) for k, v in counts[t].items()} for t in train_sets}
    payload = fingerprint_payload(config, counts, targets, seeds)
    fp = fingerprint(payload)
    design = None
    if budget is not None:
        from .plan import build_budget_plan

        plan, games = build_budget_plan(train_sets, targets, modes, seeds, budget=budget, sampler=sampler,
                                        sample_seed=sample_seed)
        design = {"sampler": sampler, "budget": budget, "sample_seed": sample_seed, "games": games}
    else:
        plan = pm.hook.shapley_build_plan(train_sets=list(train_sets), targets=list(targets), modes=list(modes),
                                          seeds=list(seeds), config=config)
    manifest = {
        "schema_version": SCHEMA_VERSION, "tool": "torchreid-shapley", "version": __version__,
        "created_at": now_iso(), "fingerprint": fp, "payload": payload, "config": config,
        "train_sets": list(train_sets), "targets": list(targets), "modes": list(modes),
        "seeds": list(seeds), "plan_size": len(plan), "versions": _versions(),
    }
    store = StudyStore(out, lease_seconds=lease_seconds)
    manifest = store.open(manifest)
    if design is not None:
        store.write_design(design)
    spec = StudySpec(out=str(out), train_sets=train_sets, targets=targets, modes=modes, seeds=tuple(seeds),
                     config=config, counts=counts, fingerprint=fp, plan=tuple(plan), plugins=tuple(plugins),
                     max_attempts=max_attempts, lease_seconds=lease_seconds, backend=backend)
    return spec, pm, manifest


def devices_for(workers: int | None, devices: Sequence[str] | None, per_device: int = 1) -> list[str]:
    """The device of each local worker: GPU ids (``0``, ``1`` or ``cuda:1``) round-robin, each GPU
    shared by up to ``per_device`` workers; CPU when no device is given. ``workers=None`` means one
    worker per device slot."""
    if per_device < 1:
        raise ConfigError(f"--per-device must be at least 1, got {per_device}")
    if not devices:
        return ["cpu"] * (workers or 1)
    if workers is not None and workers > len(devices) * per_device:
        raise ConfigError(f"--workers {workers} is more than {len(devices)} device(s) x --per-device {per_device}; "
                          f"raise --per-device or lower --workers")
    names = []
    for d in devices:
        d = str(d)
        if d == "cpu" or d.startswith("cuda:"):
            names.append(d)
        elif d.isdigit():
            names.append(f"cuda:{d}")
        else:
            raise ConfigError(f"device {d!r} is not a GPU id; give --devices 0 1 (GPU ids) or cpu")
    slots = [name for _ in range(per_device) for name in names]
    return slots[: workers or len(slots)]


def run_study(spec: StudySpec, *, workers: int | None = 1, devices: Sequence[str] | None = None,
              per_device: int = 1, address: str | None = None, gpus_per_training: float = 0.0,
              ray_cpus: int | None = None, pm=None, observer: Callable[[Event], None] | None = None,
              stream=None, use_bar: bool | None = None) -> Summary:
    """Train everything the plan still needs: ``workers`` local workers, or Ray (``spec.backend``)."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if spec.backend == "ray":
        from .ray_backend import import_ray

        import_ray()  # fail early, with the install hint
    started = time.time()
    store = StudyStore(spec.out, lease_seconds=spec.lease_seconds)
    store.create()
    store.clean_tmp()
    summary = Summary(planned=len(spec.plan), out=spec.out)
    summary.quarantined = store.quarantine_corrupt()
    published = store.published_keys()
    summary.skipped = sum(1 for r in spec.plan if r.key in published)
    progress = Progress(len(spec.plan), summary.skipped, stream=stream, use_bar=use_bar)
    for name, reason in summary.quarantined:
        progress.line(f"warning: moved corrupt {name} to quarantine/ ({reason}); its training will be redone")
    todo = len(spec.plan) - summary.skipped
    if spec.backend == "ray":
        device_list = []
        summary.where = (f"Ray {'at ' + address if address else '(local cluster)'}, "
                         f"{gpus_per_training:g} GPU per training" if gpus_per_training else
                         f"Ray {'at ' + address if address else '(local cluster)'}, CPU")
    else:
        device_list = devices_for(workers, devices, per_device)
        n = len(device_list)
        summary.where = f"{n} local worker{'s' if n > 1 else ''} ({', '.join(sorted(set(device_list)))})"
    progress.line(f"study {spec.out}: {len(spec.plan)} trainings planned, {summary.skipped} done, {todo} to train "
                  f"on {summary.where}")
    pm = pm or get_plugin_manager(spec.plugins)

    def handle(event: Event) -> None:
        if event.kind in ("start", "progress"):
            return
        if event.kind == "ok":
            summary.trained += 1
        elif event.kind == "failed":
            summary.failed += 1
        elif event.kind == "duplicate":
            summary.duplicates += 1
        elif event.kind == "interrupted":
            summary.interrupted = True
        progress.finished(event)
        if event.record is not None and event.kind in ("ok", "failed"):
            try:
                pm.hook.shapley_observe_run(record=event.record, study_dir=spec.out)
            except Exception as exc:  # an observer never loses a record
                progress.line(f"warning: a shapley_observe_run hook failed: {exc}")
        if observer is not None:
            observer(event)

    try:
        if todo:
            if spec.backend == "ray":
                from .ray_backend import run_ray

                run_ray(spec, address=address, gpus_per_training=gpus_per_training, emit=handle, num_cpus=ray_cpus)
            elif len(device_list) == 1:
                work(spec, worker=0, device=device_list[0], emit=handle, pm=pm)
            else:
                _run_processes(spec, device_list, handle, progress)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        progress.close()
    counts = store.failure_counts()
    final = store.published_keys()
    summary.exhausted = [r for r in spec.plan if r.key not in final and counts.get(r.key, 0) >= spec.max_attempts]
    summary.seconds = time.time() - started
    return summary


def _run_processes(spec: StudySpec, device_list: list[str], handle, progress: Progress) -> None:
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(spec, i, device_list[i], events), daemon=False,
                         name=f"torchreid-shapley-worker-{i}") for i in range(len(device_list))]
    for p in procs:
        p.start()
    running = len(procs)
    try:
        while running:
            try:
                event = events.get(timeout=1.0)
            except queue_module.Empty:
                if not any(p.is_alive() for p in procs):
                    break
                continue
            if event.kind == "exit":
                running -= 1
            elif event.kind == "crash":
                progress.line(f"warning: worker {event.worker} crashed:\n{event.message}")
            else:
                handle(event)
    except KeyboardInterrupt:
        # workers got the same SIGINT: they record their runs as interrupted and exit
        deadline = time.time() + 30
        for p in procs:
            p.join(timeout=max(0.1, deadline - time.time()))
        while True:
            try:
                event = events.get_nowait()
            except (queue_module.Empty, OSError, EOFError):
                break
            if event.kind not in ("exit", "crash"):
                handle(event)
        raise
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
