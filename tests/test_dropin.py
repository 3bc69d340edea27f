"""The --shapley drop-in: a repo's own main script gains a study and keeps its own builders."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from torchreid_shapley import add_shapley_arguments
from torchreid_shapley.dropin import study_config_from

from conftest import REPO

TINY = ["model.name", "osnet_x0_25", "model.pretrained", "False", "data.height", "64", "data.width", "32",
        "train.max_epoch", "1", "train.batch_size", "16", "data.workers", "0", "use_gpu", "False"]


def test_add_shapley_arguments_keeps_the_repo_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-file", default="")
    add_shapley_arguments(parser)
    args = parser.parse_args(["--shapley", "--shapley-out", "x", "--shapley-seeds", "1", "2"])
    assert args.shapley and args.shapley_out == "x" and args.shapley_seeds == [1, 2]
    assert not parser.parse_args([]).shapley


def test_a_repo_config_is_merged_over_the_defaults():
    config = study_config_from({"model": {"name": "osnet_x1_0"}, "data": {"sources": ["grid"]}})
    assert config["model"]["name"] == "osnet_x1_0" and config["model"]["pretrained"] is True
    assert config["data"]["sources"] == ["grid"] and config["shapley"]["schedule"] == "epochs"


@pytest.mark.slow
def test_example_main_script_runs_a_study_with_its_own_model_builder(tmp_path):
    out = tmp_path / "study"
    env = dict(os.environ)  # the synthetic datasets are cached (and shared) like a user's
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "reid_main.py"), "-s", "synth_grid", "synth_prid",
                           "-t", "synth_grid", "synth_prid", "--shapley", "--shapley-out", str(out), *TINY],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("with the repo's own builder") == 4
    assert "4 trained, 0 failed, 0 skipped" in proc.stdout
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert sorted(len(r["train_sets"]) for r in records) == [0, 1, 1, 2]
    assert all(r["model"] == "osnet_x0_25" for r in records)
    assert (out / "report.html").is_file()
