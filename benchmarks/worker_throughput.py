"""``keel worker`` throughput on the real Redis: requests/s with 1 and 2 worker processes, with
and without micro-batching, and the round-trip latency of one request at a time.

Run by hand from the repository root (Redis at 127.0.0.1:6379)::

    python benchmarks/worker_throughput.py [--requests 2000] [--batched-requests 20000]
        [--repeats 3] [--rows 1]

The model is a 100-tree ``RandomForestRegressor`` on the diabetes data, logged and registered in
a temporary Keel home. For each configuration (workers x ``--batch``) the workers are started
as ``keel worker`` subprocesses and waited for (each has joined the group), warmed up with 50
requests, then the producer adds ``--requests`` requests (``--batched-requests`` with
``--batch 64``) of ``--rows`` rows with pipelined ``XADD`` and the clock runs until the last
reply has been read: requests/s of a backlog drained by the workers. Each configuration runs
``--repeats`` times, the configurations taking turns, and the table shows the median and the
best. Every reply is checked against the model's own ``predict``. The floor is the bare model
in this process: ``predict`` on one request's rows, and on 64 requests' rows at once.

Results go to ``benchmarks/results/worker-<date>.json`` and print as Markdown for
``docs/workers.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _report import machine

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIGS = [(1, 1), (2, 1), (1, 64), (2, 64)]
"""(worker processes, --batch) measured."""


def train(home: Path) -> Any:
    """The forest, logged and registered as ``bench`` @champion in ``home``."""
    os.environ["KEEL_HOME"] = str(home)
    os.environ["KEEL_CAPTURE_SOURCE"] = "false"
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    import keel
    import keel.models
    from keel.models import api

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = RandomForestRegressor(n_estimators=100, random_state=0).fit(X, y)
    with keel.start_run():
        logged = keel.models.log_model(model, input_example=X.head(3))
    api.register(logged.uri, "bench")
    api.set_alias("bench", "champion", 1)
    return model, X


def start_workers(broker: str, stream: str, count: int, batch: int) -> list[Any]:
    command = [sys.executable, "-m", "keel", "worker", "models:/bench@champion"]
    command += ["--broker", broker, "--stream", stream, "--batch", str(batch)]
    return [
        subprocess.Popen(
            [*command, "--consumer", f"w{n}", "--log-level", "warning"], env=os.environ.copy()
        )
        for n in range(count)
    ]


def wait_joined(client: Any, stream: str, count: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if len(client.xinfo_consumers(stream, "keel")) == count:
                return
        except Exception:  # the group does not exist yet
            pass
        time.sleep(0.05)
    sys.exit("the workers did not join the group within 300 s")


def drain(client: Any, stream: str, bodies: list[bytes]) -> tuple[float, dict]:
    """Add every body, read every reply; seconds taken and the replies by request id."""
    from keel.serving.worker_client import Reply

    reply_to = f"{stream}:replies:{uuid.uuid4().hex[:8]}"
    ids = [uuid.uuid4().hex for _ in bodies]
    start = time.perf_counter()
    for first in range(0, len(bodies), 500):
        pipe = client.pipeline(transaction=False)
        for rid, body in zip(ids[first : first + 500], bodies[first : first + 500], strict=True):
            pipe.xadd(stream, {"body": body, "id": rid, "reply_to": reply_to})
        pipe.execute()
    replies: dict[str, Any] = {}
    last = b"0-0"
    while len(replies) < len(ids):
        read = client.xread({reply_to: last}, count=1000, block=60_000)
        if not read:
            sys.exit(f"no reply for 60 s; {len(replies)} of {len(ids)} answered")
        for entry, fields in read[0][1]:
            last = entry
            reply = Reply.from_fields(fields)
            replies[reply.request_id] = reply
    took = time.perf_counter() - start
    client.delete(reply_to)
    return took, {rid: replies[rid] for rid in ids}


def measure(broker: str, workers: int, batch: int, rows: Any, expected: Any, per: int) -> dict:
    import numpy as np

    from keel.serving.worker_client import connect, encode_body

    client = connect(broker, read_timeout=120)
    stream = f"keel-bench:{uuid.uuid4().hex[:8]}"
    processes = start_workers(broker, stream, workers, batch)
    try:
        wait_joined(client, stream, workers)
        requests = [rows.iloc[i * per : (i + 1) * per] for i in range(len(rows) // per)]
        bodies = [encode_body(chunk) for chunk in requests]
        drain(client, stream, bodies[:50])  # warm-up: first predicts, connections
        took, replies = drain(client, stream, bodies)
        got = np.concatenate([reply.result() for reply in replies.values()])
        np.testing.assert_allclose(got, expected[: len(got)])
        by_worker: dict[str, int] = {}
        for reply in replies.values():
            by_worker[reply.worker] = by_worker.get(reply.worker, 0) + 1
        return {
            "workers": workers,
            "batch": batch,
            "requests": len(bodies),
            "rows_per_request": per,
            "seconds": round(took, 3),
            "requests_per_s": round(len(bodies) / took, 1),
            "answered_by": by_worker,
        }
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
        client.delete(stream)
        client.close()


def latency(broker: str, rows: Any, count: int) -> dict:
    """One worker (--batch 64), one request at a time: p50 and p99 of submit to reply."""
    from keel.serving.worker_client import BrokerClient, connect

    stream = f"keel-bench:{uuid.uuid4().hex[:8]}"
    processes = start_workers(broker, stream, 1, 64)
    took = []
    try:
        with BrokerClient(broker, stream) as client:
            wait_joined(client.redis, stream, 1)
            for i in range(count + 20):
                start = time.perf_counter()
                client.predict(rows.iloc[i % len(rows) : i % len(rows) + 1], timeout=60)
                if i >= 20:
                    took.append(time.perf_counter() - start)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        cleanup = connect(broker)
        cleanup.delete(stream)
        cleanup.close()
    took.sort()
    return {
        "requests": count,
        "p50_ms": round(statistics.median(took) * 1000, 2),
        "p99_ms": round(took[int(len(took) * 0.99) - 1] * 1000, 2),
    }


def floor(model: Any, X: Any, per: int) -> dict:
    """The bare model in process: one request's rows, and 64 requests' rows in one call."""
    one, many = X.iloc[:per], X.iloc[: per * 64]
    model.predict(one)
    times_one, times_many = [], []
    for _ in range(50):
        start = time.perf_counter()
        model.predict(one)
        times_one.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.predict(many)
        times_many.append(time.perf_counter() - start)
    t_one, t_many = statistics.median(times_one), statistics.median(times_many)
    return {
        "predict_one_request_ms": round(t_one * 1000, 2),
        "predict_64_requests_ms": round(t_many * 1000, 2),
        "requests_per_s_one_by_one": round(1 / t_one, 1),
        "requests_per_s_64_at_once": round(64 / t_many, 1),
    }


def summary(runs: list[dict]) -> list[dict]:
    """Per configuration: the median and best requests/s over the repeats."""
    rows = []
    for workers, batch in CONFIGS:
        rates = [
            r["requests_per_s"] for r in runs if (r["workers"], r["batch"]) == (workers, batch)
        ]
        rows.append(
            {
                "workers": workers,
                "batch": batch,
                "median_requests_per_s": statistics.median(rates),
                "best_requests_per_s": max(rates),
                "repeats": len(rates),
            }
        )
    return rows


def markdown(result: dict) -> str:
    table = result["summary"]
    base = table[0]["median_requests_per_s"]
    lines = [
        f"| workers | --batch | requests/s (median of {table[0]['repeats']}) | best | vs 1 "
        "worker, --batch 1 |",
        "|---|---|---|---|---|",
    ]
    for row in table:
        median, best = row["median_requests_per_s"], row["best_requests_per_s"]
        lines.append(
            f"| {row['workers']} | {row['batch']} | {median:,.0f} | {best:,.0f} "
            f"| {median / base:.2f}x |"
        )
    bare, lat = result["floor"], result["latency"]
    lines += [
        "",
        f"Bare `model.predict` in one process (the floor): {bare['predict_one_request_ms']} ms "
        f"for one request's rows ({bare['requests_per_s_one_by_one']:,.0f} requests/s one by "
        f"one), {bare['predict_64_requests_ms']} ms for 64 requests' rows at once "
        f"({bare['requests_per_s_64_at_once']:,.0f} requests/s).",
        f"One request at a time (1 worker): p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms "
        f"from `XADD` to the reply read, over {lat['requests']} requests.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--requests", type=int, default=2000, help="requests, --batch 1")
    parser.add_argument("--batched-requests", type=int, default=20000, help="requests, --batch 64")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--latency-requests", type=int, default=300)
    args = parser.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        os.chdir(tmp)
        model, X = train(Path(tmp) / ".keel")
        import pandas as pd

        needed = (max(args.requests, args.batched_requests) + 50) * args.rows
        rows = pd.concat([X] * (needed // len(X) + 1), ignore_index=True).iloc[:needed]
        expected = model.predict(rows.iloc[50 * args.rows :])
        runs = []
        for repeat in range(args.repeats):  # configurations alternate: load falls on all
            order = CONFIGS[repeat % len(CONFIGS) :] + CONFIGS[: repeat % len(CONFIGS)]
            for workers, batch in order:
                count = (args.requests if batch == 1 else args.batched_requests) * args.rows
                requests = rows.iloc[50 * args.rows : 50 * args.rows + count]
                run = measure(args.broker, workers, batch, requests, expected, args.rows)
                run["load_average_1m"] = round(os.getloadavg()[0], 2)
                print(json.dumps(run), file=sys.stderr)
                runs.append(run)
        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
            "runs": runs,
            "summary": summary(runs),
            "floor": floor(model, X, args.rows),
            "latency": latency(args.broker, X, args.latency_requests),
        }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"worker-{datetime.now(UTC).date()}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\n{result['machine']}; load average {result['load_average']}; saved to {out}")


if __name__ == "__main__":
    main()
