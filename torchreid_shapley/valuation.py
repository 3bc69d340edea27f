"""From a game to the paper's numbers: Shapley values on both scales, LOM, per-instance, matrix.

``value_game`` gives everything of Tables 4 and 5 for one target; ``target_matrix`` gives Table 3.
A refused log-curve fit is not an error here: the linear-scale values stand, every data-scale
field is ``None`` and the failed ``log_curve_fit`` check says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import FitRefused, ShapleyError
from .game import Game, build_game, check_mode, missing_coalitions_error, players_for, resolve_pool
from .records import RecordSet
from .scaling import LogCurve, data_scale, fit_log_curve
from .shapley import last_one_mile, shapley_values

EFFICIENCY_RTOL = 1e-9


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    level: str = ""  # "" (pass/fail) or "warning"

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class Valuation:
    """Every number of one (target, mode, metric)."""

    target: str
    mode: str
    metric: str
    players: tuple[str, ...]
    num_images: Mapping[str, int]
    estimator: str
    coalitions: int
    fit: LogCurve | None
    fit_error: str | None
    base: Mapping[str, float | None]
    full: Mapping[str, float | None]
    shapley: Mapping[str, Mapping[str, float] | None]
    lom: Mapping[str, Mapping[str, float] | None]
    per_instance: Mapping[str, float] | None
    checks: tuple[Check, ...]
    game: Game = field(repr=False, compare=False)
    data_values: np.ndarray | None = field(default=None, repr=False, compare=False)
    stderr: Mapping[str, Mapping[str, float] | None] | None = None  # None for exact values
    coalitions_total: int = 0
    curve: str | None = None  # how the log curve was fitted ("all" coalitions, or an estimate's)
    design: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    seed_spread: Mapping[str, Any] | None = None  # std over seeds of each seed's own values

    def to_dict(self) -> dict[str, Any]:
        """The JSON of design.md section 4 (full precision)."""
        return {
            "target": self.target,
            "mode": self.mode,
            "metric": self.metric,
            "players": list(self.players),
            "num_images": dict(self.num_images),
            "estimator": self.estimator,
            "coalitions": self.coalitions,
            "coalitions_total": self.coalitions_total or self.coalitions,
            "fit": self.fit.to_dict() if self.fit else None,
            "base": dict(self.base),
            "full": dict(self.full),
            "shapley": {k: (dict(v) if v is not None else None) for k, v in self.shapley.items()},
            "lom": {k: (dict(v) if v is not None else None) for k, v in self.lom.items()},
            "per_instance": dict(self.per_instance) if self.per_instance is not None else None,
            "stderr": (None if self.stderr is None else
                       {k: (dict(v) if v is not None else None) for k, v in self.stderr.items()}),
            "checks": [c.to_dict() for c in self.checks],
            "seed_spread": None if self.seed_spread is None else dict(self.seed_spread),
        }

    @property
    def warnings(self) -> list[str]:
        return [f"target {self.target!r} (mode {self.mode}): {c.detail}"
                for c in self.checks if c.name == "log_curve_fit" and not c.passed]


def _efficiency(name: str, phi: np.ndarray, base: float, full: float, unit: str) -> Check:
    total = float(np.sum(phi))
    expected = full - base
    gap = abs(total - expected)
    ok = gap <= EFFICIENCY_RTOL * max(1.0, abs(full), abs(base))
    return Check(name, ok, f"sum of values {total:.6g} {unit} vs full - base {expected:.6g} {unit} "
                           f"(gap {gap:.2g})")


def value_game(game: Game, *, estimator: str = "exact") -> Valuation:
    """Exact values of a complete game on both scales."""
    if np.isnan(game.values).any():
        raise ShapleyError("value_game needs every coalition; build the game without allow_missing")
    players = game.players
    v = game.values
    full_mask = game.full
    phi = shapley_values(v)
    lom_lin = last_one_mile(v)
    checks = [_efficiency("efficiency_linear", phi, float(v[0]), float(v[full_mask]), game.metric)]
    fit: LogCurve | None = None
    fit_error: str | None = None
    g = psi = lom_data = None
    try:
        fit = fit_log_curve(game.images, v)
        g = data_scale(fit, v)
    except FitRefused as exc:
        fit, fit_error = None, str(exc)
    if g is not None:
        psi = shapley_values(g)
        lom_data = last_one_mile(g)
        checks.append(Check("log_curve_fit", True,
                            f"{fit.equation(game.metric)}, R^2 = {fit.r2:.4f} over {fit.points} coalitions "
                            f"of {fit.min_images}..{fit.max_images} images"))
        checks.append(_efficiency("efficiency_data", psi, float(g[0]), float(g[full_mask]), "images"))
    else:
        checks.append(Check("log_curve_fit", False, f"log curve refused: {fit_error}"))
    checks.insert(0, Check("coalitions_complete", True,
                           f"{v.size} of {v.size} coalitions have a successful record"))

    def per_player(x: np.ndarray | None) -> dict[str, float] | None:
        return None if x is None else {p: float(x[i]) for i, p in enumerate(players)}

    return Valuation(
        target=game.target, mode=game.mode, metric=game.metric, players=players,
        num_images=dict(game.num_images), estimator=estimator, coalitions=int(v.size),
        fit=fit, fit_error=fit_error,
        base={"linear": float(v[0]), "data": None if g is None else float(g[0])},
        full={"linear": float(v[full_mask]), "data": None if g is None else float(g[full_mask])},
        shapley={"linear": per_player(phi), "data": per_player(psi)},
        lom={"linear": per_player(lom_lin), "data": per_player(lom_data)},
        per_instance=None if psi is None else {p: float(psi[i] / game.num_images[p])
                                               for i, p in enumerate(players)},
        checks=tuple(checks), game=game, data_values=g, coalitions_total=int(v.size), curve="all",
    )


ESTIMATORS = ("auto", "exact", "kernel", "permutation")


def estimate_game(game: Game, *, estimator: str = "kernel", design: Mapping[str, Any] | None = None,
                  seed: int = 0, curve: str = "model") -> Valuation:
    """Estimated values of a game with untrained coalitions (NaN), with standard errors."""
    from .estimators import estimate_valuation

    est = estimate_valuation(game, estimator=estimator, design=design, seed=seed, curve=curve)
    name = est["estimator"]
    total = 1 << game.n
    present = int(est["coalitions"]["present"])
    lin, dat = est["shapley"]["linear"], est["shapley"]["data"]
    checks = [Check("coalitions_complete", True,
                    f"{present} of {total} coalitions trained ({100 * present / total:.0f}%): {name} estimate, "
                    f"{est['coalitions']['used']} coalitions used" if present < total else
                    f"{total} of {total} coalitions have a successful record")]
    checks.append(_efficiency("efficiency_linear", np.array(list(lin.values())), est["base"]["linear"],
                              est["full"]["linear"], game.metric))
    fit: LogCurve | None = est["fit"]
    if fit is not None and dat is not None:
        checks.append(Check("log_curve_fit", True,
                            f"{fit.equation(game.metric)}, R^2 = {fit.r2:.4f} ({est['curve']} fit on {present} "
                            f"of {total} coalitions; images {fit.min_images}..{fit.max_images})"))
        checks.append(_efficiency("efficiency_data", np.array(list(dat.values())), est["base"]["data"],
                                  est["full"]["data"], "images"))
    else:
        checks.append(Check("log_curve_fit", False, f"log curve refused: {est['fit_error']}"))
    return Valuation(
        target=game.target, mode=game.mode, metric=game.metric, players=game.players,
        num_images=dict(game.num_images), estimator=name, coalitions=present, fit=fit,
        fit_error=est["fit_error"], base=est["base"], full=est["full"], shapley=est["shapley"],
        lom=est["lom"], per_instance=est["per_instance"], checks=tuple(checks), game=game,
        data_values=est["data_values"], stderr=est["stderr"] if name != "exact" else None,
        coalitions_total=total, curve=est["curve"], design=est["design"],
    )


def value(records: RecordSet, *, target: str, mode: str = "without", metric: str = "mAP",
          train_sets: Sequence[str] | None = None, estimator: str = "auto",
          design: Mapping[str, Any] | None = None, seed: int = 0, curve: str = "model") -> Valuation:
    """Values of ``target`` from records (see :func:`valuate` for how ``estimator`` decides)."""
    if estimator not in ESTIMATORS:
        raise ShapleyError(f"estimator {estimator!r} is not one of {list(ESTIMATORS)}; use --estimator auto, "
                           "exact, kernel or permutation")
    game = build_game(records, target=target, mode=mode, metric=metric, train_sets=train_sets,
                      allow_missing=True)
    val = valuate(game, estimator=estimator, design=design, seed=seed, curve=curve)
    spread = seed_spread(records, target=target, mode=mode, metric=metric, train_sets=train_sets,
                         estimator=estimator, design=design, curve=curve)
    return replace(val, seed_spread=spread) if spread is not None else val


def seed_spread(records: RecordSet, *, target: str, mode: str, metric: str,
                train_sets: Sequence[str] | None, estimator: str, design: Mapping[str, Any] | None,
                curve: str) -> dict | None:
    """With several seeds: each seed's values on its own, and their standard deviation per train-set.

    The values themselves average the runs over seeds; this spread says how much one training seed
    moves them. Seeds whose runs do not form a usable game are left out.
    """
    seeds = records.seeds()
    if len(seeds) < 2:
        return None
    per_seed: dict[int, Valuation] = {}
    for s in seeds:
        subset = RecordSet(records=tuple(r for r in records.records if r.seed == s), path=records.path)
        try:
            game = build_game(subset, target=target, mode=mode, metric=metric, train_sets=train_sets,
                              allow_missing=True)
            per_seed[s] = valuate(game, estimator=estimator, design=design, curve=curve)
        except ShapleyError:
            continue
    if len(per_seed) < 2:
        return None
    out: dict[str, Any] = {"seeds": sorted(per_seed)}
    for scale in ("linear", "data"):
        tables = [v.shapley[scale] for v in per_seed.values()]
        if any(t is None for t in tables):
            out[scale] = None
            continue
        out[scale] = {p: float(np.std([t[p] for t in tables], ddof=1)) for p in tables[0]}
    return out


def valuate(game: Game, *, estimator: str = "auto", design: Mapping[str, Any] | None = None,
            seed: int = 0, curve: str = "model") -> Valuation:
    """Exact values or an estimate of a game whose untrained coalitions are NaN.

    ``exact`` needs every coalition (a missing one is named in the error). ``auto`` is exact when
    every coalition is present; with coalitions missing it estimates when the study was planned
    with a budget (``design`` given), and otherwise refuses, naming the missing trainings: a
    crashed training in an exact study should be noticed, not papered over. ``kernel`` and
    ``permutation`` estimate from whatever coalitions are present.
    """
    if design is not None and list(design.get("players") or game.players) != list(game.players):
        design = None  # planned for other players (e.g. --train-sets restricts them): use what is present
    complete = not np.isnan(game.values).any()
    if complete and estimator in ("auto", "exact"):
        return value_game(game)
    if estimator == "exact" or (estimator == "auto" and design is None):
        raise missing_coalitions_error(game)
    return estimate_game(game, estimator=estimator, design=design, seed=seed, curve=curve)


# -- the target matrix (paper Table 3) ----------------------------------------------------------
@dataclass(frozen=True)
class TargetMatrix:
    mode: str
    metric: str
    train_sets: tuple[str, ...]
    targets: tuple[str, ...]
    valuations: Mapping[str, Valuation]
    skipped: Mapping[str, str]  # target -> why it has no column

    def cell(self, train_set: str, target: str, scale: str = "data") -> float | None:
        val = self.valuations[target]
        values = val.shapley[scale]
        if values is None:
            return None
        return values.get(train_set, 0.0)  # the target's own train-set is not a player: 0

    def rows(self, scale: str = "data") -> dict[str, dict[str, float | None]]:
        return {t: {j: self.cell(t, j, scale) for j in self.targets} for t in self.train_sets}

    def base(self, scale: str = "data") -> dict[str, float | None]:
        return {j: self.valuations[j].base[scale] for j in self.targets}

    def row_sums(self, scale: str = "data") -> dict[str, float | None]:
        out = {}
        for t, row in self.rows(scale).items():
            cells = [x for x in row.values() if x is not None]
            out[t] = float(sum(cells)) if cells else None
        return out

    def column_sums(self, scale: str = "data") -> dict[str, float | None]:
        out = {}
        for j in self.targets:
            col = [self.cell(t, j, scale) for t in self.train_sets]
            base = self.valuations[j].base[scale]
            out[j] = None if base is None else float(sum(col) + base)
        return out

    @property
    def warnings(self) -> list[str]:
        return [w for v in self.valuations.values() for w in v.warnings]

    def to_dict(self) -> dict[str, Any]:
        def scale_block(scale: str) -> dict:
            return {"cells": self.rows(scale), "base": self.base(scale),
                    "row_sums": self.row_sums(scale), "column_sums": self.column_sums(scale)}

        return {
            "mode": self.mode,
            "metric": self.metric,
            "train_sets": list(self.train_sets),
            "targets": list(self.targets),
            "data": scale_block("data"),
            "linear": scale_block("linear"),
            "full": {j: dict(self.valuations[j].full) for j in self.targets},
            "fits": {j: (self.valuations[j].fit.to_dict() if self.valuations[j].fit else None)
                     for j in self.targets},
            "skipped": dict(self.skipped),
            "checks": {j: [c.to_dict() for c in self.valuations[j].checks] for j in self.targets},
        }


def target_matrix(records: RecordSet, *, mode: str = "without", metric: str = "mAP",
                  train_sets: Sequence[str] | None = None,
                  targets: Sequence[str] | None = None, estimator: str = "auto",
                  designs: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
                  curve: str = "model") -> TargetMatrix:
    """Data-scale Shapley values of every train-set (rows) for every target (columns)."""
    check_mode(mode)
    pool = resolve_pool(records, train_sets)
    chosen = list(targets) if targets is not None else records.targets()
    if not chosen:
        raise ShapleyError(f"{records.path} has no target with a successful record; nothing to value")
    valuations: dict[str, Valuation] = {}
    skipped: dict[str, str] = {}
    for target in chosen:
        if mode == "with" and target not in pool and targets is None:
            skipped[target] = "no train-set of its own, so no mode-with game"
            continue
        players_for(pool, target, mode)  # raises for an explicitly requested impossible column
        valuations[target] = value(records, target=target, mode=mode, metric=metric, train_sets=list(pool),
                                   estimator=estimator, design=(designs or {}).get(f"{target}|{mode}"),
                                   seed=seed, curve=curve)
    if not valuations:
        raise ShapleyError(f"no target can be valued in mode {mode}: {dict(skipped)}; "
                           "use --mode without")
    return TargetMatrix(mode=mode, metric=metric, train_sets=tuple(pool), targets=tuple(valuations),
                        valuations=valuations, skipped=skipped)
