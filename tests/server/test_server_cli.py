"""``keel server`` for real: uvicorn on 127.0.0.1, one worker or several, over real sockets."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest
from sqlalchemy import create_engine, text

from keel.db.migrate import HEAD_REVISION
from keel.server.launch import bind_socket, settings_environment
from keel.settings import Settings
from tests.conftest import create_pg_database, drop_pg_database
from tests.server.conftest import free_port

pytestmark = pytest.mark.slow
API = "/api/v1"


def keep_alive_p50(url: str, path: str = f"{API}/experiments", n: int = 30) -> float:
    """Median milliseconds of ``n`` sequential requests on one keep-alive connection."""
    with httpx.Client(base_url=url) as http:
        http.get(path).raise_for_status()  # opens the connection
        times = []
        for _ in range(n):
            start = time.perf_counter()
            http.get(path).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def test_two_workers_keep_alive_requests_are_not_delayed(home: Path, keel_server: Any) -> None:
    # Without TCP_NODELAY on accepted sockets every request after a connection's first waits for
    # the client's delayed ACK: about 44 ms here, against 2-6 ms with it.
    with keel_server("--workers", "2", workers_up=2) as server:
        p50 = keep_alive_p50(server.url)
        assert p50 < 15, f"keep-alive p50 {p50:.1f} ms: TCP_NODELAY is not set on accepted sockets"
        assert "with 2 workers" in server.output()


def test_one_worker_serves_the_api_over_a_real_socket(home: Path, keel_server: Any) -> None:
    with keel_server() as server, httpx.Client(base_url=server.url) as http:
        assert keep_alive_p50(server.url) < 15
        eid = http.post(f"{API}/experiments", json={"name": "real"}).json()["experiment_id"]
        run_id = http.post(f"{API}/runs", json={"experiment_id": eid}).json()["run_id"]
        points = [
            {"key": "loss", "value": "NaN" if i == 3 else i / 10, "step": i} for i in range(5)
        ]
        written = http.post(f"{API}/runs/{run_id}/metrics", json={"points": points})
        assert written.json() == {"written": 5}

        data = os.urandom(3 << 20)
        digest = blake3.blake3(data).hexdigest()
        chunks = (data[i : i + 65536] for i in range(0, len(data), 65536))
        url = f"{API}/runs/{run_id}/artifacts/model.bin"
        put = http.put(url, content=chunks, headers={"X-Keel-Digest": digest})
        assert put.status_code == 201, put.text
        with http.stream("GET", url) as response:
            received = b"".join(response.iter_bytes())
            assert response.headers["x-keel-digest"] == digest
        assert received == data

        # a corrupt stored object: the connection is cut before the body completes
        obj = home / "artifacts" / "objects" / digest[:2] / digest[2:]
        obj.chmod(0o644)
        with open(obj, "r+b") as damaged:
            damaged.seek(len(data) // 2)
            damaged.write(b"\x00" if data[len(data) // 2] else b"\x01")
        with pytest.raises(httpx.RemoteProtocolError), http.stream("GET", url) as response:
            b"".join(response.iter_bytes())
    assert "does not match its digest" in server.output()


def test_two_workers_migrate_a_fresh_postgresql_database_once(home: Path, keel_server: Any) -> None:
    url = create_pg_database("keel_server")
    try:
        with keel_server("--workers", "2", "--database-url", url, workers_up=2) as server:
            response = httpx.post(f"{server.url}{API}/experiments", json={"name": "pg"})
            assert response.status_code == 201
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
                HEAD_REVISION
            )
            assert conn.execute(text("SELECT count(*) FROM experiments")).scalar() == 1
        engine.dispose()
    finally:
        drop_pg_database(url)


def _run_keel(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel", "server", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_workers_stop_when_the_store_cannot_open(home: Path) -> None:
    # every worker would fail the same way: exit with uvicorn's startup-failure code, no respawns
    bad = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"
    done = _run_keel("--workers", "2", "--port", str(free_port()), "--database-url", bad)
    assert done.returncode == 3, done.stderr
    assert "cannot open the store" in done.stderr


def test_an_address_in_use_is_one_error_line(home: Path) -> None:
    taken = bind_socket("127.0.0.1", 0)
    taken.listen()
    try:
        done = _run_keel("--workers", "2", "--port", str(taken.getsockname()[1]))
    finally:
        taken.close()
    assert done.returncode == 1
    assert "cannot listen on 127.0.0.1" in done.stderr and "Traceback" not in done.stderr


def test_workers_get_every_setting_through_the_environment(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        database_url="sqlite:////tmp/x.db", capture_source=False, metric_flush_interval=2.5
    )
    env: Callable[[], dict[str, str]] = lambda: settings_environment(settings)  # noqa: E731
    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    for name, value in env().items():
        monkeypatch.setenv(name, value)
    rebuilt = Settings()
    assert rebuilt == settings
