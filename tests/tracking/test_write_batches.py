"""Metric batch ids: a batch a remote client sends twice is stored once (SQLite, PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, insert, select

from keel.db import schema
from keel.tracking.store import TrackingStore, now_ms

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def store(engine: Engine) -> TrackingStore:
    return TrackingStore(engine)


@pytest.fixture
def run_id(store: TrackingStore) -> str:
    experiment_id = store.create_experiment("remote")
    run = store.create_run(experiment_id=experiment_id, run_name=None, user="u", host="h", pid=None)
    return run.run_id


def _record_ids(engine: Engine, *, age_days: float, count: int) -> list[str]:
    """Batch ids as if recorded ``age_days`` ago."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    created = now_ms() - int(age_days * DAY_MS)
    with engine.begin() as conn:
        conn.execute(
            insert(schema.write_batches),
            [{"batch_id": batch_id, "created_at": created} for batch_id in ids],
        )
    return ids


def _recorded(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(schema.write_batches.c.batch_id)).scalars())


def _points(run_id: str) -> list[tuple[str, str, float, int, int]]:
    return [(run_id, "loss", 0.5, 1, now_ms())]


def test_a_batch_sent_twice_is_stored_once(store: TrackingStore, run_id: str) -> None:
    batch = str(uuid.uuid4())

    assert store.log_metric_points(_points(run_id), batch_id=batch)
    assert not store.log_metric_points(_points(run_id), batch_id=batch)  # the answer was lost

    assert len(store.metric_history(run_id, "loss")) == 1
