"""``torchreid-shapley report``: context, HTML, Markdown, terminal summary, safety, browser."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

import torchreid_shapley
from torchreid_shapley import report
from torchreid_shapley.errors import ShapleyError
from torchreid_shapley.manager import get_plugin_manager
from torchreid_shapley.records import load_records
from torchreid_shapley.tables import fmt_images, fmt_linear, fmt_ratio
from torchreid_shapley.valuation import target_matrix, value

from conftest import PAPER_IMAGES, log_curve_game, make_records, run_cli, write_jsonl

SCRIPT = '<script>alert(1)</script>'
IMG = '"><img src=x onerror=alert(1)>'
HOSTILE_ERROR = 'CUDA out of memory </pre><script>alert("err")</script>'
HOSTILE_PLUGIN = "<img src=x onerror=alert(2)> & <b>bold</b>"


def bare_pm(*plugins):
    """A plugin manager without entry points or environment plugins (tests build their own)."""
    return get_plugin_manager(plugins, entry_points=False, env=False)


def paper_like_records():
    use_m = {"market1501": 1.0, "grid": 0.1, "prid": 0.05, "sensereid": 0.3, "cuhk02": 0.4}
    use_g = {"market1501": 0.4, "grid": 1.0, "prid": 0.3, "sensereid": 0.2, "cuhk02": 0.2}
    return make_records(PAPER_IMAGES, {
        "market1501": log_curve_game(PAPER_IMAGES, 0.07, 2.0, 0.02, use_m),
        "grid": log_curve_game(PAPER_IMAGES, 0.05, 1.5, 0.05, use_g),
    })


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """The paper-shaped study rendered once: records file, context, HTML and Markdown."""
    d = tmp_path_factory.mktemp("paper")
    path = write_jsonl(d / "runs.jsonl", paper_like_records())
    records = load_records(path)
    context = report.build_context(records, plugin_manager=bare_pm())
    html = report.render_html(context)
    (d / "report.html").write_text(html, encoding="utf-8")
    md = report.render_markdown(context, d / "report_figures")
    (d / "report.md").write_text(md, encoding="utf-8")
    return {"dir": d, "path": path, "records": records, "context": context, "html": html, "md": md}


# -- numbers -------------------------------------------------------------------------------------
def test_context_holds_exactly_what_value_computes(paper):
    ctx, records = paper["context"], paper["records"]
    assert [(s["target"], s["mode"]) for s in ctx["sections"]] == [
        ("grid", "without"), ("market1501", "without"), ("grid", "with"), ("market1501", "with")]
    for s in ctx["sections"]:
        assert s["status"] == "complete"
        expected = value(records, target=s["target"], mode=s["mode"]).to_dict()
        assert s["valuation"] == json.loads(json.dumps(expected))
        assert s["valuation"]["shapley"]["data"] == expected["shapley"]["data"]  # exact floats
        rows = {r["train_set"]: r for r in s["tables"]["table4"]}
        for p in expected["players"]:
            assert rows[p]["sv_data"] == expected["shapley"]["data"][p]
            assert rows[p]["lom_data"] == expected["lom"]["data"][p]


def test_matrix_is_the_target_matrix(paper):
    for m in paper["context"]["matrices"]:
        expected = json.loads(json.dumps(target_matrix(paper["records"], mode=m["mode"]).to_dict()))
        got = {k: v for k, v in m.items() if k not in ("available", "reason", "has_data")}
        assert got == expected


def test_html_shows_the_numbers_value_prints(paper):
    soup = BeautifulSoup(paper["html"], "html.parser")
    for s in paper["context"]["sections"]:
        text = soup.find(id=s["id"]).get_text(" ")
        val = s["valuation"]
        for p in val["players"]:
            for needle in (fmt_images(val["shapley"]["data"][p]), fmt_linear(val["shapley"]["linear"][p]),
                           fmt_ratio(val["per_instance"][p]), fmt_images(val["lom"]["data"][p]),
                           fmt_linear(val["lom"]["linear"][p]), f"{val['num_images'][p]:,}"):
                assert needle in text, (s["id"], p, needle)
        for x in (val["base"], val["full"]):
            assert fmt_images(x["data"]) in text and fmt_linear(x["linear"]) in text
        assert "is worth" in s["headline"]["sentence"] and s["headline"]["sentence"] in text


def test_html_agrees_with_the_value_command_output(paper):
    proc = run_cli("value", paper["path"], "--target", "market1501")
    assert proc.returncode == 0, proc.stderr
    section = BeautifulSoup(paper["html"], "html.parser").find(id="sec-2").get_text(" ")
    rows = [l.split() for l in proc.stdout.splitlines() if l.split() and l.split()[0] in PAPER_IMAGES]
    assert len(rows) == 4
    for cells in rows:
        for cell in cells:
            assert cell in section, cell


def test_json_report_is_exactly_the_context(paper, tmp_path):
    out = report.write_report(tmp_path / "r.json", paper["context"])
    assert json.loads(out.read_text()) == paper["context"]


def test_checks_and_summary_counts(paper):
    ctx = paper["context"]
    names = [c["name"] for c in ctx["sections"][0]["checks"]]
    assert names == ["coalitions_complete", "efficiency_linear", "log_curve_fit", "efficiency_data",
                     "fit_r2", "extrapolation"]
    states = [c["state"] for s in ctx["sections"] for c in s["checks"]]
    assert ctx["summary"] == {"passed": states.count("passed"), "failed": states.count("failed"),
                              "warnings": states.count("warning") + len(ctx["warnings"])}
    # the untrained model (mAP 0.02..0.05) is far below what 200 images give: extrapolated
    extrapolation = {(s["target"], s["mode"]): c for s in ctx["sections"] for c in s["checks"]
                     if c["name"] == "extrapolation"}
    assert extrapolation[("market1501", "without")]["state"] == "warning"
    assert "below" in extrapolation[("market1501", "without")]["detail"]


def test_low_r2_warns(tmp_path):
    images = {"a": 100, "b": 400, "c": 1600}
    noisy = {(): 0.05, ("a",): 0.40, ("b",): 0.10, ("c",): 0.45, ("a", "b"): 0.15, ("a", "c"): 0.50,
             ("b", "c"): 0.20, ("a", "b", "c"): 0.52}
    records = load_records(write_jsonl(tmp_path / "r.jsonl", make_records(images, {"t": noisy.__getitem__})))
    ctx = report.build_context(records, modes=("without",), plugin_manager=bare_pm())
    r2 = next(c for c in ctx["sections"][0]["checks"] if c["name"] == "fit_r2")
    assert r2["state"] == "warning" and "< 0.8" in r2["detail"]


def test_fit_refused_still_reports_linear_values(tmp_path):
    images = {"a": 100, "b": 200}
    recs = make_records(images, {"t": lambda c: 0.5 - 0.001 * sum(images[x] for x in c)})
    ctx = report.build_context(load_records(write_jsonl(tmp_path / "r.jsonl", recs)), plugin_manager=bare_pm())
    s = ctx["sections"][0]
    assert s["status"] == "complete" and s["fit"] is None and s["valuation"]["shapley"]["data"] is None
    assert "log curve was refused" in s["headline"]["sentence"]
    assert any(c["name"] == "log_curve_fit" and c["state"] == "failed" for c in s["checks"])
    html = report.render_html(ctx)
    assert "No log curve" in html and fmt_linear(s["valuation"]["shapley"]["linear"]["a"]) in html
    md = report.render_markdown(ctx, tmp_path / "figs")
    assert "no log curve" in md


# -- safety --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Train-set and target names, an error text, a path and a plugin section that are markup."""
    d = tmp_path_factory.mktemp("hostile") / "<svg onload=alert(3)>"
    d.mkdir()
    images = {"market1501": 12936, SCRIPT: 300, IMG: 500}
    recs = make_records(images, {"market1501": log_curve_game(images, 0.07, 2.0, 0.02),
                                 IMG: log_curve_game(images, 0.05, 1.5, 0.03)})
    recs.append({"schema_version": 1, "train_sets": [SCRIPT], "num_images": {SCRIPT: 300},
                 "status": "failed", "error": HOSTILE_ERROR, "seed": 2})
    path = d / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"schema_version": 1, "train_s\n')

    class Plugin:
        @torchreid_shapley.hookimpl
        def shapley_report_sections(self, context):
            return [{"title": f"About {SCRIPT}", "text": HOSTILE_PLUGIN}]

    ctx = report.build_context(load_records(path), plugin_manager=bare_pm(Plugin()))
    html = report.render_html(ctx)
    md = report.render_markdown(ctx, d / "figs")
    return {"dir": d, "context": ctx, "html": html, "md": md}


