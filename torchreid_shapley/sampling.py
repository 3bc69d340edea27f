"""Sampling plans: which coalitions a budgeted study trains (fewer than the 2**n of exact values).

A plan is an ordered list of distinct bitmasks over ``n`` players (bit ``i`` = player ``i``, the
players sorted as in :class:`~torchreid_shapley.game.Game`). Two samplers:

``kernel`` (the default; :func:`kernel_plan`)
    Paired sampling for the Shapley-kernel regression of :mod:`torchreid_shapley.estimators`.
    Coalitions come in pairs ``(S, P \\ S)``; sizes ``k`` and ``n - k`` form one *size class*
    ``k = 1 .. n // 2`` (for even ``n`` the class ``n / 2`` pairs coalitions of the same size).
    The plan is the prefix of length ``budget`` of one infinite, seeded stream:

    1. the empty and the full coalition (every plan has both: base and full values);
    2. the border class ``k = 1`` enumerated completely: every single train-set followed by
       "everything but it" (so from ``budget >= 2 n + 2`` on the plan has every last-one-mile
       coalition and the regression is identified), pairs in random order;
    3. then one pair at a time from the classes ``k >= 2``: the next pair goes to the class with
       the largest Sainte-Lague quotient ``m_k / (c_k + 1/2)``, where ``m_k`` is the Shapley-kernel
       mass of the class (``p(size s) ~ (n-1) / (s (n-s))``, summed over ``s = k`` and ``n - k``)
       and ``c_k`` the pairs it has received so far; ties go to the border-most class. A class
       that is exhausted leaves the race, so its share flows to the others. Inside a class the
       pairs come in a seeded uniformly random order, without replacement.

    Step 3 is a deterministic apportionment of the pairs over the classes in proportion to the
    kernel mass (stratified, instead of drawing each size at random): a class is enumerated
    completely exactly when its proportional share of the budget covers it, border classes
    first (the KernelSHAP rule), and the plan for budget ``K`` is a prefix of the plan for any
    ``K' > K`` (NESTED: raising the budget later keeps every coalition already trained).

    An odd budget ends with the first half of a pair: the smaller coalition (cheaper to train);
    its complement is the next coalition of the stream. The kernel estimator with the design
    leaves that unpaired coalition out of the regression until its complement is trained.

``permutation`` (the baseline; :func:`permutation_plan`)
    Monte Carlo permutation sampling: a seeded stream of random orderings of the players
    (``antithetic=True``: each ordering followed by its reverse), taking the distinct coalitions
    along the prefixes of each ordering until ``budget`` distinct coalitions are reached. Nested
    as well. Note that reaching the full budget needs coupon-collector numbers of orderings.

A :class:`Design` records a plan (sampler, ``n``, budget, seed, the masks in stream order, the
orderings for the permutation sampler) so that a study manifest can store it and the estimators
can weight what was drawn. Nothing here enumerates ``2**n`` masks: a class is only materialised
(as a random permutation of its pair ranks) when the plan reaches it and it has at most
``PERMUTE_LIMIT`` pairs; larger classes are drawn by rejection of repeated random subsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from math import comb
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .errors import ConfigError

DESIGN_VERSION = 1
SAMPLERS = ("kernel", "permutation")
MAX_PLAYERS = 62          # masks are int64
PERMUTE_LIMIT = 1 << 20   # classes with more pairs are drawn by rejection instead of a permutation
PERMUTATION_CHUNK = 64    # orderings are drawn from the generator in chunks of this size


# -- the Shapley kernel ---------------------------------------------------------------------------
def kernel_mass(n: int, size: int) -> float:
    """Shapley-kernel mass of all coalitions of ``size``: ``(n-1) / (size (n-size))``, 0 < size < n."""
    return (n - 1) / (size * (n - size))


def kernel_weight(n: int, size: int) -> float:
    """Shapley-kernel weight of one coalition of ``size``: ``kernel_mass / C(n, size)``."""
    return kernel_mass(n, size) / comb(n, size)


def size_class(n: int, size: int) -> int:
    """The size class ``min(size, n - size)`` of a coalition (its pair's class)."""
    return min(size, n - size)


def class_pairs(n: int, k: int) -> int:
    """Number of complementary pairs in class ``k`` (sizes ``k`` and ``n - k``)."""
    return comb(n, k) if 2 * k < n else comb(n, k) // 2


def popcounts(masks) -> np.ndarray:
    """Coalition sizes of an array of masks (int64), without a table over ``2**n``."""
    m = np.asarray(masks, dtype=np.int64).copy()
    count = np.zeros(m.shape, dtype=np.int64)
    while np.any(m):
        count += m & 1
        m >>= 1
    return count


# -- the design -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Design:
    """One sampling plan: what was drawn, and how, so estimators can weight it.

    ``masks`` are the coalitions in stream order (``len(masks) == budget``); ``permutations``
    the orderings of the permutation sampler (the last one may be only partly inside the
    budget); ``paired`` is true for the kernel sampler (complementary pairs) and for antithetic
    permutations. ``players`` optionally names the bits (sorted train-sets of the game).
    """

    sampler: str
    n: int
    budget: int
    seed: int
    masks: tuple[int, ...]
    paired: bool = True
    permutations: tuple[tuple[int, ...], ...] = ()
    players: tuple[str, ...] | None = None
    version: int = DESIGN_VERSION
    _sizes: np.ndarray = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_sizes", popcounts(np.array(self.masks, dtype=np.int64)))

    @property
    def full(self) -> int:
        return (1 << self.n) - 1

    def mask_array(self) -> np.ndarray:
        return np.array(self.masks, dtype=np.int64)

    @property
    def size_counts(self) -> tuple[int, ...]:
        """Coalitions of each size 0 .. n in the plan."""
        return tuple(int(c) for c in np.bincount(self._sizes, minlength=self.n + 1))

    @property
    def enumerated_sizes(self) -> tuple[int, ...]:
        """Sizes whose every coalition is in the plan (0 and n always are)."""
        counts = self.size_counts
        return tuple(s for s in range(self.n + 1) if counts[s] == comb(self.n, s))

    @property
    def unpaired(self) -> tuple[int, ...]:
        """Planned coalitions whose complement is not planned (an odd budget's last one)."""
        have = set(self.masks)
        return tuple(m for m in self.masks if (self.full ^ m) not in have)

    @property
    def complete(self) -> bool:
        return self.budget == 1 << self.n

    def coalitions(self, players: Sequence[str] | None = None) -> list[tuple[str, ...]]:
        """The plan as tuples of player names (``players`` or the design's own)."""
        names = tuple(players) if players is not None else self.players
        if names is None or len(names) != self.n:
            raise ConfigError(f"naming the coalitions of a {self.n}-player design needs {self.n} player "
                              f"names, got {None if names is None else list(names)}")
        return [tuple(names[i] for i in range(self.n) if m >> i & 1) for m in self.masks]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the study manifest stores it); see :meth:`from_dict`."""
        return {
            "sampler": self.sampler,
            "version": self.version,
            "n": self.n,
            "budget": self.budget,
            "seed": self.seed,
            "paired": self.paired,
            "players": list(self.players) if self.players is not None else None,
            "masks": [int(m) for m in self.masks],
            "permutations": [list(p) for p in self.permutations],
            # derived, for people reading the manifest (ignored by from_dict)
            "size_counts": list(self.size_counts),
            "enumerated_sizes": list(self.enumerated_sizes),
            "unpaired": list(self.unpaired),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Design":
        """Rebuild (and validate) a design from :meth:`to_dict` output."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a sampling design must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("sampler", "n", "budget", "seed", "masks") if k not in data]
        if missing:
            raise ConfigError(f"the sampling design lacks {missing}; store Design.to_dict() unchanged")
        version = int(data.get("version", DESIGN_VERSION))
        if version > DESIGN_VERSION:
            raise ConfigError(f"sampling design version {version} is newer than this torchreid_shapley "
                              f"understands ({DESIGN_VERSION}); upgrade torchreid_shapley")
        players = data.get("players")
        design = cls(sampler=str(data["sampler"]), n=int(data["n"]), budget=int(data["budget"]),
                     seed=int(data["seed"]), masks=tuple(int(m) for m in data["masks"]),
                     paired=bool(data.get("paired", True)),
                     permutations=tuple(tuple(int(i) for i in p) for p in data.get("permutations", ())),
                     players=tuple(players) if players is not None else None, version=version)
        design.validate()
        return design

    def validate(self) -> "Design":
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler {self.sampler!r} is not one of {list(SAMPLERS)}")
        _check_n_budget(self.n, self.budget)
        if len(self.masks) != self.budget:
            raise ConfigError(f"the design lists {len(self.masks)} coalitions for a budget of {self.budget}")
        if len(set(self.masks)) != len(self.masks):
            raise ConfigError("the design lists a coalition twice; coalitions of a plan are distinct")
        if any(m < 0 or m > self.full for m in self.masks):
            raise ConfigError(f"a coalition mask of the design is outside 0..{self.full} for n = {self.n}")
        if 0 not in self.masks or self.full not in self.masks:
            raise ConfigError("the design lacks the empty or the full coalition; every plan has both")
        for p in self.permutations:
            if sorted(p) != list(range(self.n)):
                raise ConfigError(f"ordering {list(p)} of the design is not a permutation of 0..{self.n - 1}")
        if self.players is not None and len(self.players) != self.n:
            raise ConfigError(f"the design names {len(self.players)} players for n = {self.n}")
        return self


