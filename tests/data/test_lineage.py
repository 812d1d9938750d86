"""Run inputs and lineage with real fluent runs on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest

import keel
import keel.data
from keel.data.versions import lineage, list_versions, load, log_dataset, log_input
from keel.errors import InvalidInput, NotFound
from keel.settings import Settings


@pytest.fixture
def table(settings: Settings) -> str:
    log_dataset(pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "a"]}), name="diabetes")
    return "diabetes@1"


def test_load_inside_a_run_records_the_input_once_per_context(
    settings: Settings, table: str
) -> None:
    keel.set_experiment("churn")
    with keel.start_run(name="fit") as run:
        frame = load(table)
        load(table)  # the same input again: recorded once
        load("diabetes", context="eval")
    assert list(frame["x"]) == [1.0, 2.0, 3.0]

    found = lineage(table)
    assert found.produced_by is None
    # oldest first; inputs of the same millisecond by context
    assert sorted((r.run_id, r.context) for r in found.used_by) == [
        (run.run_id, "eval"),
        (run.run_id, "train"),
    ]
    first = found.used_by[0]
    assert (first.experiment, first.run_name, first.status) == ("churn", "fit", "FINISHED")


def test_log_dataset_in_a_run_records_the_producer_and_log_input_the_consumers(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "raw.txt").write_text("raw")
    with keel.start_run(name="prepare") as producer:
        version = log_dataset(tmp_path / "raw.txt", name="raw")
    assert version.run_id == producer.run_id

    with pytest.raises(RuntimeError), keel.start_run(name="train") as consumer:
        assert keel.log_input(version).ref == "raw@1"  # a DatasetVersion
        keel.log_input("raw@1", context="eval")  # or a reference
        keel.log_input("raw", context="eval")  # the latest: the same triple, once
        raise RuntimeError("training blew up")

    found = lineage("raw@1")
    assert found.produced_by is not None
    assert (found.produced_by.run_id, found.produced_by.run_name) == (producer.run_id, "prepare")
    assert found.produced_by.context is None
    assert sorted((r.run_id, r.context, r.status) for r in found.used_by) == [
        (consumer.run_id, "eval", "FAILED"),
        (consumer.run_id, "train", "FAILED"),
    ]


def test_outside_a_run_load_records_nothing(settings: Settings, table: str) -> None:
    load(table)
    assert lineage(table).used_by == []


def test_another_thread_has_no_active_run(settings: Settings, table: str) -> None:
    with keel.start_run():
        worker = threading.Thread(target=load, args=(table,))
        worker.start()
        worker.join()
    assert lineage(table).used_by == []


def test_several_runs_and_versions_stay_apart(settings: Settings) -> None:
    log_dataset(pd.DataFrame({"x": [1]}), name="d")
    log_dataset(pd.DataFrame({"x": [2]}), name="d")
    with keel.start_run(name="one") as one:
        load("d@1")
    with keel.start_run(name="two") as two:
        load("d@2")
        load("d@1", context="baseline")
    assert [(r.run_id, r.context) for r in lineage("d@1").used_by] == [
        (one.run_id, "train"),
        (two.run_id, "baseline"),
    ]
    assert [(r.run_id, r.context) for r in lineage("d@2").used_by] == [(two.run_id, "train")]


def test_an_active_run_in_another_database_is_refused(
    settings: Settings, table: str, tmp_path: Path
) -> None:
    elsewhere = Settings(database_url=f"sqlite:///{tmp_path / 'other.db'}")
    with keel.start_run() as run:
        with pytest.raises(InvalidInput, match=run.run_id):
            load(table, settings=elsewhere)
        # reading another database's versions records nothing, so it is allowed
        with pytest.raises(NotFound, match="none is logged yet"):
            list_versions("diabetes", settings=elsewhere)
        assert lineage(table).version.ref == table


def test_inputs_of_unknown_runs_and_versions(settings: Settings, table: str) -> None:
    with pytest.raises(NotFound, match="run 0123456789abcdef"):
        log_input("0123456789abcdef", table)
    with keel.start_run(), pytest.raises(NotFound, match="has no version 5"):
        keel.log_input("diabetes@5")
    with pytest.raises(NotFound, match="no dataset named"):
        lineage("nothing@1")


def test_run_inputs_lists_what_a_run_read(settings: Settings, table: str) -> None:
    log_dataset(pd.DataFrame({"x": [9.0]}), name="holdout")
    with keel.start_run(name="fit") as run:
        load(table)
        load("holdout@1", context="eval")
    with keel.start_run(name="other") as other:
        pass
    found = keel.data.run_inputs(run.run_id)
    assert sorted((i.version.ref, i.context) for i in found) == [
        ("diabetes@1", "train"),
        ("holdout@1", "eval"),
    ]
    assert all(i.version.digest and i.version.kind == "file" for i in found)
    assert keel.data.run_inputs(other.run_id) == []
    assert keel.data.run_inputs("no-such-run") == []
