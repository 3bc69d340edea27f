"""The ``value`` and ``matrix`` commands through the real console entry point."""

from __future__ import annotations

import json

import pytest

from torchreid_shapley.records import record_set
from torchreid_shapley.valuation import target_matrix, value

from conftest import PAPER_IMAGES, make_records, run_cli, write_jsonl


@pytest.fixture
def paper_file(tmp_path, paper_records):
    return write_jsonl(tmp_path / "runs.jsonl", paper_records)


def assert_bad_input(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_value_json_is_full_precision_and_matches_the_api(paper_file, paper_records):
    proc = run_cli("value", paper_file, "--target", "market1501", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    expected = value(record_set(paper_records), target="market1501").to_dict()
    assert out == expected
    assert set(out) == {"target", "mode", "metric", "players", "num_images", "estimator", "coalitions",
                        "fit", "base", "full", "shapley", "lom", "per_instance", "checks", "coalitions_total",
                        "stderr", "seed_spread"}
    assert set(out["fit"]) == {"alpha", "beta", "r2", "points", "min_images", "max_images"}
    assert out["estimator"] == "exact" and out["coalitions"] == 16 == out["coalitions_total"]
    assert out["stderr"] is None


def test_value_text_and_md(paper_file):
    text = run_cli("value", paper_file, "--target", "grid", "--mode", "with")
    assert text.returncode == 0 and "SV data / image" in text.stdout and "PASSED efficiency_data" in text.stdout
    md = run_cli("value", paper_file, "--target", "grid", "--format", "md")
    assert md.returncode == 0
    table = [l for l in md.stdout.splitlines() if l.startswith("|")]
    assert len(table) == 2 + 4 + 2  # header, rule, 4 players, base, full
    assert all(l.count("|") == 8 for l in table)


def test_value_other_metric_and_players(paper_file):
    proc = run_cli("value", paper_file, "-t", "market1501", "--metric", "rank1",
                   "--train-sets", "grid", "prid", "cuhk02", "--format", "json")
    out = json.loads(proc.stdout)
    assert out["metric"] == "rank1" and out["players"] == ["cuhk02", "grid", "prid"]


def test_matrix_json_and_text(paper_file, paper_records):
    proc = run_cli("matrix", paper_file, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(json.dumps(target_matrix(record_set(paper_records)).to_dict()))
    text = run_cli("matrix", paper_file, "--mode", "with")
    assert text.returncode == 0 and "base" in text.stdout and "sum" in text.stdout


def test_a_needed_coalition_missing(tmp_path, paper_records):
    recs = [r for r in paper_records if r["train_sets"] not in (["grid"], ["cuhk02", "prid"])]
    err = assert_bad_input(run_cli("value", write_jsonl(tmp_path / "r.jsonl", recs), "-t", "market1501"),
                           "2 of 16", "grid", "cuhk02+prid", "torchreid-shapley run")
    assert "error:" in err


def test_many_missing_coalitions_show_the_first_few_and_the_count(tmp_path, paper_records):
    recs = [r for r in paper_records if len(r["train_sets"]) != 2]
    assert_bad_input(run_cli("value", write_jsonl(tmp_path / "r.jsonl", recs), "-t", "market1501"),
                     "6 of 16", "and 1 more")


@pytest.mark.parametrize("metric,needle", [(float("nan"), "nan"), (float("inf"), "inf"),
                                            (71.2, "outside [0, 1]")])
def test_bad_metric_values(tmp_path, paper_records, metric, needle):
    paper_records[3]["metrics"]["grid"]["mAP"] = metric
    path = write_jsonl(tmp_path / "r.jsonl", paper_records)
    assert_bad_input(run_cli("value", path, "-t", "market1501"), f"{path}:4", needle)


def test_unknown_target_and_metric_list_what_exists(paper_file):
    assert_bad_input(run_cli("value", paper_file, "-t", "dukemtmc"), "'dukemtmc'", "['grid', 'market1501']")
    assert_bad_input(run_cli("value", paper_file, "-t", "grid", "--metric", "rank20"), "'rank20'",
                     "['mAP', 'rank1']")


def test_mode_with_for_a_target_without_a_train_set(tmp_path):
    images = {"a": 10, "b": 20}
    recs = make_records(images, {"viper": lambda c: 0.1 + 0.01 * len(c)})
    path = write_jsonl(tmp_path / "r.jsonl", recs)
    assert_bad_input(run_cli("value", path, "-t", "viper", "--mode", "with"), "'viper'", "--mode without")


def test_conflicting_image_counts(tmp_path, paper_records):
    paper_records[5]["num_images"][paper_records[5]["train_sets"][0]] += 1
    assert_bad_input(run_cli("value", write_jsonl(tmp_path / "r.jsonl", paper_records), "-t", "grid"),
                     "conflicting image counts")


def test_newer_schema_version(tmp_path, paper_records):
    paper_records[0]["schema_version"] = 2
    assert_bad_input(run_cli("value", write_jsonl(tmp_path / "r.jsonl", paper_records), "-t", "grid"),
                     "schema_version 2", "pip install -U torchreid-shapley")


def test_empty_and_non_json_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    assert_bad_input(run_cli("value", tmp_path / "empty.jsonl", "-t", "grid"), "is empty")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    assert_bad_input(run_cli("matrix", tmp_path / "x.csv"), "no valid JSON record")


def test_usage_errors_are_one_line(paper_file):
    assert_bad_input(run_cli("value", paper_file), "--target")
    assert_bad_input(run_cli("value", paper_file, "-t", "grid", "--mode", "both"), "invalid choice")
    assert_bad_input(run_cli("frobnicate"), "invalid choice")


def test_corrupt_line_warns_and_counts_as_missing(tmp_path, paper_records):
    path = tmp_path / "r.jsonl"
    lines = [json.dumps(r) for r in paper_records]
    torn = next(i for i, r in enumerate(paper_records) if r["train_sets"] == ["grid"])
    lines[torn] = lines[torn][:25]  # a torn write
    path.write_text("\n".join(lines) + "\n")
    proc = run_cli("value", path, "-t", "market1501")
    assert f"warning: {path}:{torn + 1}: corrupt record ignored" in proc.stderr
    assert proc.returncode == 2  # its coalition is now missing, and named
    assert "1 of 16" in proc.stderr


def test_refused_fit_exits_0_with_linear_values(tmp_path):
    images = {"a": 100, "b": 200}
    recs = make_records(images, {"t": lambda c: 0.5 - 0.001 * sum(images[x] for x in c)})
    proc = run_cli("value", write_jsonl(tmp_path / "r.jsonl", recs), "-t", "t", "--format", "json")
    assert proc.returncode == 0
    out = json.loads(proc.stdout)
    assert out["fit"] is None and out["shapley"]["data"] is None and out["lom"]["data"] is None
    assert out["base"]["data"] is None and out["full"]["data"] is None and out["per_instance"] is None
    assert out["shapley"]["linear"]["a"] == pytest.approx(-0.1)
    fit = [c for c in out["checks"] if c["name"] == "log_curve_fit"]
    assert fit and not fit[0]["passed"] and "alpha" in fit[0]["detail"]
    assert [l for l in proc.stderr.splitlines() if l.startswith("warning: ")]
    text = run_cli("value", write_jsonl(tmp_path / "r.jsonl", recs), "-t", "t")
    assert text.returncode == 0 and "FAILED log_curve_fit" in text.stdout


def test_single_image_count_refuses_the_fit(tmp_path):
    recs = make_records({"a": 100}, {"t": lambda c: 0.1 + 0.2 * len(c)})
    proc = run_cli("value", write_jsonl(tmp_path / "r.jsonl", recs), "-t", "t", "--format", "json")
    assert proc.returncode == 0
    assert "two distinct image counts" in json.loads(proc.stdout)["checks"][2]["detail"]


def test_import_and_value_do_not_import_torch(paper_file):
    code = ("import sys, runpy\n"
            "import torchreid_shapley\n"
            "assert 'torch' not in sys.modules, 'import torchreid_shapley imported torch'\n"
            "from torchreid_shapley.cli import main\n"
            f"rc = main(['value', {str(paper_file)!r}, '-t', 'grid', '--format', 'json'])\n"
            f"rc += main(['matrix', {str(paper_file)!r}])\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchreid', 'torchvision'))\n"
            "assert rc == 0 and not bad, bad\n")
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_module_and_console_script_agree(paper_file):
    import shutil
    import subprocess
    exe = shutil.which("torchreid-shapley")
    if exe is None:
        pytest.skip("console script not on PATH (project not installed)")
    a = subprocess.run([exe, "value", str(paper_file), "-t", "grid", "--format", "json"],
                       capture_output=True, text=True)
    b = run_cli("value", paper_file, "-t", "grid", "--format", "json")
    assert a.returncode == 0 and a.stdout == b.stdout
