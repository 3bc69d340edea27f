"""The plan of a study: the distinct trainings that its Shapley games need.

For target ``j`` in mode ``without`` the game needs a run on every subset of the train-sets other
than ``j``; in mode ``with`` a run on every such subset plus ``j``. A run serves every target (each
training is evaluated on all of them), so the plan is the union over targets and modes: 5 train-sets
that are also the 5 targets, both modes, need 2^5 = 32 trainings per seed, not 5 x 2 x 16.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import ConfigError

MODE_CHOICES = ("without", "with", "both")
EXACT_LIMIT = 24  # train-sets beyond which an exact plan (2**n trainings) is refused


@dataclass(frozen=True, order=True)
class PlannedRun:
    """One training: a coalition of train-sets (sorted) and a seed."""

    train_sets: tuple[str, ...]
    seed: int

    @property
    def key(self) -> str:
        """File-name key: a hash of the coalition (never raw dataset names) and the seed."""
        return f"{coalition_hash(self.train_sets)}-s{self.seed}"

    @property
    def label(self) -> str:
        return "+".join(self.train_sets) if self.train_sets else "(untrained)"

    def to_dict(self) -> dict:
        return {"train_sets": list(self.train_sets), "seed": self.seed}


def coalition_hash(train_sets: Sequence[str]) -> str:
    canonical = json.dumps(sorted(train_sets), separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def expand_modes(modes: Sequence[str] | str) -> tuple[str, ...]:
    modes = [modes] if isinstance(modes, str) else list(modes)
    out = []
    for mode in modes:
        if mode not in MODE_CHOICES:
            raise ConfigError(f"mode {mode!r} is not one of {list(MODE_CHOICES)}; use --mode without, with or both")
        for m in (("without", "with") if mode == "both" else (mode,)):
            if m not in out:
                out.append(m)
    return tuple(out)


def needed_masks(train_sets: Sequence[str], targets: Sequence[str], modes: Sequence[str]) -> np.ndarray:
    """Boolean array over bitmasks of ``train_sets`` (sorted): which coalitions are needed."""
    names = list(train_sets)
    n = len(names)
    masks = np.arange(1 << n)
    need = np.zeros(1 << n, dtype=bool)
    explicit_with = list(modes) == ["with"]
    for target in targets:
        bit = 1 << names.index(target) if target in names else 0
        for mode in modes:
            if mode == "without":
                need |= (masks & bit) == 0
            elif bit:
                need |= (masks & bit) != 0
            elif explicit_with:
                raise ConfigError(f"--mode with needs target {target!r} to be a train-set too, but the "
                                  f"train-sets are {names}; use --mode without or --mode both")
    return need


def _validate(train_sets: Sequence[str], targets: Sequence[str], seeds: Sequence[int]) -> list[str]:
    names = sorted(train_sets)
    if len(set(names)) != len(names):
        raise ConfigError(f"train-sets {list(train_sets)} name a dataset twice; give each once")
    if not names:
        raise ConfigError("a study needs at least one train-set; give them with -s/--sources")
    if not targets:
        raise ConfigError("a study needs at least one target; give them with -t/--targets")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {list(seeds)} must be distinct integers, at least one")
    return names


def build_plan(train_sets: Sequence[str], targets: Sequence[str], modes: Sequence[str] | str = "both",
               seeds: Sequence[int] = (1,)) -> list[PlannedRun]:
    """Every distinct training of the study, largest coalitions first, each seed."""
    names = _validate(train_sets, targets, seeds)
    if len(names) > EXACT_LIMIT:
        raise ConfigError(f"{len(names)} train-sets need 2**{len(names)} trainings per seed; restrict the "
                          "train-sets or give a --budget of trainings")
    need = needed_masks(names, list(dict.fromkeys(targets)), expand_modes(modes))
    chosen = np.flatnonzero(need)
    coalitions = [tuple(names[i] for i in range(len(names)) if m >> i & 1) for m in chosen.tolist()]
    coalitions.sort(key=lambda c: (-len(c), c))
    return [PlannedRun(c, int(seed)) for c in coalitions for seed in seeds]


# -- budgeted plans (fewer than 2**n trainings) ---------------------------------------------------
SAMPLERS = ("kernel", "permutation")


def games_of(train_sets: Sequence[str], targets: Sequence[str], modes: Sequence[str]) -> list[tuple[str, str]]:
    """The (target, mode) games a study values; mode ``with`` only for targets that are train-sets."""
    return [(t, m) for t in dict.fromkeys(targets) for m in modes if m == "without" or t in train_sets]


def game_players(train_sets: Sequence[str], target: str) -> list[str]:
    return sorted(t for t in train_sets if t != target)


def _run_of(players: Sequence[str], mask: int, target: str, mode: str) -> tuple[str, ...]:
    members = [p for i, p in enumerate(players) if mask >> i & 1]
    if mode == "with":
        members.append(target)
    return tuple(sorted(members))


def build_budget_plan(train_sets: Sequence[str], targets: Sequence[str], modes: Sequence[str] | str,
                      seeds: Sequence[int], *, budget: int, sampler: str = "kernel",
                      sample_seed: int = 0) -> tuple[list[PlannedRun], dict[str, dict]]:
    """At most ``budget`` distinct trainings per seed, and the sampling design of every game.

    Each (target, mode) game has its own players (the train-sets minus the target), so each gets
    its own nested sampling stream (:mod:`torchreid_shapley.sampling`); the games take turns
    adding one complementary pair of their stream to the plan until it holds ``budget`` distinct
    trainings. The empty and full coalition of every game come first. Everything is a prefix of
    one deterministic order, so raising the budget later keeps every training already planned.
    Returns the plan (largest coalitions first) and ``{"target|mode": design dict}``.
    """
    from .sampling import SAMPLERS as _known, kernel_plan, permutation_plan, plan_design

    if sampler not in _known:
        raise ConfigError(f"sampler {sampler!r} is not one of {list(_known)}; use --sampler kernel or permutation")
    names = _validate(train_sets, targets, seeds)
    needed = (int(needed_masks(names, list(dict.fromkeys(targets)), expand_modes(modes)).sum())
              if len(names) <= EXACT_LIMIT else budget)
    if budget < 2:
        raise ConfigError(f"--budget {budget} is too small: every game needs its empty and full coalition; "
                          "give at least 2 (better 2 N + 2 for N train-sets)")
    games = games_of(names, targets, expand_modes(modes))
    streams = []
    for target, mode in games:
        players = game_players(names, target)
        n = len(players)
        length = min(budget, 1 << n)
        if sampler == "kernel":
            masks = kernel_plan(n, length, seed=sample_seed)
        else:
            masks = permutation_plan(n, length, seed=sample_seed)[0]
        streams.append([_run_of(players, int(m), target, mode) for m in masks])
    chosen: dict[tuple[str, ...], None] = {}
    used = [0] * len(games)
    target_size = min(budget, needed)
    while len(chosen) < target_size:
        progressed = False
        for g, stream in enumerate(streams):
            for _ in range(2):  # one complementary pair per turn
                if used[g] < len(stream) and len(chosen) < target_size:
                    chosen.setdefault(stream[used[g]])
                    used[g] += 1
                    progressed = True
        if not progressed:
            break
    designs = {}
    for (target, mode), count in zip(games, used):
        players = game_players(names, target)
        designs[f"{target}|{mode}"] = plan_design(sampler, len(players), count, seed=sample_seed,
                                                  players=players).to_dict()
    coalitions = sorted(chosen, key=lambda c: (-len(c), c))
    return [PlannedRun(c, int(seed)) for c in coalitions for seed in seeds], designs