def test_hostile_names_are_text_never_markup(hostile):
    html = hostile["html"]
    soup = BeautifulSoup(html, "html.parser")
    scripts = soup.find_all("script")
    assert len(scripts) == 1 and "alert" not in scripts[0].get_text()  # only our sort script
    assert soup.find_all("img") == []
    assert soup.find_all("iframe") == [] and soup.find_all("object") == []
    for tag in soup.find_all(True):
        assert not [a for a in tag.attrs if a.lower().startswith("on")], tag.name
    text = soup.get_text()
    for needle in (SCRIPT, IMG, HOSTILE_ERROR, HOSTILE_PLUGIN, "<svg onload=alert(3)>"):
        assert needle in text, needle
    assert "<script>alert" not in html and "<img" not in html
    # inside the SVG figures the names are XML-escaped text of <text> elements
    svg_texts = [t.get_text() for t in soup.select("svg text")]
    assert any(SCRIPT in t for t in svg_texts) and any(IMG in t for t in svg_texts)


def test_hostile_names_in_markdown_are_escaped(hostile):
    md = hostile["md"]
    assert set(re.findall(r"<([A-Za-z]+)", md)) <= {"a"}  # only our own anchors
    assert all(re.fullmatch(r'<a id="[\w-]+"></a>', line) for line in md.splitlines() if line.startswith("<a"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "&lt;img src=x onerror=alert(2)&gt;" in md  # plugin text: Markdown kept, HTML shown as text
    for svg in (hostile["dir"] / "figs").glob("*.svg"):
        assert "<script" not in svg.read_text() and "<img" not in svg.read_text()


def test_failures_and_corrupt_lines_are_listed(hostile):
    ctx = hostile["context"]
    assert [f["error"] for f in ctx["failures"]] == [HOSTILE_ERROR]
    assert ctx["failures"][0]["recovered"] is False  # seed 2 of that coalition never succeeded
    assert len(ctx["corrupt"]) == 1 and "corrupt record ignored" in ctx["warnings"][0]
    assert ctx["study"]["trainings"]["failed"] == 1 and ctx["study"]["trainings"]["corrupt"] == 1
    soup = BeautifulSoup(hostile["html"], "html.parser")
    problems = soup.find(id="problems").get_text()
    assert HOSTILE_ERROR in problems and "corrupt" in problems


def test_no_network_reference_anywhere(paper, hostile):
    for html in (paper["html"], hostile["html"]):
        assert not re.search(r"(?i)\b(?:https?|ftp|wss?):|//[\w-]+\.[\w.-]+/|@import|url\((?!#)", html)
        soup = BeautifulSoup(html, "html.parser")
        for tag in soup.find_all(True):
            for attr in ("href", "src", "xlink:href", "action", "poster", "data"):
                if tag.get(attr):
                    assert tag[attr].startswith("#"), (tag.name, attr, tag[attr])
        assert "<!DOCTYPE svg" not in html and "<metadata" not in html and "xmlns" not in html
        csp = soup.find("meta", attrs={"http-equiv": "Content-Security-Policy"})["content"]
        assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]


# -- Markdown ------------------------------------------------------------------------------------
def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())
    assert cells[0] == "" and cells[-1] == "", line
    return cells[1:-1]