def _check_n_budget(n: int, budget: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1 or n > MAX_PLAYERS:
        raise ConfigError(f"a sampling plan needs 1 <= n <= {MAX_PLAYERS} players, got {n!r}")
    if not isinstance(budget, (int, np.integer)) or budget < 2 or budget > (1 << n):
        raise ConfigError(f"budget {budget!r} is not a number of trainings between 2 (untrained model and "
                          f"all train-sets) and 2**{n} = {1 << n} (every coalition); pick one in that range")


def _check_seed(seed) -> int:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed {seed!r} must be a non-negative integer")
    return int(seed)


# -- the kernel stream ----------------------------------------------------------------------------
def _binomials(m: int) -> list[list[int]]:
    table = [[0] * (m + 2) for _ in range(m + 1)]
    for a in range(m + 1):
        table[a][0] = 1
        for b in range(1, a + 1):
            table[a][b] = table[a - 1][b - 1] + table[a - 1][b]
    return table


def _unrank(rank: int, m: int, k: int, binom: list[list[int]]) -> int:
    """The ``rank``-th k-subset of players 0..m-1 in colex order, as a mask."""
    mask = 0
    c = m - 1
    for i in range(k, 0, -1):
        while binom[c][i] > rank:
            c -= 1
        mask |= 1 << c
        rank -= binom[c][i]
        c -= 1
    return mask


class _ClassOrder:
    """Seeded random order, without replacement, of the pairs of class ``k``.

    A pair is named by its first member: a ``k``-subset of all players when ``2k < n`` (the
    smaller coalition), or of players ``0 .. n-2`` when ``2k == n`` (the member without the last
    player). The order depends on ``(seed, n, k)`` only, never on the budget.
    """

    def __init__(self, n: int, k: int, seed: int, binom: list[list[int]]):
        self.k = k
        self.m = n if 2 * k < n else n - 1
        self.size = class_pairs(n, k)
        self.binom = binom
        self.rng = np.random.default_rng([seed, n, k])
        self.order = self.rng.permutation(self.size) if self.size <= PERMUTE_LIMIT else None
        self.seen: set[int] = set()
        self.taken = 0

    def next(self) -> int:
        self.taken += 1
        if self.order is not None:
            return _unrank(int(self.order[self.taken - 1]), self.m, self.k, self.binom)
        while True:  # a huge class: random subsets, skipping repeats
            mask = 0
            for i in self.rng.choice(self.m, size=self.k, replace=False):
                mask |= 1 << int(i)
            if mask not in self.seen:
                self.seen.add(mask)
                return mask


def _kernel_stream(n: int, seed: int) -> Iterator[int]:
    full = (1 << n) - 1
    yield 0
    yield full
    if n < 2:
        return
    binom = _binomials(n)
    border = _ClassOrder(n, 1, seed, binom)
    for _ in range(border.size):
        first = border.next()
        yield first
        yield full ^ first
    classes = list(range(2, n // 2 + 1))
    mass = {k: (1.0 if 2 * k == n else 2.0) * kernel_mass(n, k) for k in classes}
    orders: dict[int, _ClassOrder] = {}
    taken = {k: 0 for k in classes}
    while True:
        best, best_quotient = None, -1.0
        for k in classes:  # Sainte-Lague: largest m_k / (c_k + 1/2), border-most on ties
            if taken[k] < class_pairs(n, k):
                quotient = mass[k] / (taken[k] + 0.5)
                if quotient > best_quotient:
                    best, best_quotient = k, quotient
        if best is None:
            return
        if best not in orders:
            orders[best] = _ClassOrder(n, best, seed, binom)
        taken[best] += 1
        first = orders[best].next()
        yield first
        yield full ^ first


def kernel_design(n: int, budget: int, *, seed: int = 0, players: Sequence[str] | None = None) -> Design:
    """The paired kernel plan of ``budget`` coalitions as a :class:`Design` (see module doc)."""
    _check_n_budget(n, budget)
    seed = _check_seed(seed)
    masks = tuple(islice(_kernel_stream(int(n), seed), int(budget)))
    return Design(sampler="kernel", n=int(n), budget=int(budget), seed=seed, masks=masks, paired=True,
                  players=tuple(players) if players is not None else None).validate()


def kernel_plan(n: int, budget: int, *, seed: int = 0) -> np.ndarray:
    """``budget`` distinct coalition masks: empty, full, the border class, then kernel-apportioned
    pairs (see the module doc). Nested in ``budget`` for a fixed ``seed``."""
    return kernel_design(n, budget, seed=seed).mask_array()


# -- the permutation stream -----------------------------------------------------------------------
def _permutation_stream(n: int, seed: int, antithetic: bool) -> Iterator[np.ndarray]:
    rng = np.random.default_rng([seed, n, 2 if antithetic else 1])
    while True:
        chunk = np.argsort(rng.random((PERMUTATION_CHUNK, n)), axis=1, kind="stable")
        for perm in chunk:
            yield perm
            if antithetic:
                yield perm[::-1]


def permutation_design(n: int, budget: int, *, seed: int = 0, antithetic: bool = True,
                       players: Sequence[str] | None = None,
                       max_permutations: int = 10_000_000) -> Design:
    """Permutation sampling as a :class:`Design`: the distinct coalitions along the prefixes of a
    seeded stream of orderings (each followed by its reverse when ``antithetic``) until ``budget``
    distinct coalitions are reached."""
    _check_n_budget(n, budget)
    seed = _check_seed(seed)
    n, budget = int(n), int(budget)
    full = (1 << n) - 1
    seen = {0: None, full: None}  # dict keeps insertion order
    masks = [0, full]
    perms: list[tuple[int, ...]] = []
    bits = np.int64(1) << np.arange(n, dtype=np.int64)
    for perm in _permutation_stream(n, seed, antithetic):
        if len(masks) >= budget:
            break
        if len(perms) >= max_permutations:
            raise ConfigError(f"permutation sampling drew {max_permutations} orderings without reaching "
                              f"{budget} distinct coalitions; lower the budget or use the kernel sampler")
        perms.append(tuple(int(i) for i in perm))
        for mask in np.cumsum(bits[perm])[:-1].tolist():
            if mask not in seen:
                seen[mask] = None
                masks.append(mask)
                if len(masks) >= budget:
                    break
    return Design(sampler="permutation", n=n, budget=budget, seed=seed, masks=tuple(masks[:budget]),
                  paired=bool(antithetic), permutations=tuple(perms),
                  players=tuple(players) if players is not None else None).validate()


def permutation_plan(n: int, budget: int, *, seed: int = 0,
                     antithetic: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(masks, permutations)``: ``budget`` distinct coalitions along the prefixes of seeded
    orderings (antithetic: each with its reverse), and the orderings used (rows; the last may be
    only partly inside the budget). Nested in ``budget`` for a fixed ``seed``."""
    design = permutation_design(n, budget, seed=seed, antithetic=antithetic)
    return design.mask_array(), np.array(design.permutations, dtype=np.int64).reshape(-1, n)


def plan_design(sampler: str, n: int, budget: int, *, seed: int = 0,
                players: Sequence[str] | None = None) -> Design:
    """A design by sampler name: ``kernel`` or ``permutation`` (antithetic)."""
    if sampler == "kernel":
        return kernel_design(n, budget, seed=seed, players=players)
    if sampler == "permutation":
        return permutation_design(n, budget, seed=seed, players=players)
    raise ConfigError(f"sampler {sampler!r} is not one of {list(SAMPLERS)}; use kernel or permutation")
