"""MLflow's half of ``tracking_vs_mlflow.py``: one benchmark, one process, one JSON line.

Run by the harness with the interpreter of MLflow's own virtualenv, in a fresh temporary
directory, with ``MLFLOW_TRACKING_URI=sqlite:///<tmp>/mlflow.db``. It imports only the standard
library and MLflow, so it never sees Keel's dependencies. Usage::

    python _mlflow_side.py log_metric --n 5000
    python _mlflow_side.py log_batch --n 100000 --per-call 1000
    python _mlflow_side.py series --n 100000 --per-call 1000
    python _mlflow_side.py search --seed-file runs.json --queries 20 [--seeded]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

EXPERIMENT = "bench"
SEARCH_FILTER = "metrics.rmse < 1 and params.model = 'tree'"
SEARCH_ORDER = ["metrics.rmse"]


def _experiment_id(client) -> str:
    """The benchmark experiment, created with its artifacts inside the temporary directory."""
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    artifacts = Path.cwd() / "mlartifacts"
    return client.create_experiment(EXPERIMENT, artifact_location=artifacts.as_uri())


def bench_log_metric(args: argparse.Namespace) -> dict:
    """``mlflow.log_metric`` one call at a time, timed through ``end_run``."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_experiment(experiment_id=_experiment_id(MlflowClient()))
    rng = random.Random(0)
    values = [rng.random() for _ in range(args.n)]
    run = mlflow.start_run(run_name="log_metric")
    start = time.perf_counter()
    for step, value in enumerate(values):
        mlflow.log_metric("loss", value, step=step)
    mlflow.end_run()
    elapsed = time.perf_counter() - start
    stored = len(MlflowClient().get_metric_history(run.info.run_id, "loss"))
    return {"seconds": elapsed, "points": args.n, "stored": stored}


def bench_log_batch(args: argparse.Namespace) -> dict:
    """``MlflowClient.log_batch`` of ``per_call`` metrics (distinct keys) per call, one per step."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient()
    run_id = client.create_run(_experiment_id(client), run_name="log_batch").info.run_id
    rng = random.Random(0)
    now = int(time.time() * 1000)
    batches = [
        [Metric(f"m{key}", rng.random(), now, step) for key in range(args.per_call)]
        for step in range(args.n // args.per_call)
    ]
    start = time.perf_counter()
    for batch in batches:
        client.log_batch(run_id, metrics=batch)
    client.set_terminated(run_id)
    elapsed = time.perf_counter() - start
    last = f"m{args.per_call - 1}"
    stored = sum(len(client.get_metric_history(run_id, key)) for key in ("m0", last))
    stored = stored * args.per_call // 2
    return {"seconds": elapsed, "points": len(batches) * args.per_call, "stored": stored}


def bench_series(args: argparse.Namespace) -> dict:
    """One metric's ``n`` steps through ``log_batch``, ``per_call`` steps a call: MLflow's
    fastest shape (one key per batch updates one latest-value row instead of ``per_call``)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient()
    run_id = client.create_run(_experiment_id(client), run_name="series").info.run_id
    rng = random.Random(0)
    now = int(time.time() * 1000)
    batches = [
        [Metric("loss", rng.random(), now, first + step) for step in range(args.per_call)]
        for first in range(0, args.n, args.per_call)
    ]
    start = time.perf_counter()
    for batch in batches:
        client.log_batch(run_id, metrics=batch)
    client.set_terminated(run_id)
    elapsed = time.perf_counter() - start
    stored = len(client.get_metric_history(run_id, "loss"))
    return {"seconds": elapsed, "points": len(batches) * args.per_call, "stored": stored}


def bench_search(args: argparse.Namespace) -> dict:
    """Seed runs (untimed, skipped with ``--seeded``), then time the same search repeatedly."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient()
    experiment_id = _experiment_id(client)
    runs = json.loads(Path(args.seed_file).read_text())
    seed_seconds = None
    if not args.seeded:
        start = time.perf_counter()
        now = int(time.time() * 1000)
        for index, spec in enumerate(runs):
            run_id = client.create_run(experiment_id, run_name=f"run-{index}").info.run_id
            client.log_batch(
                run_id,
                metrics=[Metric(k, v, now, 0) for k, v in spec["metrics"].items()],
                params=[Param(k, v) for k, v in spec["params"].items()],
            )
            client.set_terminated(run_id)
        seed_seconds = time.perf_counter() - start

    def search():
        return client.search_runs(
            [experiment_id],
            filter_string=SEARCH_FILTER,
            order_by=SEARCH_ORDER,
            max_results=100,
        )

    found = search()  # warm-up, untimed
    times = []
    for _ in range(args.queries):
        start = time.perf_counter()
        search()
        times.append(time.perf_counter() - start)
    return {
        "runs": len(runs),
        "seed_seconds": seed_seconds,
        "times": times,
        "returned": len(found),
        "rmse": [run.data.metrics["rmse"] for run in found],
        "models": sorted({run.data.params["model"] for run in found}),
    }


BENCHMARKS = {
    "log_metric": bench_log_metric,
    "log_batch": bench_log_batch,
    "series": bench_series,
    "search": bench_search,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", choices=sorted(BENCHMARKS))
    parser.add_argument("--n", type=int, default=0, help="points to log")
    parser.add_argument("--per-call", type=int, default=1000, help="points per log_batch call")
    parser.add_argument("--seed-file", help="JSON list of runs to seed for the search benchmark")
    parser.add_argument("--queries", type=int, default=20, help="timed searches")
    parser.add_argument("--seeded", action="store_true", help="the database is already seeded")
    args = parser.parse_args()

    import mlflow

    result = BENCHMARKS[args.bench](args)
    result.update(tool="mlflow", version=mlflow.__version__, pid=os.getpid())
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
