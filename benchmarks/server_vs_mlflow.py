"""Keel's server against ``mlflow server``: same machine, same database, one run, over loopback.

Run by hand from the repository root with Keel's virtualenv (issue 3, item 7)::

    python benchmarks/server_vs_mlflow.py                     # PostgreSQL, workers 1 and 4
    python benchmarks/server_vs_mlflow.py --quick             # reduced sizes, a smoke check
    python benchmarks/server_vs_mlflow.py --workers 1 --only ingest --only latency
    python benchmarks/server_vs_mlflow.py --database sqlite   # both servers on SQLite files
    python benchmarks/server_vs_mlflow.py --report benchmarks/results/server-<date>.json

For each worker count it starts ``keel server --workers N`` and ``mlflow server --workers N``
side by side, each on its own new database of the same PostgreSQL server (created for the run
and dropped at the end), and measures, alternating between the tools:

- ``ingest``: 16 client processes logging ``log_metric`` one call at a time through each tool's
  normal client (Keel's remote client, MLflow's fluent API), total points/s through the end of
  every run; MLflow's clients are time-boxed (see ``--mlflow-seconds``). Every client's points
  are counted in the database afterwards.
- ``latency``: one client alone; every ``log_metric`` call is timed, and Keel's ``end_run``.
- ``search``: 100,000 runs seeded into each database by bulk SQL (COPY), then the same
  filter + order + top-100 search through each REST API.
- ``history``: one run with a 1,000,000-point metric; Keel returns it as 1,000 buckets, MLflow
  (which cannot downsample) as the full history, and through its UI's sampled endpoint.

MLflow runs from its own virtualenv (``benchmarks/.venvs/mlflow``, made by
``tracking_vs_mlflow.py``; this script adds ``psycopg2-binary`` to it). Writes
``benchmarks/results/server-<date>[-suffix].json`` and prints a Markdown table for
``docs/benchmarks.md``. See ``benchmarks/README.md`` and the section "Server vs MLflow server".
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from _report import Row, console, machine, machine_line
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from tracking_vs_mlflow import (
    MLFLOW_PYTHON,
    MLFLOW_VENV,
    REPO,
    RESULTS,
    ensure_mlflow_venv,
    expected_top,
    make_runs,
    versions,
)

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "_server_client.py"
KEEL_BIN = Path(sys.executable).parent
PG_HOST = "postgres@127.0.0.1:5432"
SEARCH_FILTER = "metrics.rmse < 1 and params.model = 'tree'"
SEARCH_ORDER = ["metrics.rmse"]
TOOLS = ("keel", "mlflow")
PHASES = ("ingest", "latency", "search", "history")
CONCURRENT_PHASES = ("ingest", "latency")  # run at every worker count; the rest at the first
KEEL_RUN_COLUMNS = (
    *("run_id", "experiment_id", "run_name", "status", "user_name", "start_time", "end_time"),
    *("lifecycle_stage", "host"),
)
# as MLflow's SqlAlchemyStore.create_run fills them
MLFLOW_RUN_COLUMNS = (
    *("run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id"),
    *("status", "start_time", "end_time", "source_version", "lifecycle_stage", "artifact_uri"),
    "experiment_id",
)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each phase does; ``--quick`` shrinks every number."""

    clients: int = 16
    points: int = 10_000  # per client; MLflow's clients stop at mlflow_seconds
    mlflow_seconds: float = 20.0
    repeats: int = 3
    latency_points: int = 10_000
    latency_mlflow_seconds: float = 10.0
    search_runs: int = 100_000
    search_queries: int = 20
    mlflow_search_queries: int = 10
    history_points: int = 1_000_000
    history_buckets: int = 1_000
    history_repeats: int = 15
    mlflow_history_repeats: int = 3
    mlflow_history_budget_s: float = 240.0


QUICK = Sizes(
    clients=4,
    points=2_000,
    mlflow_seconds=4.0,
    repeats=1,
    latency_points=2_000,
    latency_mlflow_seconds=3.0,
    search_runs=5_000,
    search_queries=5,
    mlflow_search_queries=3,
    history_points=50_000,
    history_repeats=3,
    mlflow_history_repeats=1,
    mlflow_history_budget_s=60.0,
)


class BenchError(RuntimeError):
    """A server or client failed; carries what it printed."""


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# --- databases ------------------------------------------------------------------------------


class Database:
    """One tool's database: a PostgreSQL database made for this run, or a SQLite file.

    ``server_url`` is what the tool's server is given; :meth:`connect` opens a plain DB-API
    connection (psycopg 3 or sqlite3) for seeding and for counting what was stored.
    """

    def __init__(self, kind: str, tool: str, workdir: Path) -> None:
        self.kind, self.tool = kind, tool
        self.name = f"bench_{tool}_{os.getpid()}"
        if kind == "postgresql":
            driver = "postgresql+psycopg2" if tool == "mlflow" else "postgresql"
            self.server_url = f"{driver}://{PG_HOST}/{self.name}"
            self.path = None
        else:
            self.path = workdir / f"{self.name}.db"
            self.server_url = f"sqlite:///{self.path}"

    def create(self) -> None:
        if self.kind == "postgresql":
            with _pg_admin() as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                admin.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        if self.kind == "postgresql":
            with _pg_admin() as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        if self.kind == "postgresql":
            import psycopg

            conn = psycopg.connect(f"postgresql://{PG_HOST}/{self.name}")
        else:
            conn = sqlite3.connect(str(self.path), timeout=60)
        try:
            yield conn
            conn.commit()
        finally:
            conn.close()

    def sql(self, statement: str) -> str:
        """``?`` placeholders in the driver's style."""
        return statement.replace("?", "%s") if self.kind == "postgresql" else statement

    def scalar(self, statement: str, params: Sequence[Any] = ()) -> Any:
        with self.connect() as conn:
            return conn.execute(self.sql(statement), tuple(params)).fetchone()[0]

    def bulk_insert(
        self, conn: Any, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        """COPY on PostgreSQL, ``executemany`` on SQLite."""
        names = ", ".join(f'"{c}"' for c in columns)
        if self.kind == "postgresql":
            with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(columns))
            conn.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)

    def analyze(self) -> None:
        """VACUUM ANALYZE (PostgreSQL) or ANALYZE (SQLite) after seeding, as autovacuum would."""
        if self.kind == "postgresql":
            import psycopg

            with psycopg.connect(f"postgresql://{PG_HOST}/{self.name}", autocommit=True) as c:
                c.execute("VACUUM ANALYZE")
        else:
            with self.connect() as conn:
                conn.execute("ANALYZE")


