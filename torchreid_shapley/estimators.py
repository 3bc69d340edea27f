"""Shapley values from some of the ``2**n`` coalitions: exact, paired kernel regression, permutations.

Estimators (``estimate(..., estimator=...)``):

``exact``
    Every coalition is present: eqs. 1 and 3 through :func:`~torchreid_shapley.shapley.shapley_values`.

``kernel`` (what ``auto`` uses when a coalition is missing, unless the design is a permutation
design: then ``auto`` is ``permutation``, which is far better on those coalitions)
    The Shapley values are the solution of a weighted least-squares problem over coalitions
    (Charnes et al. 1988; KernelSHAP, Lundberg and Lee 2017)::

        minimise  sum_S w(S) (v(S) - v(empty) - sum_{i in S} phi_i)^2
        subject to sum_i phi_i = v(full) - v(empty)

    with the Shapley kernel ``w(S) = (n-1) / (C(n,|S|) |S| (n-|S|))``; over all coalitions the
    solution is exactly the Shapley value. On a sample the sum over ``S`` is replaced by a
    weighted sum over the coalitions drawn, and the constrained normal equations
    ``[[X'WX, 1], [1', 0]] [phi; mu] = [X'Wy; v(full) - v(empty)]`` are solved in closed form, so
    efficiency holds exactly (to rounding; a last ``(c - sum phi) / n`` correction removes it).

    Weights. With a kernel :class:`~torchreid_shapley.sampling.Design` only complete pairs
    ``(S, P \\ S)`` of the plan enter, and a coalition of size ``s`` gets ``m(s) / c(s)``: the
    kernel mass of its size ``m(s) = (n-1) / (s (n-s))`` shared by the ``c(s)`` coalitions of that
    size used (a Horvitz-Thompson estimate of that size's part of the normal equations, since the
    plan draws uniformly inside a size). An enumerated size (``c(s) = C(n,s)``) thus gets exactly
    the kernel weight per coalition; a full plan gives the exact values. Without a design (a bare
    set of records) the coalitions present are taken as the sample, each with its own Shapley
    kernel weight ``m(s) / C(n,s)``, unpaired ones included. A permutation design used with
    ``kernel`` is treated like a bare set (its coalitions, kernel weight per coalition).

    Why paired sampling is exact for games of degree <= 2. Take
    ``v(S) = v(0) + sum_{i in S} a_i + sum_{i<j in S} b_ij``; its Shapley value is
    ``phi_i = a_i + 1/2 sum_j b_ij`` and the residual of that ``phi`` on a coalition is
    ``r(S) = -1/2 sum_{i in S, j not in S} b_ij``: half the cut between ``S`` and its complement,
    the same for ``S`` and ``P \\ S``. The weighted normal equations are satisfied when
    ``sum_S w(S) r(S) x_S`` is a multiple of the all-ones vector (the constraint's multiplier).
    A pair with equal weights contributes ``w r(S) (x_S + x_{P\\S}) = w r(S) 1``: always a multiple
    of ones. Sizes ``s`` and ``n - s`` share their mass and their counts (every pair has one of
    each), so the weights are equal inside every pair and the estimate is the exact Shapley
    value at any budget where the regression is identified: from ``2 n + 2`` coalitions on, the
    border sizes 1 and ``n - 1`` make it so.

    Standard errors, from replicate weights over the sampled pairs, stratified by size class (a
    class with ``n_h`` of its ``N_h`` pairs drawn has sampling fraction ``f_h``; enumerated
    classes do not vary; classes with one pair drawn are pooled together, or with the nearest
    sampled class, so that each stratum has a spread). Each replicate is a full constrained
    solve (cheap: the normal equations of a replicate are updates of per-pair sums).

    * ``jackknife`` (default; deterministic): delete one sampled pair, scale the rest of its
      stratum by ``n_h / (n_h - 1)``; ``var = sum_h (1 - f_h) (n_h - 1) / n_h sum_j (theta_hj -
      mean_h)^2`` (stratified delete-one jackknife with the finite-population correction).
    * ``bootstrap``: the rescaled bootstrap of Rao and Wu (1988): in each stratum draw
      ``n_h - 1`` pairs with replacement and multiply each pair's weight by
      ``1 - lam + lam n_h / (n_h - 1) r`` (``lam = sqrt(1 - f_h)``, ``r`` its multiplicity;
      weights stay positive); ``var`` = the replicates' variance.

    On the data scale the replicates also refit the log curve with their weights, so the curve's
    sampling error is part of the standard error. On noisy dataset-like games (benchmark, N = 8
    to 12, budgets of 10 to 50%) the +-1.96 se interval of the jackknife covers the exact value
    in 94-96% of the player-draws on both scales, the bootstrap's in 91-95%; with very few
    sampled pairs (40 of 256 coalitions) the jackknife's falls to about 87%. A single sampled
    pair gives NaN.

``permutation`` (the baseline)
    Monte Carlo permutation sampling: the average of the marginal contributions along the
    orderings of a permutation design whose prefixes are all present (memoised: each coalition is
    trained once and reused by every ordering through it). An antithetic design counts an
    ordering only together with its reverse, which makes it exact for games of degree <= 2.
    Each ordering's contributions sum to ``v(full) - v(empty)``, so efficiency holds exactly.
    Standard error: the spread over the orderings, clustered by antithetic pair.
    Without a design the seeded stream of :func:`~torchreid_shapley.sampling.permutation_plan`
    is replayed and orderings are used until the first one with a missing coalition.

Values are a ``(2**n,)`` array with NaN where a coalition was not trained, or a mapping
``mask -> value`` (bit ``i`` = player ``i``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import comb
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import FitRefused, MissingCoalitionError, ShapleyError
from .sampling import (Design, MAX_PLAYERS, _permutation_stream, kernel_mass, kernel_weight, popcounts,
                       size_class)
from .scaling import LogCurve, data_scale, fit_log_curve
from .shapley import shapley_values

ESTIMATORS = ("auto", "exact", "kernel", "permutation")
CURVES = ("model", "weighted", "present")
OUTER_LIMIT = 1 << 22  # K * n * n floats below which the replicate normal equations are one matmul


@dataclass(frozen=True, eq=False)
class Estimate:
    """Shapley values of one game (one scale) from the coalitions present.

    ``values[i]`` estimates player ``i``'s value; ``stderr[i]`` its standard error (``None`` for
    exact values, 0 when every size class was enumerated, NaN where it cannot be estimated: a
    single sampled pair, or ``uncertainty="none"``). ``base`` and ``full`` are ``v(empty)`` and
    ``v(full)``; ``sum(values) == full - base``. ``uncertainty`` names how ``stderr`` was made
    (jackknife, bootstrap, orderings, seeds, enumerated, unmeasurable or none);
    ``replicates`` are the jackknife/bootstrap replicate estimates.
    """

    values: np.ndarray
    stderr: np.ndarray | None
    estimator: str
    n: int
    base: float
    full: float
    coalitions_used: int
    coalitions_present: int
    identified: bool = True
    uncertainty: str = "none"
    seeds: int = 1
    replicates: np.ndarray | None = field(default=None, repr=False)

    @property
    def efficiency_gap(self) -> float:
        return float(np.sum(self.values) - (self.full - self.base))

    def to_dict(self) -> dict[str, Any]:
        return {"estimator": self.estimator, "values": [float(x) for x in self.values],
                "stderr": None if self.stderr is None else [float(x) for x in self.stderr],
                "base": self.base, "full": self.full, "coalitions_used": self.coalitions_used,
                "coalitions_present": self.coalitions_present, "identified": self.identified,
                "uncertainty": self.uncertainty, "seeds": self.seeds}


# -- the coalitions present -----------------------------------------------------------------------
class _Table:
    """Sorted masks and values of the coalitions present (NaN = not trained)."""

    def __init__(self, values, n: int):
        if isinstance(values, Mapping):
            masks = np.array([int(m) for m in values.keys()], dtype=np.int64)
            vals = np.array([float(v) for v in values.values()], dtype=float)
            if masks.size and (masks.min() < 0 or masks.max() >= (1 << n)):
                raise ShapleyError(f"a coalition mask is outside 0..{(1 << n) - 1} for {n} players")
        else:
            arr = np.asarray(values, dtype=float)
            if arr.ndim != 1 or arr.shape[0] != (1 << n):
                raise ShapleyError(f"coalition values for {n} players need shape ({1 << n},), got {arr.shape}")
            masks = np.arange(arr.shape[0], dtype=np.int64)
            vals = arr
        if np.isinf(vals).any():
            raise ShapleyError("a coalition value is infinite; values are metrics in [0, 1] "
                               "(NaN = not trained)")
        keep = ~np.isnan(vals)
        order = np.argsort(masks[keep], kind="stable")
        self.n = n
        self.masks = masks[keep][order]
        self.values = vals[keep][order]

    def __len__(self) -> int:
        return int(self.masks.size)

    @property
    def complete(self) -> bool:
        return len(self) == (1 << self.n)

    def lookup(self, masks) -> np.ndarray:
        masks = np.asarray(masks, dtype=np.int64)
        idx = np.searchsorted(self.masks, masks).clip(max=max(len(self) - 1, 0))
        found = (self.masks[idx] == masks) if len(self) else np.zeros(masks.shape, bool)
        return np.where(found, self.values[idx] if len(self) else np.nan, np.nan)

    def has(self, masks) -> np.ndarray:
        return ~np.isnan(self.lookup(masks))

    def dense(self) -> np.ndarray:
        out = np.full(1 << self.n, np.nan)
        out[self.masks] = self.values
        return out

    def with_values(self, values: np.ndarray) -> "_Table":
        other = object.__new__(_Table)
        other.n, other.masks, other.values = self.n, self.masks, np.asarray(values, dtype=float)
        return other


def _check_n(n: int) -> int:
    if not isinstance(n, (int, np.integer)) or n < 0 or n > MAX_PLAYERS:
        raise ShapleyError(f"the number of players must be an integer in 0..{MAX_PLAYERS}, got {n!r}")
    return int(n)


def _as_design(design, n: int) -> Design | None:
    if design is None:
        return None
    if isinstance(design, Mapping):
        design = Design.from_dict(design)
    if not isinstance(design, Design):
        raise ShapleyError(f"design must be a sampling.Design or its to_dict(), got {type(design).__name__}")
    if design.n != n:
        raise ShapleyError(f"the design is for {design.n} players but the game has {n}; "
                           "use the design stored for this game")
    return design


def _require_ends(table: _Table) -> None:
    full = (1 << table.n) - 1
    lacking = [name for name, m in (("empty (untrained model)", 0), ("full", full)) if not table.has([m])[0]]
    if lacking:
        raise MissingCoalitionError(
            f"the {' and the '.join(lacking)} coalition{'s have' if len(lacking) > 1 else ' has'} no value; "
            "every estimate needs v(empty) and v(full): train them (every plan includes both)")


# -- the kernel regression ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Regression:
    n: int
    masks: np.ndarray        # (K,) coalitions in the regression (no empty, no full)
    X: np.ndarray            # (K, n) indicators
    weights: np.ndarray      # (K,)
    unit: np.ndarray         # (K,) index of the coalition's pair (its bootstrap unit)
    strata: list             # [(unit indices, sampling fraction)] of the strata that vary
    identified: bool


def _kernel_regression(table: _Table, design: Design | None) -> _Regression:
    n = table.n
    full = (1 << n) - 1
    if design is not None:
        cand = design.mask_array()
        cand = cand[table.has(cand)]
    else:
        cand = table.masks
    cand = np.unique(cand[(cand != 0) & (cand != full)])
    if design is not None and design.sampler == "kernel":
        paired = np.isin(full ^ cand, cand)
        cand = cand[paired]
        sizes = popcounts(cand)
        counts = np.bincount(sizes, minlength=n + 1)
        weights = np.array([kernel_mass(n, int(s)) / counts[s] for s in sizes])
    else:
        sizes = popcounts(cand)
        weights = np.array([kernel_weight(n, int(s)) for s in sizes])
    X = ((cand[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(float)
    if weights.size:  # the solution does not change with the weights' scale: put trace(A) at n
        weights = weights * (n / float(weights @ sizes))
    keys, unit = np.unique(np.minimum(cand, full ^ cand), return_inverse=True)
    unit = unit.reshape(-1)
    unit_class = np.array([size_class(n, int(s)) for s in popcounts(keys)], dtype=np.int64)
    coal_class = np.array([size_class(n, int(s)) for s in sizes], dtype=np.int64)
    strata = []
    for k in np.unique(unit_class):
        population = comb(n, int(k)) + (comb(n, n - int(k)) if 2 * k != n else 0)
        used = int(np.sum(coal_class == k))
        frac = min(1.0, used / population)
        if frac < 1.0:
            strata.append([int(k), np.flatnonzero(unit_class == k), used, population])
    strata = _pool_single_unit_strata(strata)
    identified = _identified(X, weights)
    return _Regression(n=n, masks=cand, X=X, weights=weights, unit=unit,
                       strata=[(units, used / population) for _, units, used, population in strata],
                       identified=identified)


def _pool_single_unit_strata(strata: list) -> list:
    """Pool strata with one sampled pair (no within-stratum spread) so that each varies."""
    single = [s for s in strata if s[1].size == 1]
    if not single:
        return strata
    multi = [s for s in strata if s[1].size > 1]
    pooled = [single[0][0], np.concatenate([s[1] for s in single]),
              sum(s[2] for s in single), sum(s[3] for s in single)]
    if pooled[1].size == 1:
        if not multi:
            return [pooled]  # one sampled pair in all: no spread to measure
        nearest = min(multi, key=lambda s: abs(s[0] - pooled[0]))
        multi.remove(nearest)
        pooled = [nearest[0], np.concatenate([nearest[1], pooled[1]]),
                  nearest[2] + pooled[2], nearest[3] + pooled[3]]
    return multi + [pooled]


def _kkt(A: np.ndarray, n: int) -> np.ndarray:
    B = A.shape[0]
    kkt = np.zeros((B, n + 1, n + 1))
    kkt[:, :n, :n] = A
    kkt[:, :n, n] = 1.0
    kkt[:, n, :n] = 1.0
    return kkt


def _identified(X: np.ndarray, weights: np.ndarray) -> bool:
    n = X.shape[1]
    if n == 0:
        return True
    A = (X.T * weights) @ X
    kkt = _kkt(A[None], n)[0]
    return bool(np.linalg.matrix_rank(kkt) == n + 1)


def _solve(A: np.ndarray, b: np.ndarray, c: np.ndarray, identified: bool) -> np.ndarray:
    """Constrained WLS from normal equations ``A (R, n, n)``, ``b (R, n)`` and sums ``c (R,)``."""
    R, n = b.shape
    rhs = np.zeros((R, n + 1))
    rhs[:, :n] = b
    rhs[:, n] = c
    kkt = _kkt(A, n)
    sol = None
    if identified:
        try:
            sol = np.linalg.solve(kkt, rhs[..., None])[..., 0]
        except np.linalg.LinAlgError:  # a replicate that lost the pair identifying it
            sol = None
    if sol is None:  # minimum-norm solution of the constrained problem
        sol = np.stack([np.linalg.lstsq(kkt[r], rhs[r], rcond=None)[0] for r in range(R)])
    phi = sol[:, :n]
    return phi + ((c - phi.sum(axis=1)) / n)[:, None]


@dataclass(frozen=True, eq=False)
class _Replicates:
    """Replicate weights for the standard errors: per-unit multipliers of the kernel weights.

    ``jackknife``: replicate ``r`` deletes sampled pair ``drop[r]`` and scales the rest of its
    stratum by ``scale[r] = n_h / (n_h - 1)``; variance ``sum_r coef[r] (theta_r - mean_h)^2``
    with ``coef = (1 - f_h) (n_h - 1) / n_h``. ``bootstrap``: Rao-Wu multipliers ``factors``
    ``(B, U)``; variance = the replicates' sample variance.
    """

    method: str
    count: int
    unit_stratum: np.ndarray                 # (U,) stratum of each unit, -1 when it never varies
    factors: np.ndarray | None = None        # bootstrap (B, U)
    drop: np.ndarray | None = None           # jackknife (R,)
    scale: np.ndarray | None = None          # jackknife (R,)
    coef: np.ndarray | None = None           # jackknife (R,)

    def unit_rows(self, rows: slice) -> np.ndarray:
        """Per-unit multipliers of replicates ``rows``, shape ``(rows, U)``."""
        if self.method == "bootstrap":
            return self.factors[rows]
        drop, scale = self.drop[rows], self.scale[rows]
        stratum = self.unit_stratum[self.drop][rows]
        out = np.where(self.unit_stratum[None, :] == stratum[:, None], scale[:, None], 1.0)
        out[np.arange(drop.size), drop] = 0.0
        return out

    def variance(self, thetas: np.ndarray) -> np.ndarray:
        if self.method == "bootstrap":
            return thetas.var(axis=0, ddof=1)
        stratum = self.unit_stratum[self.drop]
        var = np.zeros(thetas.shape[1])
        for h in np.unique(stratum):
            rows = stratum == h
            dev = thetas[rows] - thetas[rows].mean(axis=0)
            var += np.sum(self.coef[rows][:, None] * dev ** 2, axis=0)
        return var


UNCERTAINTY = ("jackknife", "bootstrap", "none")


def _replicates(reg: _Regression, method: str, bootstrap: int, seed: int) -> _Replicates | None:
    """Replicate weights, or None when nothing varies or no standard error is asked for."""
    if method not in UNCERTAINTY:
        raise ShapleyError(f"uncertainty {method!r} is not one of {list(UNCERTAINTY)}")
    if not reg.strata or method == "none" or (method == "bootstrap" and bootstrap < 2):
        return None
    units = int(reg.unit.max()) + 1
    unit_stratum = np.full(units, -1, dtype=np.int64)
    for h, (members, _) in enumerate(reg.strata):
        unit_stratum[members] = h
    if any(members.size < 2 for members, _ in reg.strata):
        return _Replicates(method="unmeasurable", count=0, unit_stratum=unit_stratum)
    if method == "jackknife":
        drop = np.concatenate([members for members, _ in reg.strata])
        sizes = np.concatenate([np.full(m.size, m.size, dtype=float) for m, _ in reg.strata])
        fracs = np.concatenate([np.full(m.size, f) for m, f in reg.strata])
        return _Replicates(method="jackknife", count=int(drop.size), unit_stratum=unit_stratum, drop=drop,
                           scale=sizes / (sizes - 1), coef=(1 - fracs) * (sizes - 1) / sizes)
    rng = np.random.default_rng(seed)
    factors = np.ones((bootstrap, units))
    for members, frac in reg.strata:
        size = members.size
        draws = size - 1
        picks = rng.integers(0, size, size=(bootstrap, draws))
        mult = np.zeros((bootstrap, size))
        np.add.at(mult, (np.repeat(np.arange(bootstrap), draws), picks.ravel()), 1.0)
        lam = np.sqrt(1.0 - frac)
        factors[:, members] = 1.0 - lam + lam * size / draws * mult
    return _Replicates(method="bootstrap", count=bootstrap, unit_stratum=unit_stratum, factors=factors)


def _unit_sums(reg: _Regression, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per unit: ``sum w x x'`` (U, n, n) and ``sum w y x`` (U, n)."""
    n = reg.n
    units = int(reg.unit.max()) + 1
    outer = np.zeros((units, n, n))
    step = max(1, OUTER_LIMIT // max(1, n * n))
    for lo in range(0, reg.masks.size, step):
        part = slice(lo, lo + step)
        X = reg.X[part]
        np.add.at(outer, reg.unit[part], (reg.weights[part, None, None] * X[:, :, None]) * X[:, None, :])
    wyx = np.zeros((units, n))
    np.add.at(wyx, reg.unit, (reg.weights * y)[:, None] * reg.X)
    return outer, wyx


def _replicate_normal(reps: _Replicates, outer: np.ndarray, rows: slice) -> np.ndarray:
    """``A_r = sum_u factor_ru (sum w x x')_u`` for replicates ``rows``."""
    n = outer.shape[1]
    if reps.method == "bootstrap":
        return (reps.factors[rows] @ outer.reshape(outer.shape[0], n * n)).reshape(-1, n, n)
    total = outer.sum(axis=0)
    strata = int(reps.unit_stratum.max()) + 1
    per_stratum = np.stack([outer[reps.unit_stratum == h].sum(axis=0) for h in range(strata)])
    drop, scale = reps.drop[rows], reps.scale[rows]
    h = reps.unit_stratum[drop]
    return total[None] + (scale - 1)[:, None, None] * per_stratum[h] - scale[:, None, None] * outer[drop]


REPLICATE_CHUNK = 256


def _kernel_estimate(table: _Table, reg: _Regression, reps: _Replicates | None,
                     curve_refit: Callable | None = None) -> Estimate:
    """Point estimate and standard errors; ``curve_refit(unit_rows) -> (Y, C)`` gives the
    per-replicate targets when they move with the replicate (data scale: the curve is refitted)."""
    n = table.n
    full = (1 << n) - 1
    base, top = float(table.lookup([0])[0]), float(table.lookup([full])[0])
    y = table.lookup(reg.masks) - base
    c = top - base
    A = (reg.X.T * reg.weights) @ reg.X
    point = _solve(A[None], (reg.X.T @ (reg.weights * y))[None], np.array([c]), reg.identified)[0]
    if reps is None:
        stderr = np.full(n, np.nan) if reg.strata else np.zeros(n)
        replicates = None
    elif reps.method == "unmeasurable":
        stderr, replicates = np.full(n, np.nan), None
    else:
        outer, wyx = _unit_sums(reg, y)
        replicates = np.empty((reps.count, n))
        for lo in range(0, reps.count, REPLICATE_CHUNK):
            rows = slice(lo, min(lo + REPLICATE_CHUNK, reps.count))
            A_r = _replicate_normal(reps, outer, rows)
            unit_rows = reps.unit_rows(rows)
            if curve_refit is None:
                b_r, c_r = unit_rows @ wyx, np.full(A_r.shape[0], c)
            else:
                Y, c_r = curve_refit(unit_rows)
                b_r = (unit_rows[:, reg.unit] * reg.weights * Y) @ reg.X
            replicates[rows] = _solve(A_r, b_r, c_r, reg.identified)
        stderr = np.sqrt(reps.variance(replicates))
    return Estimate(values=point, stderr=stderr, estimator="kernel", n=n, base=base, full=top,
                    coalitions_used=int(reg.masks.size) + 2, coalitions_present=len(table),
                    identified=reg.identified,
                    uncertainty=reps.method if reps is not None else ("none" if reg.strata else "enumerated"),
                    replicates=replicates)


# -- permutations ---------------------------------------------------------------------------------
def _permutation_orderings(table: _Table, design: Design | None, seed: int) -> tuple[np.ndarray, bool]:
    n = table.n
    if design is not None and design.permutations:
        return np.array(design.permutations, dtype=np.int64).reshape(-1, n), design.paired
    if design is not None:
        raise ShapleyError(f"the {design.sampler} design has no orderings for the permutation estimator; "
                           "use --estimator kernel (or auto) with it")
    # no design: replay the seeded antithetic stream until an ordering has a missing coalition
    bits = np.int64(1) << np.arange(n, dtype=np.int64)
    cap = max(2, len(table))
    taken = []
    for perm in _permutation_stream(n, seed, True):
        if len(taken) >= cap or not table.has(np.cumsum(bits[perm])).all():
            break
        taken.append(perm)
    if len(taken) % 2:
        taken.pop()  # keep whole antithetic pairs
    return np.array(taken, dtype=np.int64).reshape(-1, n), True


def _permutation_estimate(table: _Table, perms: np.ndarray, paired: bool) -> Estimate:
    n = table.n
    full = (1 << n) - 1
    base, top = float(table.lookup([0])[0]), float(table.lookup([full])[0])
    bits = np.int64(1) << np.arange(n, dtype=np.int64)
    prefix = np.zeros((perms.shape[0], n + 1), dtype=np.int64)
    if perms.size:
        prefix[:, 1:] = np.cumsum(bits[perms], axis=1)
    vals = table.lookup(prefix.ravel()).reshape(prefix.shape)
    complete = ~np.isnan(vals).any(axis=1)
    if paired:  # antithetic: an ordering counts only with its reverse (exact for degree <= 2)
        both = complete[0::2][: complete.size // 2] & complete[1::2]
        complete[:] = False
        complete[0: 2 * both.size: 2] = both
        complete[1: 2 * both.size: 2] = both
    rows = np.flatnonzero(complete)
    if rows.size == 0:
        raise MissingCoalitionError(
            "no sampled ordering has all its coalitions trained, so permutation sampling has nothing to "
            "average; train the plan's coalitions or use --estimator kernel")
    contrib = np.zeros((rows.size, n))
    np.put_along_axis(contrib, perms[rows], np.diff(vals[rows], axis=1), axis=1)
    values = contrib.mean(axis=0)
    values = values + (top - base - values.sum()) / n
    unit = rows // 2 if paired else rows
    _, unit = np.unique(unit, return_inverse=True)
    U = int(unit.max()) + 1
    if U > 1:
        sums = np.zeros((U, n))
        np.add.at(sums, unit, contrib)
        sizes = np.bincount(unit, minlength=U)[:, None]
        dev = sums - sizes * values
        stderr = np.sqrt(U / (U - 1) * np.sum(dev ** 2, axis=0)) / rows.size
    else:
        stderr = np.full(n, np.nan)
    used = np.unique(prefix[rows]).size
    return Estimate(values=values, stderr=stderr, estimator="permutation", n=n, base=base, full=top,
                    coalitions_used=int(used), coalitions_present=len(table), identified=True,
                    uncertainty="orderings")


# -- public ---------------------------------------------------------------------------------------
def _exact(table: _Table) -> Estimate:
    n = table.n
    dense = table.dense()
    full = (1 << n) - 1
    return Estimate(values=shapley_values(dense), stderr=None, estimator="exact", n=n,
                    base=float(dense[0]), full=float(dense[full]), coalitions_used=1 << n,
                    coalitions_present=1 << n)


def _resolve(estimator: str, table: _Table, design: Design | None) -> str:
    if estimator not in ESTIMATORS:
        raise ShapleyError(f"estimator {estimator!r} is not one of {list(ESTIMATORS)}; use auto, exact, "
                           "kernel or permutation")
    if estimator == "auto":
        if table.complete:
            return "exact"
        return "permutation" if design is not None and design.sampler == "permutation" else "kernel"
    if estimator == "exact" and not table.complete:
        missing = (1 << table.n) - len(table)
        raise MissingCoalitionError(
            f"exact values need all {1 << table.n} coalitions but {missing} have no value; train them or "
            "use --estimator auto (kernel regression with standard errors)")
    return estimator


def estimate(values, n: int, *, estimator: str = "auto", design: Design | Mapping | None = None,
             seed: int = 0, bootstrap: int = 200, uncertainty: str = "jackknife") -> Estimate:
    """Shapley values of the game ``values`` (``(2**n,)`` with NaN where untrained, or a mapping
    ``mask -> value``) by ``estimator`` (see the module doc).

    ``design`` is the plan the coalitions were drawn by (a :class:`Design` or its dict).
    ``uncertainty`` chooses the kernel estimator's standard errors: ``jackknife`` (stratified
    delete-one-pair, deterministic), ``bootstrap`` (``bootstrap`` Rao-Wu replicates seeded by
    ``seed``) or ``none`` (NaN). ``seed`` also seeds the replayed orderings of ``permutation``
    without a design.
    """
    n = _check_n(n)
    table = _Table(values, n)
    design = _as_design(design, n)
    if n == 0:
        v0 = float(table.lookup([0])[0])
        return Estimate(values=np.zeros(0), stderr=None, estimator="exact", n=0, base=v0, full=v0,
                        coalitions_used=1, coalitions_present=len(table))
    _require_ends(table)
    name = _resolve(estimator, table, design)
    if name == "exact":
        return _exact(table)
    if name == "permutation":
        perms, paired = _permutation_orderings(table, design, seed)
        return _permutation_estimate(table, perms, paired)
    reg = _kernel_regression(table, design)
    return _kernel_estimate(table, reg, _replicates(reg, uncertainty, bootstrap, seed))


def combine_estimates(estimates: Sequence[Estimate]) -> Estimate:
    """Combine estimates of one game from independently seeded plans: their mean, with the
    standard error of that mean from the spread over the seeds (``std / sqrt(k)``; a single
    estimate is returned as it is). Efficiency is kept (every estimate has the same sum)."""
    estimates = list(estimates)
    if not estimates:
        raise ShapleyError("combine_estimates needs at least one estimate")
    if len(estimates) == 1:
        return estimates[0]
    n = estimates[0].n
    if any(e.n != n for e in estimates):
        raise ShapleyError(f"estimates of games with different numbers of players: {[e.n for e in estimates]}")
    stack = np.stack([e.values for e in estimates])
    k = stack.shape[0]
    names = sorted({e.estimator for e in estimates})
    return Estimate(values=stack.mean(axis=0), stderr=stack.std(axis=0, ddof=1) / np.sqrt(k),
                    estimator="+".join(names), n=n,
                    base=float(np.mean([e.base for e in estimates])),
                    full=float(np.mean([e.full for e in estimates])),
                    coalitions_used=max(e.coalitions_used for e in estimates),
                    coalitions_present=max(e.coalitions_present for e in estimates),
                    identified=all(e.identified for e in estimates), uncertainty="seeds",
                    seeds=sum(e.seeds for e in estimates))


# -- the log curve of a sampled game --------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _CurveEstimate:
    """The fitted curve, and how to refit it from replicate-weighted sums of per-point terms."""

    curve: LogCurve
    kind: str                # "model", "weighted", "present" or "exact"
    terms: np.ndarray        # (P, m): each present coalition's part of the sums below
    solve: Callable          # sums (R, m) -> (alpha (R,), log beta (R,))


def _ols_terms(x: np.ndarray, a: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.stack([w, w * x, w * a, w * x * x, w * x * a], axis=1)


def _ols_solve(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sw, swx, swa, swxx, swxa = np.asarray(sums, dtype=float).T
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = (swxa - swx * swa / sw) / (swxx - swx ** 2 / sw)
        return alpha, (swx - swa / alpha) / sw


def _size_weights(table: _Table, n: int) -> np.ndarray:
    """Horvitz-Thompson weights ``C(n,s) / present(s)``: sums over the present coalitions
    weighted so estimate sums over all of them (plans draw uniformly inside a size)."""
    sizes = popcounts(table.masks)
    counts = np.bincount(sizes, minlength=n + 1)
    return np.array([comb(n, int(s)) / counts[s] for s in sizes])


def _as_curve(alpha, log_beta, x, a, w, like: LogCurve, kind: str) -> LogCurve:
    alpha, log_beta = float(np.ravel(alpha)[0]), float(np.ravel(log_beta)[0])
    beta = float(np.exp(log_beta)) if np.isfinite(log_beta) else float("nan")
    if not (np.isfinite(alpha) and alpha > 0 and np.isfinite(beta) and beta > 0):
        raise FitRefused(f"the {kind} log-curve fit is not valid (alpha={alpha:.4g}, beta={beta:.4g})")
    pred = alpha * (x - np.log(beta))
    am = np.sum(w * a) / np.sum(w)
    ss_tot = float(np.sum(w * (a - am) ** 2))
    r2 = 1.0 - float(np.sum(w * (a - pred) ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return LogCurve(alpha=alpha, beta=beta, r2=r2, points=like.points, min_images=like.min_images,
                    max_images=like.max_images)


def _subset_sums(per_player: np.ndarray) -> np.ndarray:
    out = np.zeros(1 << per_player.size)
    for i, x in enumerate(per_player):
        out[1 << i: 1 << (i + 1)] = out[: 1 << i] + x
    return out


def _effective_images_model(images: np.ndarray, masks: np.ndarray, a: np.ndarray, w: np.ndarray,
                            start: LogCurve, n: int) -> np.ndarray | None:
    """Fit ``a(S) ~ alpha ln(t_0 + sum_{i in S} t_i)`` (eq. 2 with an effective image count per
    train-set) on the sampled points; its prediction for every coalition, or None if it fails."""
    per_set = np.array([images[1 << i] - images[0] for i in range(n)], dtype=float)
    offset = float(images[0])
    X = ((masks[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(float)
    sw = np.sqrt(w)
    t0 = np.concatenate([[offset if offset > 0 else 1e-6 * per_set.min()], per_set]) / start.beta
    p0 = np.concatenate([np.log(np.maximum(t0, 1e-300)), [start.alpha]])

    def total(p):
        t = np.exp(p[:-1])
        return t, t[0] + X @ t[1:]

    def resid(p):
        _, T = total(p)
        return sw * (p[-1] * np.log(T) - a)

    def jac(p):
        t, T = total(p)
        J = np.empty((a.size, n + 2))
        J[:, 0] = sw * p[-1] * t[0] / T
        J[:, 1:-1] = (sw * p[-1] / T)[:, None] * X * t[1:]
        J[:, -1] = sw * np.log(T)
        return J

    try:
        from scipy.optimize import least_squares
        with np.errstate(all="ignore"):
            sol = least_squares(resid, p0, jac=jac, method="lm")
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not np.all(np.isfinite(sol.x)) or sol.x[-1] <= 0:
        return None
    t = np.exp(sol.x[:-1])
    with np.errstate(divide="ignore"):
        pred = sol.x[-1] * np.log(t[0] + _subset_sums(t[1:]))
    return pred if np.all(np.isfinite(pred[images > 0])) else None


def _estimate_curve(images: np.ndarray, table: _Table, kind: str) -> _CurveEstimate:
    """The log curve of design.md (the OLS fit over every coalition with images) from the
    coalitions present; see :func:`estimate_valuation`. Raises FitRefused like fit_log_curve."""
    n = table.n
    present_images = images[table.masks]
    plain = fit_log_curve(present_images, table.values)  # refuses bad fits with a clear message
    keep = present_images > 0
    x = np.log(np.where(keep, present_images, 1).astype(float))
    a = table.values
    ones = keep.astype(float)
    if table.complete or kind == "present":
        kind = "exact" if table.complete else "present"
        return _CurveEstimate(plain, kind, _ols_terms(x, a, ones), _ols_solve)
    w = _size_weights(table, n) * ones
    try:
        terms = _ols_terms(x, a, w)
        line = _as_curve(*_ols_solve(terms.sum(axis=0)[None]), x[keep], a[keep], w[keep], plain, "design-weighted")
        weighted = _CurveEstimate(line, "weighted", terms, _ols_solve)
    except FitRefused:
        return _CurveEstimate(plain, "present", _ols_terms(x, a, ones), _ols_solve)
    if kind == "weighted":
        return weighted
    pred = _effective_images_model(images, table.masks[keep], a[keep], w[keep], weighted.curve, n)
    if pred is None:
        return weighted
    population = images > 0
    X = np.log(images[population].astype(float))
    A = pred[population]
    N, xbar, var_x, abar = X.size, X.mean(), X.var(), A.mean()
    cov = float(np.mean((X - xbar) * (A - abar)))
    e = np.where(keep, a - pred[table.masks], 0.0)
    terms = np.stack([w * e, w * x * e], axis=1)

    def solve(sums):  # GREG: population moments of the model + weighted sums of its residuals
        se, sxe = np.asarray(sums, dtype=float).T
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = (cov + (sxe - xbar * se) / N) / var_x
            return alpha, xbar - (abar + se / N) / alpha

    try:
        curve = _as_curve(*solve(terms.sum(axis=0)[None]), x[keep], a[keep], w[keep], plain, "model-assisted")
    except FitRefused:
        return weighted
    return _CurveEstimate(curve, "model", terms, solve)


def estimate_valuation(game, *, estimator: str = "auto", design: Design | Mapping | None = None,
                       seed: int = 0, bootstrap: int = 200, uncertainty: str = "jackknife",
                       curve: str = "model") -> dict[str, Any]:
    """Estimates of a :class:`~torchreid_shapley.game.Game` (missing coalitions NaN) on both scales.

    The log curve. design.md fits it by OLS over every coalition with images; with some of them
    trained that fit has to be estimated (``curve``), and it matters: ``g = beta exp(v / alpha)``
    turns a small slope error into a large data-scale error.

    * ``model`` (default): a model-assisted (GREG) estimate. The image counts of every coalition
      are known, only the accuracies are sampled; an effective-images model
      ``a(S) ~ alpha' ln(t_0 + sum_{i in S} t_i)`` (eq. 2 with an effective count per train-set)
      is fitted on the points present and predicts every coalition; the OLS moments over all
      coalitions are the model's exact moments plus the design-weighted moments of its residuals
      on the points present. Design-consistent whatever the model; a good model only lowers the
      variance (the benchmark: about 3x lower data-scale error than ``weighted``).
    * ``weighted``: OLS over the points present, each weighted by ``C(n,s) / present(s)`` of its
      size ``s`` (Horvitz-Thompson: unbiased moments; a plan is border-heavy, unweighted it leans
      to the smallest and largest coalitions).
    * ``present``: the plain unweighted fit on the points present (``fit_log_curve``).

    With every coalition present all three are exactly ``fit_log_curve`` on all coalitions. A
    fit that fails falls back model -> weighted -> present; ``curve`` in the result says which
    was used. The values go to the data scale with :func:`~torchreid_shapley.scaling.data_scale`
    and both games are estimated with the same coalitions and the same replicates for the
    standard errors (``uncertainty``, ``bootstrap``, ``seed`` as in :func:`estimate`); the
    data-scale replicates refit the curve with their weights (the model itself held fixed), so
    the curve's sampling error is part of the data-scale standard errors.

    Returns a dict: ``estimator`` (used), ``players``, ``coalitions`` {present, used, total},
    ``fit`` (LogCurve or None), ``fit_error``, ``curve`` (the fit used), ``base``/``full``
    {linear, data}, ``shapley`` and ``stderr`` {linear, data: {player: x} or None; stderr None for
    exact}, ``lom`` {linear, data: {player: x or None}} (None where ``full - i`` is not trained),
    ``per_instance``, ``estimates`` {linear, data: Estimate}, ``design`` (dict or None) and
    ``data_values`` (``(2**n,)`` data-scale values, NaN where untrained, or None).
    """
    if curve not in CURVES:
        raise ShapleyError(f"curve {curve!r} is not one of {list(CURVES)}; use model, weighted or present")
    n = _check_n(game.n)
    values = np.asarray(game.values, dtype=float)
    images = np.asarray(game.images)
    table = _Table(values, n)
    design = _as_design(design, n)
    _require_ends(table)
    name = _resolve(estimator, table, design)
    players = tuple(game.players)
    full = (1 << n) - 1

    fitted: _CurveEstimate | None = None
    fit_error: str | None = None
    g_table: _Table | None = None
    try:
        fitted = _estimate_curve(images, table, curve)
        g_table = table.with_values(data_scale(fitted.curve, table.values))
    except FitRefused as exc:
        fitted, fit_error = None, str(exc)

    if name == "exact":
        lin, dat = _exact(table), (_exact(g_table) if g_table is not None else None)
    elif name == "permutation":
        perms, paired = _permutation_orderings(table, design, seed)
        lin = _permutation_estimate(table, perms, paired)
        dat = _permutation_estimate(g_table, perms, paired) if g_table is not None else None
    else:
        reg = _kernel_regression(table, design)
        reps = _replicates(reg, uncertainty, bootstrap, seed)
        lin = _kernel_estimate(table, reg, reps)
        dat = None
        if g_table is not None:
            dat = _kernel_estimate(g_table, reg, reps, _curve_refit(table, reg, fitted))

    def per_player(x) -> dict[str, float] | None:
        return None if x is None else {p: float(x[i]) for i, p in enumerate(players)}

    def lom(tab: _Table | None):
        if tab is None:
            return None
        top = float(tab.lookup([full])[0])
        minus = tab.lookup([full ^ (1 << i) for i in range(n)])
        return {p: (None if np.isnan(minus[i]) else top - float(minus[i])) for i, p in enumerate(players)}

    data_values = None
    if g_table is not None:
        data_values = np.full(1 << n, np.nan)
        data_values[g_table.masks] = g_table.values
    return {
        "estimator": name,
        "players": list(players),
        "coalitions": {"present": len(table), "used": lin.coalitions_used, "total": 1 << n},
        "fit": fitted.curve if fitted is not None else None,
        "fit_error": fit_error,
        "curve": fitted.kind if fitted is not None else None,
        "base": {"linear": lin.base, "data": None if dat is None else dat.base},
        "full": {"linear": lin.full, "data": None if dat is None else dat.full},
        "shapley": {"linear": per_player(lin.values),
                    "data": per_player(None if dat is None else dat.values)},
        "stderr": {"linear": per_player(lin.stderr),
                   "data": per_player(None if dat is None else dat.stderr)},
        "lom": {"linear": lom(table), "data": lom(g_table)},
        "per_instance": None if dat is None else {p: float(dat.values[i] / game.num_images[p])
                                                  for i, p in enumerate(players)},
        "estimates": {"linear": lin, "data": dat},
        "design": design.to_dict() if design is not None else None,
        "data_values": data_values,
    }


def _curve_refit(table: _Table, reg: _Regression, fitted: _CurveEstimate) -> Callable:
    """``unit_rows -> (Y, C)``: data-scale targets of each replicate, its curve refitted from the
    point fit's sums with the replicate's multipliers (the sums are linear in them)."""
    n = table.n
    full = (1 << n) - 1
    pos = np.searchsorted(table.masks, reg.masks)  # where the regression coalitions sit among present
    v_reg = table.values[pos]
    v0, vf = float(table.lookup([0])[0]), float(table.lookup([full])[0])
    base = fitted.terms.sum(axis=0)
    per_unit = np.zeros((int(reg.unit.max()) + 1 if reg.unit.size else 0, fitted.terms.shape[1]))
    np.add.at(per_unit, reg.unit, fitted.terms[pos])
    point_alpha, point_log_beta = fitted.curve.alpha, float(np.log(fitted.curve.beta))

    def refit(unit_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        alpha, log_beta = fitted.solve(base + (unit_rows - 1.0) @ per_unit)
        bad = ~(np.isfinite(alpha) & (alpha > 0) & np.isfinite(log_beta))
        alpha = np.where(bad, point_alpha, alpha)
        log_beta = np.where(bad, point_log_beta, log_beta)
        with np.errstate(over="ignore"):
            g0 = np.exp(log_beta + v0 / alpha)
            Y = np.exp(log_beta[:, None] + v_reg[None, :] / alpha[:, None]) - g0[:, None]
            C = np.exp(log_beta + vf / alpha) - g0
        return Y, C

    return refit
