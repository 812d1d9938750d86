"""The remote client against a real ``keel server`` subprocess on 127.0.0.1 over SQLite.

The fluent API and the CLI work over HTTP once KEEL_TRACKING_URI is set; metric points travel
in a few large requests; a retried batch is stored once; a server killed mid-run loses nothing:
the points wait in the outbox and ``keel sync`` delivers them, each exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import keel
from keel.cli import cli as keel_cli
from keel.errors import Conflict
from keel.settings import Settings
from keel.tracking.api import Client
from keel.tracking.fluent import set_client
from keel.tracking.models import RunStatus
from keel.tracking.remote import RemoteClient, connect
from tests.server.conftest import free_port

pytestmark = pytest.mark.slow


class Server:
    """``keel server`` over one SQLite file; it can be killed and started again on its port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = root / "server.db"
        self.log = root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        env.update(KEEL_HOME=str(self.root / ".keel"), PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "keel", "server", "--port", str(self.port)),
                    *("--database-url", f"sqlite:///{self.db}"),
                    *("--artifact-url", str(self.root / "artifacts")),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"server did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def metric_requests(self) -> int:
        return self.log.read_text(errors="replace").count('"POST /api/v1/metrics HTTP/1.1" 200')

    @contextmanager
    def store(self) -> Iterator[Client]:
        """A local client over the server's own database, to check what landed there."""
        client = Client(
            Settings(
                home=self.root / "check",
                database_url=f"sqlite:///{self.db}",
                artifact_url=str(self.root / "artifacts"),
            )
        )
        try:
            yield client
        finally:
            client.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "server"
    root.mkdir()
    running = Server(root)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def remote_env(home: Path, server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv("KEEL_TRACKING_URI", server.url)
    set_client(None)
    return server


def test_fluent_api_and_cli_work_over_http(remote_env: Server, tmp_path: Path) -> None:
    server = remote_env
    assert isinstance(keel.tracking.fluent.get_client(), RemoteClient)
    keel.set_experiment("remote")
    n = 10_000
    with keel.start_run(name="over-http") as run:
        keel.log_param("lr", 0.1)
        keel.set_tag("stage", "dev")
        keel.log_text("hello", "notes/hello.txt")
        start = time.perf_counter()
        for step in range(n):
            keel.log_metric("loss", 1 / (step + 1), step=step)
        elapsed = time.perf_counter() - start
    print(f"{n / elapsed:,.0f} log_metric calls/s; {server.metric_requests()} metric requests")
    # 10,000 points travel in a few large requests, not thousands of small ones
    assert 1 <= server.metric_requests() <= 4

    with server.store() as store:
        landed = store.get_run(run.run_id)
        assert landed.status is RunStatus.FINISHED
        assert landed.params == {"lr": "0.1"}
        assert landed.tags["stage"] == "dev"
        history = store.get_metric_history(run.run_id, "loss")
        assert [p.step for p in history] == list(range(n))
        assert store.read_artifact(run.run_id, "notes/hello.txt") == b"hello"

    client = keel.tracking.fluent.get_client()
    assert client.read_artifact(run.run_id, "notes/hello.txt") == b"hello"
    target = client.download_artifacts(run.run_id, "notes", dst=tmp_path / "dl")
    assert (target / "hello.txt").read_text() == "hello"
    assert len(keel.get_metric_history(run.run_id, "loss")) == n
    curves = client.metric_curves(run.run_id)
    assert curves["loss"].count == n

    cli = CliRunner()
    listed = cli.invoke(keel_cli, ["runs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["run_id"] for r in json.loads(listed.output)] == [run.run_id]
    shown = cli.invoke(keel_cli, ["runs", "show", run.run_id[:8], "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["params"] == {"lr": "0.1"}
    found = cli.invoke(keel_cli, ["runs", "search", "params.lr = '0.1'", "--json"])
    assert found.exit_code == 0, found.output
    assert [r["run_id"] for r in json.loads(found.output)] == [run.run_id]


def test_a_retried_batch_is_stored_once(home: Path, server: Server) -> None:
    client = connect(Settings(tracking_uri=server.url))
    assert isinstance(client, RemoteClient)
    try:
        experiment = client.get_or_create_experiment("retries")
        run = client.create_run(experiment.experiment_id, capture_source=False)
        points = [(run.run_id, "acc", i / 100, i, 1_000 + i) for i in range(100)]
        batch_id = str(uuid.uuid4())
        client.write_metric_points(points, batch_id=batch_id)
        client.write_metric_points(points, batch_id=batch_id)  # the answer was "lost"
        assert len(client.get_metric_history(run.run_id, "acc")) == 100
        client.write_metric_points(points)  # no batch id: stored again, as asked
        assert len(client.get_metric_history(run.run_id, "acc")) == 200
        client.end_run(run.run_id)
    finally:
        client.close()


def test_server_killed_mid_run_loses_nothing(
    home: Path, server: Server, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(
        tracking_uri=server.url,
        remote_flush_timeout=1.0,
        remote_max_buffered_points=2_000,
        metric_flush_interval=0.1,
        metric_flush_size=500,
    )
    client = RemoteClient(settings)
    try:
        experiment = client.get_or_create_experiment("outage")
        run = client.create_run(experiment.experiment_id, capture_source=False)
        for step in range(1_000):
            client.log_metric(run.run_id, "loss", float(step), step=step)
        client.flush()
        server.kill()

        start = time.perf_counter()
        for step in range(1_000, 6_000):
            client.log_metric(run.run_id, "loss", float(step), step=step)
        assert time.perf_counter() - start < 2.0  # logging never waits for the server
        client.end_run(run.run_id)
        message = capfd.readouterr().err
        assert "could not deliver 5000 metric points" in message
        assert "keel sync" in message
        outbox = home / "outbox"
        assert outbox.is_dir() and len(list(outbox.glob("*.json"))) >= 2
        client.close()  # the training process exits; only `keel sync` delivers from here on
        assert len(list(outbox.glob("*.json"))) >= 2
        # a file listed but gone when read (delivered meanwhile by a process still running)
        (outbox / "0-delivered-meanwhile.json").symlink_to(outbox / "no-such-file.json")

        server.start()
        synced = CliRunner().invoke(keel_cli, ["sync"])
        assert synced.exit_code == 0, synced.output
        assert "Delivered 5000 metric points" in synced.output
        (outbox / "0-delivered-meanwhile.json").unlink()
        assert not list(outbox.glob("*.json"))
        again = CliRunner().invoke(keel_cli, ["sync"])
        assert "Delivered 0 metric points" in again.output
    finally:
        client.close()

    with server.store() as store:
        history = store.get_metric_history(run.run_id, "loss")
        assert sorted(p.step for p in history) == list(range(6_000))  # each exactly once
        assert store.get_run(run.run_id).status is RunStatus.FINISHED


class DroppingProxy:
    """A loopback TCP proxy that can swallow the server's next answer and cut the connection."""

    def __init__(self, upstream_port: int) -> None:
        import socket
        import threading

        self.upstream_port = upstream_port
        self.drop_next_answer = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(
                target=self._pump, args=(downstream, upstream, False), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, downstream, True), daemon=True
            ).start()

    def _pump(self, source: Any, sink: Any, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if answers and self.drop_next_answer.is_set():
                    self.drop_next_answer.clear()
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):  # shutdown wakes the other pump's recv; close alone would not
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_an_answer_lost_in_transit_is_retried_and_stored_once(home: Path, server: Server) -> None:
    proxy = DroppingProxy(server.port)
    client = RemoteClient(Settings(tracking_uri=proxy.url))
    try:
        run = client.create_run(
            client.get_or_create_experiment("lossy").experiment_id, capture_source=False
        )
        for step in range(3_000):
            client.log_metric(run.run_id, "loss", float(step), step=step)
        proxy.drop_next_answer.set()  # the server stores the batch, its answer never arrives
        client.flush()
        assert not proxy.drop_next_answer.is_set()
        history = client.get_metric_history(run.run_id, "loss")
        assert sorted(p.step for p in history) == list(range(3_000))
        client.end_run(run.run_id)
    finally:
        client.close()
        proxy.close()


def test_params_and_tags_logged_while_the_server_is_down_arrive_later_in_order(
    home: Path, server: Server, capfd: pytest.CaptureFixture[str]
) -> None:
    """The run keeps working without its server: params and tags wait with its points (the
    tag set twice lands with its last value), and keel sync delivers all of them."""
    settings = Settings(tracking_uri=server.url, remote_flush_timeout=1.0)
    client = RemoteClient(settings)
    try:
        run = client.create_run(
            client.get_or_create_experiment("offline").experiment_id, capture_source=False
        )
        client.log_params(run.run_id, {"lr": 0.1})  # delivered at once
        server.kill()
        start = time.perf_counter()
        client.log_params(run.run_id, {"depth": 6})
        client.set_tag(run.run_id, "stage", "first")
        client.log_metric(run.run_id, "loss", 0.5, step=1)
        client.set_tag(run.run_id, "stage", "second")
        assert time.perf_counter() - start < 5.0
        client.end_run(run.run_id)
        message = capfd.readouterr().err
        assert "cannot take the params" in message
        assert "could not deliver 1 metric points, 3 params/tags writes and the end" in message
        client.close()

        server.start()
        synced = CliRunner().invoke(keel_cli, ["sync"])
        assert synced.exit_code == 0, synced.output
    finally:
        client.close()
    with server.store() as store:
        landed = store.get_run(run.run_id)
        assert landed.params == {"lr": "0.1", "depth": "6"}
        assert landed.tags["stage"] == "second"
        assert landed.metrics == {"loss": 0.5}
        assert landed.status is RunStatus.FINISHED


def test_a_conflicting_param_is_an_error_while_the_server_answers(
    home: Path, server: Server
) -> None:
    client = RemoteClient(Settings(tracking_uri=server.url))
    try:
        run = client.create_run(
            client.get_or_create_experiment("conflict").experiment_id, capture_source=False
        )
        client.log_param(run.run_id, "lr", 0.1)
        with pytest.raises(Conflict):
            client.log_param(run.run_id, "lr", 0.2)
    finally:
        client.close()


def test_keel_sync_sends_the_token_only_to_the_server_it_belongs_to(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outbox files naming two servers (staging and production, say): KEEL_TRACKING_TOKEN goes
    to KEEL_TRACKING_URI's server only, never to the other."""
    import http.server
    import threading

    from keel.tracking.remote_sender import Entry, write_entry

    seen: dict[int, list[str | None]] = {}

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.setdefault(self.server.server_address[1], []).append(
                self.headers.get("Authorization")
            )
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    mine, other = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
    try:
        for uri in (mine, other):
            entry = Entry("metrics", points=[("0" * 32, "m", 1.0, 0, 0)], count=1)
            write_entry(home / "outbox", entry, tracking_uri=uri)
        monkeypatch.setenv("KEEL_TRACKING_URI", mine)
        monkeypatch.setenv("KEEL_TRACKING_TOKEN", "keel_abcdef012345_secret")
        result = CliRunner().invoke(keel_cli, ["sync"])
        assert result.exit_code == 1  # both answered 503: the files wait
    finally:
        for server in servers:
            server.shutdown()
    ports = [s.server_address[1] for s in servers]
    assert set(seen[ports[0]]) == {"Bearer keel_abcdef012345_secret"}
    assert set(seen[ports[1]]) == {None}
