"""Running studies with the cheap test trainer: resume after SIGKILL, racing workers, leases."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from torchreid_shapley.records import load_records
from torchreid_shapley.valuation import value

from conftest import REPO, run_cli, write_jsonl

TESTS = Path(__file__).resolve().parent


def env(**extra) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run_args(out, sets, targets=None, *more):
    return ["-p", "shapley_test_trainer", "run", "--out", str(out), "-s", *sets, "-t", *(targets or sets), *more]


def start(out, sets, *more, **env_extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torchreid_shapley", *run_args(out, sets, None, *more)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(**env_extra),
                            cwd=REPO)


def cli(*args, **env_extra):
    return run_cli(*args, env=env(**env_extra))


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}


def coalitions_in(out: Path) -> Counter:
    return Counter((tuple(json.loads(b)["train_sets"]), json.loads(b)["seed"]) for b in snapshot(out).values())


SETS4 = ["ds0", "ds1", "ds2", "ds3"]


def test_full_study_value_on_directory_equals_value_on_jsonl(tmp_path):
    out = tmp_path / "study"
    proc = cli(*run_args(out, SETS4))
    assert proc.returncode == 0, proc.stderr
    assert "16 trained, 0 failed, 0 skipped in" in proc.stdout
    assert "[16/16] (untrained) seed=1 ... ok" in proc.stdout
    records = [json.loads(b) for b in snapshot(out).values()]
    assert len(records) == 16 and all(r["status"] == "ok" and r["fingerprint"] for r in records)
    jsonl = write_jsonl(tmp_path / "same.jsonl", records)
    for target in ("ds0", "ds3"):
        for mode in ("without", "with"):
            a = cli("value", out, "-t", target, "--mode", mode, "--format", "json")
            b = cli("value", jsonl, "-t", target, "--mode", mode, "--format", "json")
            assert a.returncode == 0 and a.stdout == b.stdout
    again = cli(*run_args(out, SETS4))
    assert "0 trained, 0 failed, 16 skipped" in again.stdout
    assert snapshot(out) == {p: b for p, b in snapshot(out).items()}


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path):
    out = tmp_path / "study"
    sets = ["ds0", "ds1", "ds2", "ds3", "ds4"]
    rng = random.Random(1234)
    seen: dict[str, bytes] = {}
    for round_ in range(6):
        proc = start(out, sets, "--lease-seconds", "30", TEST_TRAINER_SLEEP="0.03")
        deadline = time.time() + 30
        while time.time() < deadline and len(snapshot(out)) <= len(seen) and proc.poll() is None:
            time.sleep(0.01)  # wait for this launcher's first record, then kill it at a random moment
        time.sleep(rng.uniform(0.0, 0.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = snapshot(out)
        for name, data in seen.items():
            assert now[name] == data, f"record {name} changed after a kill"
        seen.update(now)
    assert len(seen) < 32, "the kills came too late to interrupt anything"
    final = cli(*run_args(out, sets))
    assert final.returncode == 0, final.stderr
    assert f"{32 - len(seen)} trained, 0 failed, {len(seen)} skipped" in final.stdout
    now = snapshot(out)
    assert all(now[name] == data for name, data in seen.items())
    counts = coalitions_in(out)
    assert len(counts) == 32 and set(counts.values()) == {1}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4])
def test_racing_workers_train_each_coalition_once(tmp_path, workers):
    out = tmp_path / "study"
    log = tmp_path / "log.txt"
    sets = [f"ds{i}" for i in range(6)]
    proc = cli(*run_args(out, sets, None, "--workers", str(workers)), TEST_TRAINER_LOG=log,
               TEST_TRAINER_SLEEP="0.01")
    assert proc.returncode == 0, proc.stderr
    assert "64 trained, 0 failed" in proc.stdout
    trained = Counter(line.split(" pid=")[0] for line in log.read_text().splitlines())
    assert len(trained) == 64 and set(trained.values()) == {1}
    assert len({line.split(" pid=")[1] for line in log.read_text().splitlines()}) > 1  # really parallel
    assert len(coalitions_in(out)) == 64
    assert not list((out / "duplicates").iterdir())


@pytest.mark.slow
def test_two_launchers_on_one_directory(tmp_path):
    out = tmp_path / "study"
    log = tmp_path / "log.txt"
    sets = [f"ds{i}" for i in range(5)]
    a = start(out, sets, TEST_TRAINER_LOG=log, TEST_TRAINER_SLEEP="0.05")
    b = start(out, sets, TEST_TRAINER_LOG=log, TEST_TRAINER_SLEEP="0.05")
    assert a.wait(60) == 0 and b.wait(60) == 0
    trained = Counter(line.split(" pid=")[0] for line in log.read_text().splitlines())
    assert len(trained) == 32 and set(trained.values()) == {1}
    assert len(coalitions_in(out)) == 32


@pytest.mark.slow
def test_stale_lease_of_a_stopped_worker_is_taken_over(tmp_path):
    out = tmp_path / "study"
    sleeper = start(out, ["ds0"], "--lease-seconds", "1", TEST_TRAINER_SLEEP="4")
    claims = out / "claims"
    deadline = time.time() + 20
    while time.time() < deadline and not list(claims.glob("*/000000.json")):
        time.sleep(0.05)
    assert list(claims.glob("*/000000.json")), sleeper.stderr.read() if sleeper.poll() is not None else "no claim"
    os.kill(sleeper.pid, signal.SIGSTOP)
    try:
        time.sleep(1.5)  # the lease expires: no heartbeat from a stopped process
        taker = cli(*run_args(out, ["ds0"], None, "--lease-seconds", "1"))
        assert taker.returncode == 0, taker.stderr
        assert "2 trained" in taker.stdout
        published = snapshot(out)
        assert len(published) == 2
    finally:
        os.kill(sleeper.pid, signal.SIGCONT)
    assert sleeper.wait(30) == 0
    assert snapshot(out) == published  # the woken worker did not overwrite
    dupes = list((out / "duplicates").glob("*.json"))
    assert len(dupes) == 1
    assert list(claims.glob("*/000001.json"))  # generation 1: taken over


def test_always_failing_coalition_stops_after_max_attempts(tmp_path):
    out = tmp_path / "study"
    proc = cli(*run_args(out, ["ds0", "ds1"], None, "--max-attempts", "2"), TEST_TRAINER_FAIL="ds0")
    assert proc.returncode == 0, proc.stderr
    assert "3 trained, 2 failed, 0 skipped" in proc.stdout
    assert "1 gave up after max attempts" in proc.stdout
    assert "gave up on ds0 seed=1 after 2 failed attempts" in proc.stdout
    failures = [json.loads(p.read_text()) for p in (out / "failures").glob("*.json")]
    assert len(failures) == 2 and all("simulated failure of ds0" in f["error"] for f in failures)
    # resume: nothing more is tried for the exhausted coalition
    again = cli(*run_args(out, ["ds0", "ds1"], None, "--max-attempts", "2"), TEST_TRAINER_FAIL="ds0")
    assert "0 trained, 0 failed, 3 skipped" in again.stdout
    # a higher limit retries it, and it succeeds once the cause is gone
    fixed = cli(*run_args(out, ["ds0", "ds1"], None, "--max-attempts", "3"))
    assert "1 trained, 0 failed, 3 skipped" in fixed.stdout
    rs = load_records(out)
    assert len(rs.ok_records) == 4 and len(rs.failed_records) == 2


def test_config_change_is_refused_with_the_key_diff_but_a_path_change_is_not(tmp_path):
    out = tmp_path / "study"
    first = cli(*run_args(out, ["ds0", "ds1"], None, "train.max_epoch", "2"))
    assert first.returncode == 0, first.stderr
    changed = cli(*run_args(out, ["ds0", "ds1"], None, "train.max_epoch", "3"))
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert "train.max_epoch: 2 -> 3" in changed.stderr and changed.stderr.startswith("error: ")
    moved = cli(*run_args(out, ["ds0", "ds1"], None, "--root", str(tmp_path / "elsewhere"), "--workers", "1",
                          "data.workers", "0", "train.max_epoch", "2"))
    assert moved.returncode == 0, moved.stderr
    assert "0 trained, 0 failed, 4 skipped" in moved.stdout
    late = cli(*run_args(out, ["ds0", "ds1"], None, "--max-attempts", "3", "train.max_epoch", "2", "--workers", "2"))
    assert late.returncode == 2 and "option --workers comes after the trailing KEY VALUE pairs" in late.stderr


def test_truncated_record_is_quarantined_and_retrained(tmp_path):
    out = tmp_path / "study"
    assert cli(*run_args(out, ["ds0", "ds1"])).returncode == 0
    victim = sorted((out / "runs").glob("*.json"))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    warn = cli("value", out, "-t", "ds0")
    assert f"warning: {victim}" in warn.stderr
    proc = cli(*run_args(out, ["ds0", "ds1"]))
    assert proc.returncode == 0
    assert "1 corrupt files quarantined" in proc.stdout and "moved corrupt runs/" in proc.stdout
    assert "1 trained, 0 failed, 3 skipped" in proc.stdout
    assert len(list((out / "quarantine").iterdir())) == 1
    assert len(coalitions_in(out)) == 4


@pytest.mark.slow
def test_ctrl_c_records_the_run_in_flight_as_interrupted(tmp_path):
    out = tmp_path / "study"
    proc = start(out, ["ds0", "ds1"], TEST_TRAINER_SLEEP="3")
    deadline = time.time() + 20
    while time.time() < deadline and not list((out / "claims").glob("*/000000.json")):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stdout
    failures = [json.loads(p.read_text()) for p in (out / "failures").glob("*.json")]
    assert len(failures) == 1 and failures[0]["interrupted"] is True
    resumed = cli(*run_args(out, ["ds0", "ds1"]))
    assert "4 trained, 0 failed, 0 skipped" in resumed.stdout
