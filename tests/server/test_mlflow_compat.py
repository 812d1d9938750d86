"""The official MLflow client, unchanged, against a real keel server on 127.0.0.1.

Each test starts uvicorn on a free loopback port in a thread, points ``mlflow`` at it and then
checks through Keel's own Client and CLI that what MLflow logged is an ordinary Keel run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Before mlflow is imported: no telemetry leaves this machine, and a failed call fails at once
# instead of retrying for minutes.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import mlflow
import uvicorn
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from keel.server import create_app
from keel.settings import Settings
from keel.tracking.api import Client

pytestmark = [
    # mlflow's own modules warn about their deprecated internals and optional extras
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning:mlflow.*"),
    pytest.mark.filterwarnings("ignore::UserWarning:mlflow.*"),
]


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """keel server's app under uvicorn on a free 127.0.0.1 port; yields its URL."""
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


@pytest.fixture
def mlflow_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No active experiment or run leaks between tests; failures are not retried."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def server_url(
    settings: Settings, mlflow_env: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A keel server over SQLite and over PostgreSQL, with MLFLOW_TRACKING_URI set to it."""
    with serve(settings) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        yield url


@pytest.fixture
def sqlite_url(home: Path, mlflow_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A keel server over SQLite only, with MLFLOW_TRACKING_URI set to it."""
    with serve(Settings()) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        yield url


@pytest.fixture
def keel_client(home: Path) -> Iterator[Client]:
    """Keel's own Client over the same store as the server (settings from the environment)."""
    client = Client(Settings())
    yield client
    client.close()


def error_code(exc: pytest.ExceptionInfo[MlflowException]) -> str:
    return str(exc.value.error_code)


def test_mlflow_fluent_flow_makes_an_ordinary_keel_run(
    server_url: str, keel_client: Client, tmp_path: Path, cli, capsys
) -> None:  # type: ignore[no-untyped-def]
    experiment_id = mlflow.set_experiment("mlflow-demo").experiment_id
    (tmp_path / "model.txt").write_text("weights")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "loss.csv").write_text("step,loss\n0,1.0\n")
    (tmp_path / "plots" / "deep").mkdir()
    (tmp_path / "plots" / "deep" / "roc.csv").write_text("fpr,tpr\n")

    with mlflow.start_run(run_name="first", tags={"team": "ml"}) as active:
        run_id = active.info.run_id
        mlflow.log_params({"lr": 0.01, "model": "tree"})
        mlflow.log_param("depth", 5)
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.9, "f1": 0.8}, step=2)
        mlflow.set_tag("stage", "dev")
        MlflowClient().log_batch(
            run_id,
            metrics=[Metric("rmse", 0.5, 1_700_000_000_000, 4)],
            params=[Param("batch", "32")],
            tags=[RunTag("kind", "batch")],
        )
        mlflow.log_artifact(str(tmp_path / "model.txt"))
        mlflow.log_artifacts(str(tmp_path / "plots"), artifact_path="plots")

    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.experiment_id == experiment_id
    assert run.info.run_name == "first" and run.info.status == "FINISHED"
    assert run.info.end_time is not None and run.info.lifecycle_stage == "active"
    assert run.info.artifact_uri == f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"
    assert run.data.params == {"lr": "0.01", "model": "tree", "depth": "5", "batch": "32"}
    assert run.data.metrics == {"loss": pytest.approx(1 / 3), "acc": 0.9, "f1": 0.8, "rmse": 0.5}
    assert run.data.tags["team"] == "ml" and run.data.tags["kind"] == "batch"
    assert run.data.tags["mlflow.runName"] == "first"
    assert run.data.tags["mlflow.user"] == run.info.user_id

    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert [(m.step, m.timestamp) for m in client.get_metric_history(run_id, "rmse")] == [
        (4, 1_700_000_000_000)
    ]

    found = client.search_runs(
        [experiment_id], "params.model = 'tree' and metrics.loss < 0.5", order_by=["metrics.f1"]
    )
    assert [r.info.run_id for r in found] == [run_id]
    assert client.search_runs([experiment_id], "params.model = 'forest'") == []

    top = {f.path: f for f in client.list_artifacts(run_id)}
    assert set(top) == {"model.txt", "plots"} and top["plots"].is_dir
    assert top["model.txt"].file_size == len("weights")
    assert sorted(f.path for f in client.list_artifacts(run_id, "plots")) == [
        "plots/deep",
        "plots/loss.csv",
    ]
    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "down")))
    assert (local / "model.txt").read_text() == "weights"
    assert (local / "plots" / "deep" / "roc.csv").read_text() == "fpr,tpr\n"
    one = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="plots/loss.csv")
    assert Path(one).read_text() == "step,loss\n0,1.0\n"

    # the same run, as Keel sees it
    keel_run = keel_client.get_run(run_id)
    assert keel_run.experiment_id == int(experiment_id)
    assert keel_client.get_experiment(keel_run.experiment_id).name == "mlflow-demo"
    assert keel_run.run_name == "first" and keel_run.status.value == "FINISHED"
    assert keel_run.params["depth"] == "5" and keel_run.metrics["rmse"] == 0.5
    assert keel_run.tags["stage"] == "dev" and "mlflow.runName" not in keel_run.tags
    assert keel_run.user == run.info.user_id
    assert [p.value for p in keel_client.get_metric_history(run_id, "loss")][:2] == [1.0, 0.5]
    assert {a.path for a in keel_client.list_artifacts(run_id)} == {
        "model.txt",
        "plots/loss.csv",
        "plots/deep/roc.csv",
    }
    assert keel_client.read_artifact(run_id, "plots/deep/roc.csv") == b"fpr,tpr\n"

    import json

    from keel.cli import cli as keel_cli

    result = cli.invoke(keel_cli, ["runs", "list", "--json", "-e", "mlflow-demo"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [r["run_id"] for r in listed] == [run_id]
    assert listed[0]["params"]["model"] == "tree" and listed[0]["metrics"]["acc"] == 0.9
