"""``run --backend ray`` on a real local Ray cluster (2 CPUs), with the cheap test trainer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from test_runner import TESTS, coalitions_in, env, snapshot

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'torchreid-shapley[ray]'")

pytestmark = pytest.mark.slow
RAY_ENV = "TEST_TRAINER_SLEEP,TEST_TRAINER_CRASH,TEST_TRAINER_LOG,TEST_TRAINER_FAIL"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real local Ray cluster with 2 CPUs, started and stopped by the test."""
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    e = ray_env()
    start = subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
                            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                           capture_output=True, text=True, env=e, timeout=120)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=e, timeout=120)


def ray_args(out, sets, address, *more):
    return ["-p", "shapley_test_trainer", "run", "--backend", "ray", "--address", address, "--out", str(out),
            "-s", *sets, "-t", *sets, "--no-report", *more]


def ray_env(**extra):
    # a private test cluster on loopback: no token authentication (the driver and `ray start` agree)
    return env(TORCHREID_SHAPLEY_RAY_ENV=RAY_ENV, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", **extra)


def test_ray_study_ends_with_the_same_records_as_the_local_backend(tmp_path, cluster):
    sets = ["ds0", "ds1", "ds2"]
    local = run_cli("-p", "shapley_test_trainer", "run", "--out", tmp_path / "local", "-s", *sets, "-t", *sets,
                    "--no-report", env=env())
    assert local.returncode == 0, local.stderr
    remote = run_cli(*ray_args(tmp_path / "ray", sets, cluster), env=ray_env(), timeout=300)
    assert remote.returncode == 0, remote.stderr[-3000:]
    assert "8 trained, 0 failed" in remote.stdout and "on Ray at" in remote.stdout

    def essence(out):
        keep = ("train_sets", "num_images", "metrics", "status", "seed", "fingerprint", "steps", "num_ids")
        return sorted(json.dumps({k: json.loads(b)[k] for k in keep}, sort_keys=True) for b in snapshot(out).values())

    assert essence(tmp_path / "local") == essence(tmp_path / "ray")
    backends = {json.loads(b)["backend"] for b in snapshot(tmp_path / "ray").values()}
    assert backends == {"ray"}
    a = run_cli("value", tmp_path / "local", "-t", "ds0", "--format", "json")
    b = run_cli("value", tmp_path / "ray", "-t", "ds0", "--format", "json")
    assert a.stdout == b.stdout


def test_a_ray_worker_killed_mid_task_is_retried(tmp_path, cluster):
    out = tmp_path / "study"
    proc = run_cli(*ray_args(out, ["ds0", "ds1"], cluster), env=ray_env(TEST_TRAINER_CRASH="ds0+ds1"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 trained, 1 failed" in proc.stdout
    failures = [json.loads(p.read_text()) for p in (out / "failures").glob("*.json")]
    assert len(failures) == 1 and "died" in failures[0]["error"].lower()
    assert len(coalitions_in(out)) == 4


def test_killed_driver_resumes_and_trains_only_what_is_missing(tmp_path, cluster):
    out = tmp_path / "study"
    log = tmp_path / "log.txt"
    sets = ["ds0", "ds1", "ds2"]
    driver = subprocess.Popen([sys.executable, "-m", "torchreid_shapley", *ray_args(out, sets, cluster)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              env=ray_env(TEST_TRAINER_SLEEP="1", TEST_TRAINER_LOG=str(log)))
    deadline = time.time() + 120
    while time.time() < deadline and len(snapshot(out)) < 2:
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = snapshot(out)
    assert 2 <= len(before) < 8
    resumed = run_cli(*ray_args(out, sets, cluster), env=ray_env(TEST_TRAINER_LOG=str(log)), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{8 - len(before)} trained, 0 failed, {len(before)} skipped" in resumed.stdout
    after = snapshot(out)
    assert all(after[k] == v for k, v in before.items())
    assert len(coalitions_in(out)) == 8


def test_backend_ray_without_ray_says_how_to_install_it(tmp_path):
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray (simulated)')\n")
    e = env()
    e["PYTHONPATH"] = os.pathsep.join([str(fake.parent), e["PYTHONPATH"]])
    proc = run_cli("-p", "shapley_test_trainer", "run", "--backend", "ray", "--out", tmp_path / "s", "-s", "ds0",
                   "-t", "ds0", env=e)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "pip install 'torchreid-shapley[ray]'" in proc.stderr
    assert not (tmp_path / "s").exists()  # nothing written before the check
