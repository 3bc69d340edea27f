"""The report's SVG figures: self-contained, escaped, small, and the same with or without reuse."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from torchreid_shapley import figures, report
from torchreid_shapley.manager import get_plugin_manager
from torchreid_shapley.records import record_set

from conftest import PAPER_IMAGES, log_curve_game, make_records

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert(1)</script>'
QUOTE = '"><img src=x onerror=alert(1)> -- x'


def context_of(images, targets, **kw):
    return report.build_context(record_set(make_records(images, targets)),
                                plugin_manager=get_plugin_manager(entry_points=False, env=False), **kw)


@pytest.fixture(scope="module")
def ctx():
    images = dict(PAPER_IMAGES)
    return context_of(images, {"market1501": log_curve_game(images, 0.07, 2.0, 0.02,
                                                            {"grid": 0.1, "prid": 0.05, "cuhk02": 0.4}),
                               "grid": log_curve_game(images, 0.05, 1.5, 0.05)})


@pytest.fixture(scope="module")
def hostile_ctx():
    images = {"market1501": 12936, HOSTILE: 300, QUOTE: 500}
    return context_of(images, {"market1501": log_curve_game(images, 0.07, 2.0, 0.02),
                               QUOTE: log_curve_game(images, 0.05, 1.5, 0.03)})


def parse(svg: str) -> ET.Element:
    """Inline SVG has no namespace declaration; add it back to parse as XML."""
    return ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" '
                                              'xmlns:xlink="http://www.w3.org/1999/xlink" ', 1))


def texts(svg: str) -> list[str]:
    return ["".join(t.itertext()) for t in parse(svg).iter(f"{SVG}text")]


def all_figures(context, **kw):
    pool = figures.FigurePool()
    out = {}
    for s in context["sections"]:
        for name, svg in figures.section_figures(s, prefix=f"s{s['index']}", pool=pool, **kw).items():
            out[f"{s['id']}-{name}"] = svg
    for k, m in enumerate(context["matrices"]):
        out[f"heatmap-{m['mode']}"] = figures.heatmap_svg(m, prefix=f"h{k}-", pool=pool, **kw)
    return out


@pytest.fixture(scope="module")
def inline(ctx):
    return all_figures(ctx)


def test_inline_svg_is_bare_and_valid(inline):
    assert len(inline) == 4 * 3 + 2
    for name, svg in inline.items():
        assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>"), name
        for bad in ("<?xml", "<!DOCTYPE", "<metadata", "<!--", "xmlns", "http:", "https:", "<image",
                    "<script", "<foreignObject"):
            assert bad not in svg, (name, bad)
        root = parse(svg)
        assert root.tag == f"{SVG}svg" and 'class="figure-svg"' in svg
        assert re.search(r'width="\d+" height="\d+"', svg)
        assert len(svg) < 120_000, (name, len(svg))


def test_standalone_svg_keeps_its_namespace(ctx):
    svg = figures.accuracy_svg(ctx["sections"][0], inline=False)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and "<!DOCTYPE" not in svg and "<metadata" not in svg


def test_ids_are_unique_across_a_page_and_references_resolve(inline):
    page = "".join(inline.values())
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    refs = re.findall(r'(?:url\(#|href="#)([^)"]+)', page)
    assert refs and set(refs) <= set(ids)


def test_figures_show_the_context_numbers(ctx, inline):
    s = ctx["sections"][1]  # market1501, mode without
    assert s["target"] == "market1501"
    acc = " ".join(texts(inline[f"{s['id']}-accuracy"]))
    fit = s["fit"]
    assert f"{fit['alpha']:.4g}" in acc and f"{fit['beta']:.4g}" in acc and f"{fit['r2']:.3f}" in acc
    assert "with market1501" not in acc and f"with {s['highlight']}" in acc  # the largest player
    water = texts(inline[f"{s['id']}-waterfall"])
    psi = s["valuation"]["shapley"]["data"]
    for p, x in psi.items():
        assert p in water and f"{x:+,.0f}" in water
    assert f"{s['valuation']['full']['data']:,.0f}" in water
    marg = " ".join(texts(inline[f"{s['id']}-marginals"]))
    assert all(p in marg for p in s["players"]) and "one point per coalition" in marg
    heat = texts(inline["heatmap-without"])
    m = ctx["matrices"][0]
    for t in m["train_sets"]:
        for j in m["targets"]:
            assert figures.short_number(m["data"]["cells"][t][j]) in heat


def test_hostile_names_are_escaped_text_in_svg(hostile_ctx):
    players = {s["id"]: s["players"] for s in hostile_ctx["sections"]}
    seen = set()
    for name, svg in all_figures(hostile_ctx).items():
        assert "<script" not in svg and "<img" not in svg, name
        assert "&lt;script&gt;" in svg or "&lt;img" in svg or name.endswith("accuracy"), name
        words = texts(svg)
        if name.endswith(("marginals", "waterfall")):
            expected = players[name.rsplit("-", 1)[0]]
        elif name.startswith("heatmap"):
            expected = [HOSTILE, QUOTE]
        else:
            continue
        assert set(expected) <= set(words), (name, expected)
        seen.update(expected)
    assert {HOSTILE, QUOTE} <= seen


def test_reused_figures_equal_fresh_ones(ctx, inline):
    for s in ctx["sections"]:
        fresh = figures.section_figures(s, prefix=f"s{s['index']}")
        for name, svg in fresh.items():
            assert svg == inline[f"{s['id']}-{name}"], (s["id"], name)
    for k, m in enumerate(ctx["matrices"]):
        assert figures.heatmap_svg(m, prefix=f"h{k}-") == inline[f"heatmap-{m['mode']}"]


def test_many_players_are_summarised_and_many_points_thinned(monkeypatch):
    images = {f"d{i}": 100 * (i + 1) for i in range(7)}
    c = context_of(images, {"t": log_curve_game(images, 0.06, 2.0, 0.02)}, modes=("without",))
    s = c["sections"][0]
    assert len(s["coalitions"]) == 128
    marg = figures.marginals_svg(s)
    assert "mean and min..max per coalition size" in " ".join(texts(marg))
    monkeypatch.setattr(figures, "MAX_POINTS", 50)
    acc = figures.accuracy_svg(s)
    assert "showing 50 of 128 coalitions" in " ".join(texts(acc))


def test_incomplete_and_refused_sections_get_only_the_figures_they_can(tmp_path):
    images = {"a": 100, "b": 200, "c": 400}
    recs = make_records(images, {"t": lambda c: 0.5 - 0.0005 * sum(images[x] for x in c)})
    c = report.build_context(record_set(recs), plugin_manager=get_plugin_manager(entry_points=False, env=False))
    (s,) = c["sections"]
    assert s["fit"] is None
    figs = figures.section_figures(s, prefix="x")
    assert sorted(figs) == ["accuracy", "marginals"]  # no data scale: no waterfall
    assert "the log curve was refused" in " ".join(texts(figs["marginals"]))
    recs = make_records(images, {"t": log_curve_game(images, 0.07, 2.0, 0.02)}, skip=[("a",)])
    c = report.build_context(record_set(recs), plugin_manager=get_plugin_manager(entry_points=False, env=False))
    (s,) = c["sections"]
    assert s["status"] == "incomplete" and sorted(figures.section_figures(s, prefix="y")) == ["accuracy"]


def test_heatmap_marks_missing_cells():
    m = {"train_sets": ["a", "b"], "targets": ["x", "y"],
         "data": {"cells": {"a": {"x": 10.0, "y": None}, "b": {"x": -5.0, "y": None}},
                  "base": {"x": 2.0, "y": None}}}
    words = texts(figures.heatmap_svg(m))
    assert words.count("n/a") == 3 and "10" in words and "-5" in words


def test_short_number():
    assert [figures.short_number(x) for x in (1303800, 19600, 1047, 433.2, 4.19, -19800, float("nan"))] == [
        "1.30M", "19.6k", "1,047", "433", "4.19", "-19.8k", "n/a"]


def test_clean_svg_prefixes_ids_and_strips_the_rest():
    raw = ('<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "x" "http://www.w3.org/x.dtd">\n'
           '<svg xmlns:xlink="http://www.w3.org/1999/xlink" width="72pt" height="36pt" '
           'xmlns="http://www.w3.org/2000/svg"><metadata><a>http://example.org</a></metadata>'
           '<!-- a comment --><defs><path id="m1" d="M0 0"/><clipPath id="p1"/></defs>'
           '<use xlink:href="#m1" style="fill: #m1aaaa"/><g clip-path="url(#p1)"/></svg>')
    out = figures.clean_svg(raw, prefix="f1-")
    assert out.startswith('<svg width="96" height="48" class="figure-svg" role="img">')
    assert 'id="f1-m1"' in out and 'xlink:href="#f1-m1"' in out and "url(#f1-p1)" in out
    assert "#m1aaaa" in out  # a colour is not a reference
    assert "http" not in out and "<!" not in out and "comment" not in out
    kept = figures.clean_svg(raw, prefix="f1-", inline=False)
    assert 'xmlns="http://www.w3.org/2000/svg"' in kept and 'width="72pt"' in kept


def test_importing_figures_does_not_import_matplotlib():
    code = "import sys, torchreid_shapley.figures\nassert 'matplotlib' not in sys.modules\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_figures_leave_global_matplotlib_state_alone(ctx):
    import matplotlib

    before = dict(matplotlib.rcParams)
    figures.accuracy_svg(ctx["sections"][0])
    assert dict(matplotlib.rcParams) == before
    assert "matplotlib.pyplot" not in sys.modules or not __import__("matplotlib.pyplot").pyplot.get_fignums()
