"""Metrics logged in forked worker processes reach the store (the Linux default)."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import pytest

import keel


def _worker(worker: int) -> None:
    for step in range(100):
        keel.log_metric(f"worker{worker}", float(step), step=step)


@pytest.mark.skipif(sys.platform != "linux", reason="fork is the Linux default")
def test_forked_workers_log_into_the_parent_run(home: Path) -> None:
    context = multiprocessing.get_context("fork")
    with keel.start_run() as run:
        keel.log_metric("parent", 1.0)
        for _ in range(500):
            keel.log_metric("pending-in-parent", 1.0)  # buffered when the workers fork
        workers = [context.Process(target=_worker, args=(n,)) for n in range(2)]
        for process in workers:
            process.start()
        for process in workers:
            process.join(timeout=60)
            assert process.exitcode == 0
    got = keel.get_run(run.run_id)
    assert {"parent", "worker0", "worker1"} <= got.metrics.keys()
    for n in range(2):
        assert len(keel.get_metric_history(run.run_id, f"worker{n}")) == 100
    # the parent's buffered points were written once, by the parent, not again by the children
    assert len(keel.get_metric_history(run.run_id, "pending-in-parent")) == 500
