"""The metric buffer: bounded memory under a flood, and nothing lost when a write fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from keel.errors import StorageError
from keel.settings import Settings
from keel.tracking.api import Client
from keel.tracking.buffer import BATCH_POINTS, MAX_PENDING


def test_a_flood_of_points_stays_bounded(home: Path) -> None:
    client = Client(Settings(metric_flush_interval=60))  # only size and pressure trigger writes
    run = client.create_run(client.get_or_create_experiment("flood").experiment_id)
    batch = {f"k{i}": float(i) for i in range(1000)}
    highest = 0
    for step in range(400):  # 400,000 points, twice the pending limit
        client.log_metrics(run.run_id, batch, step=step)
        highest = max(highest, client._buffer.pending)
    assert highest < MAX_PENDING + len(batch)
    client.end_run(run.run_id)
    assert len(client.get_metric_history(run.run_id, "k7")) == 400
    client.close()


def test_a_blocked_write_keeps_every_point_for_the_retry(home: Path) -> None:
    client = Client(
        Settings(metric_flush_interval=60, metric_flush_size=10**6, sqlite_busy_timeout=0.2)
    )
    run = client.create_run(client.get_or_create_experiment("blocked").experiment_id)
    for step in range(BATCH_POINTS + 500):  # more than one transaction's worth
        client.log_metric(run.run_id, "loss", 1.0, step=step)
    other = sqlite3.connect(home / "keel.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    with pytest.raises(StorageError, match="still buffered"):
        client.flush()
    assert client._buffer.pending == BATCH_POINTS + 500
    other.execute("COMMIT")
    other.close()
    client.end_run(run.run_id)
    assert len(client.get_metric_history(run.run_id, "loss")) == BATCH_POINTS + 500
    client.close()


def test_a_point_that_cannot_be_stored_is_refused_before_it_blocks_others(home: Path) -> None:
    from keel.errors import InvalidInput

    client = Client(Settings())
    experiment_id = client.get_or_create_experiment("guard").experiment_id
    bad, good = client.create_run(experiment_id), client.create_run(experiment_id)
    with pytest.raises(InvalidInput, match="out of range"):
        client.log_metric(bad.run_id, "x", 1.0, step=2**63)
    with pytest.raises(InvalidInput, match="out of range"):
        client.log_metrics(bad.run_id, {"x": 1.0}, timestamp=10**20)
    with pytest.raises(InvalidInput, match="NUL"):
        client.log_metric(bad.run_id, "x\x00y", 1.0)
    with pytest.raises(InvalidInput, match="NUL"):
        client.log_batch(bad.run_id, metrics=[("a\x00", 1.0, 0, 0)])
    for step in range(100):
        client.log_metric(good.run_id, "loss", 1.0, step=step)
    client.end_run(good.run_id)
    assert len(client.get_metric_history(good.run_id, "loss")) == 100
    client.close()
