"""A server with authentication over real HTTP on 127.0.0.1, driven by real clients.

The official MLflow client (HTTP basic and bearer tokens), Keel's own remote client and fluent
API, a token revoked in the middle of a run, and ``keel server --auth --workers 2`` on
PostgreSQL as a subprocess. What landed is checked in the server's database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

# Before mlflow is imported (tests/server/test_mlflow_compat.py explains why).
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import keel
from keel.auth.models import Permission, Role
from keel.auth.store import AuthStore
from keel.cli import cli as keel_cli
from keel.db import make_engine
from keel.settings import Settings
from keel.tracking.api import Client
from keel.tracking.fluent import set_client
from keel.tracking.models import RunStatus
from keel.tracking.remote import RemoteClient
from keel.tracking.source import current_user
from tests.auth.conftest import Tokens, bearer, make_tokens
from tests.conftest import create_pg_database, drop_pg_database
from tests.server.conftest import keel_server, serve  # noqa: F401 - keel_server: a fixture
from tests.server.test_mlflow_compat import mlflow_env  # noqa: F401 - a fixture, used by name

pytestmark = pytest.mark.slow


@dataclass
class AuthServer:
    url: str
    tokens: Tokens
    store: AuthStore
    client: Client  # Keel's Client over the server's own database


@pytest.fixture
def auth_server(settings: Settings) -> Iterator[AuthServer]:
    """``keel server --auth`` under uvicorn in a thread, with admin, alice, bob and their tokens
    (see tests/auth/conftest.py); on SQLite and on PostgreSQL."""
    client = Client(settings)  # migrates the database
    engine = make_engine(settings.db_url)
    store = AuthStore(engine)
    tokens = make_tokens(store)
    try:
        with serve(settings.replace(auth=True)) as url:
            yield AuthServer(url, tokens, store, client)
    finally:
        client.close()
        engine.dispose()


def token_id(token: str) -> str:
    return token.split("_")[1]


# -- the official MLflow client -------------------------------------------------------------------
@pytest.mark.parametrize("credentials", ["basic", "bearer"])
def test_mlflow_client_with_a_token(
    auth_server: AuthServer,
    mlflow_env: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    credentials: str,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    if credentials == "basic":
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", auth_server.tokens.alice)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", auth_server.tokens.alice)
    client = MlflowClient()

    experiment_id = client.create_experiment("mlflow-auth")
    (tmp_path / "model.txt").write_text("weights")
    with mlflow.start_run(experiment_id=experiment_id) as active:
        run_id = active.info.run_id
        mlflow.log_param("lr", 0.01)
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        client.log_batch(
            run_id,
            metrics=[Metric("rmse", 0.5, 1_700_000_000_000, 4)],
            params=[Param("batch", "32")],
            tags=[RunTag("kind", "batch")],
        )
        mlflow.log_artifact(str(tmp_path / "model.txt"), artifact_path="model")

    found = client.search_runs([experiment_id], "params.lr = '0.01' and metrics.rmse < 1")
    assert [r.info.run_id for r in found] == [run_id]
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    local = Path(client.download_artifacts(run_id, "model", str(tmp_path / "down")))
    assert (local / "model.txt").read_text() == "weights"

    # an ordinary Keel run owned by the token's user, whatever MLflow says the user is
    run = auth_server.client.get_run(run_id)
    assert run.user == "alice" and run.status is RunStatus.FINISHED
    assert run.params == {"lr": "0.01", "batch": "32"} and run.tags["kind"] == "batch"
    assert client.get_run(run_id).info.user_id == "alice"
    owners = auth_server.store.list_grants(int(experiment_id))
    assert [(g.user, g.permission) for g in owners] == [("alice", "owner")]
    logged = auth_server.store.audit(user="alice", target=f"run/{run_id}", limit=1000)[0]
    assert {e.token_id for e in logged} == {token_id(auth_server.tokens.alice)}
    assert {"log_metric", "log_batch"} <= {e.action for e in logged}


def test_mlflow_client_without_credentials_or_grant(
    auth_server: AuthServer,
    mlflow_env: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    client = MlflowClient()
    with pytest.raises(MlflowException) as refused:
        client.create_experiment("anonymous")
    assert refused.value.get_http_status_code() == 401
    assert str(refused.value).startswith("UNAUTHENTICATED: this server requires a token")
    assert "MLFLOW_TRACKING_TOKEN" in str(refused.value)  # says how to send one
    with pytest.raises(MlflowException, match="UNAUTHENTICATED") as refused:
        client.search_experiments()
    assert refused.value.get_http_status_code() == 401
    assert auth_server.client.get_experiment_by_name("anonymous") is None

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", auth_server.tokens.alice)
    experiment_id = client.create_experiment("private")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "loss", 0.5)

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", auth_server.tokens.bob)  # no grant on it
    assert client.get_experiment_by_name("private") is None
    assert [e.name for e in client.search_experiments()] == []
    assert client.search_runs([experiment_id]) == []
    with pytest.raises(MlflowException) as hidden:
        client.get_run(run_id)
    assert hidden.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as hidden:
        client.log_metric(run_id, "loss", 9.0)
    assert hidden.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert [m.value for m in auth_server.client.get_metric_history(run_id, "loss")] == [0.5]

    auth_server.store.grant(int(experiment_id), "bob", Permission.READ, granted_by="alice")
    assert client.get_experiment_by_name("private").experiment_id == experiment_id
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [run_id]


# -- Keel's own remote client ---------------------------------------------------------------------
@pytest.fixture
def keel_remote(auth_server: AuthServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[AuthServer]:
    """The fluent API pointed at the server with alice's token (a fresh fluent client)."""
    monkeypatch.setenv("KEEL_TRACKING_URI", auth_server.url)
    monkeypatch.setenv("KEEL_TRACKING_TOKEN", auth_server.tokens.alice)
    set_client(None)
    yield auth_server
    set_client(None)


