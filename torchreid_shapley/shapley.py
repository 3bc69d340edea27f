"""Exact Shapley values over bitmask-indexed coalitions (paper eqs. 1 and 3).

A game of ``n`` players is a vector ``v`` of length ``2**n``: ``v[mask]`` is the value of the
coalition whose members are the set bits of ``mask`` (bit ``i`` = player ``i``). Everything here
is vectorised: for player ``i`` the vector is viewed as ``(2**(n-i-1), 2, 2**i)``, which puts every
coalition without ``i`` (middle index 0) beside the same coalition with ``i`` (middle index 1), so
the marginal contributions of ``i`` are one array subtraction. No Python loop runs over subsets.
"""

from __future__ import annotations

from math import comb

import numpy as np

MAX_PLAYERS = 30


def num_players(values: np.ndarray) -> int:
    size = values.shape[0]
    n = size.bit_length() - 1
    if size < 1 or (1 << n) != size:
        raise ValueError(f"a game needs 2**n coalition values, got {size}")
    if n > MAX_PLAYERS:
        raise ValueError(f"{n} players need 2**{n} values: too many for exact values")
    return n


def popcount(n: int) -> np.ndarray:
    """Coalition sizes |S| for every mask 0 .. 2**n - 1."""
    sizes = np.zeros(1, dtype=np.uint8)
    for _ in range(n):
        sizes = np.concatenate([sizes, sizes + 1])
    return sizes


def shapley_weights(n: int) -> np.ndarray:
    """w[k] = k! (n-k-1)! / n! for k = 0 .. n-1 (the weight of a coalition of size k without i)."""
    return np.array([1.0 / (n * comb(n - 1, k)) for k in range(n)]) if n else np.zeros(0)


def marginals(values: np.ndarray, player: int) -> tuple[np.ndarray, np.ndarray]:
    """(masks of coalitions S without ``player``, v(S + player) - v(S)) in mask order."""
    n = num_players(values)
    view = values.reshape((1 << (n - player - 1), 2, 1 << player) + values.shape[1:])
    masks = np.arange(1 << n).reshape(1 << (n - player - 1), 2, 1 << player)[:, 0, :].ravel()
    diff = (view[:, 1] - view[:, 0]).reshape((-1,) + values.shape[1:])
    return masks, diff


def shapley_values(values) -> np.ndarray:
    """Exact Shapley values of every player; ``values`` is ``(2**n,)`` or ``(2**n, k)`` games."""
    values = np.asarray(values, dtype=float)
    n = num_players(values)
    if n == 0:
        return np.zeros((0,) + values.shape[1:])
    weight_of_mask = shapley_weights(n)[popcount(n)[: 1 << n].clip(max=n - 1)]
    extra = (1,) * (values.ndim - 1)
    out = np.empty((n,) + values.shape[1:])
    for player in range(n):  # one vectorised pass per player
        shape = (1 << (n - player - 1), 2, 1 << player)
        view = values.reshape(shape + values.shape[1:])
        w = weight_of_mask.reshape(shape)[:, 0, :].reshape(shape[0], shape[2], *extra)
        out[player] = np.sum(w * (view[:, 1] - view[:, 0]), axis=(0, 1))
    return out


def last_one_mile(values) -> np.ndarray:
    """v(full) - v(full minus i) for every player."""
    values = np.asarray(values, dtype=float)
    n = num_players(values)
    full = (1 << n) - 1
    return np.array([values[full] - values[full ^ (1 << i)] for i in range(n)]).reshape(
        (n,) + values.shape[1:])