def markdown_tables(md: str) -> list[list[str]]:
    tables, current = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


@pytest.mark.parametrize("which", ["paper", "hostile"])
def test_markdown_tables_parse(which, paper, hostile):
    md = {"paper": paper, "hostile": hostile}[which]["md"]
    tables = markdown_tables(md)
    assert len(tables) >= 10
    for table in tables:
        widths = {len(split_row(line)) for line in table}
        assert len(widths) == 1, table[:3]
        assert all(re.fullmatch(r":?-+:?", c.strip()) for c in split_row(table[1])), table[1]
        assert len(table) >= 3


def test_markdown_links_its_svg_figures(paper):
    import xml.etree.ElementTree as ET

    md, d = paper["md"], paper["dir"]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 4 * 3 + 2  # 3 figures per section, a heatmap per mode
    for link in links:
        file = d / urllib.parse.unquote(link)
        assert file.is_file(), link
        root = ET.fromstring(file.read_text())
        assert root.tag == "{http://www.w3.org/2000/svg}svg"  # standalone SVG keeps its namespace
    headings = [l for l in md.splitlines() if l.startswith("## ")]
    assert "## Study" in headings and "## market1501: mode without" in headings
    assert "Contributions (paper Table 4)" in md and "Per-image values (paper Table 5)" in md


