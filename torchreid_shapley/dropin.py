"""The drop-in for an existing torchreid repo: ``--shapley`` in its own main script.

Two or three lines in a deep-person-reid style ``scripts/main.py``::

    from torchreid_shapley import add_shapley_arguments, run_shapley
    add_shapley_arguments(parser)                      # after the repo's own arguments
    if args.shapley:                                   # after the repo built its cfg
        sys.exit(run_shapley(cfg, args, plugins=[sys.modules[__name__]]))

The repo keeps its own builders: any ``shapley_build_datamanager`` / ``shapley_build_model`` /
``shapley_build_engine`` (or a whole ``shapley_train_coalition``) it implements in the modules it
passes as ``plugins`` overrides the built-in torchreid ones.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping, Sequence

from .config import default_config, load_config, to_dict
from .errors import ShapleyError


def add_shapley_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--shapley`` and its study options to a repo's own argument parser."""
    group = parser.add_argument_group("data contribution study (torchreid-shapley)")
    group.add_argument("--shapley", action="store_true",
                       help="instead of one training, train every subset of the sources and value each dataset")
    group.add_argument("--shapley-out", default="shapley-study", metavar="DIR",
                       help="study directory (created, or resumed; default: shapley-study)")
    group.add_argument("--shapley-mode", choices=("without", "with", "both"), default="both",
                       help="games to plan for (default: both)")
    group.add_argument("--shapley-seeds", nargs="+", type=int, default=[1], metavar="K",
                       help="one training per coalition and seed (default: 1)")
    group.add_argument("--shapley-workers", type=int, default=1, metavar="K",
                       help="local worker processes (default: 1)")
    group.add_argument("--shapley-devices", nargs="+", default=None, metavar="ID",
                       help="GPU ids for the workers (default: CPU unless use_gpu)")
    group.add_argument("--shapley-schedule", choices=("epochs", "iterations"), default=None,
                       help="epochs (the paper) or iterations (equal optimizer steps per coalition)")
    group.add_argument("--shapley-max-attempts", type=int, default=3, metavar="N")
    return parser


def _merge(base: dict, override: Mapping[str, Any]) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = to_dict(value) if isinstance(value, Mapping) else value
    return out


def study_config_from(cfg: Any) -> dict:
    """The repo's config (a yacs CfgNode or dict with torchreid keys) over our defaults."""
    return _merge(to_dict(default_config()), to_dict(cfg) if cfg is not None else {})


def run_shapley(cfg: Any, args: argparse.Namespace | None = None, *, plugins: Sequence[Any] = (),
                out: str | None = None, sources: Sequence[str] | None = None,
                targets: Sequence[str] | None = None, mode: str | None = None,
                seeds: Sequence[int] | None = None, workers: int | None = None,
                devices: Sequence[str] | None = None, schedule: str | None = None,
                report: bool = True) -> int:
    """Run a whole study from a repo's config; returns an exit status (0 ok, 2 bad input).

    Keyword arguments override the ``--shapley-*`` options of ``args``. ``plugins`` are modules or
    objects with hook implementations (the repo's own builders); with more than one worker they
    must be importable modules.
    """
    from .cli import print_study_end
    from .manager import get_plugin_manager
    from .runner import prepare_study, run_study

    def pick(value, name, default):
        if value is not None:
            return value
        return getattr(args, name, default) if args is not None else default

    try:
        config = study_config_from(cfg)
        schedule = pick(schedule, "shapley_schedule", None)
        if schedule:
            config = to_dict(load_config(base=_as_cfgnode(config), schedule=schedule))
        sources = list(sources or config["data"]["sources"])
        targets = list(targets or config["data"]["targets"])
        module_names = [p for p in plugins if isinstance(p, str)]
        pm = get_plugin_manager(module_names)
        for plugin in plugins:
            if not isinstance(plugin, str) and not pm.is_registered(plugin):
                pm.register(plugin)
        n_workers = int(pick(workers, "shapley_workers", 1))
        picked = [getattr(p, "__name__", None) for p in plugins if not isinstance(p, str)]
        if n_workers > 1:
            bad = [p for p in picked if not p or p == "__main__"]
            if bad:
                raise ShapleyError("with more than one worker, plugins must be importable modules (workers are "
                                   "new processes); pass module names, or use --shapley-workers 1")
        study_dir = pick(out, "shapley_out", "shapley-study")
        spec, pm, manifest = prepare_study(out=study_dir, train_sets=sources, targets=targets,
                                           modes=pick(mode, "shapley_mode", "both"),
                                           seeds=list(pick(seeds, "shapley_seeds", [1])), config=config,
                                           plugins=module_names + [p for p in picked if p and p != "__main__"],
                                           pm=pm, max_attempts=int(pick(None, "shapley_max_attempts", 3)))
        summary = run_study(spec, workers=n_workers, devices=pick(devices, "shapley_devices", None), pm=pm)
        print_study_end(spec, summary, pm=pm, report=report)
        return 130 if summary.interrupted else 0
    except ShapleyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status


def _as_cfgnode(config: Mapping[str, Any]):
    from yacs.config import CfgNode

    node = CfgNode(dict(config))
    return node
