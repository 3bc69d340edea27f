"""Built-in plan: every coalition the exact Shapley games need (see :mod:`torchreid_shapley.plan`)."""

from __future__ import annotations

from torchreid_shapley import hookimpl
from torchreid_shapley.plan import build_plan


@hookimpl(trylast=True)
def shapley_build_plan(train_sets, targets, modes, seeds, config):
    return build_plan(train_sets, targets, modes, seeds)
