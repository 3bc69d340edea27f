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


def cmd_value(args: argparse.Namespace) -> int:
    from .valuation import value

    records = load_records(args.records)
    emit_warnings(records.warnings())
    val = value(records, target=args.target, mode=args.mode, metric=args.metric,
                train_sets=args.train_sets)
    emit_warnings(val.warnings)
    print(dump_json(val.to_dict()) if args.format == "json" else valuation_table(val, args.format))
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    from .valuation import target_matrix

    records = load_records(args.records)
    emit_warnings(records.warnings())
    matrix = target_matrix(records, mode=args.mode, metric=args.metric, train_sets=args.train_sets,
                           targets=args.targets)
    emit_warnings(matrix.warnings)
    if args.format == "json":
        print(dump_json(matrix.to_dict()))
    else:
        print(matrix_table(matrix, args.format, scale=args.scale))
    return 0


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="torchreid-shapley",
        description="How much each training dataset contributes to ReID accuracy on a target, "
                    "in accuracy and in equivalent training images (data-scale Shapley values).")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"torchreid-shapley {__version__}")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
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
