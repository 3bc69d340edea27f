"""Budgeted studies end to end: nested plans, run --budget, estimates from the study directory."""

from __future__ import annotations

import json

import pytest

from torchreid_shapley.plan import build_budget_plan, build_plan

from conftest import run_cli, write_jsonl
from test_runner import cli, run_args, snapshot

SETS = [f"ds{i}" for i in range(7)]


def coalitions(plan):
    return [r.train_sets for r in plan]


def test_budget_plans_are_nested_deterministic_and_distinct():
    small, d_small = build_budget_plan(SETS, SETS[:2], "both", [1], budget=30, sample_seed=3)
    large, d_large = build_budget_plan(SETS, SETS[:2], "both", [1], budget=70, sample_seed=3)
    again, _ = build_budget_plan(SETS, SETS[:2], "both", [1], budget=30, sample_seed=3)
    other, _ = build_budget_plan(SETS, SETS[:2], "both", [1], budget=30, sample_seed=4)
    assert len(small) == 30 == len(set(coalitions(small))) and len(large) == 70
    assert set(coalitions(small)) <= set(coalitions(large))
    assert coalitions(small) == coalitions(again) and set(coalitions(other)) != set(coalitions(small))
    for key, design in d_small.items():  # each game's design is a prefix of its larger design
        assert design["masks"] == d_large[key]["masks"][: len(design["masks"])]
    # every game has its base and full coalition
    runs = set(coalitions(small))
    for target in SETS[:2]:
        others = tuple(sorted(t for t in SETS if t != target))
        assert () in runs and others in runs and (target,) in runs and tuple(sorted(SETS)) in runs


def test_a_budget_covering_everything_is_the_exact_plan():
    plan, _ = build_budget_plan(SETS[:4], SETS[:4], "both", [1, 2], budget=1000)
    assert sorted(coalitions(plan)) == sorted(coalitions(build_plan(SETS[:4], SETS[:4], "both", [1, 2])))


def test_run_with_a_budget_then_raise_it(tmp_path):
    out = tmp_path / "study"
    first = cli(*run_args(out, SETS, ["ds0"], "--budget", "24", "--no-report"))
    assert first.returncode == 0, first.stderr
    assert "24 trained, 0 failed" in first.stdout
    design = json.loads((out / "design.json").read_text())
    assert design["budget"] == 24 and set(design["games"]) == {"ds0|without", "ds0|with"}
    before = snapshot(out)
    val = cli("value", out, "-t", "ds0", "--format", "json")
    assert val.returncode == 0, val.stderr
    got = json.loads(val.stdout)
    assert got["estimator"] == "kernel" and got["coalitions"] < got["coalitions_total"] == 64
    assert set(got["stderr"]["linear"]) == set(got["players"])
    assert sum(got["shapley"]["data"].values()) == pytest.approx(got["full"]["data"] - got["base"]["data"])
    assert "±" in cli("value", out, "-t", "ds0").stdout
    assert cli("matrix", out).returncode == 0
    page = cli("report", out, "-o", tmp_path / "r.html")
    assert page.returncode == 0, page.stderr
    html = (tmp_path / "r.html").read_text()
    assert "Estimated</b> by the kernel estimator from" in html and "&plusmn;" in html
    md = cli("report", out, "-o", tmp_path / "r.md")
    assert md.returncode == 0 and " ± " in (tmp_path / "r.md").read_text()
    raised = cli(*run_args(out, SETS, ["ds0"], "--budget", "40", "--no-report"))
    assert "16 trained, 0 failed, 24 skipped" in raised.stdout  # nested: nothing trained twice
    assert all(snapshot(out)[k] == v for k, v in before.items())
    exact = cli("value", out, "-t", "ds0", "--estimator", "exact")
    assert exact.returncode == 2 and "--estimator kernel" in exact.stderr


def test_bare_records_estimate_only_when_asked(tmp_path, paper_records):
    keep = [r for r in paper_records if len(r["train_sets"]) in (0, 1, 4, 5)]
    path = write_jsonl(tmp_path / "r.jsonl", keep)
    auto = run_cli("value", path, "-t", "market1501")
    assert auto.returncode == 2 and "--estimator kernel" in auto.stderr
    est = run_cli("value", path, "-t", "market1501", "--estimator", "kernel", "--format", "json")
    assert est.returncode == 0, est.stderr
    out = json.loads(est.stdout)
    assert out["estimator"] == "kernel" and out["stderr"]["data"] is not None
    perm = run_cli("value", path, "-t", "market1501", "--estimator", "permutation", "--format", "json")
    # no ordering of the players has all its prefixes trained: nothing to average, and it says so
    assert perm.returncode == 2 and "--estimator kernel" in perm.stderr and "Traceback" not in perm.stderr


def test_full_budget_estimate_equals_exact(tmp_path, paper_records):
    path = write_jsonl(tmp_path / "r.jsonl", paper_records)
    exact = json.loads(run_cli("value", path, "-t", "grid", "--format", "json").stdout)
    kernel = json.loads(run_cli("value", path, "-t", "grid", "--estimator", "kernel", "--format", "json").stdout)
    for scale in ("linear", "data"):
        for p, x in exact["shapley"][scale].items():
            assert kernel["shapley"][scale][p] == pytest.approx(x, rel=1e-9, abs=1e-12)