@contextlib.contextmanager
def _pg_admin() -> Iterator[Any]:
    import psycopg

    with psycopg.connect(f"postgresql://{PG_HOST}/postgres", autocommit=True) as conn:
        yield conn


# --- servers --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The inherited environment minus every tool's settings, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KEEL_", "MLFLOW_", "VIRTUAL_ENV", "PYTHON"))
    }
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"  # no route out here; a sender could only slow it
    env["DO_NOT_TRACK"] = "true"
    env.update(extra)
    return env


@dataclasses.dataclass
class Server:
    """A running server: its process group, URL and start-up figures."""

    tool: str
    workers: int
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    database_url: str
    startup_s: float = 0.0
    settled_s: float = 0.0
    rss_mib: float = 0.0

    def stop(self) -> None:
        """SIGTERM to the server's own process group, SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        # workers of the group may outlive the supervisor for a moment
        deadline = time.monotonic() + 10
        while _group_pids(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_pids(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.tool == "mlflow":
            # MLflow leaves an empty lock file per database URL in the temporary folder
            digest = hashlib.md5(self.database_url.encode(), usedforsecurity=False).hexdigest()
            Path(tempfile.gettempdir(), f"db_init_lock-{digest}").unlink(missing_ok=True)


def _group_pids(pgid: int) -> list[int]:
    """Live processes of a process group (zombies excluded), from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _group_usage(pgid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and resident MiB summed over a process group."""
    ticks, pages = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    cpu = rss = 0.0
    for pid in _group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / ticks
        rss += int(fields[21]) * pages / 2**20
    return cpu, rss


def start_server(tool: str, workers: int, db: Database, workdir: Path) -> Server:
    """Start one tool's server on a free loopback port; return once it answers and idles.

    Keel gets ``KEEL_HOME`` and its artifact folder inside ``workdir``; MLflow gets its
    artifacts destination there. Both keep every other setting at its default (log level
    included), except MLflow's telemetry, which is off.
    """
    port = _free_port()
    log = workdir / f"{tool}-server-{workers}w.log"
    if tool == "keel":
        argv = [
            str(KEEL_BIN / "keel"),
            "server",
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
            *("--database-url", db.server_url),
            *("--artifact-url", str(workdir / "keel-artifacts")),
        ]
        env = _clean_env({"KEEL_HOME": str(workdir / "keel-server-home")})
    else:
        argv = [
            str(MLFLOW_VENV / "bin" / "mlflow"),
            "server",
            *("--backend-store-uri", db.server_url),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
            *("--artifacts-destination", str(workdir / "mlflow-artifacts")),
        ]
        env = _clean_env({"PATH": f"{MLFLOW_VENV / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    started = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(tool, workers, f"http://127.0.0.1:{port}", process, log, db.server_url)
    try:
        _wait_healthy(server, timeout=180)
        server.startup_s = time.perf_counter() - started
        server.settled_s = _wait_idle(process.pid) + server.startup_s
        server.rss_mib = _group_usage(process.pid)[1]
    except BaseException:
        server.stop()
        raise
    return server


def _wait_healthy(server: Server, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log.read_text(errors="replace")[-3000:]
            raise BenchError(f"{server.tool} server exited {server.process.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise BenchError(f"{server.tool} server did not answer /health within {timeout:.0f} s")


def _wait_idle(pgid: int, *, window: float = 2.0, limit: float = 90.0) -> float:
    """Wait until the server's processes use under 5% of a core; return the seconds waited.

    ``mlflow server`` answers /health while its job runner is still starting 7 consumer
    processes, which take about 20 s of CPU on this machine: measuring before they settle
    would charge that to whichever tool runs first.
    """
    started = time.perf_counter()
    before = _group_usage(pgid)[0]
    while time.perf_counter() - started < limit:
        time.sleep(window)
        now = _group_usage(pgid)[0]
        if now - before < 0.05 * window:
            break
        before = now
    return time.perf_counter() - started


# --- REST helpers ---------------------------------------------------------------------------


def create_experiment(tool: str, url: str, name: str) -> str:
    """An experiment created through the tool's own REST API; returns its id as a string."""
    if tool == "keel":
        answer = httpx.post(f"{url}/api/v1/experiments", json={"name": name}, timeout=30)
        answer.raise_for_status()
        return str(answer.json()["experiment_id"])
    answer = httpx.post(f"{url}/api/2.0/mlflow/experiments/create", json={"name": name}, timeout=30)
    answer.raise_for_status()
    return str(answer.json()["experiment_id"])


def create_run(tool: str, url: str, experiment_id: str, name: str) -> str:
    """A run created through the tool's own REST API; returns its id."""
    now = int(time.time() * 1000)
    if tool == "keel":
        body = {"experiment_id": int(experiment_id), "run_name": name, "user": "bench"}
        answer = httpx.post(f"{url}/api/v1/runs", json=body, timeout=30)
        answer.raise_for_status()
        return answer.json()["run_id"]
    body = {"experiment_id": experiment_id, "run_name": name, "start_time": now}
    answer = httpx.post(f"{url}/api/2.0/mlflow/runs/create", json=body, timeout=30)
    answer.raise_for_status()
    return answer.json()["run"]["info"]["run_id"]


# --- ingest and latency ---------------------------------------------------------------------


def client_round(
    tool: str,
    server: Server,
    *,
    experiment: str,
    clients: int,
    points: int,
    seconds: float | None,
    label: str,
) -> dict[str, Any]:
    """Start ``clients`` processes, wait until each has its run, let them all go, collect.

    Points/s is the sum of points logged over the span from the first client's first call to
    the last client's return from ``end_run``.
    """
    python = MLFLOW_PYTHON if tool == "mlflow" else Path(sys.executable)
    with tempfile.TemporaryDirectory(prefix=f"bench-{tool}-clients-") as tmp:
        procs: list[subprocess.Popen[str]] = []
        errs = []
        for index in range(clients):
            home = Path(tmp) / f"client-{index}"
            home.mkdir()
            if tool == "keel":
                env = _clean_env(
                    {"KEEL_TRACKING_URI": server.url, "KEEL_HOME": str(home / ".keel")}
                )
            else:
                env = _clean_env({"MLFLOW_TRACKING_URI": server.url})
            argv = [str(python), str(CLIENT), tool, "--experiment", experiment]
            argv += ["--name", f"{label}-{index}", "--n", str(points), "--seed", str(index)]
            if seconds is not None:
                argv += ["--seconds", str(seconds)]
            err = open(home / "stderr.txt", "w+")  # noqa: SIM115 (closed below)
            errs.append(err)
            procs.append(
                subprocess.Popen(
                    argv,
                    cwd=home,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                )
            )
        try:
            with _progress() as progress:
                task = progress.add_task(f"  {tool}: clients starting", total=clients)
                for proc in procs:
                    line = proc.stdout.readline() if proc.stdout else ""
                    if line.strip() != "ready":
                        raise BenchError(f"{tool} client not ready: {line!r}{_tail(errs)}")
                    progress.advance(task)
            for proc in procs:  # go, all at once
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            results = []
            with _progress() as progress:
                task = progress.add_task(f"  {tool}: clients logging", total=clients)
                for proc in procs:
                    out, _ = proc.communicate(timeout=900)
                    if proc.returncode != 0:
                        raise BenchError(f"{tool} client exited {proc.returncode}{_tail(errs)}")
                    results.append(_last_json(out))
                    progress.advance(task)
            leftovers = [str(p) for p in Path(tmp).glob("*/.keel/outbox/*")]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for err in errs:
                err.close()
    return _summarize_round(results, leftovers)


def _tail(errs: list[Any]) -> str:
    for err in errs:
        err.flush()
        err.seek(0)
        text = err.read().strip()
        if text:
            return ":\n" + "\n".join(text.splitlines()[-12:])
    return ""


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError(f"a client printed no JSON line:\n{stdout[-2000:]}")


def _summarize_round(results: list[dict[str, Any]], leftovers: list[str]) -> dict[str, Any]:
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    latencies = [x for r in results for x in r["latencies_us"]]
    points = sum(r["points"] for r in results)
    end_run_ms = [(r["end"] - r["loop_end"]) * 1000 for r in results]
    return {
        "clients": len(results),
        "points": points,
        "points_per_client": [r["points"] for r in results],
        "seconds": end - start,
        "points_per_s": points / (end - start),
        "loop_seconds_median": statistics.median(r["loop_end"] - r["start"] for r in results),
        "call_us": {
            "p50": _percentile(latencies, 50),
            "p90": _percentile(latencies, 90),
            "p99": _percentile(latencies, 99),
            "max": max(latencies),
            "mean": statistics.fmean(latencies),
        },
        "end_run_ms": {"median": statistics.median(end_run_ms), "max": max(end_run_ms)},
        "run_ids": [r["run_id"] for r in results],
        "outbox_files_left": leftovers,
    }


def stored_points(tool: str, db: Database, run_ids: list[str]) -> int:
    """How many metric points the tool's database holds for these runs."""
    marks = ", ".join("?" * len(run_ids))
    if tool == "keel":
        statement = (
            "SELECT count(*) FROM metrics m JOIN runs r ON r.run_key = m.run_key "
            f"WHERE r.run_id IN ({marks})"
        )
    else:
        statement = f"SELECT count(*) FROM metrics WHERE run_uuid IN ({marks})"
    return int(db.scalar(statement, run_ids))


def bench_clients(
    servers: dict[str, Server],
    dbs: dict[str, Database],
    sizes: Sizes,
    *,
    phase: str,
    experiments: dict[str, str],
) -> dict[str, Any]:
    """``ingest`` (``sizes.clients`` at once) or ``latency`` (one client), repeated,
    alternating tools; each round's points are counted in the database."""
    out: dict[str, Any] = {tool: {"rounds": []} for tool in servers}
    clients = sizes.clients if phase == "ingest" else 1
    for index in range(sizes.repeats):
        for tool, server in servers.items():
            if "error" in out[tool]:
                continue
            if phase == "ingest":
                points = sizes.points
                seconds = sizes.mlflow_seconds if tool == "mlflow" else None
            else:
                points = sizes.latency_points
                seconds = sizes.latency_mlflow_seconds if tool == "mlflow" else None
            console.print(
                f"  {tool}: round {index + 1}/{sizes.repeats}, {clients} client(s)", style="dim"
            )
            load = os.getloadavg()[0]
            try:
                result = client_round(
                    tool,
                    server,
                    experiment=experiments[tool],
                    clients=clients,
                    points=points,
                    seconds=seconds,
                    label=f"{phase}-{server.workers}w-{index}",
                )
            except (BenchError, subprocess.SubprocessError, OSError) as error:
                out[tool]["error"] = str(error)
                console.print(f"  [red]{tool} failed[/]: {error}")
                continue
            result["stored"] = stored_points(tool, dbs[tool], result["run_ids"])
            result["load_average_1m"] = load
            ok = result["stored"] == result["points"]
            console.print(
                f"    {result['points']:,} points in {result['seconds']:.2f} s = "
                f"{result['points_per_s']:,.0f}/s; call p50 {result['call_us']['p50']:,.1f} µs, "
                f"p99 {result['call_us']['p99']:,.1f} µs; end_run median "
                f"{result['end_run_ms']['median']:,.1f} ms; stored "
                + ("all" if ok else f"[red]{result['stored']:,}[/]"),
                style="dim",
            )
            out[tool]["rounds"].append(result)
    for measured in out.values():
        rounds = measured["rounds"]
        if not rounds or "error" in measured:
            continue
        measured.update(
            median_points_per_s=statistics.median(r["points_per_s"] for r in rounds),
            median_call_p50_us=statistics.median(r["call_us"]["p50"] for r in rounds),
            median_call_p99_us=statistics.median(r["call_us"]["p99"] for r in rounds),
            median_end_run_ms=statistics.median(r["end_run_ms"]["median"] for r in rounds),
            all_points_stored=all(r["stored"] == r["points"] for r in rounds),
        )
    return {"clients": clients, **out}


# --- search -----------------------------------------------------------------------------


def _seed_search(tool: str, db: Database, experiment_id: str, n_runs: int) -> dict[str, Any]:
    """Bulk-insert the runs of :func:`make_runs` into the tool's own tables (its server made
    the schema). Each run gets its params, its 3 metrics (history row and latest value) and
    the tags its API would add; MLflow's rows are filled as its ``create_run`` fills them."""
    runs = make_runs(n_runs)
    rng = random.Random(7)
    now = 1_790_000_000_000
    run_rows, param_rows, metric_rows, latest_rows, tag_rows = [], [], [], [], []
    ids = []
    for index, spec in enumerate(runs):
        run_id = uuid.UUID(int=rng.getrandbits(128), version=4).hex
        ids.append(run_id)
        start = now + index * 1_000
        end = start + 60_000
        if tool == "keel":
            run_rows.append(
                (
                    *(run_id, int(experiment_id), f"run-{index}", "FINISHED", "bench"),
                    *(start, end, "active", "bench"),
                )
            )
        else:
            artifact_uri = f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"
            run_rows.append(
                (
                    *(run_id, f"run-{index}", "UNKNOWN", "", "", "bench", "FINISHED"),
                    *(start, end, "", "active", artifact_uri, int(experiment_id)),
                )
            )
            tag_rows.append((run_id, "mlflow.runName", f"run-{index}"))
            tag_rows.append((run_id, "mlflow.user", "bench"))
        param_rows += [(run_id, k, v) for k, v in spec["params"].items()]
        for key, value in spec["metrics"].items():
            metric_rows.append((run_id, key, value, False, 0, start))
            latest_rows.append((run_id, key, value, False, 0, start))
    started = time.perf_counter()
    with db.connect() as conn:
        if tool == "keel":
            db.bulk_insert(
                conn,
                "runs",
                KEEL_RUN_COLUMNS,
                run_rows,
            )
            keys = dict(
                conn.execute(
                    db.sql("SELECT run_id, run_key FROM runs WHERE experiment_id = ?"),
                    (int(experiment_id),),
                ).fetchall()
            )
            db.bulk_insert(conn, "params", ["run_id", "key", "value"], param_rows)
            db.bulk_insert(
                conn,
                "metrics",
                ["run_key", "key", "value", "is_nan", "step", "timestamp"],
                [(keys[r], *rest) for r, *rest in metric_rows],
            )
            db.bulk_insert(
                conn,
                "latest_metrics",
                ["run_id", "key", "value", "is_nan", "step", "timestamp"],
                latest_rows,
            )
        else:
            db.bulk_insert(
                conn,
                "runs",
                MLFLOW_RUN_COLUMNS,
                run_rows,
            )
            db.bulk_insert(conn, "params", ["run_uuid", "key", "value"], param_rows)
            db.bulk_insert(conn, "tags", ["run_uuid", "key", "value"], tag_rows)
            mlflow_metrics = [(r, k, v, nan, s, t) for r, k, v, nan, s, t in metric_rows]
            db.bulk_insert(
                conn,
                "metrics",
                ["run_uuid", "key", "value", "is_nan", "step", "timestamp"],
                mlflow_metrics,
            )
            db.bulk_insert(
                conn,
                "latest_metrics",
                ["run_uuid", "key", "value", "is_nan", "step", "timestamp"],
                latest_rows,
            )
    db.analyze()
    return {"seed_seconds": time.perf_counter() - started, "runs": n_runs, "first_run": ids[0]}


def _search_once(
    tool: str, http: httpx.Client, experiment_id: str
) -> tuple[float, list[float], int]:
    """One search through the REST API: seconds (request and JSON decoding), rmse, bytes."""
    if tool == "keel":
        path = "/api/v1/runs/search"
        body: dict[str, Any] = {"experiment_ids": [int(experiment_id)]}
    else:
        path = "/api/2.0/mlflow/runs/search"
        body = {"experiment_ids": [experiment_id]}
    body.update(filter=SEARCH_FILTER, order_by=SEARCH_ORDER, max_results=100)
    start = time.perf_counter()
    answer = http.post(path, json=body)
    answer.raise_for_status()
    data = answer.json()
    seconds = time.perf_counter() - start
    if tool == "keel":
        rmse = [run["metrics"]["rmse"] for run in data["runs"]]
    else:
        rmse = [
            next(m["value"] for m in run["data"]["metrics"] if m["key"] == "rmse")
            for run in data["runs"]
        ]
    return seconds, rmse, len(answer.content)


def bench_search(
    servers: dict[str, Server], sizes: Sizes, experiment_ids: dict[str, str]
) -> dict[str, Any]:
    """The same search through each REST API: one untimed warm-up, then repeats, alternating
    tools (MLflow gets fewer repeats: each takes seconds). Results are checked against the top
    100 computed in Python."""
    expected = expected_top(make_runs(sizes.search_runs))
    out: dict[str, Any] = {"runs": sizes.search_runs, "filter": SEARCH_FILTER}
    clients = {tool: httpx.Client(base_url=s.url, timeout=600) for tool, s in servers.items()}
    times: dict[str, list[float]] = {tool: [] for tool in servers}
    checks: dict[str, bool] = {}
    sizes_bytes: dict[str, int] = {}
    try:
        for tool, http in clients.items():
            _, rmse, size = _search_once(tool, http, experiment_ids[tool])
            checks[tool] = len(rmse) == len(expected) and all(
                abs(a - b) < 1e-9 for a, b in zip(rmse, expected, strict=True)
            )
            sizes_bytes[tool] = size
            if not checks[tool]:
                console.print(f"  [red]{tool} returned other runs than expected[/]")
        repeats = {"keel": sizes.search_queries, "mlflow": sizes.mlflow_search_queries}
        with _progress() as progress:
            task = progress.add_task("  search", total=sum(repeats[t] for t in servers))
            for index in range(max(repeats.values())):
                for tool, http in clients.items():
                    if index < repeats[tool]:
                        times[tool].append(_search_once(tool, http, experiment_ids[tool])[0])
                        progress.advance(task)
    finally:
        for http in clients.values():
            http.close()
    for tool in servers:
        ms = [t * 1000 for t in times[tool]]
        out[tool] = {
            "p50_ms": statistics.median(ms),
            "p95_ms": _percentile(ms, 95),
            "times_ms": ms,
            "results_match_expected": checks[tool],
            "response_bytes": sizes_bytes[tool],
        }
        console.print(f"    {tool}: p50 {out[tool]['p50_ms']:,.1f} ms", style="dim")
    return out


# --- history ----------------------------------------------------------------------------------


def _history_value(step: int) -> float:
    return math.sin(step / 1000) + (step % 7) / 10


def _seed_history(tool: str, server: Server, db: Database, run_id: str, n: int) -> float:
    """Keel: the points go through its REST API (``POST /api/v1/metrics``, 10,000 a request, as
    its remote client sends them). MLflow: bulk SQL into ``metrics`` and ``latest_metrics``
    (its REST API takes 1,000 points a request at about 5,000 points/s). Returns the seconds."""
    base = 1_790_000_000_000
    started = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(f"  {tool}: seeding {n:,} points", total=n)
        if tool == "keel":
            with httpx.Client(base_url=server.url, timeout=600) as http:
                for first in range(0, n, 10_000):
                    points = [
                        {"run_id": run_id, "key": "loss", "value": _history_value(s)}
                        | {"step": s, "timestamp": base + s}
                        for s in range(first, min(first + 10_000, n))
                    ]
                    http.post("/api/v1/metrics", json={"points": points}).raise_for_status()
                    progress.advance(task, len(points))
        else:
            rows = [(run_id, "loss", _history_value(s), False, s, base + s) for s in range(n)]
            last = rows[-1]
            with db.connect() as conn:
                db.bulk_insert(
                    conn,
                    "metrics",
                    ["run_uuid", "key", "value", "is_nan", "step", "timestamp"],
                    rows,
                )
                db.bulk_insert(
                    conn,
                    "latest_metrics",
                    ["run_uuid", "key", "value", "is_nan", "step", "timestamp"],
                    [last],
                )
            progress.advance(task, n)
    seconds = time.perf_counter() - started
    db.analyze()
    return seconds


def _timed_get(http: httpx.Client, path: str, params: dict[str, Any]) -> tuple[float, Any, int]:
    start = time.perf_counter()
    answer = http.get(path, params=params)
    answer.raise_for_status()
    data = answer.json()
    return time.perf_counter() - start, data, len(answer.content)


def bench_history(
    servers: dict[str, Server], sizes: Sizes, run_ids: dict[str, str]
) -> dict[str, Any]:
    """Keel's downsampled history (and its full one, once) against MLflow's full history and its
    UI's sampled endpoint; each checked for its point count."""
    n, buckets = sizes.history_points, sizes.history_buckets
    out: dict[str, Any] = {"points": n, "buckets": buckets}
    keel, mlflow = servers.get("keel"), servers.get("mlflow")
    calls: list[tuple[str, str, Server, str, dict[str, Any], int, Callable[[Any], bool]]] = []
    if keel:
        path = f"/api/v1/runs/{run_ids['keel']}/metrics/history"
        calls.append(
            (
                "keel",
                "downsampled",
                keel,
                path,
                {"key": "loss", "max_points": buckets},
                sizes.history_repeats,
                lambda d: d["count"] == n and len(d["buckets"]) == buckets,
            )
        )
        calls.append(
            ("keel", "full", keel, path, {"key": "loss"}, 1, lambda d: len(d["points"]) == n)
        )
    if mlflow:
        calls.append(
            (
                "mlflow",
                "sampled_ui",
                mlflow,
                "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                {"run_ids": run_ids["mlflow"], "metric_key": "loss", "max_results": buckets},
                sizes.history_repeats,
                lambda d: len(d["metrics"]) >= buckets // 2,
            )
        )
        calls.append(
            (
                "mlflow",
                "full",
                mlflow,
                "/api/2.0/mlflow/metrics/get-history",
                {"run_id": run_ids["mlflow"], "metric_key": "loss"},
                sizes.mlflow_history_repeats,
                lambda d: len(d["metrics"]) == n,
            )
        )
    for tool, what, server, path, params, repeats, check in calls:
        with httpx.Client(base_url=server.url, timeout=900) as http:
            times, ok, size, returned = [], True, 0, 0
            budget_end = time.perf_counter() + sizes.mlflow_history_budget_s
            warm = repeats > 2  # a warm-up only where there are repeats to spare
            with _progress() as progress:
                task = progress.add_task(f"  {tool} {what}", total=repeats + warm)
                for index in range(repeats + warm):
                    seconds, data, size = _timed_get(http, path, params)
                    ok = ok and check(data)
                    returned = len(data.get("buckets") or data.get("points") or data["metrics"])
                    if index >= warm:
                        times.append(seconds)
                    progress.advance(task)
                    if times and time.perf_counter() > budget_end:
                        break  # the time box: fewer repeats than asked
                    del data
        ms = [t * 1000 for t in times]
        out.setdefault(tool, {})[what] = {
            "p50_ms": statistics.median(ms),
            "times_ms": ms,
            "repeats": len(ms),
            "warm_up": warm,
            "returned": returned,
            "response_bytes": size,
            "checked": ok,
        }
        console.print(
            f"    {tool} {what}: p50 {statistics.median(ms):,.1f} ms over {len(ms)}, "
            f"{returned:,} items, {size / 2**20:,.1f} MiB"
            + ("" if ok else " [red]CHECK FAILED[/]"),
            style="dim",
        )
    return out


# --- one worker count -------------------------------------------------------------------------


@dataclasses.dataclass
class Fixtures:
    """What the search and history phases need, seeded once per database and reused."""

    search_experiment: dict[str, str] = dataclasses.field(default_factory=dict)
    history_run: dict[str, str] = dataclasses.field(default_factory=dict)
    seeding: dict[str, Any] = dataclasses.field(default_factory=dict)


def bench_workers(
    workers: int,
    tools: list[str],
    dbs: dict[str, Database],
    sizes: Sizes,
    phases: list[str],
    workdir: Path,
    fixtures: Fixtures,
) -> dict[str, Any]:
    """Start both servers with ``workers`` workers, run the phases, stop them."""
    out: dict[str, Any] = {"workers": workers, "load_average": {"start": list(os.getloadavg())}}
    servers: dict[str, Server] = {}
    try:
        for tool in tools:
            console.print(f"  starting {tool} server, {workers} worker(s)", style="dim")
            servers[tool] = start_server(tool, workers, dbs[tool], workdir)
            s = servers[tool]
            console.print(
                f"    healthy after {s.startup_s:.1f} s, idle after {s.settled_s:.1f} s, "
                f"{s.rss_mib:,.0f} MiB resident",
                style="dim",
            )
        out["servers"] = {
            tool: {"startup_s": s.startup_s, "idle_after_s": s.settled_s, "rss_mib": s.rss_mib}
            for tool, s in servers.items()
        }
        for phase in phases:
            console.rule(f"[bold]{phase}, {workers} worker(s)")
            if phase in ("ingest", "latency"):
                experiments = {}
                for tool, s in servers.items():
                    name = f"{phase}-{workers}w"
                    create_experiment(tool, s.url, name)
                    experiments[tool] = name
                out[phase] = bench_clients(
                    servers, dbs, sizes, phase=phase, experiments=experiments
                )
            elif phase == "search":
                for tool, s in servers.items():
                    if tool in fixtures.search_experiment:
                        continue
                    experiment_id = create_experiment(tool, s.url, "search")
                    console.print(f"  {tool}: seeding {sizes.search_runs:,} runs", style="dim")
                    fixtures.seeding[f"search_{tool}"] = _seed_search(
                        tool, dbs[tool], experiment_id, sizes.search_runs
                    )
                    fixtures.search_experiment[tool] = experiment_id
                out[phase] = bench_search(servers, sizes, fixtures.search_experiment)
            elif phase == "history":
                for tool, s in servers.items():
                    if tool in fixtures.history_run:
                        continue
                    experiment_id = create_experiment(tool, s.url, "history")
                    run_id = create_run(tool, s.url, experiment_id, "history")
                    seconds = _seed_history(tool, s, dbs[tool], run_id, sizes.history_points)
                    fixtures.seeding[f"history_{tool}"] = {
                        "seconds": seconds,
                        "points": sizes.history_points,
                        "how": "POST /api/v1/metrics, 10,000 points a request"
                        if tool == "keel"
                        else "COPY into metrics and latest_metrics",
                    }
                    fixtures.history_run[tool] = run_id
                out[phase] = bench_history(servers, sizes, fixtures.history_run)
        for tool, s in servers.items():
            out["servers"][tool]["rss_mib_end"] = _group_usage(s.process.pid)[1]
    finally:
        for s in servers.values():
            s.stop()
    out["load_average"]["end"] = list(os.getloadavg())
    return out


# --- report ---------------------------------------------------------------------------------


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _fmt_us(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:,.1f} ms" if value < 100_000 else f"{value / 1000:,.0f} ms"
    return f"{value:,.1f} µs"


def _fmt_ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _ratio(keel: float | None, mlflow: float | None, higher_is_better: bool) -> float | None:
    if not keel or not mlflow:
        return None
    return keel / mlflow if higher_is_better else mlflow / keel


def _row(
    name: str,
    mlflow: float | None,
    keel: float | None,
    fmt: Callable[[float], str],
    *,
    higher_is_better: bool,
    goal: float | None = None,
    keel_goal: tuple[str, bool] | None = None,
) -> Row:
    ratio = _ratio(keel, mlflow, higher_is_better)
    met = None
    goal_text = "—"
    if goal:
        goal_text = f"≥ {goal:g}×"
        met = ratio >= goal if ratio is not None else None
    if keel_goal:
        goal_text, met = keel_goal
    return Row(
        benchmark=name,
        mlflow=fmt(mlflow) if mlflow is not None else "—",
        keel=fmt(keel) if keel is not None else "—",
        ratio=(f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.1f}×") if ratio else "—",
        goal=goal_text,
        met=met,
    )


def build_rows(report: dict[str, Any]) -> list[Row]:
    """The comparison table: per worker count, one row per figure."""
    rows: list[Row] = []
    sizes = report["sizes"]
    for workers, result in report["by_workers"].items():
        w = f"{workers} worker{'s' if workers != '1' else ''}"

        def get(phase: str, tool: str, key: str, _result: dict[str, Any] = result) -> Any:
            return _result.get(phase, {}).get(tool, {}).get(key)

        if "ingest" in result:
            r = result["ingest"]
            rows.append(
                _row(
                    f"{w}: {r['clients']} clients × `log_metric`, points/s (Keel "
                    f"{sizes['points']:,} each; MLflow {sizes['mlflow_seconds']:g} s each)",
                    get("ingest", "mlflow", "median_points_per_s"),
                    get("ingest", "keel", "median_points_per_s"),
                    _fmt_rate,
                    higher_is_better=True,
                    goal=20,
                )
            )
            for stat in ("p50", "p99"):
                rows.append(
                    _row(
                        f"{w}: one `log_metric` call with {r['clients']} clients, {stat}",
                        get("ingest", "mlflow", f"median_call_{stat}_us"),
                        get("ingest", "keel", f"median_call_{stat}_us"),
                        _fmt_us,
                        higher_is_better=False,
                    )
                )
            end_run = get("ingest", "keel", "median_end_run_ms")
            if end_run is not None:
                rows.append(
                    Row(
                        f"{w}: Keel `end_run` with {r['clients']} clients (delivers the "
                        "buffered points)",
                        "—",
                        _fmt_ms(end_run),
                        "—",
                        "—",
                        None,
                    )
                )
        if "latency" in result:
            for stat in ("p50", "p99"):
                rows.append(
                    _row(
                        f"{w}: one `log_metric` call, one client alone, {stat}",
                        get("latency", "mlflow", f"median_call_{stat}_us"),
                        get("latency", "keel", f"median_call_{stat}_us"),
                        _fmt_us,
                        higher_is_better=False,
                    )
                )
            end_run = get("latency", "keel", "median_end_run_ms")
            if end_run is not None:
                rows.append(
                    Row(
                        f"{w}: Keel `end_run` after {sizes['latency_points']:,} points, one client",
                        "—",
                        _fmt_ms(end_run),
                        "—",
                        "—",
                        None,
                    )
                )
        if "search" in result:
            r = result["search"]
            rows.append(
                _row(
                    f"{w}: search over REST, {r['runs']:,} runs, filter + order + top 100, p50",
                    get("search", "mlflow", "p50_ms"),
                    get("search", "keel", "p50_ms"),
                    _fmt_ms,
                    higher_is_better=False,
                )
            )
        if "history" in result:
            r = result["history"]
            keel_ds = r.get("keel", {}).get("downsampled", {}).get("p50_ms")
            for what, label in (
                ("full", "full history (MLflow `get-history`)"),
                ("sampled_ui", "MLflow UI's sampled `get-history-bulk-interval`"),
            ):
                mlflow_ms = r.get("mlflow", {}).get(what, {}).get("p50_ms")
                rows.append(
                    _row(
                        f"{w}: {r['points']:,}-point history: Keel {r['buckets']:,} buckets vs "
                        f"{label}, p50",
                        mlflow_ms,
                        keel_ds,
                        _fmt_ms,
                        higher_is_better=False,
                        keel_goal=("Keel < 200 ms", keel_ds < 200) if keel_ds else None,
                    )
                )
    return rows


def markdown_table(rows: list[Row]) -> str:
    met = {True: "yes", False: "**no**", None: "—"}
    lines = ["| benchmark | MLflow | Keel | ratio | goal | met? |", "|---|--:|--:|--:|--:|:-:|"]
    lines += [
        f"| {r.benchmark} | {r.mlflow} | {r.keel} | {r.ratio} | {r.goal} | {met[r.met]} |"
        for r in rows
    ]
    return "\n".join(lines)


def show(report: dict[str, Any]) -> None:
    from rich.table import Table

    rows = build_rows(report)
    table = Table(title=f"Keel server vs mlflow server ({report['database']}, medians)")
    for column in ("benchmark", "MLflow", "Keel", "ratio", "goal", "met?"):
        table.add_column(column, justify="left" if column == "benchmark" else "right")
    for r in rows:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}[r.met]
        table.add_row(r.benchmark.replace("`", ""), r.mlflow, r.keel, r.ratio, r.goal, met)
    console.print(table)
    console.print(f"Machine: {machine_line(report['machine'], report['load_average'])}")
    v = report["versions"]
    console.print(f"Versions: MLflow {v['mlflow']}, Keel {v['keel']} at {v['keel_commit']}\n")
    print(markdown_table(rows))
    print("\nratio: how many times Keel is better (higher throughput or shorter time).\n")


