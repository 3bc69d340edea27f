"""``torchreid-shapley report``: one offline file with everything the paper shows, and its caveats.

:func:`build_context` turns records (and the study manifest, when there is one) into one plain,
JSON-able dict; every number of every output comes from it and ``report -o x.json`` writes exactly
it. :func:`render_html` renders it through the Jinja template ``report.html.j2`` (autoescaped,
``StrictUndefined``; only our own SVG, CSS and script are marked safe), :func:`render_markdown`
builds Markdown with tabulate and writes the figures as SVG files beside it, and
:func:`terminal_summary` prints a pytest-style summary.

Where the numbers cannot be trusted the report says so with checks, each PASSED, FAILED or
WARNING:

- ``coalitions_complete``, ``efficiency_linear``, ``log_curve_fit``, ``efficiency_data`` come from
  :class:`torchreid_shapley.valuation.Valuation`;
- ``fit_r2`` warns when the log curve explains the runs poorly (R^2 below :data:`R2_WARNING`);
- ``extrapolation`` warns when the base or the full model in images lies far outside the image
  range the curve was fitted on: below ``min_images / EXTRAPOLATION_FACTOR`` or above
  ``max_images * EXTRAPOLATION_FACTOR`` (factor :data:`EXTRAPOLATION_FACTOR`). There the curve
  is extrapolated, and the data-scale values of every train-set (which all include the base or
  the full model in some marginal) depend on that extrapolation.

A study with failed or missing trainings still renders: a target whose game lacks coalitions gets
a section naming them and a FAILED ``coalitions_complete``, and no values.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import functools
import hashlib
import html
import json
import math
import os
import platform
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import __version__
from .errors import ShapleyError
from .game import MODES, build_game, check_mode, format_coalition
from .records import RecordSet, is_study_dir, load_records
from .tables import fmt_images, fmt_linear, fmt_ratio
from .valuation import TargetMatrix, Valuation, valuate, value_game

#: Warn when R^2 of the log-curve fit is below this.
R2_WARNING = 0.8
#: Warn when base or full in images is beyond this factor outside the fitted image range.
EXTRAPOLATION_FACTOR = 2.0
#: Missing coalitions named per section (the count is always given).
SHOW_MISSING = 20
#: Largest residuals listed in the Markdown report (the HTML and JSON list all).
MD_RESIDUALS = 20
SUFFIXES = (".html", ".md", ".json")
MODE_CHOICES = ("without", "with", "both")
MODE_TEXT = {
    "without": "source-set out: the players are the other train-sets and v(S) is the model "
               "trained on S",
    "with": "source-set in: every model also trains on the target's own train-set",
}


# == context ====================================================================================
def _finite(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _jsonable(obj: Any) -> Any:
    """Plain JSON types only: no numpy scalars, no tuples, NaN and infinities become None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _finite(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _as_dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _as_list(x: Any) -> list:
    return list(x) if isinstance(x, (list, tuple)) else []


def _text(x: Any) -> str | None:
    if x is None:
        return None
    if isinstance(x, str):
        return x
    return json.dumps(x, sort_keys=True, default=str) if isinstance(x, (dict, list)) else str(x)


def _int_or_none(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def read_manifest(path: os.PathLike | str) -> tuple[dict | None, list[str]]:
    """The study manifest ``study.json`` of a study directory, and warnings (never raises)."""
    path = Path(path)
    file = path / "study.json" if path.is_dir() else path
    if not file.exists():
        return None, []
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"{file}: study manifest not readable ({exc}); the study header shows what "
                      "the records tell"]
    if not isinstance(manifest, dict):
        return None, [f"{file}: study manifest is not a JSON object; ignored"]
    warnings = []
    version = manifest.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > 1:
        warnings.append(f"{file}: study manifest schema_version {version} is newer than this "
                        "torchreid-shapley reads (1); some study fields may show as unknown")
    return manifest, warnings


def _check(name: str, state: str, detail: str) -> dict:
    return {"name": name, "state": state, "detail": detail}


def _state(check) -> str:
    if check.passed:
        return "passed"
    return "warning" if getattr(check, "level", "") == "warning" else "failed"


def _fmt_images(x: float) -> str:
    return f"{x:,.0f}"


def _headline(section: dict) -> dict:
    """One sentence and one bar per train-set: what each train-set is worth, at a glance."""
    val = section["valuation"]
    target = section["target"]
    psi = val["shapley"]["data"]
    phi = val["shapley"]["linear"]
    bars = []
    if psi is not None:
        top = max(psi, key=lambda p: psi[p]) if psi else None
        scale = max([abs(x) for x in psi.values()] + [1e-300])
        for p in sorted(psi, key=lambda p: -psi[p]):
            bars.append({"train_set": p, "value": psi[p], "unit": "images",
                         "per_instance": val["per_instance"][p], "images": val["num_images"][p],
                         "width": round(100 * abs(psi[p]) / scale, 1), "positive": psi[p] >= 0})
        if top is None:
            sentence = short = f"No train-set plays for {target} in this mode."
        else:
            short = (f"{top} is worth {_fmt_images(psi[top])} images to {target} "
                     f"({val['per_instance'][top]:.2f} per own image)")
            sentence = (f"{short}; all train-sets together take the model from "
                        f"{_fmt_images(val['base']['data'])} to {_fmt_images(val['full']['data'])} "
                        "equivalent images.")
            short += "."
    else:
        top = max(phi, key=lambda p: phi[p]) if phi else None
        scale = max([abs(x) for x in phi.values()] + [1e-300])
        for p in sorted(phi, key=lambda p: -phi[p]):
            bars.append({"train_set": p, "value": phi[p], "unit": val["metric"], "per_instance": None,
                         "images": val["num_images"][p], "width": round(100 * abs(phi[p]) / scale, 1),
                         "positive": phi[p] >= 0})
        short = ("No train-set plays in this mode." if top is None else
                 f"{top} adds the most {val['metric']} to {target} ({phi[top]:+.4f}).")
        sentence = short + " Data-scale values are not available: the log curve was refused."
    return {"sentence": sentence, "short": short, "bars": bars}


def _extra_checks(val: Valuation) -> list[dict]:
    """fit_r2 and extrapolation: where the data-scale numbers stand on weak ground."""
    fit = val.fit
    if fit is None or val.data_values is None:
        return []
    out = []
    if fit.r2 >= R2_WARNING:
        out.append(_check("fit_r2", "passed", f"R^2 = {fit.r2:.4f} >= {R2_WARNING}"))
    else:
        out.append(_check("fit_r2", "warning",
                          f"R^2 = {fit.r2:.4f} < {R2_WARNING}: the log curve explains these runs poorly, "
                          "so the data-scale values are rough; compare them with the linear-scale values"))
    low = fit.min_images / EXTRAPOLATION_FACTOR
    high = fit.max_images * EXTRAPOLATION_FACTOR
    problems = []
    for label, x in (("base", val.base["data"]), ("full", val.full["data"])):
        if x is None:
            continue
        if x < low:
            problems.append(f"{label} = {x:,.1f} images is below {low:,.0f} (min_images / {EXTRAPOLATION_FACTOR:g})")
        elif x > high:
            problems.append(f"{label} = {x:,.1f} images is above {high:,.0f} (max_images x {EXTRAPOLATION_FACTOR:g})")
    g = val.data_values
    outside = int(np.count_nonzero((g < low) | (g > high)))
    rng = f"fitted on {fit.min_images:,}..{fit.max_images:,} images"
    if problems:
        out.append(_check("extrapolation", "warning",
                          "; ".join(problems) + f" ({rng}; {outside} of {g.size} coalitions outside "
                          f"{low:,.0f}..{high:,.0f}): the curve is extrapolated there, so the data-scale "
                          "values lean on that extrapolation"))
    else:
        out.append(_check("extrapolation", "passed",
                          f"base and full lie within {low:,.0f}..{high:,.0f} images ({rng}; "
                          f"{outside} of {g.size} coalitions outside)"))
    return out


def _coalition_rows(game, val: Valuation | None) -> list[dict]:
    data = val.data_values if val is not None else None
    fit = val.fit if val is not None else None
    rows = []
    for mask in range(1 << game.n):
        v = _finite(game.values[mask])
        s = int(game.images[mask])
        row = {"train_sets": list(game.members(mask)), "run": list(game.run_of(mask)),
               "size": bin(mask).count("1"), "images": s, "linear": v,
               "data": None if data is None else _finite(data[mask]),
               "runs": int(game.runs[mask]), "predicted": None, "residual": None}
        if fit is not None and v is not None and s > 0:
            predicted = float(fit.accuracy(s))
            row["predicted"] = predicted
            row["residual"] = v - predicted
        rows.append(row)
    return rows


def _not_separated(ranked: Sequence[str], values: Mapping[str, float], errs: Mapping[str, float],
                   p: str) -> bool:
    """True when ``p``'s 95% interval overlaps that of a neighbour in the ranking (estimates only)."""
    if not errs:
        return False
    i = ranked.index(p)

    def overlap(q: str) -> bool:
        a, b = errs.get(p), errs.get(q)
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            return True
        return abs(values[p] - values[q]) <= 1.96 * math.hypot(a, b)

    return any(overlap(ranked[j]) for j in (i - 1, i + 1) if 0 <= j < len(ranked))


def _tables(val: dict) -> dict:
    """Paper Table 4 (LOM in data scale, SV linear, SV data, base) and Table 5 (per image)."""
    players = val["players"]
    sd, sl = val["shapley"]["data"], val["shapley"]["linear"]
    ld, ll = val["lom"]["data"], val["lom"]["linear"]
    key = sd if sd is not None else sl
    players = sorted(players, key=lambda p: (-key[p], p))  # most valuable first
    se = val.get("stderr") or {}
    sel, sed = se.get("linear") or {}, se.get("data") or {}
    errs = sed if sd is not None else sel
    table4 = [{"train_set": p, "lom_data": None if ld is None else ld[p], "lom_linear": ll[p],
               "sv_linear": sl[p], "sv_data": None if sd is None else sd[p],
               "sv_linear_se": _finite(sel.get(p)), "sv_data_se": _finite(sed.get(p)),
               "not_separated": _not_separated(players, key, errs, p)} for p in players]
    table5 = [{"train_set": p, "sv_data": None if sd is None else sd[p], "sv_data_se": _finite(sed.get(p)),
               "images": val["num_images"][p],
               "per_instance": None if val["per_instance"] is None else val["per_instance"][p]}
              for p in players]
    return {"table4": table4, "table5": table5,
            "base": {"linear": val["base"]["linear"], "data": val["base"]["data"]},
            "full": {"linear": val["full"]["linear"], "data": val["full"]["data"]}}


def _section(records: RecordSet, *, index: int, target: str, mode: str, metric: str,
             pool: Sequence[str], unknown: Sequence[str], estimator: str = "auto",
             design: Mapping | None = None, curve: str = "model") -> tuple[dict, Valuation | None, set]:
    """One (target, mode): status complete / incomplete / error, with everything to show."""
    section: dict[str, Any] = {
        "estimate": None,
        "id": f"sec-{index}", "index": index, "target": target, "mode": mode, "metric": metric,
        "mode_text": MODE_TEXT[mode], "status": "error", "players": [], "num_images": {},
        "valuation": None, "headline": None, "tables": None, "fit": None, "fit_error": None,
        "coalitions": [], "highlight": None, "missing": None, "error": None, "checks": [],
    }
    needed: set = set()
    players_full = sorted(t for t in pool if t != target)  # pool includes train-sets without records
    total = 1 << len(players_full)
    if target not in records.targets():
        section.update(status="incomplete", players=players_full,
                       missing={"count": total, "total": total, "coalitions": [],
                                "more": 0, "note": f"no successful training was evaluated on {target} yet"})
        section["checks"].append(_check("coalitions_complete", "failed",
                                        f"0 of {total} coalitions have a successful record: no successful "
                                        f"training was evaluated on {target}"))
        return section, None, needed
    try:
        game = build_game(records, target=target, mode=mode, metric=metric,
                          train_sets=[t for t in pool if t not in unknown], allow_missing=True)
    except ShapleyError as exc:
        section["error"] = str(exc)
        section["checks"].append(_check("records_usable", "failed", str(exc)))
        return section, None, needed
    section["players"] = list(game.players)
    section["num_images"] = dict(game.num_images)
    if game.players:
        section["highlight"] = max(game.players, key=lambda p: (game.num_images[p], p))
    for mask in range(1 << game.n):
        needed.add(game.run_of(mask))
    missing_masks = np.flatnonzero(np.isnan(game.values))
    val = None
    if (missing_masks.size or estimator not in ("auto", "exact")) and not unknown:
        try:  # a budgeted study (or an explicit estimator): estimate from the coalitions present
            val = valuate(game, estimator=estimator, design=design, curve=curve)
        except ShapleyError:
            val = None
    if val is None and (missing_masks.size or unknown):
        present = (1 << game.n) - int(missing_masks.size)
        names = [format_coalition(game.run_of(int(m))) for m in missing_masks[:SHOW_MISSING]]
        absent = [t for t in unknown if t != target]
        note = ""
        if absent:
            note = (f"train-set(s) {', '.join(absent)} appear in no record, so every coalition containing "
                    f"them ({total - (1 << game.n)}) is missing too")
        count = total - present
        section.update(status="incomplete", players=players_full,
                       coalitions=_coalition_rows(game, None),
                       missing={"count": count, "total": total, "coalitions": names,
                                "more": max(0, int(missing_masks.size) - len(names)), "note": note})
        shown = ", ".join(names) + (f" and {int(missing_masks.size) - len(names)} more"
                                    if missing_masks.size > len(names) else "")
        detail = f"{present} of {total} coalitions have a successful record; missing: {shown or 'see note'}"
        if note:
            detail += f"; {note}"
        section["checks"].append(_check("coalitions_complete", "failed", detail))
        return section, None, needed
    if val is None:
        val = value_game(game)
    vdict = val.to_dict()
    if val.stderr is not None:
        section["estimate"] = {"estimator": val.estimator, "present": val.coalitions,
                               "total": val.coalitions_total, "curve": val.curve}
    section.update(status="complete", valuation=vdict, coalitions=_coalition_rows(game, val),
                   fit_error=val.fit_error)
    if val.fit is not None:
        section["fit"] = dict(val.fit.to_dict(), equation=val.fit.equation(metric),
                              extrapolation_low=val.fit.min_images / EXTRAPOLATION_FACTOR,
                              extrapolation_high=val.fit.max_images * EXTRAPOLATION_FACTOR)
    section["checks"] = [_check(c.name, _state(c), c.detail) for c in val.checks] + _extra_checks(val)
    section["tables"] = _tables(vdict)
    section["headline"] = _headline(section)
    return section, val, needed


def _matrix(mode: str, metric: str, pool: Sequence[str], valuations: Mapping[str, Valuation],
            skipped: Mapping[str, str]) -> dict:
    if not valuations:
        return {"mode": mode, "metric": metric, "available": False, "train_sets": list(pool),
                "targets": [], "skipped": dict(skipped),
                "reason": "no target has a complete game in this mode"}
    matrix = TargetMatrix(mode=mode, metric=metric, train_sets=tuple(pool), targets=tuple(valuations),
                          valuations=dict(valuations), skipped=dict(skipped))
    out = matrix.to_dict()
    out["available"] = True
    out["reason"] = None
    # a target without a fit has no data-scale column: the heatmap needs at least one
    out["has_data"] = any(v.fit is not None for v in valuations.values())
    return out


def _versions_of(records: RecordSet) -> dict[str, list[str]]:
    seen: dict[str, set[str]] = {}
    for r in records.records:
        for k, v in _as_dict(r.raw.get("versions")).items():
            seen.setdefault(str(k), set()).add(str(v))
    return {k: sorted(v) for k, v in sorted(seen.items())}


def _distinct(records: RecordSet, key: str) -> list[str]:
    return sorted({_text(r.raw.get(key)) for r in records.records if r.raw.get(key) is not None})


def _tool_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"torchreid_shapley": __version__, "python": platform.python_version()}
    for dist in ("numpy", "scipy", "jinja2", "matplotlib", "tabulate", "pluggy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _study(records: RecordSet, manifest: Mapping | None, *, pool: Sequence[str],
           pool_images: Mapping[str, int | None], targets: Sequence[str], modes: Sequence[str],
           metric: str, needed: set) -> dict:
    m = _as_dict(manifest)
    payload = _as_dict(m.get("payload"))
    config = _as_dict(m.get("config"))
    described = _as_dict(payload.get("train_sets"))
    ids_from_records: dict[str, int] = {}
    for r in records.records:
        for k, v in _as_dict(r.raw.get("num_ids")).items():
            if _int_or_none(v) is not None:
                ids_from_records.setdefault(str(k), v)
    train_sets = []
    for name in pool:
        d = _as_dict(described.get(name))
        train_sets.append({"name": name,
                           "num_images": pool_images.get(name) or _int_or_none(d.get("num_images")),
                           "num_ids": _int_or_none(d.get("num_ids")) or ids_from_records.get(name)})
    model = _text(_as_dict(config.get("model")).get("name")) or ", ".join(_distinct(records, "model")) or None
    train_cfg = _as_dict(config.get("train"))
    schedule_parts = [f"{k} {train_cfg[k]}" for k in ("max_epoch", "optim", "lr", "batch_size")
                      if k in train_cfg]
    shapley_cfg = _as_dict(config.get("shapley"))
    if "schedule" in shapley_cfg:
        schedule_parts.insert(0, _text(shapley_cfg["schedule"]))
    schedule = ", ".join(p for p in schedule_parts if p) or ", ".join(_distinct(records, "schedule")) or None
    seeds = [s for s in _as_list(m.get("seeds")) if _int_or_none(s) is not None] or records.seeds()
    ok = {(r.train_sets, r.seed) for r in records.ok_records}
    failed = {(r.train_sets, r.seed) for r in records.failed_records} - ok
    planned = _int_or_none(m.get("plan_size"))
    present = {r.train_sets for r in records.ok_records}
    if planned is not None:
        missing = max(0, planned - len(ok))
        needed_count = planned
    else:
        missing = len([c for c in needed if c not in present])
        needed_count = len(needed) if needed else None
    durations = [r.raw.get("duration_s") for r in records.records]
    durations = [float(d) for d in durations if isinstance(d, (int, float)) and not isinstance(d, bool)
                 and math.isfinite(d)]
    settings = _as_dict(payload.get("settings"))
    return {
        "source": records.path,
        "kind": "study directory" if manifest is not None or is_study_dir(records.path or ".") else "records file",
        "train_sets": train_sets,
        "targets": list(targets),
        "modes": list(modes),
        "metric": metric,
        "model": model,
        "schedule": schedule,
        "seeds": seeds or None,
        "fingerprint": _text(m.get("fingerprint")),
        "created_at": _text(m.get("created_at")),
        "manifest": manifest is not None,
        "trainings": {"needed": needed_count, "planned_in_manifest": planned is not None,
                      "done": len(ok), "failed": len(failed), "missing": missing,
                      "records": len(records.records), "ok_records": len(records.ok_records),
                      "failed_records": len(records.failed_records), "corrupt": len(records.corrupt)},
        "hosts": _distinct(records, "host"),
        "devices": _distinct(records, "device"),
        "backends": _distinct(records, "backend"),
        "compute_s": sum(durations) if durations else None,
        "started_at": min(_distinct(records, "started_at"), default=None),
        "finished_at": max(_distinct(records, "finished_at"), default=None),
        "tool_versions": _tool_versions(),
        "study_versions": {str(k): _text(v) for k, v in _as_dict(m.get("versions")).items()},
        "record_versions": _versions_of(records),
        "settings": [[str(k), _text(v)] for k, v in sorted(settings.items())],
    }


