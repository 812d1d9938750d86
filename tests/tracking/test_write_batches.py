"""Metric batch ids: a batch sent twice is stored once; ids are kept a week, then pruned."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, func, insert, select

from keel.db import schema
from keel.tracking.store import TrackingStore, now_ms
from keel.tracking.store_metrics import WRITE_BATCH_RETENTION

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


def test_recording_a_batch_forgets_ids_older_than_a_week(
    engine: Engine, store: TrackingStore, run_id: str
) -> None:
    assert WRITE_BATCH_RETENTION == 7 * 24 * 3600
    expired = _record_ids(engine, age_days=8, count=3)
    recent = _record_ids(engine, age_days=6, count=3)

    new = str(uuid.uuid4())
    assert store.log_metric_points(_points(run_id), batch_id=new)

    assert _recorded(engine) == {*recent, new}
    # a retry of a batch still remembered is skipped; one forgotten is stored again
    assert not store.log_metric_points(_points(run_id), batch_id=recent[0])
    assert store.log_metric_points(_points(run_id), batch_id=expired[0])
    assert len(store.metric_history(run_id, "loss")) == 2


def test_pruning_runs_now_and_then_not_on_every_batch(
    engine: Engine, store: TrackingStore, run_id: str
) -> None:
    store.log_metric_points(_points(run_id), batch_id=str(uuid.uuid4()))  # prunes (nothing)
    left = _record_ids(engine, age_days=30, count=1)

    store.log_metric_points(_points(run_id), batch_id=str(uuid.uuid4()))

    assert set(left) <= _recorded(engine)  # the next prune is due in an hour
    assert store.prune_write_batches() == 1
    assert not set(left) & _recorded(engine)


def test_prune_deletes_any_number_of_ids_chunk_by_chunk(
    engine: Engine, store: TrackingStore
) -> None:
    _record_ids(engine, age_days=10, count=25_000)
    kept = _record_ids(engine, age_days=1, count=5)

    assert store.prune_write_batches() == 25_000

    assert _recorded(engine) == set(kept)
    assert store.prune_write_batches(older_than=0) == 5
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.write_batches)).scalar() == 0
