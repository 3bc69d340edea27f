"""The game of one (target, mode, metric): who plays, and the value of every coalition.

Mode ``without`` (design.md section 2): players are the train-sets minus the target; ``v(S)`` is
the metric of the run trained on ``S``. Mode ``with``: the same players, ``v(S)`` is the metric of
the run trained on ``S`` plus the target's own train-set (the source-set is always in).
Coalitions are bitmasks over the sorted players.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .errors import MissingCoalitionError, RecordsError, ShapleyError
from .records import RecordSet

MODES = ("without", "with")
SHOW_MISSING = 5


@dataclass(frozen=True)
class Game:
    """Coalition values of one target; ``values[mask]`` and ``images[mask]`` per coalition."""

    target: str
    mode: str
    metric: str
    players: tuple[str, ...]
    num_images: Mapping[str, int]
    values: np.ndarray        # v(S), shape (2**n,)
    images: np.ndarray        # s(S) = train images of the run behind S, shape (2**n,)
    runs: np.ndarray          # ok runs averaged into v(S), shape (2**n,)

    @property
    def n(self) -> int:
        return len(self.players)

    @property
    def full(self) -> int:
        return (1 << self.n) - 1

    def members(self, mask: int) -> tuple[str, ...]:
        return tuple(p for i, p in enumerate(self.players) if mask >> i & 1)

    def run_of(self, mask: int) -> tuple[str, ...]:
        """The train-sets of the run behind coalition ``mask`` (adds the target in mode with)."""
        members = self.members(mask)
        return tuple(sorted(members + (self.target,))) if self.mode == "with" else members


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ShapleyError(f"mode {mode!r} is not one of {list(MODES)}; use --mode without or --mode with")
    return mode


def resolve_pool(records: RecordSet, train_sets: Sequence[str] | None) -> dict[str, int]:
    """The train-sets in play with their image counts (all of them unless restricted)."""
    counts = records.num_images()
    if train_sets is None:
        return counts
    unknown = [t for t in train_sets if t not in counts]
    if unknown:
        raise ShapleyError(f"train-set(s) {unknown} appear in no record; the records have "
                           f"{list(counts)}: pick --train-sets among those")
    if len(set(train_sets)) != len(train_sets):
        raise ShapleyError(f"--train-sets lists a name twice: {list(train_sets)}; give each once")
    return {t: counts[t] for t in sorted(train_sets)}


def check_target_metric(records: RecordSet, target: str, metric: str) -> None:
    targets = records.targets()
    if target not in targets:
        raise ShapleyError(f"target {target!r} is in no record; the records evaluate {targets}: "
                           "pick --target among those")
    metrics = records.metric_names(target)
    if metric not in metrics:
        raise ShapleyError(f"metric {metric!r} is not recorded for target {target!r}; recorded metrics: "
                           f"{metrics}: pick --metric among those")


def players_for(pool: Mapping[str, int], target: str, mode: str) -> tuple[str, ...]:
    check_mode(mode)
    if mode == "with" and target not in pool:
        raise ShapleyError(
            f"--mode with needs target {target!r} to be a train-set too (its source-set is always in), but "
            f"the train-sets are {list(pool)}; use --mode without for this target")
    return tuple(sorted(t for t in pool if t != target))


def format_coalition(train_sets: Sequence[str]) -> str:
    return "+".join(train_sets) if train_sets else "(empty)"


def build_game(records: RecordSet, *, target: str, mode: str = "without", metric: str = "mAP",
               train_sets: Sequence[str] | None = None, allow_missing: bool = False) -> Game:
    """The game of ``target`` in ``mode`` on ``metric``; every coalition must have a record.

    With ``allow_missing`` the missing coalitions hold NaN instead of raising (estimators and
    reports use that); otherwise :class:`MissingCoalitionError` names them.
    """
    check_mode(mode)
    pool = resolve_pool(records, train_sets)
    check_target_metric(records, target, metric)
    players = players_for(pool, target, mode)
    n = len(players)
    if n > 30:
        raise ShapleyError(f"{n} players need 2**{n} coalitions: too many for exact values; "
                           "restrict --train-sets")
    index = {p: i for i, p in enumerate(players)}
    size = 1 << n
    values = np.full(size, np.nan)
    runs = np.zeros(size, dtype=np.int64)
    for key, result in records.coalitions().items():
        members = [t for t in key if not (mode == "with" and t == target)]
        if mode == "with" and target not in key:
            continue
        if any(t not in index for t in members):
            continue  # a run outside this game (another mode, or a restricted pool)
        per_metric = result.metrics.get(target)
        if per_metric is None or metric not in per_metric:
            continue
        mask = 0
        for t in members:
            mask |= 1 << index[t]
        values[mask] = per_metric[metric]
        runs[mask] = result.runs
    image_of_player = np.array([pool[p] for p in players], dtype=np.int64)
    images = np.zeros(size, dtype=np.int64)
    for i in range(n):  # images[mask] = sum of the members' counts, built by doubling
        images[1 << i: 1 << (i + 1)] = images[: 1 << i] + image_of_player[i]
    if mode == "with":
        images = images + pool[target]
    game = Game(target=target, mode=mode, metric=metric, players=players,
                num_images={p: pool[p] for p in players}, values=values, images=images, runs=runs)
    if not allow_missing and np.isnan(values).any():
        raise missing_coalitions_error(game)
    return game


def missing_coalitions_error(game: Game) -> MissingCoalitionError:
    """Name the trainings a complete game lacks: the first few and the count."""
    missing = np.flatnonzero(np.isnan(game.values))
    size = game.values.size
    shown = [format_coalition(game.run_of(int(m))) for m in missing[:SHOW_MISSING]]
    more = f" and {missing.size - SHOW_MISSING} more" if missing.size > SHOW_MISSING else ""
    return MissingCoalitionError(
        f"{missing.size} of {size} trainings needed for target {game.target!r} (mode {game.mode}, metric "
        f"{game.metric}) have no successful record: {', '.join(shown)}{more}; train them (torchreid-shapley "
        "run resumes a study), restrict --train-sets, or estimate from the trainings present with "
        "--estimator kernel",
        missing=[game.run_of(int(m)) for m in missing])


def require_records(records: RecordSet) -> RecordSet:
    if not records.ok_records:
        raise RecordsError(f"{records.path} has no successful (status ok) record; nothing to value")
    return records
