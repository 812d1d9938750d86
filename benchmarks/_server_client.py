"""One tracking client of ``server_vs_mlflow.py``: log one metric to a server, one call at a time.

Run by the harness, never by hand, with the interpreter of the tool under test (Keel's for
``keel``, MLflow's virtualenv for ``mlflow``), so it imports only the standard library and that
tool. The server is named by the environment, as a user would name it:
``KEEL_TRACKING_URI=http://127.0.0.1:PORT`` (Keel's remote client, which batches points in a
background thread) or ``MLFLOW_TRACKING_URI=http://127.0.0.1:PORT`` (one HTTP request per
``log_metric``). Usage::

    python _server_client.py keel --experiment ingest --n 10000
    python _server_client.py mlflow --experiment ingest --n 10000 --seconds 20

The process imports the tool, sets the experiment and starts its run, then prints ``ready`` and
waits for a line on stdin, so that every client of a round starts logging together and no
import or run creation is timed. Then it calls ``log_metric("loss", value, step=i)`` for
``i`` in ``0..n-1``, timing every call, and stops early once ``--seconds`` of logging have passed
(MLflow's time box), then ends the run. It prints one JSON line: the run id, the points logged,
``perf_counter`` readings (CLOCK_MONOTONIC, comparable across processes on Linux) of the start,
the end of the loop and the return of ``end_run``, and every call's latency in microseconds.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable


def _wait_for_go() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if not sys.stdin.readline():
        sys.exit("the harness closed stdin before saying go")


def _log(
    log_metric: Callable[..., object],
    end_run: Callable[[], object],
    values: list[float],
    seconds: float | None,
) -> dict:
    """The timed part, shared by both tools: the calls, then the end of the run."""
    latencies_us: list[float] = []
    clock, clock_ns = time.perf_counter, time.perf_counter_ns
    start = clock()
    deadline = start + seconds if seconds else float("inf")
    for step, value in enumerate(values):
        if clock() >= deadline:
            break
        before = clock_ns()
        log_metric("loss", value, step=step)
        latencies_us.append((clock_ns() - before) / 1000)
    loop_end = clock()
    end_run()
    end = clock()
    return {
        "points": len(latencies_us),
        "start": start,
        "loop_end": loop_end,
        "end": end,
        "latencies_us": [round(x, 2) for x in latencies_us],
    }


def run_keel(args: argparse.Namespace, values: list[float]) -> dict:
    import keel

    keel.set_experiment(args.experiment)
    run = keel.start_run(name=args.name)
    _wait_for_go()
    result = _log(keel.log_metric, keel.end_run, values, args.seconds)
    return {"run_id": run.run_id, **result}


def run_mlflow(args: argparse.Namespace, values: list[float]) -> dict:
    import mlflow

    mlflow.set_experiment(args.experiment)
    run = mlflow.start_run(run_name=args.name)
    _wait_for_go()
    result = _log(mlflow.log_metric, mlflow.end_run, values, args.seconds)
    return {"run_id": run.info.run_id, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tool", choices=["keel", "mlflow"])
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--name", default="client")
    parser.add_argument("--n", type=int, default=10_000, help="log_metric calls at most")
    parser.add_argument("--seconds", type=float, default=None, help="stop logging after this")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    values = [rng.random() for _ in range(args.n)]
    result = (run_keel if args.tool == "keel" else run_mlflow)(args, values)
    sys.stdout.write(json.dumps({"tool": args.tool, **result}) + "\n")


if __name__ == "__main__":
    main()
