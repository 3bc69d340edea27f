"""Sampling plans: distinct, budgeted, nested, seeded; designs round-trip through JSON."""

from __future__ import annotations

import json
import time
from math import comb

import numpy as np
import pytest

import torchreid_shapley.sampling as sampling
from torchreid_shapley.errors import ConfigError
from torchreid_shapley.sampling import (Design, kernel_design, kernel_mass, kernel_plan, permutation_design,
                                        permutation_plan, plan_design, popcounts)


def check_plan(masks: np.ndarray, n: int, budget: int) -> None:
    full = (1 << n) - 1
    assert masks.dtype == np.int64
    assert masks.shape == (budget,)
    assert len(set(masks.tolist())) == budget
    assert masks.min() >= 0 and masks.max() <= full
    assert 0 in masks and full in masks


@pytest.mark.parametrize("n", [1, 2, 3, 6, 9])
def test_kernel_plan_is_distinct_budgeted_with_empty_and_full(n):
    for budget in sorted({2, 3, min(7, 1 << n), (1 << n) // 2 + 1, 1 << n}):
        if budget <= 1 << n:
            check_plan(kernel_plan(n, budget, seed=3), n, budget)


@pytest.mark.parametrize("n", [4, 7, 10, 12])
def test_kernel_plan_is_nested_and_seeded(n):
    full_plan = kernel_plan(n, 1 << n, seed=11)
    assert sorted(full_plan.tolist()) == list(range(1 << n))  # the full budget is every coalition
    for budget in (2, 5, 2 * n + 2, 2 * n + 3, (1 << n) // 4, (1 << n) // 2 + 1, (1 << n) - 1):
        plan = kernel_plan(n, budget, seed=11)
        np.testing.assert_array_equal(plan, full_plan[:budget])
        np.testing.assert_array_equal(plan, kernel_plan(n, budget, seed=11))  # deterministic
    other = kernel_plan(n, (1 << n) // 2, seed=12)
    assert not np.array_equal(other, full_plan[: (1 << n) // 2])


def test_kernel_plan_starts_with_ends_then_border_pairs():
    n = 8
    full = (1 << n) - 1
    plan = kernel_plan(n, 60, seed=0).tolist()
    assert plan[:2] == [0, full]
    border = plan[2: 2 * n + 2]
    assert sorted(border[0::2]) == [1 << i for i in range(n)]  # singles first in each pair
    assert all(b == full ^ a for a, b in zip(border[0::2], border[1::2]))
    rest = plan[2 * n + 2:]
    assert all(b == full ^ a for a, b in zip(rest[0::2], rest[1::2]))  # then complementary pairs
    assert all(2 <= bin(m).count("1") <= n - 2 for m in rest)


def test_odd_budget_ends_with_the_smaller_half_of_a_pair():
    n = 9
    full = (1 << n) - 1
    for budget in (2 * n + 3, 51, 101):
        design = kernel_design(n, budget, seed=4)
        last = design.masks[-1]
        assert design.unpaired == (last,)
        assert bin(last).count("1") < n / 2
        assert kernel_plan(n, budget + 1, seed=4)[-1] == full ^ last


def test_kernel_plan_apportions_pairs_by_kernel_mass():
    # Sainte-Lague: before any class is exhausted each class holds its kernel share of the pairs
    n = 12
    design = kernel_design(n, 2 + 2 * n + 2 * 60, seed=0)
    counts = design.size_counts
    classes = range(2, n // 2 + 1)
    mass = {k: (1 if 2 * k == n else 2) * kernel_mass(n, k) for k in classes}
    total = sum(mass.values())
    for k in classes:
        pairs = counts[k] if 2 * k < n else counts[k] // 2
        assert abs(pairs - 60 * mass[k] / total) < 1.0, (k, pairs)
    # border class 2 is exhausted first and so enumerated once the budget covers its share
    design = kernel_design(n, 600, seed=0)
    assert 2 in design.enumerated_sizes and n - 2 in design.enumerated_sizes
    assert 4 not in design.enumerated_sizes


def test_kernel_plan_for_20_players_is_fast_and_never_enumerates_2_to_the_n(monkeypatch):
    calls = []
    real = np.random.default_rng

    class Spy:
        def __init__(self, generator):
            self.generator = generator

        def permutation(self, x):
            calls.append(x if isinstance(x, int) else len(x))
            return self.generator.permutation(x)

        def __getattr__(self, name):
            return getattr(self.generator, name)

    monkeypatch.setattr(np.random, "default_rng", lambda *a, **k: Spy(real(*a, **k)))
    start = time.perf_counter()
    design = kernel_design(20, 2000, seed=0)
    seconds = time.perf_counter() - start
    assert seconds < 1.0
    check_plan(design.mask_array(), 20, 2000)
    # classes are materialised as permutations of their pair ranks: together fewer than 2**(n-1)
    assert max(calls) == comb(20, 9) and sum(calls) < 1 << 19
    assert sum(design.size_counts) == 2000


def test_huge_classes_use_rejection_and_stay_nested(monkeypatch):
    monkeypatch.setattr(sampling, "PERMUTE_LIMIT", 10)  # every class but the border is "huge"
    n = 10
    longer = kernel_plan(n, 700, seed=2)
    check_plan(longer, n, 700)
    np.testing.assert_array_equal(kernel_plan(n, 333, seed=2), longer[:333])


@pytest.mark.parametrize("antithetic", [True, False])
def test_permutation_plan_prefixes(antithetic):
    n = 7
    full = (1 << n) - 1
    masks, perms = permutation_plan(n, 90, seed=5, antithetic=antithetic)
    check_plan(masks, n, 90)
    prefixes = set()
    for p in perms:
        prefixes.update(np.cumsum(1 << p).tolist())
    prefixes.add(0)
    assert set(masks.tolist()) <= prefixes
    for p in perms[:-1]:  # every ordering but the last lies wholly inside the plan
        assert set(np.cumsum(1 << p).tolist()) <= set(masks.tolist())
    if antithetic:
        for a, b in zip(perms[0::2], perms[1::2]):
            np.testing.assert_array_equal(a, b[::-1])
    longer, _ = permutation_plan(n, 120, seed=5, antithetic=antithetic)
    np.testing.assert_array_equal(masks, longer[:90])
    again, _ = permutation_plan(n, 90, seed=5, antithetic=antithetic)
    np.testing.assert_array_equal(masks, again)
    other, _ = permutation_plan(n, 90, seed=6, antithetic=antithetic)
    assert not np.array_equal(masks, other)
    assert masks[0] == 0 and masks[1] == full


def test_design_round_trips_through_json():
    for design in (kernel_design(6, 41, seed=3, players=[f"ds{i}" for i in range(6)]),
                   permutation_design(5, 20, seed=1), plan_design("kernel", 4, 16, seed=0)):
        data = json.loads(json.dumps(design.to_dict()))
        back = Design.from_dict(data)
        assert back == design
        assert back.size_counts == design.size_counts
        assert data["enumerated_sizes"] == list(design.enumerated_sizes)
        assert sum(data["size_counts"]) == design.budget
    d = kernel_design(3, 8, seed=0, players=["a", "b", "c"])
    assert d.complete and d.enumerated_sizes == (0, 1, 2, 3)
    assert sorted(d.coalitions()) == sorted([(), ("a",), ("b",), ("c",), ("a", "b"), ("a", "c"),
                                             ("b", "c"), ("a", "b", "c")])


@pytest.mark.parametrize("change, message", [
    ({"version": 99}, "newer"),
    ({"budget": 5}, "coalitions for a budget"),
    ({"masks": [0, 7, 1, 1]}, "twice"),
    ({"masks": [0, 7, 1, 9]}, "outside"),
    ({"masks": [1, 7, 2, 3]}, "empty or the full"),
    ({"sampler": "magic"}, "sampler"),
])
def test_design_from_dict_refuses_bad_input(change, message):
    data = kernel_design(3, 4, seed=0).to_dict()
    data.update(change)
    with pytest.raises(ConfigError, match=message):
        Design.from_dict(data)


@pytest.mark.parametrize("n, budget", [(0, 1), (4, 1), (4, 17), (3, 2.5), (70, 4)])
def test_bad_budgets_and_sizes_are_refused(n, budget):
    with pytest.raises(ConfigError):
        kernel_plan(n, budget, seed=0)


def test_popcounts_without_a_table():
    masks = np.array([0, 1, 3, (1 << 40) - 1, (1 << 61) + 5], dtype=np.int64)
    np.testing.assert_array_equal(popcounts(masks), [0, 1, 2, 40, 3])