# -- terminal ------------------------------------------------------------------------------------
def test_terminal_summary_is_pytest_like(paper):
    text = report.terminal_summary(paper["context"])
    lines = text.splitlines()
    assert re.fullmatch(r"=+ torchreid-shapley report =+", lines[0])
    s = paper["context"]["summary"]
    counts = [f"{s['passed']} passed"] + ([f"{s['warnings']} warnings"] if s["warnings"] else [])
    assert re.fullmatch(rf"=+ {', '.join(counts)} in report =+", lines[-1])
    assert "SV data / image" in text and "market1501 (mode without)" in text
    assert len([l for l in lines if l.startswith("---")]) == 4 + 4  # rules + tabulate headers


def test_terminal_summary_escapes_control_characters(tmp_path):
    images = {"a\x1b[31m": 100, "b": 400}
    recs = make_records(images, {"t": log_curve_game(images, 0.07, 2.0, 0.02)})
    ctx = report.build_context(load_records(write_jsonl(tmp_path / "r.jsonl", recs)), plugin_manager=bare_pm())
    text = report.terminal_summary(ctx)
    assert "\x1b" not in text and "a\\x1b[31m" in text


# -- incomplete studies --------------------------------------------------------------------------
def test_missing_and_failed_trainings_still_render(tmp_path):
    images = {"a": 100, "b": 400, "c": 1600}
    recs = make_records(images, {"t": log_curve_game(images, 0.07, 2.0, 0.02),
                                 "a": log_curve_game(images, 0.05, 1.0, 0.03)}, skip=[("b",), ("a", "c")])
    recs.append({"schema_version": 1, "train_sets": ["b"], "num_images": {"b": 400}, "status": "failed",
                 "error": "Traceback (most recent call last):\n  ...\nRuntimeError: boom", "seed": 1})
    path = write_jsonl(tmp_path / "r.jsonl", recs)
    ctx = report.build_context(load_records(path), plugin_manager=bare_pm())
    by = {(s["target"], s["mode"]): s for s in ctx["sections"]}
    s = by[("t", "without")]
    assert s["status"] == "incomplete" and s["valuation"] is None
    assert s["missing"]["count"] == 2 and s["missing"]["total"] == 8
    assert s["missing"]["coalitions"] == ["b", "a+c"]
    check = s["checks"][0]
    assert check["name"] == "coalitions_complete" and check["state"] == "failed" and "6 of 8" in check["detail"]
    assert by[("a", "with")]["status"] == "incomplete"  # a+c missing there too
    assert by[("a", "without")]["status"] == "incomplete"  # {b} missing
    assert ctx["summary"]["failed"] >= 3
    assert ctx["study"]["trainings"]["failed"] == 1 and ctx["study"]["trainings"]["missing"] == 2
    assert ctx["matrices"][0]["available"] is False
    assert [sk["target"] for sk in ctx["skipped"]] == ["t"]  # t has no train-set: no mode with
    html = report.render_html(ctx)
    soup = BeautifulSoup(html, "html.parser")
    sec = soup.find(id=s["id"]).get_text(" ")
    assert "Incomplete: 2 of 8 coalitions without" in sec and "a+c" in sec and "FAILED" in sec
    assert "RuntimeError: boom" in soup.find(id="problems").get_text()
    md = report.render_markdown(ctx, tmp_path / "figs")
    assert "Incomplete: 2 of 8" in md and "RuntimeError: boom" in md
    assert "FAILED" in report.terminal_summary(ctx).splitlines()[-1].upper()


