"""Time run search over many runs on SQLite and PostgreSQL, and show the query plans.

Seeds N runs in one experiment (params model in {tree, linear, forest} plus 4 more, latest
metrics rmse ~ uniform(0, 2), mae, r2, and 3 tags), then times the compiled searches: the
headline one is ``metrics.rmse < 1 and params.model = 'tree'`` ordered by ``metrics.rmse``, top
100 (MLflow 3.17 on SQLite: 1.1-1.3 s at 10,000 runs). Run by hand, not by the tests::

    python benchmarks/search_plan.py --runs 100000 --dialect sqlite
    python benchmarks/search_plan.py --runs 100000 --dialect postgresql

A SQLite database is kept in the temporary folder and reused by the next run with the same N;
a PostgreSQL database is created for the run and dropped after it.

On PostgreSQL each query is timed twice: as the engine runs it by default (psycopg prepares a
statement after 5 executions, and PostgreSQL may then switch to a generic plan that does not see
the key or value, so it misjudges how many rows ``params.model = 'tree'`` matches), and with
``plan_cache_mode = force_custom_plan``, which plans every execution with its values.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, func, insert, select, text
from sqlalchemy.sql.compiler import SQLCompiler

from keel.db import ensure_schema, make_engine
from keel.db.schema import experiments, latest_metrics, params, runs, tags
from keel.tracking.query import build_search

HEADLINE = ("metrics.rmse < 1 and params.model = 'tree'", ["metrics.rmse"])
QUERIES = [
    HEADLINE,
    ("metrics.rmse < 1 and params.model = 'tree'", ["metrics.rmse DESC"]),
    ("", None),
    ("", ["metrics.rmse"]),
    ("params.model = 'tree'", ["metrics.rmse"]),
    ("params.lr > 0.05 and params.model = 'linear'", ["start_time DESC"]),
    ("metrics.rmse < 0.01 or tags.team = 'blue'", None),
    ("not (metrics.r2 > 0.5) and status = 'FINISHED'", ["duration DESC"]),
]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--dialect", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=30, help="timed executions per query")
    args = parser.parse_args()
    with _database(args.dialect, args.runs) as engine:
        print(f"{args.dialect}, {args.runs:,} runs")
        for filter_string, order_by in QUERIES:
            _measure(engine, args.dialect, filter_string, order_by, args.repeat)


@contextmanager
def _database(dialect: str, n: int) -> Iterator[Engine]:
    if dialect == "sqlite":
        path = Path(tempfile.gettempdir()) / f"keel-search-bench-{n}.db"
        engine = make_engine(f"sqlite:///{path}")
        ensure_schema(engine)
        with engine.connect() as conn:
            seeded = conn.execute(select(func.count()).select_from(runs)).scalar() == n
        if not seeded:
            _seed(engine, n)
        yield engine
        engine.dispose()
        return
    name = f"keel_bench_{os.getpid()}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(f"postgresql://postgres@127.0.0.1:5432/{name}")
    try:
        ensure_schema(engine)
        _seed(engine, n)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _seed(engine: Engine, n: int) -> None:
    started = time.perf_counter()
    rng = random.Random(42)
    now = 1_790_000_000_000
    with engine.begin() as conn:
        conn.execute(
            insert(experiments),
            [{"name": "bench", "lifecycle_stage": "active", "created_at": now, "updated_at": now}],
        )
        experiment_id = conn.execute(select(experiments.c.experiment_id)).scalar_one()
    chunk = 5_000
    for first in range(0, n, chunk):
        run_rows, param_rows, metric_rows, tag_rows = [], [], [], []
        for i in range(first, min(first + chunk, n)):
            run_id = uuid.UUID(int=rng.getrandbits(128)).hex
            start = now + i * 1_000
            run_rows.append(
                {
                    "run_id": run_id,
                    "experiment_id": experiment_id,
                    "run_name": f"run-{i}",
                    "status": "FINISHED" if i % 10 else "FAILED",
                    "user_name": f"user{i % 7}",
                    "start_time": start,
                    "end_time": start + rng.randint(1_000, 600_000),
                    "lifecycle_stage": "active",
                    "host": "bench",
                }
            )
            values = {
                "model": rng.choice(["tree", "linear", "forest"]),
                "lr": repr(round(rng.uniform(0.0001, 0.1), 5)),
                "depth": str(rng.randint(2, 12)),
                "seed": str(i),
                "optimizer": rng.choice(["adam", "sgd"]),
            }
            param_rows += [{"run_id": run_id, "key": k, "value": v} for k, v in values.items()]
            metric_values = {
                "rmse": rng.uniform(0, 2),
                "mae": rng.uniform(0, 1),
                "r2": rng.uniform(-1, 1),
            }
            metric_rows += [
                {
                    "run_id": run_id,
                    "key": k,
                    "value": v,
                    "is_nan": False,
                    "step": 0,
                    "timestamp": start,
                }
                for k, v in metric_values.items()
            ]
            labels = {"team": rng.choice(["red", "blue", "green"]), "stage": "dev", "git": "abc"}
            tag_rows += [{"run_id": run_id, "key": k, "value": v} for k, v in labels.items()]
        with engine.begin() as conn:
            conn.execute(insert(runs), run_rows)
            conn.execute(insert(params), param_rows)
            conn.execute(insert(latest_metrics), metric_rows)
            conn.execute(insert(tags), tag_rows)
    print(f"seeded {n:,} runs in {time.perf_counter() - started:.1f} s")


def _measure(
    engine: Engine, dialect: str, filter_string: str, order_by: list[str] | None, repeat: int
) -> None:
    stmt = build_search(
        filter_string=filter_string,
        order_by=order_by,
        experiment_ids=[1],
        limit=100,
        dialect=dialect,
    )
    timings: dict[str, list[float]] = {}
    modes = ["auto", "force_custom_plan"] if dialect == "postgresql" else ["-"]
    with engine.connect() as conn:
        count = len(conn.execute(stmt).all())  # warm the cache
        for mode in modes:
            if mode != "-":
                # psycopg prepares a statement run 5 times; PostgreSQL may then switch to a
                # generic plan that cannot see the key and value (see the module docstring)
                conn.exec_driver_sql(f"SET plan_cache_mode = {mode}")
            timings[mode] = []
            for _ in range(repeat):
                started = time.perf_counter()
                conn.execute(stmt).all()
                timings[mode].append((time.perf_counter() - started) * 1000)
        compiled = stmt.compile(engine, compile_kwargs={"render_postcompile": True})
        explain = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
        plan = conn.exec_driver_sql(explain + str(compiled), _driver_params(compiled, dialect))
        lines = [str(row[-1]) for row in plan]
    figures = ", ".join(
        f"p50 {statistics.median(t):.2f} ms, min {min(t):.2f} ms"
        + (f" ({mode})" if mode != "-" else "")
        for mode, t in timings.items()
    )
    print(f"\n{filter_string or '(no filter)'!r} order_by={order_by}: {count} rows, {figures}")
    for line in lines:
        print("    " + line)


def _driver_params(compiled: SQLCompiler, dialect: str) -> tuple[Any, ...] | dict[str, Any]:
    if dialect == "sqlite":
        return tuple(compiled.params[name] for name in compiled.positiontup or ())
    return dict(compiled.params)


if __name__ == "__main__":
    main()
