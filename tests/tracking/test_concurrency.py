"""Many processes writing one SQLite store at once; a process killed mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from keel.db import schema
from keel.settings import Settings
from keel.tracking.api import Client

WRITER = textwrap.dedent(
    """
    import sys, keel
    keel.set_experiment("load")
    with keel.start_run(name=f"writer-{sys.argv[1]}") as run:
        keel.log_param("writer", sys.argv[1])
        for i in range(10_000):
            keel.log_metric("loss", 1.0 / (i + 1), step=i)
    print(run.run_id)
    """
)


@pytest.mark.slow
def test_eight_processes_lose_nothing(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KEEL_HOME": str(tmp_path / ".keel"),
        "KEEL_METRIC_FLUSH_SIZE": "500",
        "KEEL_METRIC_FLUSH_INTERVAL": "0.05",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(n)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err.lower()
    client = Client(Settings(home=tmp_path / ".keel"))
    run_ids = [out.strip() for out, _ in outputs]
    assert len(set(run_ids)) == 8
    with client.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(schema.metrics)).scalar()
        per_run = dict(
            conn.execute(
                select(schema.runs.c.run_id, func.count())
                .join(schema.metrics, schema.metrics.c.run_key == schema.runs.c.run_key)
                .group_by(schema.runs.c.run_id)
            ).all()
        )
    assert total == 80_000
    assert per_run == dict.fromkeys(run_ids, 10_000)
    for run in client.store.get_runs(run_ids):
        assert run.status.value == "FINISHED"
        assert run.metrics["loss"] == pytest.approx(1 / 10_000)


@pytest.mark.slow
def test_sigkill_mid_logging_leaves_a_readable_store(tmp_path: Path) -> None:
    home = tmp_path / ".keel"
    code = textwrap.dedent(
        """
        import keel
        run = keel.start_run()
        print(run.run_id, flush=True)
        i = 0
        while True:
            keel.log_metrics({f"m{k}": float(i) for k in range(50)}, step=i)
            i += 1
        """
    )
    env = {
        **os.environ,
        "KEEL_HOME": str(home),
        "KEEL_METRIC_FLUSH_SIZE": "2000",
        "KEEL_METRIC_FLUSH_INTERVAL": "0.01",
        "KEEL_CAPTURE_SOURCE": "false",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    time.sleep(2.0)  # the writer thread is busy committing batches when the kill lands
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    client = Client(Settings(home=home))
    with client.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    run = client.get_run(run_id)
    assert run.status.value == "LOST"
    history = client.get_metric_history(run_id, "m0")
    assert history, "batches committed before the kill are kept"
    # every committed batch is whole: each step has all 50 keys
    with client.engine.connect() as conn:
        counts = (
            conn.execute(
                select(func.count())
                .select_from(schema.metrics.join(schema.runs))
                .where(schema.runs.c.run_id == run_id)
                .group_by(schema.metrics.c.key)
            )
            .scalars()
            .all()
        )
    assert len(set(counts)) == 1 and len(counts) == 50
    # and the store takes new writes
    experiment_id = client.get_or_create_experiment("after").experiment_id
    new = client.create_run(experiment_id)
    client.log_metric(new.run_id, "ok", 1.0)
    client.end_run(new.run_id)
    assert client.get_run(new.run_id).metrics == {"ok": 1.0}