# --- main -------------------------------------------------------------------------------------


def ensure_mlflow_driver() -> None:
    """MLflow's server needs psycopg2 for PostgreSQL; add it to MLflow's virtualenv once."""
    probe = subprocess.run([str(MLFLOW_PYTHON), "-c", "import psycopg2"], capture_output=True)
    if probe.returncode == 0:
        return
    uv = KEEL_BIN / "uv"
    uv_cmd = str(uv) if uv.exists() else shutil.which("uv")
    if uv_cmd is None:
        sys.exit("uv not found beside the interpreter or on PATH: pip install uv")
    console.print("[bold]Installing psycopg2-binary into MLflow's virtualenv[/]")
    command = [uv_cmd, "pip", "install", "--python", str(MLFLOW_PYTHON), "psycopg2-binary"]
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=PHASES, help="run only this phase")
    parser.add_argument(
        "--workers",
        action="append",
        type=int,
        help="worker count for both servers (repeatable; default 1 and 4); search and history "
        "run at the first only",
    )
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--quick", action="store_true", help="reduced sizes, a smoke check")
    parser.add_argument("--tool", choices=TOOLS, help="measure one tool only")
    parser.add_argument("--repeats", type=int, help="rounds of ingest and latency per tool")
    parser.add_argument(
        "--report", type=Path, help="print the tables of a saved results JSON; run nothing"
    )
    args = parser.parse_args(argv)
    if args.report:
        show(json.loads(args.report.read_text()))
        return 0
    sizes = QUICK if args.quick else Sizes()
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    phases = [p for p in PHASES if not args.only or p in args.only]
    tools = [args.tool] if args.tool else list(TOOLS)
    worker_counts = args.workers or [1, 4]
    if "mlflow" in tools:
        ensure_mlflow_venv()
        if args.database == "postgresql":
            ensure_mlflow_driver()

    started = dt.datetime.now(dt.UTC)
    load_start = list(os.getloadavg())
    versions_at_start = versions()
    by_workers: dict[str, Any] = {}
    fixtures = Fixtures()
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        workdir = Path(tmp)
        dbs = {tool: Database(args.database, tool, workdir) for tool in tools}
        try:
            for db in dbs.values():
                db.create()
            for index, workers in enumerate(worker_counts):
                # search and history send one request at a time: the first worker count only
                todo = [p for p in phases if index == 0 or p in CONCURRENT_PHASES]
                if not todo:
                    continue
                console.rule(f"[bold]{args.database}, {workers} worker(s) per server")
                by_workers[str(workers)] = bench_workers(
                    workers, tools, dbs, sizes, todo, workdir, fixtures
                )
        finally:
            for db in dbs.values():
                db.drop()
    report = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).as_posix(), *sys.argv]),
        "database": args.database,
        "quick": args.quick,
        "sizes": dataclasses.asdict(sizes),
        "machine": machine(),
        "load_average": {"start": load_start, "end": list(os.getloadavg())},
        "versions": versions_at_start,
        "seeding": fixtures.seeding,
        "notes": [
            "Both servers run at once, each on its own database of the same server; phases "
            "alternate between them.",
            "Clients: one process each, started and given their run before the clock starts.",
            "MLflow ingest clients are time-boxed (mlflow_seconds); points/s counts what was "
            "logged, from the first call to the last end_run.",
            "Search data: make_runs() of tracking_vs_mlflow.py, bulk-inserted (COPY) into each "
            "tool's schema made by its own server; then VACUUM ANALYZE.",
            "History: Keel's 1M points sent through POST /api/v1/metrics; MLflow's COPY'd into "
            "metrics and latest_metrics.",
        ],
        "by_workers": by_workers,
    }
    report["table"] = [dataclasses.asdict(r) for r in build_rows(report)]
    RESULTS.mkdir(exist_ok=True)
    parts = [
        *([args.database] if args.database != "postgresql" else []),
        *(["quick"] if args.quick else []),
        *(args.only or []),
        *([f"{w}w" for w in args.workers] if args.workers else []),
        *(tools if args.tool else []),
    ]
    path = RESULTS / f"server-{started:%Y-%m-%d}{''.join(f'-{p}' for p in parts)}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    show(report)
    console.print(f"Wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
