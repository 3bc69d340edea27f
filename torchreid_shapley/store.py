"""The study store: a directory that never loses a finished training (no server needed).

Layout of a study directory::

    study.json                  manifest: config, fingerprint, train-sets, targets, seeds
    runs/<key>.json             one immutable record per finished training (status ok)
    failures/<key>-a<N>-<id>.json   one record per failed or interrupted attempt
    claims/<key>/<gen>.json     leases: who trains <key> now, renewed by a heartbeat
    duplicates/<key>-<id>.json  trainings that finished after another worker published <key>
    quarantine/                 corrupt files moved out of runs/ and failures/
    tmp/                        temporary files (same filesystem, so publishing is atomic)

``<key>`` is a hash of the coalition plus the seed: file names never contain dataset names.

Publishing writes a temporary file, fsyncs it, hard-links it to its final name (which fails if
the name exists, so nothing is ever overwritten) and fsyncs the directory. Leases are files named
by a generation number: a worker claims a free key by creating generation 0, and takes over a
stale lease (expired, released, or held by a dead process on this host) by creating the next
generation. Creation is exclusive, so exactly one worker wins each generation; the holder of the
highest generation owns the key.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .config import canonical_json, diff_payloads
from .errors import ConfigError, RecordsError
from .records import validate_record

MANIFEST = "study.json"
DESIGN = "design.json"
SUBDIRS = ("runs", "failures", "claims", "duplicates", "quarantine", "tmp")
HOST = socket.gethostname()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Lease:
    key: str
    gen: int
    owner: str
    path: Path
    expires_at: float
    started_at: float


class StudyStore:
    """One study directory, shared safely by any number of workers and launchers."""

    def __init__(self, root: os.PathLike | str, *, lease_seconds: float = 60.0, owner: str | None = None):
        self.root = Path(root)
        self.lease_seconds = float(lease_seconds)
        self.owner = owner or f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.pid = os.getpid()

    # -- layout -------------------------------------------------------------------------------
    def create(self) -> None:
        try:
            for sub in SUBDIRS:
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the study directory {str(self.root)!r}: {exc.strerror}; "
                              "choose a writable --out") from None

    def path(self, sub: str, name: str = "") -> Path:
        return self.root / sub / name if name else self.root / sub

    # -- atomic writes ------------------------------------------------------------------------
    def _write_temp(self, data: bytes) -> Path:
        tmp = self.path("tmp", f".{uuid.uuid4().hex}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _publish_bytes(self, final: Path, data: bytes) -> bool:
        """Atomically create ``final`` with ``data``; False (and nothing changed) if it exists."""
        tmp = self._write_temp(data)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(final.parent)
        return True

    def _replace_bytes(self, final: Path, data: bytes) -> None:
        tmp = self._write_temp(data)
        os.replace(tmp, final)
        _fsync_dir(final.parent)

    @staticmethod
    def encode(obj: Mapping[str, Any]) -> bytes:
        return (json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()

    # -- manifest -----------------------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RecordsError(f"{path} is not a readable study manifest ({exc}); move it away to start "
                               "the study afresh (records under runs/ are kept)") from None

    def open(self, manifest: Mapping[str, Any]) -> dict:
        """Create the study, or check that ``manifest`` has the fingerprint the study was made with."""
        self.create()
        if self._publish_bytes(self.root / MANIFEST, self.encode(manifest)):
            return dict(manifest)
        existing = self.read_manifest() or {}
        if existing.get("fingerprint") != manifest.get("fingerprint"):
            diffs = diff_payloads(existing.get("payload", {}), manifest.get("payload", {}))
            shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
            raise ConfigError(
                f"the study in {str(self.root)!r} was made with a different configuration ({shown or 'fingerprint differs'}); "
                "use a new --out directory, or restore those settings to resume it")
        return existing

    def write_design(self, design: Mapping[str, Any]) -> None:
        """The sampling design of a budgeted study (replaced when the budget is raised)."""
        self._replace_bytes(self.root / DESIGN, self.encode(design))

    # -- records ------------------------------------------------------------------------------
    def published_keys(self) -> set[str]:
        try:
            return {name[:-5] for name in os.listdir(self.path("runs")) if name.endswith(".json")}
        except FileNotFoundError:
            return set()

    def is_published(self, key: str) -> bool:
        return self.path("runs", f"{key}.json").exists()

    def publish(self, key: str, record: Mapping[str, Any]) -> bool:
        """Publish the record of ``key``; False if one exists (then it is kept as a duplicate)."""
        data = self.encode(record)
        if self._publish_bytes(self.path("runs", f"{key}.json"), data):
            return True
        self.record_duplicate(key, record)
        return False

    def record_duplicate(self, key: str, record: Mapping[str, Any]) -> Path:
        path = self.path("duplicates", f"{key}-{uuid.uuid4().hex[:8]}.json")
        self._publish_bytes(path, self.encode(dict(record, duplicate_of=f"runs/{key}.json")))
        return path

    def record_failure(self, key: str, record: Mapping[str, Any]) -> Path:
        attempt = int(record.get("attempt", 0))
        path = self.path("failures", f"{key}-a{attempt}-{uuid.uuid4().hex[:8]}.json")
        self._publish_bytes(path, self.encode(record))
        return path

    def failures(self) -> dict[str, list[dict]]:
        """Failed attempts per key (interrupted ones included, flagged ``interrupted``)."""
        out: dict[str, list[dict]] = {}
        folder = self.path("failures")
        if not folder.is_dir():
            return out
        for file in folder.glob("*.json"):
            key = file.name.split("-a")[0]
            try:
                out.setdefault(key, []).append(json.loads(file.read_text()))
            except (OSError, json.JSONDecodeError):
                continue  # quarantined by the next check
        return out

    def attempts(self, key: str) -> int:
        """Failed attempts of ``key`` that count against --max-attempts (not interruptions)."""
        return sum(1 for r in self.failures().get(key, []) if not r.get("interrupted"))

    def failure_counts(self) -> dict[str, int]:
        return {k: sum(1 for r in v if not r.get("interrupted")) for k, v in self.failures().items()}

    def quarantine_corrupt(self) -> list[tuple[str, str]]:
        """Move unreadable or invalid record files to quarantine/; returns (file, reason) pairs."""
        moved = []
        for sub in ("runs", "failures"):
            folder = self.path(sub)
            if not folder.is_dir():
                continue
            for file in sorted(folder.glob("*.json")):
                try:
                    validate_record(json.loads(file.read_bytes().decode("utf-8")), str(file))
                    continue
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    reason = f"not JSON: {getattr(exc, 'msg', exc)}"
                except RecordsError as exc:
                    reason = str(exc)
                target = self.path("quarantine", f"{sub}-{file.name}")
                if target.exists():
                    target = self.path("quarantine", f"{sub}-{uuid.uuid4().hex[:6]}-{file.name}")
                os.replace(file, target)
                moved.append((f"{sub}/{file.name}", reason))
        if moved:
            _fsync_dir(self.path("quarantine"))
        return moved

    def clean_tmp(self, older_than: float = 3600.0) -> None:
        now = time.time()
        for file in self.path("tmp").glob(".*.part"):
            try:
                if now - file.stat().st_mtime > older_than:
                    file.unlink()
            except OSError:
                pass

    # -- leases -------------------------------------------------------------------------------
    def _lease_dir(self, key: str) -> Path:
        return self.path("claims", key)

    def _generations(self, key: str) -> list[int]:
        try:
            names = os.listdir(self._lease_dir(key))
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def read_lease(self, key: str, gen: int) -> dict | None:
        try:
            return json.loads(self._lease_dir(key).joinpath(f"{gen:06d}.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def lease_is_stale(self, info: dict | None, now: float | None = None) -> bool:
        if info is None:
            return True
        if info.get("released"):
            return True
        if float(info.get("expires_at", 0)) < (now or time.time()):
            return True
        if info.get("host") == HOST and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"]):
            return True  # its process died on this machine: no need to wait for the lease to expire
        return False

    def _lease_body(self, key: str, gen: int, started_at: float, released: bool = False) -> dict:
        return {"key": key, "gen": gen, "owner": self.owner, "host": HOST, "pid": self.pid,
                "started_at": started_at, "expires_at": 0.0 if released else time.time() + self.lease_seconds,
                "released": released}

    def try_claim(self, key: str) -> Lease | None:
        """Claim ``key`` if nobody holds a live lease on it; None otherwise."""
        gens = self._generations(key)
        if gens:
            current = gens[-1]
            if not self.lease_is_stale(self.read_lease(key, current)):
                return None
            gen = current + 1
        else:
            gen = 0
        folder = self._lease_dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        path = folder / f"{gen:06d}.json"
        if not self._publish_bytes(path, self.encode(self._lease_body(key, gen, now))):
            return None  # another worker won this generation
        return Lease(key=key, gen=gen, owner=self.owner, path=path,
                     expires_at=now + self.lease_seconds, started_at=now)

    def holds(self, lease: Lease) -> bool:
        """True while no other worker has taken the key over."""
        gens = self._generations(lease.key)
        return bool(gens) and gens[-1] == lease.gen

    def heartbeat(self, lease: Lease) -> bool:
        """Renew ``lease``; False if it was taken over (then it is left alone)."""
        if not self.holds(lease):
            return False
        self._replace_bytes(lease.path, self.encode(self._lease_body(lease.key, lease.gen, lease.started_at)))
        lease.expires_at = time.time() + self.lease_seconds
        return self.holds(lease)

    def release(self, lease: Lease) -> None:
        if self.holds(lease):
            self._replace_bytes(lease.path, self.encode(
                self._lease_body(lease.key, lease.gen, lease.started_at, released=True)))

    def live_claims(self, keys: Iterable[str]) -> dict[str, dict]:
        now = time.time()
        out = {}
        for key in keys:
            gens = self._generations(key)
            if gens:
                info = self.read_lease(key, gens[-1])
                if not self.lease_is_stale(info, now):
                    out[key] = info
        return out

    def remove(self) -> None:  # used by tests and demo --fresh
        shutil.rmtree(self.root, ignore_errors=True)


def read_design(path: os.PathLike | str) -> dict | None:
    """``design.json`` of a budgeted study directory, or None (an exact study, or a records file)."""
    file = Path(path) / DESIGN
    if not Path(path).is_dir() or not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RecordsError(f"{file} is not a readable sampling design ({exc}); re-run the study's "
                           "'torchreid-shapley run' command to rewrite it, or pass --estimator kernel") from None
