"""The plan: the distinct trainings of a study, deduplicated across targets and modes."""

from __future__ import annotations

import json

import pytest

from torchreid_shapley.errors import ConfigError
from torchreid_shapley.plan import PlannedRun, build_plan, coalition_hash

from conftest import run_cli

FIVE = ["market1501", "grid", "prid", "sensereid", "cuhk02"]


def test_five_train_sets_that_are_the_targets_need_32_per_seed():
    plan = build_plan(FIVE, FIVE, "both", [1])
    assert len(plan) == 32 == len(set(plan))
    assert len(build_plan(FIVE, FIVE, "both", [1, 2])) == 64


def test_largest_coalitions_first_and_sorted_names():
    plan = build_plan(FIVE, FIVE, "both", [1])
    sizes = [len(r.train_sets) for r in plan]
    assert sizes == sorted(sizes, reverse=True)
    assert plan[0].train_sets == tuple(sorted(FIVE)) and plan[-1].train_sets == ()
    assert all(list(r.train_sets) == sorted(r.train_sets) for r in plan)


def test_one_target_one_mode_needs_its_game_only():
    without = build_plan(FIVE, ["market1501"], "without", [1])
    assert len(without) == 16 and all("market1501" not in r.train_sets for r in without)
    with_ = build_plan(FIVE, ["market1501"], "with", [1])
    assert len(with_) == 16 and all("market1501" in r.train_sets for r in with_)


def test_target_without_a_train_set():
    assert len(build_plan(["a", "b", "c"], ["viper"], "both", [1])) == 8
    with pytest.raises(ConfigError, match="--mode with needs target 'viper'"):
        build_plan(["a", "b"], ["viper"], "with", [1])


def test_keys_hide_dataset_names():
    run = PlannedRun(("<script>", "market1501"), 3)
    assert run.key == f"{coalition_hash(['market1501', '<script>'])}-s3"
    assert "market" not in run.key and "<" not in run.key


@pytest.mark.parametrize("args,match", [
    ((["a", "a"], ["a"], "both", [1]), "twice"),
    (([], ["a"], "both", [1]), "at least one train-set"),
    ((["a"], [], "both", [1]), "at least one target"),
    ((["a"], ["a"], "both", [1, 1]), "distinct"),
    ((["a"], ["a"], "sideways", [1]), "sideways"),
])
def test_bad_plans(args, match):
    with pytest.raises(ConfigError, match=match):
        build_plan(*args)


def test_plan_command_json():
    proc = run_cli("plan", "-s", *FIVE, "-t", *FIVE, "--mode", "both", "--seeds", "1", "2", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert len(plan) == 64 and plan[0] == {"train_sets": sorted(FIVE), "seed": 1}
    assert plan[-1] == {"train_sets": [], "seed": 2}


def test_plan_command_text_and_errors():
    proc = run_cli("plan", "-s", "a", "b", "-t", "a")
    assert proc.returncode == 0 and "4 trainings" in proc.stdout
    bad = run_cli("plan", "-s", "a", "b", "-t", "zz", "--mode", "with")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
