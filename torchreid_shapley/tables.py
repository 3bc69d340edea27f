"""Valuations as reading tables (terminal text or Markdown) through tabulate.

Numbers are rounded for reading here; JSON output keeps full precision.
"""

from __future__ import annotations

from .valuation import Check, TargetMatrix, Valuation

FORMATS = {"text": "simple", "md": "github"}


def fmt_linear(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def fmt_images(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def check_line(check: Check) -> str:
    state = "PASSED" if check.passed else ("WARNING" if check.level == "warning" else "FAILED")
    return f"{state} {check.name}: {check.detail}"


def valuation_rows(val: Valuation) -> tuple[list[str], list[list[str]]]:
    """Table 4 and Table 5 of the paper side by side, one row per train-set, then base and full."""
    headers = ["train-set", "images", "LOM linear", "LOM data", "SV linear", "SV data", "SV data / image"]
    sl, sd = val.shapley["linear"], val.shapley["data"]
    ll, ld = val.lom["linear"], val.lom["data"]
    se = val.stderr or {}
    sel, sed = se.get("linear"), se.get("data")

    def pm(text: str, err: float | None, fmt) -> str:
        return text if err is None or text == "-" else f"{text} ± {fmt(err)}"

    rows = []
    for p in val.players:
        rows.append([p, f"{val.num_images[p]:,}", fmt_linear(ll[p]), fmt_images(ld and ld[p]),
                     pm(fmt_linear(sl[p]), sel and sel[p], fmt_linear),
                     pm(fmt_images(sd and sd[p]), sed and sed[p], fmt_images),
                     fmt_ratio(val.per_instance and val.per_instance[p])])
    rows.append(["base", "-", "-", "-", fmt_linear(val.base["linear"]), fmt_images(val.base["data"]), "-"])
    rows.append(["full", "-", "-", "-", fmt_linear(val.full["linear"]), fmt_images(val.full["data"]), "-"])
    return headers, rows


def valuation_table(val: Valuation, fmt: str = "text") -> str:
    from tabulate import tabulate

    headers, rows = valuation_rows(val)
    md = fmt == "md"
    total = val.coalitions_total or val.coalitions
    title = (f"target {val.target}, mode {val.mode}, metric {val.metric} "
             f"({val.estimator}, {val.coalitions} coalitions)" if val.coalitions == total else
             f"target {val.target}, mode {val.mode}, metric {val.metric} ({val.estimator} estimate from "
             f"{val.coalitions} of {total} coalitions; ± one standard error)")
    if val.fit is not None:
        curve = (f"log curve: {val.fit.equation(val.metric)}, R^2 = {val.fit.r2:.4f}, "
                 f"{val.fit.points} points, {val.fit.min_images:,}..{val.fit.max_images:,} images")
    else:
        curve = f"log curve: refused ({val.fit_error}); data-scale values are not available"
    table = tabulate(rows, headers=headers, tablefmt=FORMATS[fmt], disable_numparse=True,
                     colalign=("left",) + ("right",) * (len(headers) - 1))
    checks = [check_line(c) for c in val.checks]
    if md:
        return "\n".join([f"## {title}", "", curve, "", table, "", *[f"- {c}" for c in checks], ""])
    return "\n".join([title, curve, "", table, "", *checks, ""])


def matrix_table(matrix: TargetMatrix, fmt: str = "text", scale: str = "data") -> str:
    from tabulate import tabulate

    fmt_cell = fmt_images if scale == "data" else fmt_linear
    headers = ["train-set", *matrix.targets, "sum"]
    rows = []
    row_sums = matrix.row_sums(scale)
    for t, row in matrix.rows(scale).items():
        rows.append([t, *[fmt_cell(row[j]) for j in matrix.targets], fmt_cell(row_sums[t])])
    base = matrix.base(scale)
    rows.append(["base", *[fmt_cell(base[j]) for j in matrix.targets], "-"])
    col = matrix.column_sums(scale)
    rows.append(["sum", *[fmt_cell(col[j]) for j in matrix.targets], "-"])
    unit = "images" if scale == "data" else matrix.metric
    title = (f"target matrix, mode {matrix.mode}, metric {matrix.metric}: Shapley values in "
             f"{scale} scale ({unit}); rows train-sets, columns targets")
    table = tabulate(rows, headers=headers, tablefmt=FORMATS[fmt], disable_numparse=True,
                     colalign=("left",) + ("right",) * (len(headers) - 1))
    notes = [f"skipped target {j}: {why}" for j, why in matrix.skipped.items()]
    if fmt == "md":
        return "\n".join([f"## {title}", "", table, "", *[f"- {n}" for n in notes], ""])
    return "\n".join([title, "", table, *notes, ""])
