"""torchreid-shapley: how much each training dataset is worth to a ReID target, in images.

Public API::

    from torchreid_shapley import load_records, value, target_matrix, hookimpl
    from torchreid_shapley import add_shapley_arguments, run_shapley   # the --shapley drop-in
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

PROJECT = "torchreid_shapley"

#: Marker for hook implementations: ``@torchreid_shapley.hookimpl``.
hookimpl = pluggy.HookimplMarker(PROJECT)

from .dropin import add_shapley_arguments, run_shapley  # noqa: E402
from .errors import ShapleyError  # noqa: E402
from .game import Game, build_game  # noqa: E402
from .records import RecordSet, load_records, record_set  # noqa: E402
from .scaling import LogCurve, fit_log_curve  # noqa: E402
from .shapley import shapley_values  # noqa: E402
from .valuation import TargetMatrix, Valuation, target_matrix, value, value_game  # noqa: E402

__all__ = [
    "__version__", "hookimpl", "add_shapley_arguments", "run_shapley", "ShapleyError", "Game", "build_game", "RecordSet", "load_records",
    "record_set", "LogCurve", "fit_log_curve", "shapley_values", "TargetMatrix", "Valuation",
    "target_matrix", "value", "value_game",
]
