"""``keel data add --name``, ``versions``, ``lineage`` and ``show`` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

import keel
from keel.data.models import parse_pointer
from keel.data.versions import load, log_dataset
from keel.settings import Settings
from tests.conftest import run_main


def _table(path: Path, rows: int = 300, shift: float = 0.0) -> Path:
    frame = pd.DataFrame(
        {
            "glucose": [80.0 + (i % 60) + shift for i in range(rows)],
            "sex": ["female" if i % 4 else "male" for i in range(rows)],
            "bmi": [None if i % 10 == 0 else 20.0 + i % 15 for i in range(rows)],
        }
    )
    frame.to_csv(path, index=False)
    return path


def test_add_with_name_records_versions_and_writes_them_into_the_pointer(
    cli: CliRunner, settings: Settings, tmp_path: Path
) -> None:
    data = _table(tmp_path / "train.csv")
    result = run_main(cli, ["data", "add", "train.csv", "--name", "diabetes"])
    assert result.exit_code == 0, result.output
    assert "diabetes@1" in result.output
    pointer = parse_pointer((tmp_path / "train.csv.keel").read_text(), source="p")
    assert (pointer.name, pointer.version) == ("diabetes", "1")

    again = run_main(cli, ["data", "add", "train.csv", "--name", "diabetes"])
    assert again.exit_code == 0 and "diabetes@1" in again.output
    assert "git add" not in again.output  # nothing changed

    _table(data, rows=310, shift=5)
    third = run_main(cli, ["data", "add", "train.csv", "--name", "diabetes"])
    assert third.exit_code == 0 and "diabetes@2" in third.output
    pointer = parse_pointer((tmp_path / "train.csv.keel").read_text(), source="p")
    assert (pointer.name, pointer.version) == ("diabetes", "2")
    assert "git add train.csv.keel" in third.output

    # the pointer keeps the name: a changed file added without --name is the next version
    _table(data, rows=320)
    fourth = run_main(cli, ["data", "add", "train.csv"])
    assert fourth.exit_code == 0 and "diabetes@3" in fourth.output, fourth.output
    pointer = parse_pointer((tmp_path / "train.csv.keel").read_text(), source="p")
    assert (pointer.name, pointer.version) == ("diabetes", "3")
    unchanged = run_main(cli, ["data", "add", "train.csv"])
    assert "Recorded" not in unchanged.output

    listed = run_main(cli, ["data", "versions", "diabetes", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["version"], r["rows"], r["format"]) for r in rows] == [
        (3, 320, "csv"),
        (2, 310, "csv"),
        (1, 300, "csv"),
    ]
    assert rows[0]["digest"] == pointer.hash and rows[0]["source"] == str(data)
    assert pd.read_csv(data).equals(load("diabetes@3"))


def test_versions_lists_a_dataset_and_every_dataset(
    cli: CliRunner, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("a")
    with keel.start_run(name="prep") as run:
        log_dataset(tmp_path / "notes", name="notes")
    log_dataset(_table(tmp_path / "t.csv"), name="table")

    shown = run_main(cli, ["data", "versions", "notes"])
    assert shown.exit_code == 0, shown.output
    assert "notes: 1 version" in shown.output and run.run_id in shown.output
    every = run_main(cli, ["data", "versions"])
    assert "notes" in every.output and "table" in every.output
    summary = json.loads(run_main(cli, ["data", "versions", "--json"]).output)
    assert [(d["name"], d["versions"], d["latest"]["version"]) for d in summary] == [
        ("notes", 1, 1),
        ("table", 1, 1),
    ]


def test_show_prints_schema_profile_histogram_and_top_values(
    cli: CliRunner, settings: Settings, tmp_path: Path
) -> None:
    log_dataset(_table(tmp_path / "t.csv"), name="diabetes")
    result = run_main(cli, ["data", "show", "diabetes@1"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "300 rows, 3 columns" in out
    for expected in ("Schema", "Quantiles", "glucose histogram", "sex top values", "█"):
        assert expected in out
    assert "30 (10.0%)" in out  # bmi nulls
    assert "female" in out and "75.0%" in out

    document = json.loads(run_main(cli, ["data", "show", "diabetes", "--json"]).output)
    assert document["version"] == 1 and document["profile"]["rows"] == 300
    bmi = next(c for c in document["profile"]["columns"] if c["name"] == "bmi")
    assert bmi["nulls"] == 30 and bmi["min"] == 20.0 and bmi["max"] == 34.0

    (tmp_path / "plain.txt").write_text("x")
    log_dataset(tmp_path / "plain.txt", name="plain")
    plain = run_main(cli, ["data", "show", "plain"])
    assert plain.exit_code == 0 and "No profile" in plain.output


def test_lineage_lists_producer_and_consumers(
    cli: CliRunner, settings: Settings, tmp_path: Path
) -> None:
    keel.set_experiment("diabetes-exp")
    with keel.start_run(name="prepare") as producer:
        log_dataset(_table(tmp_path / "t.csv"), name="diabetes")
    with keel.start_run(name="train-ridge") as consumer:
        load("diabetes@1")
    result = run_main(cli, ["data", "lineage", "diabetes@1"])
    assert result.exit_code == 0, result.output
    assert f"Logged by run {producer.run_id}" in result.output
    assert "Used by 1 run" in result.output
    assert consumer.run_id in result.output and "train-ridge" in result.output

    document = json.loads(run_main(cli, ["data", "lineage", "diabetes", "--json"]).output)
    assert document["produced_by"]["run_id"] == producer.run_id
    assert [(r["run_id"], r["experiment"], r["context"]) for r in document["used_by"]] == [
        (consumer.run_id, "diabetes-exp", "train")
    ]
    assert document["version"]["ref"] == "diabetes@1"


def test_mistakes_are_one_clear_line(cli: CliRunner, settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    log_dataset(tmp_path / "a.txt", name="letters")
    cases = [
        (["data", "versions", "nope"], "no dataset named 'nope'"),
        (["data", "show", "letters@3"], "letters has no version 3; it has 1"),
        (["data", "lineage", "letters@x"], "malformed dataset reference 'letters@x'"),
        (["data", "add", "a.txt", "b.txt", "--name", "x"], "give one PATH"),
        (["data", "add", "a.txt", "--name", "x@2"], "without @VERSION"),
        (["data", "add", "a.txt", "--name", "bad name"], "invalid dataset name"),
    ]
    for args, message in cases:
        result = run_main(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "a.txt.keel").exists()  # a bad --name stores nothing


def test_python_add_of_a_named_pointer_records_the_next_version(
    settings: Settings, tmp_path: Path
) -> None:
    import keel.data

    data = _table(tmp_path / "train.csv")
    first = keel.data.add([data], name="diabetes", settings=settings)[0]
    assert first.dataset_version == "diabetes@1"
    assert (first.pointer.name, first.pointer.version) == ("diabetes", "1")

    _table(data, rows=333, shift=2)
    second = keel.data.add([data], settings=settings)[0]  # no name: the pointer carries it
    assert second.changed and second.dataset_version == "diabetes@2"
    pointer = parse_pointer((tmp_path / "train.csv.keel").read_text(), source="p")
    assert (pointer.name, pointer.version) == ("diabetes", "2")
    assert sorted(v.version for v in keel.data.list_versions("diabetes", settings=settings)) == [
        1,
        2,
    ]

    unchanged = keel.data.add([data], settings=settings)[0]
    assert not unchanged.changed and unchanged.dataset_version is None
