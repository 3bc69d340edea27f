"""Valuations from records: both scales, both modes, LOM, per-instance, the target matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from torchreid_shapley.errors import MissingCoalitionError, ShapleyError
from torchreid_shapley.records import record_set
from torchreid_shapley.valuation import target_matrix, value

from conftest import PAPER_IMAGES, coalitions, log_curve_game, make_records
from test_shapley import textbook_shapley


def test_equal_usefulness_scaling_game_is_exact():
    """design.md section 2: a = alpha (ln s - ln beta) exactly -> psi_i = n_i - g(empty)/n."""
    images = {"a": 100, "b": 400, "c": 1600, "d": 50}
    alpha, beta, untrained = 0.08, 3.0, 0.05
    rs = record_set(make_records(images, {"target": log_curve_game(images, alpha, beta, untrained)}))
    val = value(rs, target="target", mode="without")
    g_empty = beta * math.exp(untrained / alpha)
    assert val.fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert val.fit.beta == pytest.approx(beta, rel=1e-12)
    assert val.base["data"] == pytest.approx(g_empty, rel=1e-12)
    assert val.full["data"] == pytest.approx(sum(images.values()), rel=1e-12)
    for name, n_i in images.items():
        assert val.shapley["data"][name] == pytest.approx(n_i - g_empty / 4, rel=1e-10)
        assert val.per_instance[name] == pytest.approx((n_i - g_empty / 4) / n_i, rel=1e-10)
    assert all(c.passed for c in val.checks)


def expected_game(records, target, mode, players):
    """The game written out by hand: coalition -> mean mAP of the run behind it."""
    by_key = {tuple(r["train_sets"]): r["metrics"][target]["mAP"] for r in records}
    v = []
    for mask in range(1 << len(players)):
        members = [p for i, p in enumerate(players) if mask >> i & 1]
        if mode == "with":
            members.append(target)
        v.append(by_key[tuple(sorted(members))])
    return np.array(v)


@pytest.mark.parametrize("mode", ["without", "with"])
@pytest.mark.parametrize("target", ["market1501", "grid"])
def test_both_modes_on_a_five_train_set_study(paper_records, target, mode):
    rs = record_set(paper_records)
    val = value(rs, target=target, mode=mode)
    players = sorted(t for t in PAPER_IMAGES if t != target)
    assert list(val.players) == players and val.coalitions == 16
    v = expected_game(paper_records, target, mode, players)
    np.testing.assert_allclose([val.shapley["linear"][p] for p in players], textbook_shapley(v), atol=1e-12)
    # data scale: fit a on ln s over coalitions with s > 0, then the textbook formula on f^-1(v)
    s = np.array([sum(PAPER_IMAGES[p] for i, p in enumerate(players) if m >> i & 1)
                  + (PAPER_IMAGES[target] if mode == "with" else 0) for m in range(16)])
    keep = s > 0
    slope, intercept = np.polyfit(np.log(s[keep]), v[keep], 1)
    g = np.exp(-intercept / slope) * np.exp(v / slope)
    np.testing.assert_allclose([val.shapley["data"][p] for p in players], textbook_shapley(g), rtol=1e-8)
    np.testing.assert_allclose([val.lom["data"][p] for p in players],
                               [g[15] - g[15 ^ (1 << i)] for i in range(4)], rtol=1e-8)
    assert val.base["linear"] == v[0] and val.full["linear"] == v[15]
    assert sum(val.shapley["data"].values()) == pytest.approx(val.full["data"] - val.base["data"])
    assert {c.name: c.passed for c in val.checks} == {
        "coalitions_complete": True, "efficiency_linear": True, "log_curve_fit": True, "efficiency_data": True}


def test_mode_with_uses_runs_that_contain_the_target(paper_records):
    rs = record_set(paper_records)
    val = value(rs, target="grid", mode="with")
    run = next(r for r in paper_records if r["train_sets"] == ["grid"])
    assert val.base["linear"] == run["metrics"]["grid"]["mAP"]
    # every coalition has s > 0 in mode with (the source-set is in), so all 16 points are fitted
    assert (val.fit.points, val.fit.min_images) == (16, PAPER_IMAGES["grid"])
    assert val.fit.max_images == sum(PAPER_IMAGES.values())


def test_other_metric_and_restricted_players(paper_records):
    rs = record_set(paper_records)
    val = value(rs, target="market1501", metric="rank1", train_sets=["grid", "prid", "market1501"])
    assert val.players == ("grid", "prid") and val.metric == "rank1"
    by_key = {tuple(r["train_sets"]): r["metrics"]["market1501"]["rank1"] for r in paper_records}
    assert val.full["linear"] == by_key[("grid", "prid")]


def test_per_instance_arithmetic_of_paper_table_5():
    """Table 5: grid's data-scale value 1047 images over its 250 images = 4.19 per image.

    The runs are placed on a log curve whose least-squares fit stays exact while the residuals
    move grid's data-scale value to 1047 images; per-instance must be psi / n.
    """
    images = {"grid": 250, "other": 1000}
    alpha, beta, untrained = 0.1, 1.0, 0.3
    s = np.array([250.0, 1000.0, 1250.0])            # {grid}, {other}, {grid, other}
    x = np.log(s)
    # a residual direction orthogonal to 1 and ln s keeps the least-squares fit at (alpha, beta)
    basis = np.column_stack([np.ones(3), x])
    d = np.linalg.svd(basis.T)[2][-1]

    def psi_grid(t):
        g = s * np.exp(t * d / alpha)
        g0 = beta * np.exp(untrained / alpha)
        return 0.5 * ((g[0] - g0) + (g[2] - g[1])) - 1047.0

    t = brentq(psi_grid, -2.0, 2.0)
    acc = alpha * (x - np.log(beta)) + t * d
    values = {("grid",): acc[0], ("other",): acc[1], ("grid", "other"): acc[2], (): untrained}
    rs = record_set(make_records(images, {"target": lambda c: float(values[tuple(sorted(c))])}))
    val = value(rs, target="target")
    assert val.fit.alpha == pytest.approx(alpha) and val.fit.beta == pytest.approx(beta)
    assert val.shapley["data"]["grid"] == pytest.approx(1047.0)
    assert val.per_instance["grid"] == pytest.approx(1047 / 250)
    assert round(val.per_instance["grid"], 2) == 4.19


def test_refused_fit_keeps_linear_values():
    images = {"a": 100, "b": 200}
    # accuracy falls with more data: alpha < 0
    rs = record_set(make_records(images, {"t": lambda c: 0.5 - 0.001 * sum(images[x] for x in c)}))
    val = value(rs, target="t")
    assert val.fit is None and val.shapley["data"] is None and val.base["data"] is None
    assert val.shapley["linear"]["a"] == pytest.approx(-0.1)
    fit_check = next(c for c in val.checks if c.name == "log_curve_fit")
    assert not fit_check.passed and "not positive" in fit_check.detail
    assert "not positive" in val.warnings[0]


def test_missing_coalitions_are_named(paper_records):
    skip = [("grid",), ("cuhk02", "prid"), ("grid", "prid", "sensereid")]
    recs = [r for r in paper_records if tuple(r["train_sets"]) not in skip]
    with pytest.raises(MissingCoalitionError) as exc:
        value(record_set(recs), target="market1501")
    msg = str(exc.value)
    assert "3 of 16" in msg and "grid" in msg and "cuhk02+prid" in msg
    assert len(exc.value.missing) == 3


def test_target_matrix_sums(paper_records):
    rs = record_set(paper_records)
    m = target_matrix(rs, mode="without")
    assert m.targets == ("grid", "market1501")
    assert m.train_sets == tuple(sorted(PAPER_IMAGES))
    assert m.cell("grid", "grid") == 0.0 and m.cell("market1501", "market1501") == 0.0
    for j in m.targets:
        assert m.column_sums()[j] == pytest.approx(m.valuations[j].full["data"])
    row = m.row_sums()["sensereid"]
    assert row == pytest.approx(sum(m.cell("sensereid", j) for j in m.targets))
    d = m.to_dict()
    assert d["data"]["base"]["grid"] == pytest.approx(m.valuations["grid"].base["data"])


def test_matrix_mode_with_skips_targets_without_a_train_set():
    images = {"a": 100, "b": 200, "c": 300}
    f = log_curve_game(images, 0.05, 1.0, 0.01)
    rs = record_set(make_records(images, {"a": f, "b": f, "elsewhere": f}))
    m = target_matrix(rs, mode="with")
    assert m.targets == ("a", "b") and "elsewhere" in m.skipped
    with pytest.raises(ShapleyError, match="--mode with needs target 'elsewhere'"):
        target_matrix(rs, mode="with", targets=["elsewhere"])


def test_several_seeds_average_and_report_their_spread():
    images = {"a": 100, "b": 300, "c": 900}
    one = make_records(images, {"t": log_curve_game(images, 0.05, 2.0, 0.02)}, seed=1)
    two = make_records(images, {"t": log_curve_game(images, 0.06, 2.0, 0.02)}, seed=2)
    both = value(record_set(one + two), target="t")
    v1, v2 = value(record_set(one), target="t"), value(record_set(two), target="t")
    assert v1.seed_spread is None
    spread = both.seed_spread
    assert spread["seeds"] == [1, 2]
    for p in images:
        assert both.shapley["linear"][p] == pytest.approx((v1.shapley["linear"][p] + v2.shapley["linear"][p]) / 2)
        expected = abs(v1.shapley["data"][p] - v2.shapley["data"][p]) / np.sqrt(2)
        assert spread["data"][p] == pytest.approx(expected)
    assert both.to_dict()["seed_spread"]["linear"].keys() == set(images)