def test_no_successful_record_at_all(tmp_path):
    recs = [{"schema_version": 1, "train_sets": ["a"], "num_images": {"a": 10}, "status": "failed",
             "error": "boom"}]
    ctx = report.build_context(load_records(write_jsonl(tmp_path / "r.jsonl", recs)), plugin_manager=bare_pm())
    assert ctx["sections"] == [] and ctx["failures"][0]["error"] == "boom"
    assert "No failed training" not in report.render_html(ctx)
    report.render_markdown(ctx, tmp_path / "figs")


def test_a_single_train_set(tmp_path):
    recs = make_records({"a": 100}, {"a": lambda c: 0.1 + 0.3 * len(c), "t": lambda c: 0.2 + 0.1 * len(c)})
    ctx = report.build_context(load_records(write_jsonl(tmp_path / "r.jsonl", recs)), plugin_manager=bare_pm())
    by = {(s["target"], s["mode"]): s for s in ctx["sections"]}
    assert by[("a", "with")]["players"] == [] and by[("a", "with")]["status"] == "complete"
    assert by[("t", "without")]["valuation"]["shapley"]["linear"] == {"a": pytest.approx(0.1)}
    report.render_html(ctx)
    report.render_markdown(ctx, tmp_path / "figs")


# -- study directory with a manifest ----------------------------------------------------------------
def write_study(d: Path, *, missing=(), hostile_model=False) -> Path:
    images = {"grid": 250, "market1501": 12936, "prid": 200}
    recs = make_records(images, {"market1501": log_curve_game(images, 0.07, 2.0, 0.02),
                                 "grid": log_curve_game(images, 0.05, 1.5, 0.03)}, skip=missing)
    (d / "runs").mkdir(parents=True)
    for k, r in enumerate(recs):
        r.update({"model": "osnet_x0_25", "num_ids": {t: 100 + k for t in r["train_sets"]},
                  "duration_s": 60.0, "host": "node1", "device": "cuda:0",
                  "versions": {"torch": "2.3.0", "torchreid": "1.4.0"}})
        r["num_ids"] = {"grid": 125, "market1501": 751, "prid": 100}
        r["num_ids"] = {t: r["num_ids"][t] for t in r["train_sets"]}
        (d / "runs" / f"{k:04d}.json").write_text(json.dumps(r))
    model = "</code><script>alert(4)</script>" if hostile_model else "osnet_x0_25"
    manifest = {
        "schema_version": 1, "tool": "torchreid-shapley", "version": "0.1.0",
        "created_at": "2026-01-02T03:04:05+00:00", "fingerprint": "ab" * 32,
        "payload": {"settings": {"model.name": model, "train.max_epoch": 60, "train.lr": 0.0003},
                    "train_sets": {t: {"num_images": n, "num_ids": {"grid": 125, "market1501": 751,
                                                                     "prid": 100}[t]}
                                   for t, n in images.items()},
                    "targets": ["market1501", "grid"], "seeds": [1]},
        "config": {"model": {"name": model}, "train": {"max_epoch": 60, "lr": 0.0003, "optim": "adam"},
                   "shapley": {"schedule": "fixed-epochs"}},
        "train_sets": sorted(images), "targets": ["market1501", "grid"], "modes": ["without", "with"],
        "seeds": [1], "plan_size": 8, "versions": {"python": "3.11.7", "torchreid_shapley": "0.1.0"},
    }
    (d / "study.json").write_text(json.dumps(manifest))
    return d


