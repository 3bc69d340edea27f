"""Records, schema version 1: validation, aggregation, corrupt lines and study directories."""

from __future__ import annotations

import json

import pytest

from torchreid_shapley.errors import RecordsError
from torchreid_shapley.records import load_records, record_set, validate_record

from conftest import write_jsonl

GOOD = {"schema_version": 1, "train_sets": ["grid", "market1501"],
        "num_images": {"grid": 250, "market1501": 12936},
        "metrics": {"market1501": {"mAP": 0.712, "rank1": 0.884}}, "status": "ok", "seed": 1}


def bad(**changes):
    rec = json.loads(json.dumps(GOOD))
    rec.update(changes)
    return rec


def test_the_design_example_is_valid():
    r = validate_record(GOOD, "x:1")
    assert r.train_sets == ("grid", "market1501") and r.ok and r.seed == 1


def test_unsorted_train_sets_are_normalised():
    r = validate_record(bad(train_sets=["market1501", "grid"]), "x:1")
    assert r.train_sets == ("grid", "market1501")


@pytest.mark.parametrize("changes,match", [
    ({"schema_version": 2}, "newer"),
    ({"schema_version": "1"}, "schema_version must be"),
    ({"train_sets": ["grid", "grid"]}, "more than once"),
    ({"num_images": {"grid": 250}}, "exactly the train_sets"),
    ({"num_images": {"grid": 0, "market1501": 5}}, "positive integer"),
    ({"num_images": {"grid": 2.5, "market1501": 5}}, "positive integer"),
    ({"status": "done"}, "status must be"),
    ({"status": "failed"}, "error"),
    ({"metrics": {"market1501": {"mAP": float("nan"), "rank1": 0.1}}}, "not a finite number"),
    ({"metrics": {"market1501": {"mAP": float("inf"), "rank1": 0.1}}}, "not a finite number"),
    ({"metrics": {"market1501": {"mAP": 71.2, "rank1": 0.1}}}, "outside \\[0, 1\\]"),
    ({"metrics": {"market1501": {"mAP": -0.1, "rank1": 0.1}}}, "outside \\[0, 1\\]"),
    ({"metrics": {"market1501": {"mAP": 0.5}}}, "lacks \\['rank1'\\]"),
    ({"metrics": {}}, "at least one target"),
    ({"seed": "one"}, "seed must be"),
])
def test_invalid_fields_are_named(changes, match):
    with pytest.raises(RecordsError, match=match) as exc:
        validate_record(bad(**changes), "file.jsonl:7")
    assert str(exc.value).startswith("file.jsonl:7: ")


def test_failed_record_needs_no_metrics():
    r = validate_record(bad(status="failed", error="CUDA out of memory", metrics={}), "x:1")
    assert not r.ok


def test_repeated_runs_are_averaged_and_failed_ones_ignored():
    rs = record_set([
        GOOD,
        bad(seed=2, metrics={"market1501": {"mAP": 0.702, "rank1": 0.874}}),
        bad(seed=3, status="failed", error="boom", metrics={}),
    ])
    c = rs.coalitions()[("grid", "market1501")]
    assert c.runs == 2
    assert c.metrics["market1501"]["mAP"] == pytest.approx(0.707)
    assert rs.seeds() == [1, 2, 3]


def test_conflicting_image_counts_are_an_error():
    rs = record_set([GOOD, bad(train_sets=["grid"], num_images={"grid": 251})])
    with pytest.raises(RecordsError, match="conflicting image counts: 250 .* 251"):
        rs.num_images()


def test_corrupt_line_is_named_and_treated_as_missing(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + '{"schema_version": 1, "train_se\n' + "\n")
    rs = load_records(path)
    assert len(rs.records) == 1
    assert [c.source for c in rs.corrupt] == [f"{path}:2"]
    assert f"{path}:2" in rs.warnings()[0] and "missing" in rs.warnings()[0]


def test_empty_and_non_json_files_are_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(RecordsError, match="is empty"):
        load_records(empty)
    junk = tmp_path / "junk.jsonl"
    junk.write_text("market1501,0.7\ngrid,0.3\n")
    with pytest.raises(RecordsError, match="no valid JSON record"):
        load_records(junk)
    with pytest.raises(RecordsError, match="does not exist"):
        load_records(tmp_path / "nope.jsonl")


def test_json_list_file(tmp_path):
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([GOOD, bad(train_sets=["grid"], num_images={"grid": 250})]))
    assert len(load_records(path).records) == 2


def test_study_directory_reads_runs_and_failures(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "failures").mkdir()
    (tmp_path / "study.json").write_text("{}")
    (tmp_path / "runs" / "a.json").write_text(json.dumps(GOOD))
    (tmp_path / "runs" / "b.json").write_text('{"schema_version": 1, "tr')  # torn write
    (tmp_path / "failures" / "c.json").write_text(json.dumps(bad(status="failed", error="x")))
    rs = load_records(tmp_path)
    assert len(rs.ok_records) == 1 and len(rs.failed_records) == 1
    assert rs.corrupt[0].source.endswith("b.json")


def test_directory_of_jsonl_files(tmp_path):
    write_jsonl(tmp_path / "one.jsonl", [GOOD])
    write_jsonl(tmp_path / "two.jsonl", [bad(train_sets=["grid"], num_images={"grid": 250})])
    assert len(load_records(tmp_path).records) == 2
