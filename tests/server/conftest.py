"""Real servers for the socket tests: ``keel server`` as a subprocess on a free port
(``keel_server``), or the app under uvicorn in a thread (``serve``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keel.settings import Settings


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s; server output:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def keel_server(tmp_path: Path) -> Callable[..., object]:
    """``with keel_server("--workers", "2") as server:`` runs until the block ends."""

    @contextmanager
    def start(*args: str, workers_up: int = 1) -> Iterator[RunningServer]:
        port = free_port()
        log = tmp_path / f"server-{port}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "keel", "server", "--port", str(port), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        server = RunningServer(f"http://127.0.0.1:{port}", process, log)
        try:

            def healthy() -> bool:
                assert process.poll() is None, f"server exited:\n{server.output()}"
                try:
                    return httpx.get(f"{server.url}/health", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(healthy, timeout=60, what="no /health answer", log=log)
            wait_until(
                lambda: server.output().count("Application startup complete") >= workers_up,
                timeout=60,
                what=f"fewer than {workers_up} workers started",
                log=log,
            )
            yield server
        finally:
            stop(process)

    return start


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """keel server's app under uvicorn on a free 127.0.0.1 port, in a thread; yields its URL."""
    import uvicorn

    from keel.server import create_app

    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="keel-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("keel server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