def namespace(records, output, **kw):
    ns = argparse.Namespace(records=str(records), output=str(output), metric="mAP", modes="both",
                            targets=None, train_sets=None, plugin_manager=bare_pm())
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_study_directory_header_from_the_manifest(tmp_path, capsys):
    study = write_study(tmp_path / "study", missing=[("grid", "prid")], hostile_model=True)
    out = tmp_path / "report.html"
    assert report.cmd_report(namespace(study, out)) == 0
    captured = capsys.readouterr()
    assert re.search(r"=+ \d+ passed, \d+ failed.* in report =+", captured.out.splitlines()[-2])
    assert f"report written to {out}" in captured.out
    html = out.read_text()
    soup = BeautifulSoup(html, "html.parser")
    study_text = soup.find(id="study").get_text(" ")
    for needle in ("</code><script>alert(4)</script>", "ab" * 32, "2026-01-02T03:04:05+00:00",
                   "max_epoch 60", "fixed-epochs", "751", "125", "node1", "cuda:0", "needed 8 (study plan)",
                   "done 7", "missing 1"):
        assert needle in study_text, needle
    assert len(soup.find_all("script")) == 1
    details = soup.find(id="study").find("details").get_text(" ")
    assert "torch 2.3.0" in details and "torchreid 1.4.0" in details and "train.lr" in details
    # grid+prid is missing: market1501 (without) needs it; grid (without) does not
    by = {(s["target"], s["mode"]): s["status"] for s in json.loads(json.dumps(
        report.build_context(load_records(study), manifest=json.loads((study / "study.json").read_text()),
                             plugin_manager=bare_pm())))["sections"]}
    assert by[("market1501", "without")] == "incomplete" and by[("grid", "without")] == "complete"


def test_manifest_train_set_without_any_record(tmp_path):
    study = write_study(tmp_path / "study")
    manifest = json.loads((study / "study.json").read_text())
    manifest["train_sets"].append("cuhk02")
    ctx = report.build_context(load_records(study), manifest=manifest, plugin_manager=bare_pm())
    s = next(s for s in ctx["sections"] if (s["target"], s["mode"]) == ("market1501", "without"))
    assert s["status"] == "incomplete" and "cuhk02" in s["missing"]["note"]
    assert s["missing"]["total"] == 8 and s["missing"]["count"] == 4


def test_unreadable_manifest_is_a_warning(tmp_path, capsys):
    study = write_study(tmp_path / "study")
    (study / "study.json").write_text("{not json")
    assert report.cmd_report(namespace(study, tmp_path / "r.md", modes="without")) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "study manifest not readable" in err
    assert "unknown" in (tmp_path / "r.md").read_text()


