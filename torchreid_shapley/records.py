"""Run records, schema version 1 (design.md section 3): reading, validation, aggregation.

A record is one training on a set of train-sets, evaluated on every target. Records come from a
JSONL file (one record per line), a JSON file holding a list of records, or a study directory
written by ``torchreid-shapley run`` (one JSON file per record under ``runs/`` and
``failures/``).

A line or file that is not JSON at all (a truncated write, a stray byte) is *corrupt*: it is
named in a warning and treated as missing, never dropped silently. A record that parses but
breaks the schema (a NaN metric, a metric outside [0, 1], a newer schema version, ...) is an
error: the numbers would be wrong, so nothing is computed from it.
"""

from __future__ import annotations

import gc
import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import RecordsError

SCHEMA_VERSION = 1
REQUIRED_METRICS = ("mAP", "rank1")
STATUSES = ("ok", "failed")

#: Sub-directories of a study directory that hold one record per file.
STUDY_RECORD_DIRS = ("runs", "failures")

Coalition = tuple  # a sorted tuple of train-set names


@dataclass(frozen=True)
class Record:
    """One validated training run."""

    train_sets: tuple[str, ...]
    num_images: Mapping[str, int]
    metrics: Mapping[str, Mapping[str, float]]
    status: str
    seed: int | None
    source: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Corrupt:
    """A line or file that could not be parsed; its coalition counts as missing."""

    source: str
    reason: str

    def warning(self) -> str:
        return f"{self.source}: corrupt record ignored ({self.reason}); its training counts as missing"


@dataclass(frozen=True)
class CoalitionResult:
    """The mean metrics of the successful runs of one coalition."""

    train_sets: tuple[str, ...]
    metrics: Mapping[str, Mapping[str, float]]  # target -> metric -> mean over ok runs
    runs: int


@dataclass(frozen=True)
class RecordSet:
    """Every record read from one source, plus what could not be read."""

    records: tuple[Record, ...]
    corrupt: tuple[Corrupt, ...] = ()
    path: str = ""

    # -- what exists -------------------------------------------------------------------------
    @cached_property
    def ok_records(self) -> tuple[Record, ...]:
        return tuple(r for r in self.records if r.ok)

    @property
    def failed_records(self) -> tuple[Record, ...]:
        return tuple(r for r in self.records if not r.ok)

    def warnings(self) -> list[str]:
        return [c.warning() for c in self.corrupt]

    def num_images(self) -> dict[str, int]:
        """Image count per train-set across all records; a conflict is an error."""
        return dict(self._num_images)

    @cached_property
    def _num_images(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        first_seen: dict[str, str] = {}
        for record in self.records:
            if all(counts.get(k) == c for k, c in record.num_images.items()):  # nothing new
                continue
            for name, count in record.num_images.items():
                if name in counts and counts[name] != count:
                    raise RecordsError(
                        f"train-set {name!r} has conflicting image counts: {counts[name]} in "
                        f"{first_seen[name]} and {count} in {record.source}; a train-set must have "
                        "one image count across a study: fix the records or keep them in separate files"
                    )
                counts.setdefault(name, count)
                first_seen.setdefault(name, record.source)
        return dict(sorted(counts.items()))

    def train_sets(self) -> list[str]:
        return list(self.num_images())

    def targets(self) -> list[str]:
        return sorted(self._metric_names)

    def metric_names(self, target: str | None = None) -> list[str]:
        if target is not None:
            return sorted(self._metric_names.get(target, ()))
        return sorted(set().union(*self._metric_names.values()))

    @cached_property
    def _metric_names(self) -> dict[str, set[str]]:
        names: dict[str, set[str]] = {}
        for result in self._coalitions.values():
            for target, metrics in result.metrics.items():
                names.setdefault(target, set()).update(metrics)
        return names

    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.records if r.seed is not None})

    # -- aggregation -------------------------------------------------------------------------
    def coalitions(self) -> dict[tuple[str, ...], CoalitionResult]:
        """Mean of every metric over the ``ok`` runs of each coalition (repeated seeds)."""
        return self._coalitions

    @cached_property
    def _coalitions(self) -> dict[tuple[str, ...], CoalitionResult]:
        with _gc_paused():
            return self._aggregate()

    def _aggregate(self) -> dict[tuple[str, ...], CoalitionResult]:
        groups: dict[tuple[str, ...], list[Record]] = {}
        for record in self.ok_records:
            groups.setdefault(record.train_sets, []).append(record)
        result = {}
        for key, runs in groups.items():
            if len(runs) == 1:
                means = runs[0].metrics
            else:
                collected: dict[str, dict[str, list[float]]] = {}
                for record in runs:
                    for target, metrics in record.metrics.items():
                        slot = collected.setdefault(target, {})
                        for name, x in metrics.items():
                            slot.setdefault(name, []).append(x)
                means = {t: {name: sum(xs) / len(xs) for name, xs in m.items()} for t, m in collected.items()}
            result[key] = CoalitionResult(train_sets=key, metrics=means, runs=len(runs))
        return result