def _comparison(sections: Sequence[dict]) -> dict:
    """Paper Table 2 (properties of the three contribution metrics), with what this study shows:
    the efficiency checks that passed, and the trainings each metric needs for its players."""
    n = max((len(s["players"]) for s in sections), default=0)

    def passed(name: str) -> str:
        states = [c["state"] for s in sections for c in s["checks"] if c["name"] == name]
        return f"{states.count('passed')} of {len(states)} sections pass {name}" if states else "not checked"

    rows = [
        {"property": "local accuracy (values add up to full - base)", "lom": "no",
         "sv_linear": f"yes ({passed('efficiency_linear')})", "sv_data": f"yes ({passed('efficiency_data')})"},
        {"property": "additive law", "lom": "no", "sv_linear": "yes", "sv_data": "yes"},
        {"property": "data-size aware", "lom": "no", "sv_linear": "no", "sv_data": "yes"},
        {"property": f"trainings for N = {n} players", "lom": f"N + 1 = {n + 1:,}",
         "sv_linear": f"2^N = {2 ** n:,}", "sv_data": f"2^N = {2 ** n:,}"},
    ]
    return {"players": n, "rows": rows}


def _summary(sections: Sequence[dict], warnings: Sequence[str]) -> dict:
    counts = {"passed": 0, "failed": 0, "warning": 0}
    for s in sections:
        for c in s["checks"]:
            counts[c["state"]] += 1
    return {"passed": counts["passed"], "failed": counts["failed"],
            "warnings": counts["warning"] + len(warnings)}