# -- plugins, options, errors ----------------------------------------------------------------------
def test_plugin_sections_appear_in_html_and_markdown(tmp_path, paper):
    seen = {}

    class Plugin:
        @torchreid_shapley.hookimpl
        def shapley_report_sections(self, context):
            seen["context"] = context
            return [{"title": "Cost of the study", "text": "32 trainings x 1.5 GPU-hours = *48* GPU-hours"}]

    ctx = report.build_context(paper["records"], modes=("without",), targets=["grid"],
                               plugin_manager=bare_pm(Plugin()))
    assert seen["context"]["sections"][0]["target"] == "grid"  # the hook saw the context
    assert ctx["plugin_sections"] == [{"title": "Cost of the study",
                                       "text": "32 trainings x 1.5 GPU-hours = *48* GPU-hours"}]
    soup = BeautifulSoup(report.render_html(ctx), "html.parser")
    plugins = soup.find(id="plugins").get_text(" ")
    assert "Cost of the study" in plugins and "*48* GPU-hours" in plugins
    md = report.render_markdown(ctx, tmp_path / "f")
    assert "### Cost of the study" in md and "= *48* GPU-hours" in md


def test_a_broken_plugin_is_a_warning_not_a_crash(paper):
    class Broken:
        @torchreid_shapley.hookimpl
        def shapley_report_sections(self, context):
            raise RuntimeError("plugin bug")

    ctx = report.build_context(paper["records"], modes=("without",), targets=["grid"],
                               plugin_manager=bare_pm(Broken()))
    assert ctx["plugin_sections"] == [] and any("plugin bug" in w for w in ctx["warnings"])


def test_options_restrict_the_report(paper):
    ctx = report.build_context(paper["records"], metric="rank1", modes=("with",), targets=["grid"],
                               train_sets=["grid", "market1501", "prid"], plugin_manager=bare_pm())
    (s,) = ctx["sections"]
    assert (s["target"], s["mode"], s["metric"], s["players"]) == ("grid", "with", "rank1", ["market1501", "prid"])
    assert s["valuation"] == json.loads(json.dumps(value(
        paper["records"], target="grid", mode="with", metric="rank1",
        train_sets=["grid", "market1501", "prid"]).to_dict()))


@pytest.mark.parametrize("kw,needle", [
    ({"metric": "rank20"}, "'rank20'"), ({"targets": ["viper"]}, "'viper'"),
    ({"train_sets": ["duke"]}, "'duke'"), ({"modes": ("both",)}, "'both'"),
])
def test_bad_options_name_the_value(paper, kw, needle):
    with pytest.raises(ShapleyError, match=needle):
        report.build_context(paper["records"], plugin_manager=bare_pm(), **kw)


def test_write_report_refuses_other_suffixes(paper, tmp_path):
    with pytest.raises(ShapleyError) as err:
        report.write_report(tmp_path / "report.pdf", paper["context"])
    assert "'.pdf'" in str(err.value) and ".html" in str(err.value) and ".md" in str(err.value)
    with pytest.raises(ShapleyError, match="does not exist"):
        report.write_report(tmp_path / "nope" / "r.html", paper["context"])


def test_add_arguments_parses_the_documented_options():
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    args = parser.parse_args(["runs.jsonl", "-o", "r.html", "--modes", "with", "--targets", "a", "b",
                              "--train-sets", "x", "y", "--metric", "rank1"])
    assert (args.records, args.output, args.modes, args.targets, args.train_sets, args.metric) == (
        "runs.jsonl", "r.html", "with", ["a", "b"], ["x", "y"], "rank1")
    defaults = parser.parse_args(["runs.jsonl", "--output", "r.md"])
    assert defaults.modes == "both" and defaults.metric == "mAP" and defaults.targets is None


def test_templates_load_through_the_package_or_the_fallback():
    env = report._environment()
    assert env.autoescape is True
    import jinja2

    assert env.undefined is jinja2.StrictUndefined
    assert env.get_template("report.html.j2")