@contextmanager
def _gc_paused():
    """Reading many small records creates millions of objects and no cycles: skip GC passes."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# -- validation --------------------------------------------------------------------------------
def _fail(source: str, message: str) -> RecordsError:
    return RecordsError(f"{source}: {message}")


def validate_record(obj: Any, source: str) -> Record:
    """Check one parsed record against schema version 1 and return it as a :class:`Record`."""
    if not isinstance(obj, dict):
        raise _fail(source, f"a record must be a JSON object, got {type(obj).__name__}; "
                            "write one object per line")
    version = obj.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _fail(source, f"schema_version must be the integer {SCHEMA_VERSION}, got {version!r}; "
                            f'add "schema_version": {SCHEMA_VERSION}')
    if version > SCHEMA_VERSION:
        raise _fail(source, f"schema_version {version} is newer than this torchreid-shapley reads "
                            f"(up to {SCHEMA_VERSION}); upgrade with: pip install -U torchreid-shapley")
    if version < 1:
        raise _fail(source, f"schema_version {version} is not valid; expected {SCHEMA_VERSION}")

    train_sets = obj.get("train_sets")
    if not isinstance(train_sets, list) or not all(isinstance(t, str) and t for t in train_sets):
        raise _fail(source, f"train_sets must be a list of dataset names ([] for the untrained model), "
                            f"got {train_sets!r}")
    if len(set(train_sets)) != len(train_sets):
        dupes = sorted({t for t in train_sets if train_sets.count(t) > 1})
        raise _fail(source, f"train_sets lists {dupes} more than once; each train-set appears once")
    key = tuple(sorted(train_sets))

    num_images = obj.get("num_images")
    if not isinstance(num_images, dict):
        raise _fail(source, f"num_images must be an object of train-set -> image count, got {num_images!r}")
    if set(num_images) != set(key):
        raise _fail(source, f"num_images keys {sorted(num_images)} must be exactly the train_sets "
                            f"{list(key)}; give one image count per train-set")
    for name, count in num_images.items():
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise _fail(source, f"num_images[{name!r}] must be a positive integer, got {count!r}")

    status = obj.get("status")
    if status not in STATUSES:
        raise _fail(source, f"status must be one of {list(STATUSES)}, got {status!r}")
    if status == "failed" and not isinstance(obj.get("error"), str):
        raise _fail(source, 'a failed record must carry its "error" text; add "error": "..."')

    metrics = obj.get("metrics", {} if status == "failed" else None)
    if not isinstance(metrics, dict):
        raise _fail(source, f"metrics must be an object of target -> {{metric: value}}, got {metrics!r}")
    clean: dict[str, dict[str, float]] = {}
    for target, values in metrics.items():
        if not isinstance(values, dict):
            raise _fail(source, f"metrics[{target!r}] must be an object of metric -> value, got {values!r}")
        if status == "ok":
            absent = [m for m in REQUIRED_METRICS if m not in values]
            if absent:
                raise _fail(source, f"metrics[{target!r}] lacks {absent}; every target needs at least "
                                    f"{list(REQUIRED_METRICS)}")
        row = {}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _fail(source, f"metrics[{target!r}][{name!r}] must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise _fail(source, f"metrics[{target!r}][{name!r}] is {value}, not a finite number; "
                                    "re-run or remove that training")
            if not 0.0 <= value <= 1.0:
                raise _fail(source, f"metrics[{target!r}][{name!r}] = {value} is outside [0, 1]; metrics "
                                    "are fractions (torchreid's mAP and CMC): divide percentages by 100")
            row[name] = value
        clean[target] = row
    if status == "ok" and not clean:
        raise _fail(source, "an ok record needs metrics for at least one target")

    seed = obj.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _fail(source, f"seed must be an integer, got {seed!r}")

    return Record(train_sets=key, num_images=dict(num_images), metrics=clean, status=status,
                  seed=seed, source=source, raw=obj)


# -- reading -----------------------------------------------------------------------------------
def _parse_jsonl(path: Path) -> tuple[list[Record], list[Corrupt]]:
    records: list[Record] = []
    corrupt: list[Corrupt] = []
    with open(path, "rb") as handle:
        data = handle.read()
    text = data.decode("utf-8", errors="replace")
    stripped = text.strip()
    if stripped.startswith("[") :
        # A JSON file holding a list of records.
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise RecordsError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected a JSON "
                               "list of records or one record per line (JSONL)") from None
        for index, item in enumerate(items, 1):
            records.append(validate_record(item, f"{path}[{index}]"))
        return records, corrupt
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        source = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            corrupt.append(Corrupt(source, f"not JSON: {exc.msg}"))
            continue
        records.append(validate_record(obj, source))
    return records, corrupt


def _read_record_file(path: Path) -> tuple[Record | None, Corrupt | None]:
    """One record per file, as a study directory stores them."""
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, Corrupt(str(path), f"not JSON: {getattr(exc, 'msg', exc)}")
    return validate_record(obj, str(path)), None


def is_study_dir(path: os.PathLike | str) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / "study.json").exists() or (path / "runs").is_dir())


def load_records(path: os.PathLike | str) -> RecordSet:
    """Read records from a JSONL/JSON file or a study directory."""
    with _gc_paused():
        return _load_records(Path(path))


def _load_records(path: Path) -> RecordSet:
    if not path.exists():
        raise RecordsError(f"records path {str(path)!r} does not exist; give a JSONL file of records "
                           "or a study directory written by 'torchreid-shapley run'")
    records: list[Record] = []
    corrupt: list[Corrupt] = []
    if path.is_dir():
        if is_study_dir(path):
            files: Iterable[Path] = sorted(
                f for sub in STUDY_RECORD_DIRS if (path / sub).is_dir()
                for f in (path / sub).glob("*.json"))
            for file in files:
                record, bad = _read_record_file(file)
                if record is not None:
                    records.append(record)
                if bad is not None:
                    corrupt.append(bad)
        else:
            files = sorted(list(path.glob("*.jsonl")) + list(path.glob("*.json")))
            if not files:
                raise RecordsError(f"directory {str(path)!r} holds no study (no study.json or runs/) and no "
                                   "*.jsonl files; point to a study directory or a records file")
            for file in files:
                r, c = _parse_jsonl(file)
                records += r
                corrupt += c
    else:
        records, corrupt = _parse_jsonl(path)
    if not records:
        what = "is empty" if not corrupt else "holds no valid JSON record"
        raise RecordsError(f"{path} {what}; expected one JSON record per line (schema version "
                           f"{SCHEMA_VERSION}, see the README) or a study directory")
    return RecordSet(records=tuple(records), corrupt=tuple(corrupt), path=str(path))


def record_set(records: Iterable[Mapping[str, Any]], *, source: str = "<records>") -> RecordSet:
    """Build a :class:`RecordSet` from in-memory dicts (validated like a file)."""
    validated = [validate_record(dict(r), f"{source}[{i}]") for i, r in enumerate(records, 1)]
    if not validated:
        raise RecordsError(f"{source} holds no record; give at least the runs a game needs")
    return RecordSet(records=tuple(validated), path=source)
