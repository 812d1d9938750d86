"""Keel's half of ``tracking_vs_mlflow.py``: one benchmark, one process, one JSON line.

Run by the harness with Keel's interpreter, in a fresh temporary directory, with
``KEEL_HOME=<tmp>/.keel`` and every other setting at its default (the search benchmark's seeding
may set ``KEEL_CAPTURE_SOURCE=false``; the harness reports it). It mirrors ``_mlflow_side.py``
call for call. Usage::

    python _keel_side.py log_metric --n 5000
    python _keel_side.py log_batch --n 100000 --per-call 1000
    python _keel_side.py series --n 100000     # one metric's steps: Client.log_batch
    python _keel_side.py search --seed-file runs.json --queries 20
    python _keel_side.py log_metric --n 5000 --profile out.prof   # cProfile of the timed part
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

EXPERIMENT = "bench"
SEARCH_FILTER = "metrics.rmse < 1 and params.model = 'tree'"
SEARCH_ORDER = ["metrics.rmse"]


class _ThreadProfiles:
    """cProfile for the main thread plus every thread started after :meth:`install`.

    cProfile sees one thread only; Keel writes metrics from a background thread, so each new
    thread gets its own profiler and the stats are merged at the end.
    """

    def __init__(self) -> None:
        import cProfile

        self._new = cProfile.Profile
        self.main = cProfile.Profile()
        self.threads: list[tuple[threading.Thread, object]] = []
        self._original_run = threading.Thread.run

    def install(self) -> None:
        profiles = self
        original_run = self._original_run

        def run(thread: threading.Thread) -> None:
            profile = profiles._new()
            profiles.threads.append((thread, profile))
            profile.enable()
            try:
                original_run(thread)
            finally:
                profile.disable()

        threading.Thread.run = run  # type: ignore[method-assign]

    @contextlib.contextmanager
    def timed_section(self) -> Iterator[None]:
        self.main.enable()
        try:
            yield
        finally:
            self.main.disable()

    def dump(self, path: str) -> list[str]:
        """Write merged stats to ``path``; return the names of threads still running (skipped)."""
        import pstats

        threading.Thread.run = self._original_run  # type: ignore[method-assign]
        stats = pstats.Stats(self.main)
        skipped = []
        for thread, profile in self.threads:
            if thread.is_alive():
                skipped.append(thread.name)
            else:
                stats.add(profile)
        stats.dump_stats(path)
        return skipped


_PROFILES: _ThreadProfiles | None = None


def _timed() -> contextlib.AbstractContextManager[None]:
    return _PROFILES.timed_section() if _PROFILES else contextlib.nullcontext()


def _stored_points(run_id: str, key: str) -> int:
    """How many points of ``key`` the run holds, read back after the run ended."""
    import keel

    return len(keel.get_metric_history(run_id, key))


def bench_log_metric(args: argparse.Namespace) -> dict:
    """``keel.log_metric`` one call at a time, timed through ``end_run`` (the final flush)."""
    import keel

    keel.set_experiment(EXPERIMENT)
    rng = random.Random(0)
    values = [rng.random() for _ in range(args.n)]
    run = keel.start_run(name="log_metric")
    with _timed():
        start = time.perf_counter()
        for step, value in enumerate(values):
            keel.log_metric("loss", value, step=step)
        keel.end_run()
        elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "points": args.n, "stored": _stored_points(run.run_id, "loss")}


def bench_log_batch(args: argparse.Namespace) -> dict:
    """``keel.log_metrics`` of ``per_call`` distinct keys per call, one call per step."""
    import keel

    keel.set_experiment(EXPERIMENT)
    rng = random.Random(0)
    batches = [
        {f"m{key}": rng.random() for key in range(args.per_call)}
        for _ in range(args.n // args.per_call)
    ]
    run = keel.start_run(name="log_batch")
    with _timed():
        start = time.perf_counter()
        for step, batch in enumerate(batches):
            keel.log_metrics(batch, step=step)
        keel.end_run()
        elapsed = time.perf_counter() - start
    last = f"m{args.per_call - 1}"
    stored = sum(_stored_points(run.run_id, key) for key in ("m0", last)) * args.per_call // 2
    return {"seconds": elapsed, "points": len(batches) * args.per_call, "stored": stored}


def bench_series(args: argparse.Namespace) -> dict:
    """One metric's steps through ``Client.log_batch``, ``per_call`` steps per call."""
    import keel

    keel.set_experiment(EXPERIMENT)
    rng = random.Random(0)
    now = int(time.time() * 1000)
    points = [("loss", rng.random(), step, now + step) for step in range(args.n)]
    chunks = [points[i : i + args.per_call] for i in range(0, args.n, args.per_call)]
    run = keel.start_run(name="series")
    client = run.client
    with _timed():
        start = time.perf_counter()
        for chunk in chunks:
            client.log_batch(run.run_id, metrics=chunk)
        keel.end_run()
        elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "points": args.n, "stored": _stored_points(run.run_id, "loss")}


