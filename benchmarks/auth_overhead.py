"""What ``keel server --auth`` costs per request, against the same server without it.

Run by hand (not a test)::

    python benchmarks/auth_overhead.py [--requests 2000] [--postgres]

Starts ``keel server`` twice on loopback (one worker, a fresh SQLite store in a temporary
folder, or with ``--postgres`` a fresh database on 127.0.0.1:5432, dropped afterwards), once
plain and once with ``--auth`` and an editor token that owns the experiment, and times, as
medians over one keep-alive connection:

- ``POST /api/v1/runs/{id}/metrics`` with 1 point (authentication, the grant check, the audit
  row and the write);
- the same with 10,000 points (how the remote client sends: the per-request cost spread out);
- ``GET /api/v1/runs/{id}`` (a read: authentication and the grant check, no audit row);
- MLflow's ``POST /api/2.0/mlflow/runs/log-metric`` (what an MLflow client pays per call).

Prints a table of p50 per request with and without authentication, and the difference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from _report import console, machine, machine_line

CASES = ("log 1 point", "log 10,000 points", "get run", "mlflow log-metric")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    home: Path, database_url: str | None, auth: bool
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "KEEL_HOME": str(home), "KEEL_CAPTURE_SOURCE": "false"}
    if database_url:
        env["KEEL_DATABASE_URL"] = database_url
    args = [sys.executable, "-m", "keel", "server", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(
        [*args, *(["--auth"] if auth else [])],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("keel server did not start within 60 s")


PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def postgres_admin(statement: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(statement))
    engine.dispose()


def postgres_database(suffix: str) -> str:
    name = f"keel_authbench_{os.getpid()}_{suffix}"
    postgres_admin(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def editor_token(home: Path, database_url: str | None) -> str:
    """An editor token made on the database directly (as an operator would)."""
    from keel.auth.models import Role
    from keel.auth.store import AuthStore
    from keel.db import ensure_schema, make_engine

    engine = make_engine(database_url or f"sqlite:///{home / 'keel.db'}")
    ensure_schema(engine)
    store = AuthStore(engine)
    store.create_user("bench")
    token = store.create_token("bench", role=Role.EDITOR).token
    engine.dispose()
    return token


def p50_ms(call: Callable[[], httpx.Response], repeat: int) -> float:
    for _ in range(min(20, repeat)):
        call().raise_for_status()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call().raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(url: str, token: str | None, repeat: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        eid = http.post("/api/v1/experiments", json={"name": "bench"}).json()["experiment_id"]
        run_id = http.post("/api/v1/runs", json={"experiment_id": eid}).json()["run_id"]
        step = iter(range(10**9))
        big = [{"key": "loss", "value": 0.5, "step": i} for i in range(10_000)]
        return {
            "log 1 point": p50_ms(
                lambda: http.post(
                    f"/api/v1/runs/{run_id}/metrics",
                    json={"points": [{"key": "m", "value": 1.0, "step": next(step)}]},
                ),
                repeat,
            ),
            "log 10,000 points": p50_ms(
                lambda: http.post(f"/api/v1/runs/{run_id}/metrics", json={"points": big}),
                max(10, repeat // 100),
            ),
            "get run": p50_ms(lambda: http.get(f"/api/v1/runs/{run_id}"), repeat),
            "mlflow log-metric": p50_ms(
                lambda: http.post(
                    "/api/2.0/mlflow/runs/log-metric",
                    json={
                        "run_id": run_id,
                        "key": "x",
                        "value": 1.0,
                        "timestamp": 1,
                        "step": next(step),
                    },
                ),
                repeat,
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL at 127.0.0.1:5432")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results: dict[bool, dict[str, float]] = {}
    for auth in (False, True):
        home = Path(tempfile.mkdtemp(prefix="keel-auth-bench-")) / ".keel"
        home.mkdir()
        database_url = postgres_database(f"auth{int(auth)}") if args.postgres else None
        token = editor_token(home, database_url) if auth else None
        process, url = start_server(home, database_url, auth)
        try:
            console.print(f"measuring {'with' if auth else 'without'} --auth ...")
            results[auth] = measure(url, token, args.requests)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
            shutil.rmtree(home.parent, ignore_errors=True)
            if database_url:
                postgres_admin(f'DROP DATABASE IF EXISTS "{database_url.rsplit("/", 1)[1]}"')
    print(machine_line(machine(), {"start": list(load_before), "end": list(os.getloadavg())}))
    print("| request | p50 without auth | p50 with --auth | difference |")
    print("|---|---|---|---|")
    for case in CASES:
        off, on = results[False][case], results[True][case]
        print(f"| {case} | {off:.2f} ms | {on:.2f} ms | {on - off:+.2f} ms |")


if __name__ == "__main__":
    main()