def test_import_report_is_light():
    code = ("import sys\nimport torchreid_shapley.report, torchreid_shapley.figures\n"
            "heavy = sorted(m for m in ('matplotlib', 'jinja2', 'torch', 'torchreid', 'tabulate') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- the command line (needs `report` wired into cli.py) -------------------------------------------
def test_cli_report_html_md_json(paper, tmp_path):
    for name in ("r.html", "r.md", "r.json"):
        proc = run_cli("report", paper["path"], "-o", tmp_path / name, "--modes", "without", "--targets", "grid")
        assert proc.returncode == 0, proc.stderr
        assert re.search(r"=+ .* in report =+", proc.stdout) and (tmp_path / name).is_file()
    assert json.loads((tmp_path / "r.json").read_text())["sections"][0]["target"] == "grid"
    assert list((tmp_path / "r_figures").glob("*.svg"))
    code = ("import sys\nfrom torchreid_shapley.cli import main\n"
            f"rc = main(['report', {str(paper['path'])!r}, '-o', {str(tmp_path / 'x.html')!r}])\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchreid', 'torchvision'))\n"
            "assert rc == 0 and not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_cli_report_bad_input_is_one_error_line(paper, tmp_path):
    for args, needle in (((paper["path"], "-o", tmp_path / "r.pdf"), "'.pdf'"),
                         ((tmp_path / "missing.jsonl", "-o", tmp_path / "r.html"), "does not exist"),
                         ((paper["path"], "-o", tmp_path / "r.html", "--metric", "rank20"), "'rank20'")):
        proc = run_cli("report", *args)
        assert proc.returncode == 2, proc.stderr
        errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
        assert len(errors) == 1 and needle in errors[0] and "Traceback" not in proc.stderr


# -- a real browser ------------------------------------------------------------------------------
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed but CI is set: apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium); set CI to make this a failure")
    return exe


def console_errors(stderr: str) -> list[str]:
    return [l for l in stderr.splitlines() if ":CONSOLE" in l or "Uncaught" in l]


@pytest.mark.parametrize("which", ["paper", "hostile"])
def test_browser_renders_the_page_without_errors(which, paper, hostile, tmp_path):
    from PIL import Image

    exe = chromium()
    page = tmp_path / "report.html"
    page.write_text({"paper": paper, "hostile": hostile}[which]["html"], encoding="utf-8")
    shot = tmp_path / "shot.png"
    base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    proc = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not console_errors(proc.stderr), console_errors(proc.stderr)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # text, figures, badges: not a blank page
    assert max(count for count, _ in colours) < 0.9 * 1280 * 2000
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0 and not console_errors(dom.stderr), console_errors(dom.stderr)
    soup = BeautifulSoup(dom.stdout, "html.parser")
    assert soup.select('table.sortable th[tabindex="0"]')  # our script ran under the page's CSP
    assert soup.find_all("img") == [] and len(soup.find_all("script")) == 1


def test_browser_sorts_a_table_by_clicking_its_headers(paper, tmp_path):
    exe = chromium()
    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", paper["html"])  # allow the probe
    probe = """<script>
(function () {
  var table = document.querySelectorAll("#sec-2 table.sortable")[1];  /* Table 5 of market1501 */
  var heads = table.tHead.rows[0].cells, out = [];
  function names() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[0].textContent; }).join("|");
  }
  heads[2].click(); out.push(names());
  heads[2].click(); out.push(names());
  heads[0].click(); out.push(names());
  document.body.setAttribute("data-probe", out.join(" / "));
})();
</script></body>"""
    page = tmp_path / "sort.html"
    page.write_text(html.replace("</body>", probe), encoding="utf-8")
    dom = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0 and not console_errors(dom.stderr), console_errors(dom.stderr)
    probe = BeautifulSoup(dom.stdout, "html.parser").body["data-probe"]
    assert probe.split(" / ") == ["cuhk02|sensereid|grid|prid",  # images: largest first
                                  "prid|grid|sensereid|cuhk02",  # again: smallest first
                                  "cuhk02|grid|prid|sensereid"]  # names: A to Z