def bench_search(args: argparse.Namespace) -> dict:
    """Seed runs (untimed, skipped with ``--seeded``), then time the same search repeatedly."""
    import keel

    experiment_id = keel.set_experiment(EXPERIMENT).experiment_id
    runs = json.loads(Path(args.seed_file).read_text())
    seed_seconds = None
    if not args.seeded:
        # The explicit client skips the fluent layer's per-run settings lookup: the fastest
        # public path, and the same calls MLflow's side makes.
        client = keel.Client()
        start = time.perf_counter()
        for index, spec in enumerate(runs):
            run_id = client.create_run(experiment_id, run_name=f"run-{index}").run_id
            client.log_params(run_id, spec["params"])
            client.log_metrics(run_id, spec["metrics"], step=0)
            client.end_run(run_id)
        client.close()
        seed_seconds = time.perf_counter() - start

    def search() -> list:
        return keel.search_runs(
            filter_string=SEARCH_FILTER,
            order_by=SEARCH_ORDER,
            max_results=100,
            output="list",
        )

    found = search()  # warm-up, untimed
    times = []
    with _timed():
        for _ in range(args.queries):
            start = time.perf_counter()
            search()
            times.append(time.perf_counter() - start)
    return {
        "runs": len(runs),
        "seed_seconds": seed_seconds,
        "times": times,
        "returned": len(found),
        "rmse": [run.metrics["rmse"] for run in found],
        "models": sorted({run.params["model"] for run in found}),
    }


BENCHMARKS = {
    "log_metric": bench_log_metric,
    "log_batch": bench_log_batch,
    "series": bench_series,
    "search": bench_search,
}


def main() -> None:
    global _PROFILES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", choices=sorted(BENCHMARKS))
    parser.add_argument("--n", type=int, default=0, help="points to log")
    parser.add_argument("--per-call", type=int, default=1000, help="points per log_metrics call")
    parser.add_argument("--seed-file", help="JSON list of runs to seed for the search benchmark")
    parser.add_argument("--queries", type=int, default=20, help="timed searches")
    parser.add_argument("--seeded", action="store_true", help="the database is already seeded")
    parser.add_argument("--profile", help="write a cProfile of the timed part to this file")
    args = parser.parse_args()

    if args.profile:
        _PROFILES = _ThreadProfiles()
        _PROFILES.install()

    import keel

    result = BENCHMARKS[args.bench](args)
    if _PROFILES:
        from keel.tracking.fluent import get_client

        get_client().close()  # stops the metric writer thread, so its profile is complete
        result["profile_threads_skipped"] = _PROFILES.dump(args.profile)
    result.update(tool="keel", version=_keel_version(keel), pid=os.getpid())
    sys.stdout.write(json.dumps(result) + "\n")


def _keel_version(module: object) -> str:
    from importlib.metadata import version

    return getattr(module, "__version__", None) or version("keel")


if __name__ == "__main__":
    main()
