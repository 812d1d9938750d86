"""Migrations: head in step with the scripts, concurrent first open, upgrade from 0001."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from keel.db import HEAD_REVISION, ensure_schema, make_engine
from keel.db.migrate import MIGRATIONS_DIR, current_revision, upgrade
from keel.errors import StorageError
from tests.conftest import create_pg_database, drop_pg_database


def test_head_constant_matches_the_migration_scripts() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        url = create_pg_database("keel_mig")
        yield url
        drop_pg_database(url)


OPENER = textwrap.dedent(
    """
    import sys, time
    from keel.db import ensure_schema, make_engine
    from keel.tracking.store import TrackingStore
    engine = make_engine(sys.argv[1])
    deadline = float(sys.argv[2])
    while time.time() < deadline:
        pass
    ensure_schema(engine)
    TrackingStore(engine).create_experiment(sys.argv[3])
    print("ok")
    """
)


def test_concurrent_first_open_applies_migrations_once(fresh_url: str) -> None:
    import time

    start_at = str(time.time() + 2.0)  # both processes are imported and spinning by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, fresh_url, start_at, f"exp{n}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    engine = make_engine(fresh_url)
    assert current_revision(engine) == HEAD_REVISION
    with engine.connect() as conn:
        names = conn.execute(text("SELECT name FROM experiments ORDER BY name")).scalars().all()
    assert names == ["exp0", "exp1", "exp2"]
    engine.dispose()


@pytest.mark.parametrize("old", ["0001", "0002", "0003"])
def test_upgrade_from_older_revisions_keeps_data(fresh_url: str, old: str) -> None:
    engine = make_engine(fresh_url)
    upgrade(engine, old)
    assert current_revision(engine) == old
    has_pid = "pid" in {c["name"] for c in inspect(engine).get_columns("runs")}
    assert has_pid == (old >= "0002")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO experiments (name, lifecycle_stage, created_at, updated_at) "
                "VALUES ('old', 'active', 1, 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO runs (run_id, experiment_id, run_name, status, user_name, start_time, "
                "lifecycle_stage, host) VALUES ('r1', 1, 'n', 'FINISHED', 'u', 5, 'active', 'h')"
            )
        )
        conn.execute(text("INSERT INTO params (run_id, key, value) VALUES ('r1', 'model', 'tree')"))
        conn.execute(
            text(
                "INSERT INTO metrics (run_key, key, value, is_nan, step, timestamp) "
                "SELECT run_key, 'loss', 0.5, false, 3, 7 FROM runs WHERE run_id = 'r1'"
            )
        )
    engine.dispose()

    engine = make_engine(fresh_url)
    ensure_schema(engine)
    assert current_revision(engine) == HEAD_REVISION
    from keel.tracking.store import TrackingStore

    store = TrackingStore(engine)
    run = store.get_run("r1")
    assert run.params == {"model": "tree"} and run.status.value == "FINISHED"
    assert [(p.step, p.value) for p in store.metric_history("r1", "loss")] == [(3, 0.5)]
    indexes = {i["name"] for i in inspect(engine).get_indexes("metrics")}
    assert "ix_metrics_run_key_key_step_value" in indexes
    assert store.search_run_ids(
        filter_string="params.model = 'tree'",
        order_by=None,
        experiment_ids=None,
        lifecycle="active",
        limit=10,
        offset=0,
    ) == ["r1"]
    engine.dispose()


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StorageError, match="newer than this Keel"):
        ensure_schema(engine)


def test_the_schema_module_matches_what_the_migrations_build(fresh_url: str) -> None:
    """keel/db/schema.py is written by hand beside the migrations: they must agree (tables,
    columns, types, indexes), apart from the dialect-specific param/tag search indexes of 0002."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from keel.db import schema

    dialect_specific = {
        f"ix_{table}_{suffix}"
        for table in ("params", "tags")
        for suffix in ("key_value", "key_run_id", "value_hash")
    }
    engine = make_engine(fresh_url)
    ensure_schema(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    engine.dispose()
    left = [
        d
        for d in diffs
        if not (isinstance(d, tuple) and d[0] == "remove_index" and d[1].name in dialect_specific)
    ]
    assert left == []


def test_the_migration_fills_the_rollup_from_existing_points(fresh_url: str) -> None:
    """Upgrading a store that has history builds the same rows the write path would."""
    from sqlalchemy import select

    from keel.db import schema
    from keel.tracking.store import TrackingStore
    from keel.tracking.store_blocks import block_rows

    engine = make_engine(fresh_url)
    upgrade(engine, "0007")
    store = TrackingStore(engine)
    run_id = store.create_run(
        experiment_id=store.create_experiment("old"), run_name=None, user="u", host="h", pid=None
    ).run_id
    run_key = store._run_keys([run_id])[run_id]
    history = [
        (run_key, "m", None if s % 97 == 0 else float(s % 13), s, 5 if s == 200 else 1)
        for s in range(-200, 1_500)
    ]
    with engine.begin() as conn:
        conn.execute(
            schema.metrics.insert(),
            [
                {
                    "run_key": k,
                    "key": key,
                    "value": v,
                    "is_nan": v is None,
                    "step": s,
                    "timestamp": t,
                }
                for k, key, v, s, t in history
            ],
        )
    upgrade(engine)
    with engine.connect() as conn:
        stored = {
            (r.block): dict(r._mapping)
            for r in conn.execute(
                select(schema.metric_blocks).order_by(schema.metric_blocks.c.block)
            )
        }
    expected = {row["block"]: row for row in block_rows(history)}
    assert stored == expected
    engine.dispose()


def test_the_model_registry_downgrades_and_upgrades_again(fresh_url: str) -> None:
    """0010 goes down cleanly (tables, triggers and the PostgreSQL function) and comes back."""
    from alembic import command
    from alembic.config import Config

    engine = make_engine(fresh_url)
    ensure_schema(engine)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0009")
        conn.commit()
    assert current_revision(engine) == "0009"
    assert "model_audit" not in inspect(engine).get_table_names()
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO model_audit (model, action, actor, detail, at) "
                "VALUES ('m', 'create_model', 'u', '{}', 1)"
            )
        )
    with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
        conn.execute(text("DELETE FROM model_audit"))
    engine.dispose()


def test_model_governance_downgrades_and_upgrades_again(fresh_url: str) -> None:
    """0011 (policies, alias requests, cards, evaluations, gate verdicts) goes down and back."""
    from alembic import command
    from alembic.config import Config

    governance = {
        "model_policies",
        "alias_requests",
        "model_cards",
        "model_evaluations",
        "gate_verdicts",
    }
    engine = make_engine(fresh_url)
    ensure_schema(engine)
    assert governance <= set(inspect(engine).get_table_names())
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0010")
        conn.commit()
    assert current_revision(engine) == "0010"
    assert not governance & set(inspect(engine).get_table_names())
    assert "model_audit" in inspect(engine).get_table_names()
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    assert governance <= set(inspect(engine).get_table_names())
    engine.dispose()
