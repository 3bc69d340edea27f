"""A real study with torchreid on tiny synthetic data, through the command line."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow

YAML = """\
model:
  name: 'osnet_x0_25'
  pretrained: False

data:
  type: 'image'
  sources: ['synth_grid', 'synth_prid', 'synth_sense']
  targets: ['synth_grid', 'synth_prid']
  height: 64
  width: 32
  combineall: False
  transforms: ['random_flip']
  save_dir: 'log/osnet_x0_25_synth'

loss:
  name: 'softmax'
  softmax:
    label_smooth: True

train:
  optim: 'amsgrad'
  lr: 0.003
  max_epoch: 1
  batch_size: 16
  fixbase_epoch: 0
  open_layers: ['classifier']
  lr_scheduler: 'single_step'
  stepsize: [80]

test:
  batch_size: 100
  dist_metric: 'euclidean'
  normalize_feature: False
  evaluate: False
  eval_freq: -1
  rerank: False
  visactmap: False
"""


def test_torchreid_study_from_a_torchreid_yaml_config(tmp_path):
    config = tmp_path / "im_osnet_x0_25_softmax_synth.yaml"
    config.write_text(YAML)
    out = tmp_path / "study"
    proc = run_cli("run", "--config-file", config, "--out", out, "--mode", "without", "data.workers", "0",
                   "use_gpu", "False", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # players of each target: the other two train-sets -> 4 + 4 coalitions, 6 distinct with overlap
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert len(records) == 6 and "6 trained, 0 failed" in proc.stdout
    empty = next(r for r in records if r["train_sets"] == [])
    assert empty["steps"] == 0 and set(empty["metrics"]) == {"synth_grid", "synth_prid"}
    full = max(records, key=lambda r: len(r["train_sets"]))
    assert full["steps"] > 0 and full["model"] == "osnet_x0_25" and set(full["num_ids"]) == set(full["train_sets"])
    assert all(0 <= m["mAP"] <= 1 for r in records for m in r["metrics"].values())
    manifest = json.loads((out / "study.json").read_text())
    assert manifest["config"]["train"]["optim"] == "amsgrad" and manifest["config"]["test"]["visactmap"] is False
    val = run_cli("value", out, "-t", "synth_grid", "--format", "json")
    assert val.returncode == 0, val.stderr
    got = json.loads(val.stdout)
    assert got["players"] == ["synth_prid", "synth_sense"] and got["coalitions"] == 4
    assert (out / "report.html").is_file()


def test_unknown_dataset_through_the_command_line(tmp_path):
    proc = run_cli("run", "--out", tmp_path / "s", "-s", "synth_grid", "no_such_reid_set", "-t", "synth_grid",
                   "model.pretrained", "False", timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no_such_reid_set" in proc.stderr and "synth_grid" in proc.stderr
