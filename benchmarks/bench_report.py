"""The report of a large study: 8 train-sets x 8 targets x 2 modes (2^8 runs, synthetic records).

Run by hand:  python benchmarks/bench_report.py [--out DIR]
Prints the seconds of each phase (reading records, building the context, rendering HTML, Markdown
with its SVG files, JSON) and the size of each file. The goal: HTML in under 10 s on the 2-core
development machine and under 5 MB.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import log_curve_game, make_records, write_jsonl  # noqa: E402

IMAGES = {"market1501": 12936, "grid": 250, "prid": 200, "sensereid": 4428, "cuhk02": 6308,
          "msmt17": 30248, "dukemtmcreid": 16522, "viper": 632}


def study_records(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    games = {}
    for target in IMAGES:
        use = {t: float(rng.uniform(0.05, 0.9)) for t in IMAGES}
        use[target] = 1.0
        games[target] = log_curve_game(IMAGES, float(rng.uniform(0.05, 0.09)), float(rng.uniform(1, 4)),
                                       float(rng.uniform(0.01, 0.05)), use)
    records = make_records(IMAGES, games)
    for record in records:  # a little noise so the fits are not exact
        for metrics in record["metrics"].values():
            metrics["mAP"] = float(np.clip(metrics["mAP"] + rng.normal(0, 0.004), 0, 1))
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="keep the reports in this directory")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_report_"))
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    from torchreid_shapley.manager import get_plugin_manager
    from torchreid_shapley.records import load_records
    from torchreid_shapley.report import build_context, render_html, render_markdown

    path = write_jsonl(out / "records.jsonl", study_records())
    t_import = time.perf_counter() - t0

    t_total = time.perf_counter()
    t = time.perf_counter()
    records = load_records(path)
    t_load = time.perf_counter() - t
    pm = get_plugin_manager(entry_points=False, env=False)
    t = time.perf_counter()
    context = build_context(records, plugin_manager=pm)
    t_context = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    html = render_html(context)
    t_html, c_html = time.perf_counter() - t, time.process_time() - c
    (out / "report.html").write_text(html, encoding="utf-8")
    t_total = time.perf_counter() - t_total  # what `report -o x.html` does after start-up
    t = time.perf_counter()
    markdown = render_markdown(context, out / "report_figures")
    t_md = time.perf_counter() - t
    (out / "report.md").write_text(markdown, encoding="utf-8")
    t = time.perf_counter()
    text = json.dumps(context, indent=2, allow_nan=False)
    t_json = time.perf_counter() - t
    (out / "report.json").write_text(text, encoding="utf-8")

    svg_bytes = sum(f.stat().st_size for f in (out / "report_figures").glob("*.svg"))
    figures = html.count("<svg")
    print(f"study: {len(IMAGES)} train-sets, {len(context['study']['targets'])} targets, "
          f"{len(context['modes'])} modes, {len(records.records)} records, {len(context['sections'])} sections, "
          f"{figures} figures")
    print(f"imports {t_import:.2f} s, load {t_load:.2f} s, context {t_context:.2f} s")
    print(f"html     {t_html:6.2f} s  {len(html.encode()) / 1e6:6.2f} MB   (context + html: "
          f"{t_context + t_html:.2f} s; html CPU {c_html:.2f} s)")
    print(f"markdown {t_md:6.2f} s  {len(markdown.encode()) / 1e6:6.2f} MB + {svg_bytes / 1e6:.2f} MB of SVG")
    print(f"json     {t_json:6.2f} s  {len(text.encode()) / 1e6:6.2f} MB")
    print(f"records -> report.html: {t_total:.2f} s wall (goal: under 10 s, under 5 MB)")
    print(f"files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
