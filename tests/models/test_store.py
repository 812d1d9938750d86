"""The registry's store on SQLite and PostgreSQL: numbering, tags, aliases, the audit trail."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from keel.errors import AlreadyExists, NotFound
from keel.models.models import ColumnSpec, Signature
from keel.models.store import ModelStore

DIGEST = "ab" * 32


def _version(models: ModelStore, name: str = "churn", **changes: object):  # type: ignore[no-untyped-def]
    fields: dict[str, object] = {
        "source": "runs:/r1/model",
        "run_id": "r1",
        "digest": DIGEST,
        "flavor": "sklearn",
        "signature": None,
        "actor": "ana",
    }
    fields.update(changes)
    return models.create_version(name, **fields)  # type: ignore[arg-type]


def test_versions_are_numbered_per_model_and_read_back(models: ModelStore) -> None:
    signature = Signature(inputs=[ColumnSpec(name="age", type="integer")])
    first = _version(models, signature=signature, description="baseline", tags={"team": "ml"})
    second = _version(models, source="runs:/r2/model", run_id="r2", digest="cd" * 32)
    other = _version(models, "fraud")
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.uri == "models:/churn/1"
    got = models.get_version("churn", 1)
    assert got == first
    assert got.signature == signature and got.tags == {"team": "ml"}
    assert got.description == "baseline" and got.created_by == "ana"
    assert [v.version for v in models.list_versions("churn")] == [2, 1]
    assert models.get_latest_version("churn").run_id == "r2"
    assert [m.name for m in models.list_models()] == ["churn", "fraud"]
    assert models.get_model("churn").latest_version == 2
    assert [m.name for m in models.list_models(name_like="fr%")] == ["fraud"]
    assert [(v.name, v.version) for v in models.search_versions(run_id="r1")] == [
        ("churn", 1),
        ("fraud", 1),
    ]
    assert [v.version for v in models.search_versions(digest="cd" * 32)] == [2]


def test_missing_things_are_not_found_with_what_exists(models: ModelStore) -> None:
    with pytest.raises(NotFound, match="none is registered yet"):
        models.get_model("churn")
    _version(models)
    _version(models)
    with pytest.raises(NotFound, match="did you mean churn"):
        models.list_versions("chrun")
    with pytest.raises(NotFound, match="has no version 7; it has 1-2"):
        models.get_version("churn", 7)
    with pytest.raises(NotFound, match="no alias 'champion'; its aliases: none"):
        models.get_version_by_alias("churn", "champion")


def test_create_model_twice_is_refused(models: ModelStore) -> None:
    created = models.create_model("churn", actor="ana", description="d", tags={"a": "1"})
    assert created.latest_version is None and created.tags == {"a": "1"}
    with pytest.raises(NotFound, match="no versions yet"):
        models.get_latest_version("churn")
    with pytest.raises(AlreadyExists):
        models.create_model("churn", actor="bo")
    assert _version(models).version == 1  # register into the existing model


def test_tags_and_descriptions_on_models_and_versions(models: ModelStore) -> None:
    _version(models)
    models.set_tag("churn", "owner", "ana", actor="ana")
    models.set_tag("churn", "owner", "bo", actor="ana")
    models.set_tag("churn", "validated", "yes", actor="ana", version=1)
    models.set_model_description("churn", "predicts churn", actor="ana")
    models.set_version_description("churn", 1, "first cut", actor="ana")
    model, version = models.get_model("churn"), models.get_version("churn", 1)
    assert model.tags == {"owner": "bo"} and model.description == "predicts churn"
    assert version.tags == {"validated": "yes"} and version.description == "first cut"
    models.delete_tag("churn", "validated", actor="ana", version=1)
    assert models.get_version("churn", 1).tags == {}
    with pytest.raises(NotFound, match="has no tag 'validated'"):
        models.delete_tag("churn", "validated", actor="ana", version=1)
    with pytest.raises(NotFound, match="no version 4"):
        models.set_tag("churn", "k", "v", actor="ana", version=4)


def test_aliases_move_and_are_shown_on_versions_and_models(models: ModelStore) -> None:
    for _ in range(3):
        _version(models)
    assert models.set_alias("churn", "champion", 1, actor="ana") is None
    assert models.set_alias("churn", "challenger", 2, actor="ana") is None
    assert models.set_alias("churn", "champion", 3, actor="bo", reason="better rmse") == 1
    assert models.get_version_by_alias("churn", "champion").version == 3
    assert models.get_model("churn").aliases == {"challenger": 2, "champion": 3}
    assert models.get_version("churn", 3).aliases == ["champion"]
    assert models.get_version("churn", 1).aliases == []
    assert models.list_models()[0].aliases == {"challenger": 2, "champion": 3}
    with pytest.raises(NotFound, match="no version 9"):
        models.set_alias("churn", "champion", 9, actor="ana")
    assert models.get_version_by_alias("churn", "champion").version == 3  # unchanged
    assert models.delete_alias("churn", "challenger", actor="ana") == 2
    with pytest.raises(NotFound, match="its aliases: champion -> 3"):
        models.delete_alias("churn", "challenger", actor="ana")


def test_every_change_is_in_the_audit_trail_in_order(models: ModelStore) -> None:
    _version(models)
    _version(models)
    models.set_alias("churn", "champion", 1, actor="ana")
    models.set_alias("churn", "champion", 2, actor="bo", reason="rmse 52 < 57")
    models.set_tag("churn", "k", "v", actor="ana", version=2)
    models.delete_alias("churn", "champion", actor="cy", reason="rollback")
    with pytest.raises(NotFound):  # a failed change leaves no row
        models.set_alias("churn", "champion", 5, actor="ana")
    events = models.history("churn")
    assert [e.action for e in events] == [
        "create_model",
        "create_version",
        "create_version",
        "set_alias",
        "set_alias",
        "set_tag",
        "delete_alias",
    ]
    move = events[4]
    assert (move.actor, move.alias, move.version) == ("bo", "champion", 2)
    assert move.reason == "rmse 52 < 57"
    assert move.detail == {"from": 1, "to": 2}
    assert events[1].detail["digest"] == DIGEST
    assert events[6].detail == {"from": 2} and events[6].actor == "cy"
    assert [e.id for e in events] == sorted(e.id for e in events)
    # no public door appends a row for a change that did not happen, under any actor name
    assert not hasattr(models, "record")
    with pytest.raises(NotFound):
        models.history("nothing")


def test_the_audit_trail_refuses_update_and_delete_even_through_raw_sql(
    models: ModelStore, engine: Engine
) -> None:
    _version(models)
    for statement in (
        "UPDATE model_audit SET actor = 'mallory'",
        "UPDATE model_audit SET reason = 'x' WHERE action = 'create_version'",
        "DELETE FROM model_audit",
        "DELETE FROM model_audit WHERE action = 'create_model'",
    ):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    assert [e.actor for e in models.history("churn")] == ["ana", "ana"]


def test_an_alias_cannot_point_at_a_missing_version_even_through_raw_sql(
    models: ModelStore, engine: Engine
) -> None:
    _version(models)
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO model_aliases (model_id, alias, version, updated_at, updated_by) "
                "VALUES (1, 'champion', 5, 0, 'x')"
            )
        )


def test_references_name_every_version_digest(models: ModelStore) -> None:
    _version(models)
    _version(models, digest="cd" * 32)
    assert [(r.digest, r.name, r.version) for r in models.references()] == [
        (DIGEST, "churn", 1),
        ("cd" * 32, "churn", 2),
    ]


REGISTRAR = textwrap.dedent(
    """
    import sys, time
    from keel.db import make_engine
    from keel.models.store import ModelStore
    url, start, tag, count = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    models = ModelStore(make_engine(url))
    while time.time() < start:
        pass
    for i in range(count):
        v = models.create_version(
            "churn", source=f"runs:/{tag}{i}/model", run_id=f"{tag}{i}", digest="ab" * 32,
            flavor="sklearn", signature=None, actor=tag,
        )
        models.set_alias("churn", "champion", v.version, actor=tag)
        print(v.version)
    """
)


def test_concurrent_processes_get_distinct_consecutive_versions(
    models: ModelStore, store_url: str
) -> None:
    processes, each = 3, 6
    start = str(time.time() + 2.0)  # every process is imported and spinning by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTRAR, store_url, start, f"p{n}", str(each)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    numbers: list[int] = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            numbers += [int(line) for line in out.split()]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    assert sorted(numbers) == list(range(1, processes * each + 1))
    stored = [v.version for v in models.list_versions("churn")]
    assert stored == list(range(processes * each, 0, -1))
    events = models.history("churn")
    assert [e.action for e in events].count("create_model") == 1
    assert [e.version for e in events if e.action == "create_version"] == sorted(numbers)
    moves = [e for e in events if e.action == "set_alias"]
    assert len(moves) == processes * each
    # each move records the version the alias held just before it: the moves chain
    assert [m.detail["from"] for m in moves[1:]] == [m.version for m in moves[:-1]]
    assert models.get_version_by_alias("churn", "champion").version == moves[-1].version
