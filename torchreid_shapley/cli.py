"""The ``torchreid-shapley`` command line (design.md section 4).

Exit 0 on success, 2 on bad input with one ``error:`` line on stderr, 1 only for a bug.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from .errors import ShapleyError
from .records import load_records
from .tables import matrix_table, valuation_table


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad usage as one ``error:`` line (exit 2), no usage dump."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise ShapleyError(f"{message} (see: {self.prog} --help)")


def emit_warnings(lines: Sequence[str]) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)


def dump_json(obj) -> str:
    return json.dumps(obj, indent=2, allow_nan=False)


# -- value / matrix -----------------------------------------------------------------------------
def add_records_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("records", help="a JSONL file of run records or a study directory")
    parser.add_argument("--metric", default="mAP", help="metric to value (default: mAP; e.g. rank1)")
    parser.add_argument("--train-sets", nargs="+", metavar="NAME", default=None,
                        help="restrict the players to these train-sets (default: every train-set)")
    parser.add_argument("--format", choices=("json", "text", "md"), default="text",
                        help="output format (default: text)")
    add_estimator_arguments(parser)


def add_estimator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--estimator", choices=("auto", "exact", "kernel", "permutation"), default="auto",
                        help="auto (default): exact when every coalition is trained, the kernel estimate for a "
                             "budgeted study; kernel/permutation: estimate from the coalitions present")
    parser.add_argument("--curve", choices=("model", "weighted", "present"), default="model",
                        help="how an estimate fits the log curve from a sample of coalitions (default: model)")


def cmd_value(args: argparse.Namespace) -> int:
    from .valuation import value

    from .store import read_design

    records = load_records(args.records)
    emit_warnings(records.warnings())
    games = (read_design(args.records) or {}).get("games", {})
    val = value(records, target=args.target, mode=args.mode, metric=args.metric, train_sets=args.train_sets,
                estimator=args.estimator, design=games.get(f"{args.target}|{args.mode}"), curve=args.curve)
    emit_warnings(val.warnings)
    print(dump_json(val.to_dict()) if args.format == "json" else valuation_table(val, args.format))
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    from .valuation import target_matrix

    from .store import read_design

    records = load_records(args.records)
    emit_warnings(records.warnings())
    matrix = target_matrix(records, mode=args.mode, metric=args.metric, train_sets=args.train_sets,
                           targets=args.targets, estimator=args.estimator, curve=args.curve,
                           designs=(read_design(args.records) or {}).get("games"))
    emit_warnings(matrix.warnings)
    if args.format == "json":
        print(dump_json(matrix.to_dict()))
    else:
        print(matrix_table(matrix, args.format, scale=args.scale))
    return 0


# -- plan / run / plugins ------------------------------------------------------------------------
def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """deep-person-reid scripts/main.py's arguments plus the study's."""
    parser.add_argument("--config-file", default="", help="a torchreid YAML config (loads unchanged)")
    parser.add_argument("-s", "--sources", nargs="+", metavar="NAME",
                        help="train-sets (the players); default: data.sources of the config")
    parser.add_argument("-t", "--targets", nargs="+", metavar="NAME",
                        help="targets (test-sets); default: data.targets of the config")
    parser.add_argument("--transforms", nargs="+", metavar="NAME", help="data augmentation")
    parser.add_argument("--root", default="", help="root of the datasets (data.root)")
    parser.add_argument("--mode", choices=("without", "with", "both"), default="both",
                        help="games to plan for: without, with or both (default)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1], metavar="K",
                        help="a training per coalition and seed; repeated runs are averaged (default: 1)")
    parser.add_argument("--schedule", choices=("epochs", "iterations"), default=None,
                        help="epochs: every coalition trains train.max_epoch epochs (the paper); "
                             "iterations: every coalition gets the same number of optimizer steps")
    parser.add_argument("--budget", type=int, default=None, metavar="K",
                        help="train K distinct coalitions per seed instead of all 2^N (paired kernel sampling)")
    parser.add_argument("--sampler", choices=("kernel", "permutation"), default="kernel",
                        help="how a --budget picks coalitions: kernel (default) or permutation (the baseline)")
    parser.add_argument("--sample-seed", type=int, default=0, metavar="S",
                        help="seed of the coalition sampling of a --budget plan (default: 0)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="trailing KEY VALUE pairs overriding the config (e.g. train.max_epoch 2)")


def _split_trailing_opts(args: argparse.Namespace) -> None:
    """``-t a b train.max_epoch 2``: nargs='+' swallows trailing KEY VALUE pairs; give them back."""
    from .config import default_config

    sections = set(default_config().keys())
    for attr in ("targets", "sources", "transforms"):
        names = getattr(args, attr) or []
        for i, name in enumerate(names):
            head = name.split(".", 1)[0]
            if "." in name and head in sections:
                setattr(args, attr, names[:i] or None)
                args.opts = names[i:] + list(args.opts or [])
                break


def study_config(args: argparse.Namespace) -> tuple[dict, list[str], list[str]]:
    from .config import load_config, to_dict

    _split_trailing_opts(args)
    cfg = load_config(args.config_file or None, args.opts or [], sources=args.sources, targets=args.targets,
                      root=args.root or None, transforms=args.transforms, schedule=args.schedule)
    config = to_dict(cfg)
    plugin_options = {dest: getattr(args, dest) for dest in getattr(args, "plugin_dests", [])}
    if plugin_options:
        config["plugin_options"] = plugin_options
    return config, list(config["data"]["sources"]), list(config["data"]["targets"])


def cmd_plan(args: argparse.Namespace) -> int:
    config, sources, targets = study_config(args)
    pm = args.plugin_manager
    if args.budget is not None:
        from .plan import build_budget_plan

        plan, _ = build_budget_plan(sources, targets, args.mode, args.seeds, budget=args.budget,
                                    sampler=args.sampler, sample_seed=args.sample_seed)
    else:
        plan = pm.hook.shapley_build_plan(train_sets=sources, targets=targets, modes=[args.mode],
                                          seeds=args.seeds, config=config)
    if args.format == "json":
        print(dump_json([run.to_dict() for run in plan]))
    else:
        width = len(str(len(plan)))
        for i, run in enumerate(plan, 1):
            print(f"[{i:>{width}}/{len(plan)}] {run.label} seed={run.seed}")
        print(f"{len(plan)} trainings for {len(sources)} train-sets, {len(targets)} targets, "
              f"mode {args.mode}, seeds {args.seeds}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import prepare_study, run_study

    if args.backend == "ray":
        from .ray_backend import import_ray

        import_ray()  # before anything is written: the install hint, exit 2
    config, sources, targets = study_config(args)
    spec, pm, _ = prepare_study(out=args.out, train_sets=sources, targets=targets, modes=args.mode,
                                seeds=args.seeds, config=config, plugins=args.plugin or [],
                                pm=args.plugin_manager, max_attempts=args.max_attempts,
                                lease_seconds=args.lease_seconds, backend=args.backend, budget=args.budget,
                                sampler=args.sampler, sample_seed=args.sample_seed)
    summary = run_study(spec, workers=args.workers, devices=args.devices, per_device=args.per_device,
                        address=args.address, gpus_per_training=args.gpus_per_training, pm=pm)
    print_study_end(spec, summary, pm=pm, report=not args.no_report)
    return 130 if summary.interrupted else 0


def print_study_end(spec, summary, *, pm=None, report: bool = True) -> None:
    """The closing summary line, what gave up, then the report of the study (if it can be made)."""
    print(summary.line())
    for run in summary.exhausted:
        print(f"gave up on {run.label} seed={run.seed} after {spec.max_attempts} failed attempts; "
              f"see {spec.out}/failures/{run.key}-a*.json")
    if not report or summary.interrupted:
        return
    try:
        from .report import study_report
    except ImportError:
        return
    try:
        print(study_report(spec.out, pm=pm))
    except ShapleyError as exc:
        print(f"warning: no report written: {exc}", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    """A complete study on synthetic ReID datasets: every training, then the tables and the report."""
    from .config import load_config, to_dict
    from .plugins import synthetic
    from .runner import prepare_study, run_study

    opts = list(synthetic.DEMO_OPTS) + list(args.opts or [])
    cfg = load_config(None, opts, sources=list(synthetic.DEMO_TRAIN_SETS), targets=list(synthetic.DEMO_TARGETS))
    config = to_dict(cfg)
    print(f"demo: {len(synthetic.DEMO_TRAIN_SETS)} synthetic ReID train-sets that are also the targets "
          f"({', '.join(synthetic.DEMO_TRAIN_SETS)}), both modes, model {config['model']['name']} on the "
          f"{'GPU' if args.devices else 'CPU'}; datasets are generated into "
          f"{synthetic.resolve_cache_dir(config['shapley']['cache_dir'])}")
    spec, pm, _ = prepare_study(out=args.out, train_sets=config["data"]["sources"],
                                targets=config["data"]["targets"], modes="both", seeds=[1], config=config,
                                plugins=args.plugin or [], pm=args.plugin_manager)
    summary = run_study(spec, workers=args.workers, devices=args.devices, pm=pm)
    print_study_end(spec, summary, pm=pm, report=not args.no_report)
    return 130 if summary.interrupted else 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from .manager import describe_plugins

    rows = describe_plugins(args.plugin_manager)
    if args.format == "json":
        print(dump_json(rows))
    else:
        print(tabulate([[r["name"], r["module"], ", ".join(r["hooks"])] for r in rows],
                       headers=["plugin", "module", "hooks"], tablefmt="simple"))
    return 0


COMMANDS_WITH_PLUGIN_OPTIONS = ("run", "plan", "report", "demo")


def build_parser(pm=None) -> ArgumentParser:
    parser = ArgumentParser(
        prog="torchreid-shapley",
        description="How much each training dataset contributes to ReID accuracy on a target, "
                    "in accuracy and in equivalent training images (data-scale Shapley values).")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"torchreid-shapley {__version__}")
    parser.add_argument("-p", "--plugin", action="append", metavar="MODULE",
                        help="load a plugin module (repeatable; also TORCHREID_SHAPLEY_PLUGINS)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True

    p = sub.add_parser("value", help="Shapley values of every train-set for one target (Tables 4, 5)")
    add_records_arguments(p)
    p.add_argument("--target", "-t", required=True, help="the target (test-set) to value for")
    p.add_argument("--mode", choices=("without", "with"), default="without",
                   help="without: the target's own train-set is out; with: it is always in")
    p.set_defaults(func=cmd_value)

    p = sub.add_parser("matrix", help="data-scale values of every train-set for every target (Table 3)")
    add_records_arguments(p)
    p.add_argument("--mode", choices=("without", "with"), default="without")
    p.add_argument("--targets", nargs="+", metavar="NAME", default=None,
                   help="columns to include (default: every target)")
    p.add_argument("--scale", choices=("data", "linear"), default="data",
                   help="scale of the text/md table (JSON carries both; default: data)")
    p.set_defaults(func=cmd_matrix)

    p = sub.add_parser("plan", help="the trainings a study needs, largest coalitions first")
    add_study_arguments(p)
    p.add_argument("--format", choices=("json", "text"), default="text")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="train every coalition a study needs (resumes; several workers)")
    p.add_argument("--out", "-o", required=True, help="the study directory (created, or resumed)")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: 1, or one per device slot with --devices)")
    p.add_argument("--devices", nargs="+", metavar="ID", default=None,
                   help="GPU ids given to workers round-robin (default: CPU)")
    p.add_argument("--per-device", type=int, default=1, metavar="K",
                   help="up to K trainings share one GPU (default: 1)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local worker processes (default) or a Ray cluster")
    p.add_argument("--address", default=None,
                   help="Ray cluster address: auto or HOST:PORT (default: start a local Ray)")
    p.add_argument("--gpus-per-training", type=float, default=0.0, metavar="F",
                   help="GPU share of each Ray task, e.g. 0.25 for 4 trainings per GPU (default: 0, CPU)")
    p.add_argument("--max-attempts", type=int, default=3,
                   help="give up on a coalition after this many failed attempts (default: 3)")
    p.add_argument("--lease-seconds", type=float, default=60.0,
                   help="a worker's claim on a training expires this long after its last heartbeat")
    p.add_argument("--no-report", action="store_true", help="do not write report.html at the end")
    add_study_arguments(p)
    p.set_defaults(func=cmd_run)

    from . import report

    p = sub.add_parser("report", help="one offline report: .html (self-contained), .md or .json")
    report.add_arguments(p)
    add_estimator_arguments(p)
    p.set_defaults(func=report.cmd_report)

    p = sub.add_parser("demo", help="a complete study on synthetic ReID data (CPU, a few minutes); resumes")
    p.add_argument("--out", "-o", default="shapley-demo", help="study directory (default: shapley-demo)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default: 1)")
    p.add_argument("--devices", nargs="+", metavar="ID", default=None, help="GPU ids (default: CPU)")
    p.add_argument("--no-report", action="store_true", help="do not write the report")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="trailing KEY VALUE pairs overriding the demo config (e.g. train.max_epoch 3)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("plugins", help="list the registered plugins and their hooks")
    p.add_argument("--format", choices=("json", "text"), default="text")
    p.set_defaults(func=cmd_plugins)

    if pm is not None:
        for name, subparser in sub.choices.items():
            if name in COMMANDS_WITH_PLUGIN_OPTIONS:
                before = {action.dest for action in subparser._actions}
                pm.hook.shapley_add_arguments(parser=subparser, command=name)
                added = sorted({action.dest for action in subparser._actions} - before)
                subparser.set_defaults(plugin_dests=added)
    return parser


def preparse_plugins(argv: Sequence[str]) -> list[str]:
    """``-p/--plugin MODULE`` must be known before the parser is built (plugins add options)."""
    found = []
    it = iter(argv)
    for arg in it:
        if arg in ("-p", "--plugin"):
            found.append(next(it, ""))
        elif arg.startswith("--plugin="):
            found.append(arg.split("=", 1)[1])
        elif arg == "--" or not arg.startswith("-"):
            break  # global options come before the sub-command
    return [f for f in found if f]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        needs_plugins = bool(set(argv) & set(COMMANDS_WITH_PLUGIN_OPTIONS) | {"plugins"} & set(argv))
        pm = None
        if needs_plugins:
            from .manager import get_plugin_manager

            pm = get_plugin_manager(preparse_plugins(argv))
        parser = build_parser(pm)
        args = parser.parse_args(argv)
        args.plugin_manager = pm
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except ShapleyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
