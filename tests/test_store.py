"""The study store: atomic publishing, leases, failures, quarantine, manifest fingerprints."""

from __future__ import annotations

import json
import os
import time

import pytest

from torchreid_shapley.errors import ConfigError
from torchreid_shapley.store import StudyStore

REC = {"schema_version": 1, "train_sets": ["a"], "num_images": {"a": 10},
       "metrics": {"t": {"mAP": 0.5, "rank1": 0.6}}, "status": "ok", "seed": 1}


def test_publish_never_overwrites(tmp_path):
    store = StudyStore(tmp_path)
    store.create()
    assert store.publish("k-s1", REC)
    before = (tmp_path / "runs" / "k-s1.json").read_bytes()
    assert not store.publish("k-s1", dict(REC, metrics={"t": {"mAP": 0.1, "rank1": 0.1}}))
    assert (tmp_path / "runs" / "k-s1.json").read_bytes() == before
    dupes = list((tmp_path / "duplicates").glob("k-s1-*.json"))
    assert len(dupes) == 1 and json.loads(dupes[0].read_text())["duplicate_of"] == "runs/k-s1.json"
    assert store.published_keys() == {"k-s1"}
    assert not list((tmp_path / "tmp").iterdir())  # no temp file left behind


def test_one_claim_wins_until_released_or_expired(tmp_path):
    a = StudyStore(tmp_path, lease_seconds=0.3)
    b = StudyStore(tmp_path, lease_seconds=0.3)
    a.create()
    lease = a.try_claim("k")
    assert lease is not None and b.try_claim("k") is None
    assert a.heartbeat(lease)
    time.sleep(0.4)  # expired: no heartbeat
    taken = b.try_claim("k")
    assert taken is not None and taken.gen == 1
    assert not a.holds(lease) and not a.heartbeat(lease)
    a.release(lease)  # releasing a lost lease leaves the new holder alone
    assert b.holds(taken) and a.try_claim("k") is None
    b.release(taken)
    again = a.try_claim("k")
    assert again is not None and again.gen == 2


def test_a_dead_holder_on_this_host_is_stale_at_once(tmp_path):
    a = StudyStore(tmp_path, lease_seconds=3600)
    a.create()
    a.pid = 2 ** 22 + 12345  # no such process
    assert a.try_claim("k") is not None
    assert StudyStore(tmp_path).try_claim("k") is not None


def test_failures_count_attempts_but_not_interruptions(tmp_path):
    store = StudyStore(tmp_path)
    store.create()
    failed = dict(REC, status="failed", error="boom", metrics={}, attempt=1)
    store.record_failure("k-s1", failed)
    store.record_failure("k-s1", dict(failed, attempt=2))
    store.record_failure("k-s1", dict(failed, attempt=3, interrupted=True))
    assert store.attempts("k-s1") == 2 and store.failure_counts() == {"k-s1": 2}


def test_corrupt_files_are_quarantined(tmp_path):
    store = StudyStore(tmp_path)
    store.create()
    store.publish("good-s1", REC)
    (tmp_path / "runs" / "torn-s1.json").write_text('{"schema_version": 1, "train_')
    (tmp_path / "runs" / "bad-s1.json").write_text(json.dumps(dict(REC, metrics={"t": {"mAP": 7, "rank1": 1}})))
    moved = store.quarantine_corrupt()
    assert sorted(name for name, _ in moved) == ["runs/bad-s1.json", "runs/torn-s1.json"]
    assert store.published_keys() == {"good-s1"}
    assert len(list((tmp_path / "quarantine").iterdir())) == 2


def test_manifest_fingerprint_guards_the_study(tmp_path):
    store = StudyStore(tmp_path)
    m = {"fingerprint": "abc", "payload": {"settings": {"train.max_epoch": 2}}}
    assert store.open(m)["fingerprint"] == "abc"
    assert store.open(dict(m))["fingerprint"] == "abc"  # resume: same fingerprint
    with pytest.raises(ConfigError, match=r"train.max_epoch: 2 -> 3"):
        store.open({"fingerprint": "def", "payload": {"settings": {"train.max_epoch": 3}}})


def test_unwritable_out_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="writable --out"):
        StudyStore(blocker / "study").create()
