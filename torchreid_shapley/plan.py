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


def build_plan(train_sets: Sequence[str], targets: Sequence[str], modes: Sequence[str] | str = "both",
               seeds: Sequence[int] = (1,)) -> list[PlannedRun]:
    """Every distinct training of the study, largest coalitions first, each seed."""
    names = sorted(train_sets)
    if len(set(names)) != len(names):
        raise ConfigError(f"train-sets {list(train_sets)} name a dataset twice; give each once")
    if not names:
        raise ConfigError("a study needs at least one train-set; give them with -s/--sources")
    if not targets:
        raise ConfigError("a study needs at least one target; give them with -t/--targets")
    if len(names) > 24:
        raise ConfigError(f"{len(names)} train-sets need 2**{len(names)} trainings per seed; restrict the "
                          "train-sets or use a budget")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {list(seeds)} must be distinct integers, at least one")
    need = needed_masks(names, list(dict.fromkeys(targets)), expand_modes(modes))
    chosen = np.flatnonzero(need)
    coalitions = [tuple(names[i] for i in range(len(names)) if m >> i & 1) for m in chosen.tolist()]
    coalitions.sort(key=lambda c: (-len(c), c))
    return [PlannedRun(c, int(seed)) for c in coalitions for seed in seeds]