def test_fluent_api_sends_the_token_and_every_point_arrives(keel_remote: AuthServer) -> None:
    assert isinstance(keel.tracking.fluent.get_client(), RemoteClient)
    keel.set_experiment("fluent-auth")
    run = keel.start_run(name="5k")
    keel.log_param("lr", 0.1)
    for step in range(5_000):
        keel.log_metric("loss", 1 / (step + 1), step=step)
    keel.end_run()

    landed = keel_remote.client.get_run(run.run_id)
    assert landed.status is RunStatus.FINISHED and landed.params == {"lr": "0.1"}
    history = keel_remote.client.get_metric_history(run.run_id, "loss")
    assert [p.step for p in history] == list(range(5_000))
    assert landed.user == "alice" != current_user()  # the token's user, not the OS login
    experiment = keel_remote.client.get_experiment_by_name("fluent-auth")
    assert experiment is not None and experiment.experiment_id == landed.experiment_id
    grants = keel_remote.store.list_grants(experiment.experiment_id)
    assert [(g.user, g.permission) for g in grants] == [("alice", "owner")]
    assert len(keel.get_metric_history(run.run_id, "loss")) == 5_000  # reads carry it too


def test_a_token_revoked_mid_run_keeps_its_points_for_keel_sync(
    auth_server: AuthServer,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    client = RemoteClient(
        Settings(
            tracking_uri=auth_server.url,
            tracking_token=auth_server.tokens.alice,
            remote_flush_timeout=0.5,
            metric_flush_interval=0.05,
        )
    )
    try:
        experiment_id = client.get_or_create_experiment("revoked").experiment_id
        run = client.create_run(experiment_id)
        short = client.create_run(experiment_id)  # it ends after the revocation, with no points
        for step in range(1_000):
            client.log_metric(run.run_id, "loss", float(step), step=step)
        client.flush()

        revoked = CliRunner().invoke(
            keel_cli, ["tokens", "revoke", token_id(auth_server.tokens.alice)]
        )
        assert revoked.exit_code == 0, revoked.output
        client.end_run(short.run_id)  # not an error: its end waits in the outbox too
        for step in range(1_000, 3_000):
            client.log_metric(run.run_id, "loss", float(step), step=step)
        client.end_run(run.run_id)
        message = capfd.readouterr().err
        assert "could not deliver 2000 metric points" in message and "keel sync" in message
        assert "revoked" in message
        assert client.sender.rejected == 0
        outbox = home / "outbox"
        assert len(list(outbox.glob("*.json"))) >= 2  # the points, then the run's end
    finally:
        client.close()
    for waiting in (run, short):
        assert auth_server.client.get_run(waiting.run_id).status is RunStatus.RUNNING
    assert len(auth_server.client.get_metric_history(run.run_id, "loss")) == 1_000

    monkeypatch.setenv("KEEL_TRACKING_TOKEN", auth_server.tokens.alice)
    still_revoked = CliRunner().invoke(keel_cli, ["sync"])
    assert still_revoked.exit_code == 1 and "revoked" in still_revoked.output
    assert len(list((home / "outbox").glob("*.json"))) >= 2  # nothing lost, nothing moved

    fresh = auth_server.store.create_token("alice", role=Role.EDITOR).token
    monkeypatch.setenv("KEEL_TRACKING_TOKEN", fresh)
    synced = CliRunner().invoke(keel_cli, ["sync"])
    assert synced.exit_code == 0, synced.output
    assert "Delivered 2000 metric points" in synced.output and "ended 2 runs" in synced.output
    assert not list((home / "outbox").glob("*.json"))
    history = auth_server.client.get_metric_history(run.run_id, "loss")
    assert sorted(p.step for p in history) == list(range(3_000))  # each exactly once
    assert auth_server.client.get_run(run.run_id).status is RunStatus.FINISHED
    assert auth_server.client.get_run(short.run_id).status is RunStatus.FINISHED


# -- keel server --auth as a real process ---------------------------------------------------------
def test_keel_server_auth_with_two_workers_on_postgresql(
    home: Path,
    keel_server: Any,  # noqa: F811
) -> None:
    url = create_pg_database("keel_auth")
    try:
        with keel_server("--auth", "--workers", "2", "--database-url", url, workers_up=2) as server:
            log = server.output()
            assert log.count("authentication is on but no admin token exists") == 2, log
            assert "keel tokens create --user admin --role admin" in log

            engine = make_engine(url)
            try:
                store = AuthStore(engine)
                store.create_user("alice")
                token = store.create_token("alice", role=Role.EDITOR).token
            finally:
                engine.dispose()

            # no keep-alive: a fresh connection each request, so both workers answer some
            fresh = httpx.Client(
                base_url=f"{server.url}/api/v1", limits=httpx.Limits(max_keepalive_connections=0)
            )
            with fresh as http:
                anonymous = http.get("/experiments")
                assert anonymous.status_code == 401
                assert anonymous.json()["error"] == "unauthenticated"
                assert anonymous.headers["www-authenticate"].startswith("Bearer")
                assert http.get(f"{server.url}/health").status_code == 200  # no token needed
                created = http.post("/experiments", json={"name": "pg-auth"}, headers=bearer(token))
                assert created.status_code == 201, created.text
                answers = [http.get("/experiments", headers=bearer(token)) for _ in range(20)]
                assert {r.status_code for r in answers} == {200}
                assert {tuple(e["name"] for e in r.json()["experiments"]) for r in answers} == {
                    ("pg-auth",)
                }
                wrong = bearer(token[:-2] + "xx")
                assert {http.get("/experiments", headers=wrong).status_code for _ in range(6)} == {
                    401
                }
    finally:
        drop_pg_database(url)
