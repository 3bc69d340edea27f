"""Exact Shapley values on closed-form games, against a textbook implementation."""

from __future__ import annotations

import itertools
from math import factorial

import numpy as np
import pytest

from torchreid_shapley.shapley import last_one_mile, marginals, popcount, shapley_values


def textbook_shapley(v: np.ndarray) -> np.ndarray:
    """Eq. 1 written out: a loop over players and subsets."""
    n = int(np.log2(len(v)))
    phi = np.zeros(n)
    for i in range(n):
        for mask in range(1 << n):
            if mask >> i & 1:
                continue
            k = bin(mask).count("1")
            w = factorial(k) * factorial(n - k - 1) / factorial(n)
            phi[i] += w * (v[mask | 1 << i] - v[mask])
    return phi


def permutation_shapley(v: np.ndarray) -> np.ndarray:
    """Average marginal contribution over all orderings (a second, independent definition)."""
    n = int(np.log2(len(v)))
    phi = np.zeros(n)
    perms = list(itertools.permutations(range(n)))
    for perm in perms:
        mask = 0
        for i in perm:
            phi[i] += v[mask | 1 << i] - v[mask]
            mask |= 1 << i
    return phi / len(perms)


def additive(weights, const=0.0):
    n = len(weights)
    masks = np.arange(1 << n)
    return np.array([const + sum(w for i, w in enumerate(weights) if m >> i & 1) for m in masks])


def test_additive_game_values_equal_weights():
    w = [3.0, -1.5, 0.25, 7.0, 0.0]
    np.testing.assert_allclose(shapley_values(additive(w, const=11.0)), w, atol=1e-12)


def test_symmetric_players_get_equal_values():
    # v depends only on |S| (a convex function): every player is symmetric
    n = 6
    v = popcount(n).astype(float) ** 2
    phi = shapley_values(v)
    np.testing.assert_allclose(phi, np.full(n, v[-1] / n), atol=1e-12)


def test_null_player_gets_zero():
    rng = np.random.default_rng(0)
    n = 5
    base = rng.normal(size=1 << (n - 1))
    # player 2 is null: v(S + 2) = v(S); insert bit 2 into a 4-player game
    masks = np.arange(1 << n)
    low = masks & 0b11
    high = (masks >> 3) << 2
    v = base[low | high]
    phi = shapley_values(v)
    assert phi[2] == pytest.approx(0.0, abs=1e-12)
    assert phi.sum() == pytest.approx(v[-1] - v[0])


def test_unanimity_game_splits_equally_among_carriers():
    # u_T(S) = 1 if T is a subset of S: each member of T gets 1/|T|, others 0
    n, carrier = 6, 0b101001
    v = np.array([1.0 if m & carrier == carrier else 0.0 for m in range(1 << n)])
    expected = [1 / 3 if carrier >> i & 1 else 0.0 for i in range(n)]
    np.testing.assert_allclose(shapley_values(v), expected, atol=1e-12)


@pytest.mark.parametrize("n", range(1, 11))
def test_vectorised_equals_textbook_on_random_games(n):
    rng = np.random.default_rng(100 + n)
    v = rng.normal(size=1 << n)
    phi = shapley_values(v)
    np.testing.assert_allclose(phi, textbook_shapley(v), rtol=1e-10, atol=1e-12)
    assert phi.sum() == pytest.approx(v[-1] - v[0])


@pytest.mark.parametrize("n", [1, 3, 6])
def test_equals_the_permutation_definition(n):
    v = np.random.default_rng(n).uniform(size=1 << n)
    np.testing.assert_allclose(shapley_values(v), permutation_shapley(v), atol=1e-12)


def test_additivity_of_two_games():
    rng = np.random.default_rng(7)
    v, u = rng.normal(size=256), rng.normal(size=256)
    np.testing.assert_allclose(shapley_values(v + u), shapley_values(v) + shapley_values(u), atol=1e-12)


def test_several_games_at_once_match_one_at_a_time():
    rng = np.random.default_rng(3)
    games = rng.normal(size=(64, 3))
    both = shapley_values(games)
    for k in range(3):
        np.testing.assert_allclose(both[:, k], shapley_values(games[:, k]), atol=1e-12)


def test_last_one_mile_and_marginals():
    v = additive([1.0, 2.0, 4.0]) + np.array([0, 0, 0, 5, 0, 0, 0, 5])  # bonus for {0,1}
    np.testing.assert_allclose(last_one_mile(v), [6.0, 7.0, 4.0])
    masks, diff = marginals(v, 1)
    assert sorted(masks.tolist()) == [0, 1, 4, 5]
    np.testing.assert_allclose(dict(zip(masks.tolist(), diff.tolist()))[1], 7.0)


def test_game_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="2\\*\\*n"):
        shapley_values(np.zeros(6))
