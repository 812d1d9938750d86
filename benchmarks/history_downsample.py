"""How long a 1,000,000-point metric history takes to come back downsampled to 1,000 buckets.

Run by hand (not a test): ``python benchmarks/history_downsample.py [--points N] [--keys K]``
(``--database-url`` to run it on an empty PostgreSQL database instead, ``--covering-index`` to
see what an index holding the values would save).
It builds a throwaway SQLite store, logs one metric of ``--points`` points (with ``--keys`` > 1,
that many metrics logged step by step side by side, as a training loop does, which spreads each
key's rows over the table), then times, as medians of ``--repeat`` calls:

- ``TrackingStore.metric_buckets`` (the SQL alone),
- ``GET /api/v1/runs/{id}/metrics/history?key=...&max_points=1000`` in process (SQL, pydantic
  and JSON included),
- for scale, the same summary as one ``GROUP BY`` bucket query (what SQLite has to sort).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from keel.server import create_app
from keel.settings import Settings


def median_ms(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall-clock and CPU milliseconds of ``call()`` (CPU: this process, all threads).

    On a loaded machine the wall time includes waiting for a core; the CPU time is what the
    call costs, and what an otherwise idle machine shows as wall time.
    """
    call()  # warm the page cache
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1, help="metrics logged side by side")
    parser.add_argument("--buckets", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument(
        "--database-url", default=None, help="an empty database to use instead of a SQLite file"
    )
    parser.add_argument(
        "--covering-index",
        action="store_true",
        help="first add an index on metrics (run_key, key, step, value), as a schema migration "
        "could, to see what reading values from the index instead of the table saves",
    )
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            home=Path(tmp) / ".keel", database_url=args.database_url, capture_source=False
        )
        app = create_app(settings)
        client = app.state.client
        run = client.create_remote_run(
            client.create_experiment("bench").experiment_id, host="bench", user="bench"
        )
        keys = ["loss", *(f"other_{i}" for i in range(args.keys - 1))]
        started = time.perf_counter()
        batch: list[tuple[str, str, float, int, int]] = []
        for step in range(args.points):
            value = math.sin(step / 1000) + (step % 7) / 10
            batch.extend((run.run_id, key, value, step, 1_700_000_000_000 + step) for key in keys)
            if len(batch) >= 100_000:
                client.write_metric_points(batch)
                batch = []
        client.write_metric_points(batch)
        print(
            f"{client.engine.dialect.name}: logged {args.points:,} points x {len(keys)} key(s) in "
            f"{time.perf_counter() - started:.1f} s"
        )

        if args.covering_index:
            with client.engine.begin() as conn:
                conn.execute(
                    text("CREATE INDEX ix_bench_covering ON metrics (run_key, key, step, value)")
                )
            print("added the covering index (run_key, key, step, value)")

        store_ms = median_ms(
            lambda: client.store.metric_buckets(run.run_id, "loss", buckets=args.buckets),
            args.repeat,
        )
        url = f"/api/v1/runs/{run.run_id}/metrics/history"
        params = {"key": "loss", "max_points": args.buckets}
        with TestClient(app) as http:
            answer = http.get(url, params=params).json()
            assert answer["count"] == args.points and len(answer["buckets"]) == args.buckets
            http_ms = median_ms(lambda: http.get(url, params=params), args.repeat)

        width = -(-args.points // args.buckets)
        group_by = text(
            "SELECT m.step / :width AS b, count(*), min(m.value), max(m.value) FROM metrics m "
            "JOIN runs r ON r.run_key = m.run_key WHERE r.run_id = :run_id AND m.key = 'loss' "
            "GROUP BY b"
        )
        with client.engine.connect() as conn:
            group_ms = median_ms(
                lambda: conn.execute(group_by, {"width": width, "run_id": run.run_id}).all(),
                max(3, args.repeat // 3),
            )
        client.close()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.points:,} points -> {args.buckets:,} buckets, medians of {args.repeat} "
        f"(load average {load:.1f} on {os.cpu_count()} cores):"
    )
    print("                                       wall ms   CPU ms")
    for label, (wall, cpu) in (
        ("TrackingStore.metric_buckets", store_ms),
        ("GET .../metrics/history (in process)", http_ms),
        ("one GROUP BY query, for scale", group_ms),
    ):
        print(f"  {label:<36} {wall:7.1f}  {cpu:7.1f}")


if __name__ == "__main__":
    main()