def _plugin_sections(pm, context: dict) -> tuple[list[dict], list[str]]:
    try:
        results = pm.hook.shapley_report_sections(context=context)
    except Exception as exc:  # a broken plugin must not lose the report
        return [], [f"a plugin's shapley_report_sections failed ({type(exc).__name__}: {exc}); "
                    "its sections are left out"]
    sections, warnings = [], []
    for result in results or []:
        for item in result or []:
            if not isinstance(item, Mapping) or "title" not in item or "text" not in item:
                warnings.append(f"a plugin returned a report section without title and text: {item!r:.200}")
                continue
            sections.append({"title": str(item["title"]), "text": str(item["text"])})
    return sections, warnings


def build_context(records: RecordSet | os.PathLike | str, *, metric: str = "mAP",
                  modes: Sequence[str] = ("without", "with"), targets: Sequence[str] | None = None,
                  train_sets: Sequence[str] | None = None, manifest: Mapping | None = None,
                  plugin_manager=None, warnings: Sequence[str] = (), estimator: str = "auto",
                  designs: Mapping[str, Mapping] | None = None, curve: str = "model") -> dict:
    """Everything the report shows, as one plain JSON-able dict (see the module docstring).

    ``records`` is a :class:`RecordSet` (or a path to load); ``manifest`` the parsed ``study.json``
    of a study directory (optional: without it the study header shows what the records tell and
    "unknown" for the rest); ``plugin_manager`` defaults to
    :func:`torchreid_shapley.manager.get_plugin_manager`; ``warnings`` are extra lines to show
    (for example about an unreadable manifest).
    """
    if not isinstance(records, RecordSet):
        records = load_records(records)
    modes = [check_mode(m) for m in dict.fromkeys(modes)]
    if not modes:
        raise ShapleyError(f"no mode to report; give --modes among {list(MODE_CHOICES)}")
    counts = records.num_images()  # a conflicting image count is bad input: raises
    m = _as_dict(manifest)
    m_train_sets = [t for t in _as_list(m.get("train_sets")) if isinstance(t, str) and t]
    described = _as_dict(_as_dict(m.get("payload")).get("train_sets"))
    if train_sets is not None:
        unknown_requested = [t for t in train_sets if t not in counts and t not in m_train_sets]
        if unknown_requested:
            raise ShapleyError(f"train-set(s) {unknown_requested} appear in no record; the records have "
                               f"{list(counts)}: pick --train-sets among those")
        if len(set(train_sets)) != len(train_sets):
            raise ShapleyError(f"--train-sets lists a name twice: {list(train_sets)}; give each once")
        pool = sorted(train_sets)
    elif m_train_sets:
        pool = sorted(dict.fromkeys(m_train_sets + list(counts)))
    else:
        pool = list(counts)
    unknown = [t for t in pool if t not in counts]
    pool_images = {t: counts.get(t) or _int_or_none(_as_dict(described.get(t)).get("num_images"))
                   for t in pool}
    if records.ok_records and metric not in records.metric_names():
        raise ShapleyError(f"metric {metric!r} is in no record; recorded metrics: {records.metric_names()}: "
                           "pick --metric among those")
    known_targets = list(dict.fromkeys(
        [t for t in _as_list(m.get("targets")) if isinstance(t, str) and t] + records.targets()))
    if targets is not None:
        bad = [t for t in targets if t not in known_targets]
        if bad:
            raise ShapleyError(f"target(s) {bad} are in no record; the records evaluate {records.targets()}: "
                               "pick --targets among those")
        chosen = list(dict.fromkeys(targets))
    else:
        chosen = known_targets

    warnings = list(warnings) + [c.warning() for c in records.corrupt]
    sections: list[dict] = []
    matrices: list[dict] = []
    skipped_all: list[dict] = []
    needed: set = set()
    for mode in modes:
        valuations: dict[str, Valuation] = {}
        skipped: dict[str, str] = {}
        for target in chosen:
            if mode == "with" and target not in pool:
                why = "not among the train-sets in play, so there is no mode-with game"
                skipped[target] = why
                skipped_all.append({"mode": mode, "target": target, "reason": why})
                continue
            section, val, need = _section(records, index=len(sections) + 1, target=target, mode=mode,
                                          metric=metric, pool=pool, unknown=unknown, estimator=estimator,
                                          design=(designs or {}).get(f"{target}|{mode}"), curve=curve)
            needed |= need
            sections.append(section)
            if val is not None:
                valuations[target] = val
                warnings.extend(val.warnings)
            else:
                skipped[target] = ("coalitions missing" if section["status"] == "incomplete"
                                   else f"error: {section['error']}")
        matrices.append(_matrix(mode, metric, pool, valuations, skipped))

    failures = []
    ok_keys = {(r.train_sets, r.seed) for r in records.ok_records}
    for r in records.failed_records:
        failures.append({"source": r.source, "train_sets": list(r.train_sets), "seed": r.seed,
                         "attempt": _text(r.raw.get("attempt")), "error": _text(r.raw.get("error")) or "",
                         "recovered": (r.train_sets, r.seed) in ok_keys})
    context: dict[str, Any] = {
        "report": {"tool": "torchreid-shapley", "version": __version__, "format": 1,
                   "generated_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                   "thresholds": {"r2_warning": R2_WARNING, "extrapolation_factor": EXTRAPOLATION_FACTOR}},
        "metric": metric,
        "modes": modes,
        "study": _study(records, manifest, pool=pool, pool_images=pool_images, targets=chosen,
                        modes=modes, metric=metric, needed=needed),
        "sections": sections,
        "skipped": skipped_all,
        "comparison": _comparison(sections),
        "matrices": matrices,
        "failures": failures,
        "corrupt": [{"source": c.source, "reason": c.reason} for c in records.corrupt],
        "warnings": warnings,
        "plugin_sections": [],
    }
    context = _jsonable(context)
    from .manager import get_plugin_manager

    pm = plugin_manager if plugin_manager is not None else get_plugin_manager()
    plugin_sections, plugin_warnings = _plugin_sections(pm, context)
    context["plugin_sections"] = plugin_sections
    context["warnings"] = context["warnings"] + plugin_warnings
    context["summary"] = _summary(context["sections"], context["warnings"])
    return _jsonable(context)


# == HTML =======================================================================================
def _template_dir_fallback() -> Path:
    """The templates directory when ``torchreid_shapley.templates`` is not importable (an
    editable install made before the package_dir mapping, or a source checkout on sys.path)."""
    from importlib import resources

    package = Path(str(resources.files("torchreid_shapley")))
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise ShapleyError("the report templates are not installed (no torchreid_shapley.templates package and "
                       f"no templates/ beside {package}); reinstall torchreid-shapley: pip install .")


@functools.lru_cache(maxsize=1)
def _environment():
    import jinja2

    try:
        loader: jinja2.BaseLoader = jinja2.PackageLoader("torchreid_shapley.templates", ".")
    except (ImportError, ValueError):
        loader = jinja2.FileSystemLoader(str(_template_dir_fallback()))
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(linear=fmt_linear, images=fmt_images, ratio=fmt_ratio, whole=fmt_whole,
                       signed_images=fmt_signed_images, sortkey=sort_key, sha256=_sha256_b64,
                       coalition=format_coalition, unknown=fmt_unknown, seconds=fmt_seconds, fmt=fmt_kind)
    return env


def fmt_signed_images(x: float | None) -> str:
    return "-" if x is None else f"{x:+,.0f}"


def fmt_whole(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_kind(x: float | None, kind: str) -> str:
    """Format by kind: linear (metric), images (data scale), ratio (per image), whole."""
    return {"linear": fmt_linear, "images": fmt_images, "ratio": fmt_ratio, "whole": fmt_whole}[kind](x)


def fmt_unknown(x: Any) -> str:
    if x is None or x == [] or x == "":
        return "unknown"
    if isinstance(x, list):
        return ", ".join(str(v) for v in x)
    return str(x)


def fmt_seconds(x: float | None) -> str:
    if x is None:
        return "unknown"
    hours, rest = divmod(int(round(x)), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def sort_key(x: Any) -> str:
    return "" if x is None else repr(x) if isinstance(x, float) else str(x)


def _sha256_b64(text: str) -> str:
    return base64.b64encode(hashlib.sha256(str(text).encode("utf-8")).digest()).decode("ascii")


def _figures_for(context: Mapping[str, Any], *, inline: bool) -> dict:
    from .figures import FigurePool, heatmap_svg, section_figures

    pool = FigurePool()
    sections = {s["id"]: section_figures(s, prefix=f"s{s['index']}", inline=inline, pool=pool)
                for s in context["sections"]}
    heatmaps = {m["mode"]: heatmap_svg(m, prefix=f"h{k}-", inline=inline, pool=pool)
                for k, m in enumerate(context["matrices"]) if m["available"] and m.get("has_data")}
    return {"sections": sections, "heatmaps": heatmaps}


def render_html(context: Mapping[str, Any]) -> str:
    """The self-contained HTML page (inline CSS, SVG and one small script; no network)."""
    from markupsafe import Markup

    from .figures import FIGURE_TITLES

    figures = _figures_for(context, inline=True)
    # Only our own SVG is marked safe; matplotlib XML-escapes every text it draws.
    svgs = {"sections": {k: {name: Markup(svg) for name, svg in v.items()}
                         for k, v in figures["sections"].items()},
            "heatmaps": {k: Markup(svg) for k, svg in figures["heatmaps"].items()}}

    return _environment().get_template("report.html.j2").render(
        ctx=context, svgs=svgs, figure_titles=dict(FIGURE_TITLES), mode_names=list(MODES))


# == Markdown ===================================================================================
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#<>])")


def md(text: Any) -> str:
    """Text safe in Markdown: HTML-escaped and Markdown-active characters backslash-escaped."""
    s = "" if text is None else str(text)
    s = html.escape(s, quote=False)
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return " ".join(s.split())  # one line (table cells, list items)


def _md_plugin_text(text: str) -> str:
    """Plugin text is Markdown (hookspec); raw HTML in it is shown as text."""
    return html.escape(text, quote=False)


def _md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, text: bool = False) -> str:
    """A GitHub Markdown table of escaped cells; numbers right-aligned unless ``text``."""
    from tabulate import tabulate

    rows = [[md(c) for c in row] for row in rows]
    align = ("left",) * len(headers) if text else ("left",) + ("right",) * (len(headers) - 1)
    return tabulate(rows, headers=[md(h) for h in headers], tablefmt="github", disable_numparse=True,
                    colalign=align)


def _pm(x: float | None, se: float | None, fmt) -> str:
    return fmt(x) if se is None or x is None else f"{fmt(x)} ± {fmt(se)}"


def _md_section(s: dict, files: Mapping[str, str], link: str) -> list[str]:
    out = [f'<a id="{s["id"]}"></a>', "",
           f"## {md(s['target'])}: mode {md(s['mode'])}", "", f"*{md(s['mode_text'])}*", ""]
    if s["status"] == "error":
        out += [f"**Cannot value this target:** {md(s['error'])}", ""]
    elif s["status"] == "incomplete":
        miss = s["missing"]
        out += [f"**Incomplete: {miss['count']} of {miss['total']} coalitions without a successful record.** "
                "No values are shown until they are trained (torchreid-shapley run resumes a study).", ""]
        if miss["note"]:
            out += [md(miss["note"]), ""]
        if miss["coalitions"]:
            more = f" and {miss['more']} more" if miss["more"] else ""
            out += ["Missing: " + ", ".join(md(c) for c in miss["coalitions"]) + more, ""]
    else:
        head = s["headline"]
        out += [f"> **{md(head['sentence'])}**", ""]
        t = s["tables"]
        unit = md(s["metric"])
        est = s.get("estimate")
        if est:
            out += [f"*Estimated by the {est['estimator']} estimator from {est['present']:,} of {est['total']:,} "
                    "coalitions; ± is one standard error; ≈ marks a train-set whose 95% interval overlaps a "
                    "neighbour's in the ranking.*", ""]
        out += ["**Contributions (paper Table 4)**", "",
                _md_table(["train-set", "LOM data (images)", f"LOM linear ({unit})", f"SV linear ({unit})",
                           "SV data (images)"],
                          [[r["train_set"] + (" ≈" if r.get("not_separated") else ""), fmt_images(r["lom_data"]),
                            fmt_linear(r["lom_linear"]), _pm(r["sv_linear"], r.get("sv_linear_se"), fmt_linear),
                            _pm(r["sv_data"], r.get("sv_data_se"), fmt_images)] for r in t["table4"]]
                          + [["base", "-", "-", fmt_linear(t["base"]["linear"]), fmt_images(t["base"]["data"])],
                             ["full", "-", "-", fmt_linear(t["full"]["linear"]), fmt_images(t["full"]["data"])]]),
                "", "**Per-image values (paper Table 5)**", "",
                _md_table(["train-set", "SV data (images)", "images", "SV data / image"],
                          [[r["train_set"], fmt_images(r["sv_data"]), f"{r['images']:,}", fmt_ratio(r["per_instance"])]
                           for r in sorted(t["table5"], key=lambda r: -(r["sv_data"] if r["sv_data"] is not None else -1e300))]),
                ""]
        fit = s["fit"]
        out += ["**Fit diagnostics**", ""]
        if fit:
            out += [f"- log curve: {md(fit['equation'])}",
                    f"- alpha = {fit['alpha']:.6g}, beta = {fit['beta']:.6g}, R^2 = {fit['r2']:.4f}, "
                    f"{fit['points']} points",
                    f"- image range of the fit: {fit['min_images']:,}..{fit['max_images']:,} "
                    f"(values outside {fit['extrapolation_low']:,.0f}..{fit['extrapolation_high']:,.0f} "
                    "are extrapolated)", ""]
            res = [c for c in s["coalitions"] if c["residual"] is not None]
            res.sort(key=lambda c: -abs(c["residual"]))
            shown = res[:MD_RESIDUALS]
            title = (f"Largest {len(shown)} of {len(res)} residuals" if len(res) > len(shown)
                     else f"Residuals of the {len(res)} fitted coalitions")
            out += [f"{title} ({unit} minus fitted {unit}):", "",
                    _md_table(["coalition (trained on)", "images", unit, "fitted", "residual", "data (images)"],
                              [[format_coalition(c["run"]), f"{c['images']:,}", fmt_linear(c["linear"]),
                                fmt_linear(c["predicted"]), f"{c['residual']:+.4f}", fmt_images(c["data"])]
                               for c in shown]), ""]
        else:
            out += [f"- no log curve: {md(s['fit_error'])}", ""]
    if files:
        from .figures import FIGURE_TITLES

        for name, file in files.items():
            out += [f"![{md(FIGURE_TITLES[name])}]({link}/{file})", ""]
    out += ["**Checks**", ""] + [f"- **{c['state'].upper()}** {md(c['name'])}: {md(c['detail'])}"
                                 for c in s["checks"]] + [""]
    return out


def render_markdown(context: Mapping[str, Any], svg_dir: os.PathLike | str, *,
                    link_base: str | None = None) -> str:
    """Markdown of the report; figures are written as SVG files into ``svg_dir`` and linked as
    ``<link_base>/<file>`` (default: the name of ``svg_dir``, for a directory beside the .md)."""
    svg_dir = Path(svg_dir)
    svg_dir.mkdir(parents=True, exist_ok=True)
    link = link_base if link_base is not None else svg_dir.name
    link = urllib.parse.quote(link, safe="/")  # a link destination: percent-encoded, not escaped
    figures = _figures_for(context, inline=False)
    ctx = context
    study = ctx["study"]
    summary = ctx["summary"]
    out = [f"# Data-scale Shapley report ({md(ctx['metric'])})", "",
           f"Generated by torchreid-shapley {md(ctx['report']['version'])} at "
           f"{md(ctx['report']['generated_at'])} from {md(study['source'])}.", "",
           f"**Checks: {_counts_text(summary)}**", "", "## Contents", "", "- [Study](#study)"]
    for mode in ctx["modes"]:
        items = [s for s in ctx["sections"] if s["mode"] == mode]
        out.append(f"- mode {md(mode)}: " + (", ".join(f"[{md(s['target'])}](#{s['id']})" for s in items) or "none"))
    out += ["- [Target matrices](#matrices)", "- [Failed trainings and warnings](#problems)"]
    if ctx["plugin_sections"]:
        out.append("- [Plugin sections](#plugins)")
    out += ["", "## Reading the numbers (paper Table 2)", "",
            "- **SV data**: how many training images a train-set is worth to the target (data-scale "
            "Shapley value); **SV data / image** divides it by the train-set's own images.",
            "- **SV linear**: the same in the metric itself; **LOM**: the last-one-mile gain, "
            "v(full) - v(full without the train-set).",
            "- **base** / **full**: the model without any player / with all of them.", "",
            _md_table(["property", "last-one-mile gain", "SV in linear scale", "SV in data scale"],
                      [[r["property"], r["lom"], r["sv_linear"], r["sv_data"]] for r in ctx["comparison"]["rows"]],
                      text=True)]
    out += ["", '<a id="study"></a>', "", "## Study", ""]
    tr = study["trainings"]
    out += [_md_table(["field", "value"], [
        ["source", f"{study['source']} ({study['kind']})"],
        ["targets", fmt_unknown(study["targets"])], ["modes", ", ".join(study["modes"])],
        ["metric", study["metric"]], ["model", fmt_unknown(study["model"])],
        ["schedule", fmt_unknown(study["schedule"])], ["seeds", fmt_unknown(study["seeds"])],
        ["trainings", _trainings_text(tr)],
        ["config fingerprint", fmt_unknown(study["fingerprint"])],
        ["created", fmt_unknown(study["created_at"])],
        ["compute time", fmt_seconds(study["compute_s"])],
        ["hosts / devices", f"{fmt_unknown(study['hosts'])} / {fmt_unknown(study['devices'])}"],
        ["versions (report)", ", ".join(f"{k} {v}" for k, v in study["tool_versions"].items())],
        ["versions (study)", fmt_unknown(", ".join(f"{k} {v}" for k, v in study["study_versions"].items()))],
        ["versions (runs)", fmt_unknown(", ".join(f"{k} {'/'.join(v)}" for k, v in study["record_versions"].items()))],
    ], text=True), "", "Train-sets:", "",
        _md_table(["train-set", "images", "identities"],
                  [[t["name"], fmt_whole(t["num_images"]) if t["num_images"] else "unknown",
                    fmt_whole(t["num_ids"]) if t["num_ids"] else "unknown"] for t in study["train_sets"]]), ""]
    if study["settings"]:
        out += ["Settings:", "", _md_table(["key", "value"], study["settings"], text=True), ""]
    for s in ctx["sections"]:
        files = {}
        for name, svg in figures["sections"].get(s["id"], {}).items():
            file = f"{s['id']}-{name}.svg"
            (svg_dir / file).write_text(svg, encoding="utf-8")
            files[name] = file
        out += _md_section(s, files, link)
    out += ['<a id="matrices"></a>', "", "## Target matrices (paper Table 3)", ""]
    for m in ctx["matrices"]:
        out += [f"### mode {md(m['mode'])}", ""]
        if not m["available"]:
            out += [f"Not available: {md(m['reason'])}.", ""]
        else:
            out += ["Data-scale Shapley values (images) of each train-set (rows) for each target "
                    "(columns); base is the model without the players; a column sums to the full model.", "",
                    _md_matrix(m, "data"), "",
                    f"Linear scale ({md(m['metric'])}):", "", _md_matrix(m, "linear"), ""]
            if m["mode"] in figures["heatmaps"]:
                file = f"matrix-{m['mode']}-heatmap.svg"
                (svg_dir / file).write_text(figures["heatmaps"][m["mode"]], encoding="utf-8")
                out += [f"![target matrix heatmap, mode {md(m['mode'])}]({link}/{file})", ""]
        for j, why in m["skipped"].items():
            out.append(f"- skipped target {md(j)}: {md(why)}")
        out.append("")
    out += ['<a id="problems"></a>', "", "## Failed trainings and warnings", ""]
    if ctx["failures"]:
        out += [_md_table(["record", "trained on", "seed", "attempt", "recovered", "error"],
                          [[f["source"], format_coalition(f["train_sets"]), fmt_unknown(f["seed"]),
                            fmt_unknown(f["attempt"]), "yes" if f["recovered"] else "no", f["error"]]
                           for f in ctx["failures"]], text=True), ""]
    else:
        out += ["No failed training.", ""]
    out += [f"- WARNING {md(w)}" for w in ctx["warnings"]] or ["No warnings."]
    out.append("")
    if ctx["plugin_sections"]:
        out += ['<a id="plugins"></a>', "", "## Plugin sections", ""]
        for p in ctx["plugin_sections"]:
            out += [f"### {md(p['title'])}", "", _md_plugin_text(p["text"]), ""]
    return "\n".join(out).rstrip() + "\n"


def _md_matrix(m: dict, scale: str) -> str:
    fmt = fmt_images if scale == "data" else fmt_linear
    block = m[scale]
    rows = [[t, *[fmt(block["cells"][t][j]) for j in m["targets"]], fmt(block["row_sums"][t])]
            for t in m["train_sets"]]
    rows.append(["base", *[fmt(block["base"][j]) for j in m["targets"]], "-"])
    rows.append(["sum", *[fmt(block["column_sums"][j]) for j in m["targets"]], "-"])
    return _md_table(["train-set", *m["targets"], "sum"], rows)


def _trainings_text(tr: Mapping[str, Any]) -> str:
    needed = "unknown" if tr["needed"] is None else f"{tr['needed']:,}"
    where = " (study plan)" if tr["planned_in_manifest"] else ""
    return (f"needed {needed}{where}, done {tr['done']:,}, failed {tr['failed']:,}, missing {tr['missing']:,}; "
            f"{tr['records']:,} records ({tr['ok_records']:,} ok, {tr['failed_records']:,} failed), "
            f"{tr['corrupt']:,} corrupt")


def _counts_text(summary: Mapping[str, int]) -> str:
    parts = [f"{summary['passed']} passed"] if summary["passed"] else []
    if summary["failed"]:
        parts.append(f"{summary['failed']} failed")
    if summary["warnings"]:
        parts.append(f"{summary['warnings']} warning" + ("s" if summary["warnings"] != 1 else ""))
    return ", ".join(parts) or "no checks"


# == terminal ===================================================================================
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _plain(x: Any) -> str:
    """Terminal-safe text: control characters (escape sequences) shown as \\xNN."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", "" if x is None else str(x))


def _rule(text: str, char: str = "=", width: int = 80) -> str:
    text = f" {text} "
    return f"{text:{char}^{width}}" if len(text) < width - 2 else f"{char * 2}{text}{char * 2}"


def terminal_summary(context: Mapping[str, Any]) -> str:
    """pytest-style: a header, the contribution table per target, the checks not passed, a
    summary line of checks passed / failed / warned."""
    from tabulate import tabulate

    study = context["study"]
    tr = study["trainings"]
    lines = [_rule("torchreid-shapley report"),
             _plain(f"records: {study['source']} ({study['kind']}); metric {context['metric']}; "
                    f"modes {', '.join(context['modes'])}"),
             _plain(f"trainings: {_trainings_text(tr)}")]
    for s in context["sections"]:
        lines += ["", _rule(f"{s['target']} (mode {s['mode']})", "-")]
        lines[-1] = _plain(lines[-1])
        if s["status"] == "complete":
            t = s["tables"]
            rows = [[_plain(r["train_set"]), f"{r5['images']:,}", fmt_images(r["sv_data"]),
                     fmt_ratio(r5["per_instance"]), fmt_linear(r["sv_linear"]), fmt_images(r["lom_data"])]
                    for r, r5 in zip(t["table4"], t["table5"])]
            rows.sort(key=lambda r: -float(r[2].replace(",", "")) if r[2] != "-" else 0.0)
            rows += [["base", "-", fmt_images(t["base"]["data"]), "-", fmt_linear(t["base"]["linear"]), "-"],
                     ["full", "-", fmt_images(t["full"]["data"]), "-", fmt_linear(t["full"]["linear"]), "-"]]
            lines.append(tabulate(rows, headers=["train-set", "images", "SV data", "SV data / image",
                                                 "SV linear", "LOM data"],
                                  tablefmt="simple", disable_numparse=True,
                                  colalign=("left",) + ("right",) * 5))
        elif s["status"] == "incomplete":
            lines.append(f"incomplete: {s['missing']['count']} of {s['missing']['total']} coalitions missing")
        for c in s["checks"]:
            if c["state"] != "passed":
                lines.append(_plain(f"{c['state'].upper()} {c['name']}: {c['detail']}"))
    if context["warnings"]:
        lines += ["", _rule("warnings summary")]
        lines += [_plain(f"WARNING {w}") for w in context["warnings"]]
    lines += ["", _rule(f"{_counts_text(context['summary'])} in report")]
    return "\n".join(lines)


# == files and command ==========================================================================
def write_report(path: os.PathLike | str, context: Mapping[str, Any]) -> Path:
    """Write the report; the suffix chooses: .html, .md (figures in ``<stem>_figures/``), .json."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ShapleyError(f"report file {str(path)!r} has suffix {path.suffix or '(none)'!r}; choose one "
                           f"of {', '.join(SUFFIXES)} (for example -o report.html)")
    if path.parent and not path.parent.exists():
        raise ShapleyError(f"directory {str(path.parent)!r} of the report file does not exist; create it "
                           "or write the report elsewhere")
    if suffix == ".json":
        text = json.dumps(context, indent=2, allow_nan=False) + "\n"
    elif suffix == ".md":
        text = render_markdown(context, path.parent / f"{path.stem}_figures")
    else:
        text = render_html(context)
    path.write_text(text, encoding="utf-8")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``torchreid-shapley report``."""
    parser.add_argument("records", help="a JSONL file of run records or a study directory")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="the report file: .html (one self-contained page), .md (figures as SVG "
                             "files in FILE's directory) or .json (the numbers behind both)")
    parser.add_argument("--metric", default="mAP", help="metric to value (default: mAP; e.g. rank1)")
    parser.add_argument("--modes", choices=MODE_CHOICES, default="both",
                        help="without: the target's own train-set is out; with: it is always in; "
                             "both (default)")
    parser.add_argument("--targets", nargs="+", metavar="NAME", default=None,
                        help="targets to report (default: every target)")
    parser.add_argument("--train-sets", nargs="+", metavar="NAME", default=None,
                        help="restrict the players to these train-sets (default: every train-set)")


def cmd_report(args: argparse.Namespace) -> int:
    """Load records (and ``study.json``), build the context, write the file, print a summary."""
    output = Path(args.output)
    if output.suffix.lower() not in SUFFIXES:
        raise ShapleyError(f"report file {str(output)!r} has suffix {output.suffix or '(none)'!r}; choose one "
                           f"of {', '.join(SUFFIXES)} (for example -o report.html)")
    records = load_records(args.records)
    manifest, manifest_warnings = (read_manifest(args.records) if Path(args.records).is_dir()
                                   else (None, []))
    modes = ("without", "with") if args.modes == "both" else (args.modes,)
    pm = getattr(args, "plugin_manager", None)
    if pm is None:  # the command line sets it when it loaded plugins; else built-ins, entry points, -p
        from .manager import get_plugin_manager

        pm = get_plugin_manager(getattr(args, "plugin", None) or [])
    from .store import read_design

    context = build_context(records, metric=args.metric, modes=modes, targets=args.targets,
                            train_sets=args.train_sets, manifest=manifest, plugin_manager=pm,
                            warnings=manifest_warnings, estimator=getattr(args, "estimator", "auto"),
                            curve=getattr(args, "curve", "model"),
                            designs=(read_design(args.records) or {}).get("games"))
    write_report(output, context)
    for line in context["warnings"]:
        print(f"warning: {_plain(line)}", file=sys.stderr)
    print(terminal_summary(context))
    print(_plain(f"report written to {output}"))
    return 0


def study_report(study_dir: os.PathLike | str, *, pm=None, metric: str = "mAP",
                 filename: str = "report.html") -> str:
    """After ``run``/``demo``: write ``<study>/report.html`` and return the terminal summary."""
    records = load_records(study_dir)
    manifest, manifest_warnings = read_manifest(study_dir)
    from .store import read_design

    context = build_context(records, metric=metric, manifest=manifest, plugin_manager=pm,
                            warnings=manifest_warnings, designs=(read_design(study_dir) or {}).get("games"))
    path = write_report(Path(study_dir) / filename, context)
    return terminal_summary(context) + "\n" + _plain(f"report written to {path}")
