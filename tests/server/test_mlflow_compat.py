"""The official MLflow client, unchanged, against a real keel server on 127.0.0.1.

Each test starts uvicorn on a free loopback port in a thread, points ``mlflow`` at it and then
checks through Keel's own Client and CLI that what MLflow logged is an ordinary Keel run.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before mlflow is imported: no telemetry leaves this machine, and a failed call fails at once
# instead of retrying for minutes.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import mlflow
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from keel.settings import Settings
from keel.tracking.api import Client
from tests.server.conftest import serve


@pytest.fixture
def mlflow_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No active experiment or run leaks between tests; failures are not retried."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        # mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID: set first so teardown removes it
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
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


def test_experiments_create_get_search_rename_delete(sqlite_url: str, keel_client: Client) -> None:
    client = MlflowClient()
    alpha = client.create_experiment("alpha", tags={"team": "vision"})
    beta = client.create_experiment("beta", tags={"team": "nlp"})
    assert alpha.isdigit() and beta.isdigit()
    got = client.get_experiment(alpha)
    assert (got.name, got.tags, got.lifecycle_stage) == ("alpha", {"team": "vision"}, "active")
    assert client.get_experiment_by_name("beta").experiment_id == beta
    assert client.get_experiment_by_name("no-such-experiment") is None

    with pytest.raises(MlflowException) as exists:
        client.create_experiment("alpha")
    assert error_code(exists) == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as missing:
        client.get_experiment("999")
    assert error_code(missing) == "RESOURCE_DOES_NOT_EXIST"

    def names(**kwargs: object) -> list[str]:
        return [e.name for e in client.search_experiments(**kwargs)]  # type: ignore[arg-type]

    assert names(filter_string="tags.team = 'nlp'") == ["beta"]
    assert names(filter_string="name LIKE 'al%' and tags.team != 'nlp'") == ["alpha"]
    assert names(filter_string="name ILIKE 'BET_'") == ["beta"]
    assert names(order_by=["name DESC"]) == ["beta", "alpha"]
    first = client.search_experiments(max_results=1, order_by=["name"])
    assert [e.name for e in first] == ["alpha"] and first.token
    second = client.search_experiments(max_results=1, order_by=["name"], page_token=first.token)
    assert [e.name for e in second] == ["beta"] and not second.token
    with pytest.raises(MlflowException) as bad:
        client.search_experiments(filter_string="name = 'a' or name = 'b'")
    assert error_code(bad) == "INVALID_PARAMETER_VALUE"

    client.rename_experiment(alpha, "alpha-2")
    assert keel_client.get_experiment(int(alpha)).name == "alpha-2"
    client.delete_experiment(beta)
    assert client.get_experiment(beta).lifecycle_stage == "deleted"
    assert names(view_type=ViewType.DELETED_ONLY) == ["beta"]
    assert sorted(names(view_type=ViewType.ALL)) == ["alpha-2", "beta"]
    client.restore_experiment(beta)
    assert keel_client.get_experiment(int(beta)).lifecycle_stage.value == "active"


def test_default_experiment_and_nested_runs(sqlite_url: str, keel_client: Client) -> None:
    with mlflow.start_run() as parent, mlflow.start_run(nested=True) as child:
        mlflow.log_metric("x", 1.0)
    parent_id, child_id = parent.info.run_id, child.info.run_id

    default = keel_client.get_experiment_by_name("Default")
    assert default is not None
    assert keel_client.get_run(parent_id).experiment_id == default.experiment_id
    assert keel_client.get_run(child_id).parent_run_id == parent_id
    client = MlflowClient()
    assert client.get_experiment("0").name == "Default"
    assert client.get_run(child_id).data.tags["mlflow.parentRunId"] == parent_id
    found = client.search_runs(["0"], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert [r.info.run_id for r in found] == [child_id]


def test_search_runs_filters_orders_and_pages(sqlite_url: str) -> None:
    experiment_id = mlflow.set_experiment("paging").experiment_id
    for i in range(5):
        with mlflow.start_run(run_name=f"r{i}"):
            mlflow.log_metric("score", float(i))
            mlflow.log_param("parity", i % 2)
    client = MlflowClient()

    def run_names(*args: object, **kwargs: object) -> list[str]:
        return [r.info.run_name for r in client.search_runs([experiment_id], *args, **kwargs)]  # type: ignore[arg-type]

    pages, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], order_by=["metrics.score DESC"], max_results=2, page_token=token
        )
        pages.append([r.info.run_name for r in page])
        token = page.token
        if not token:
            break
    assert pages == [["r4", "r3"], ["r2", "r1"], ["r0"]]
    assert run_names("tags.mlflow.runName = 'r2'") == ["r2"]
    assert run_names(
        "attributes.run_name LIKE 'r%' and params.parity = '1'", order_by=["tags.mlflow.runName"]
    ) == ["r1", "r3"]
    assert run_names("params.parity = '0' or metrics.score = 1", order_by=["run_name"]) == [
        "r0",
        "r1",
        "r2",
        "r4",
    ]
    frame = mlflow.search_runs([experiment_id], filter_string="metrics.score >= 3")
    assert sorted(frame["tags.mlflow.runName"]) == ["r3", "r4"]
    with pytest.raises(MlflowException) as bad:
        client.search_runs([experiment_id], "metrics.score = 'high'")
    assert error_code(bad) == "INVALID_PARAMETER_VALUE"


def test_tags_delete_restore_status_and_errors(sqlite_url: str, keel_client: Client) -> None:
    experiment_id = mlflow.set_experiment("lifecycle").experiment_id
    with mlflow.start_run() as active:
        mlflow.set_tags({"a": "1", "b": "2"})
        mlflow.log_param("p", "1")
    run_id = active.info.run_id
    client = MlflowClient()

    client.delete_tag(run_id, "a")
    assert "a" not in client.get_run(run_id).data.tags
    assert (
        keel_client.get_run(run_id).tags["b"] == "2" and "a" not in keel_client.get_run(run_id).tags
    )
    with pytest.raises(MlflowException) as conflict:
        client.log_param(run_id, "p", "2")
    assert error_code(conflict) == "INVALID_PARAMETER_VALUE"

    client.delete_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert client.search_runs([experiment_id]) == []
    deleted = client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert [r.info.run_id for r in deleted] == [run_id]
    with pytest.raises(MlflowException) as gone:
        client.log_metric(run_id, "m", 1.0)
    assert error_code(gone) == "INVALID_PARAMETER_VALUE"
    client.restore_run(run_id)
    client.log_metric(run_id, "m", 1.0)
    assert keel_client.get_run(run_id).metrics == {"m": 1.0}

    client.set_terminated(run_id, "KILLED")
    assert client.get_run(run_id).info.status == "KILLED"
    assert keel_client.get_run(run_id).status.value == "KILLED"

    with pytest.raises(MlflowException) as missing:
        client.get_run("0" * 32)
    assert error_code(missing) == "RESOURCE_DOES_NOT_EXIST"
    client.update_run(run_id, name="renamed")
    assert client.get_run(run_id).info.run_name == "renamed"
    assert keel_client.get_run(run_id).run_name == "renamed"
    client.set_tag(run_id, "mlflow.runName", "renamed-again")
    assert keel_client.get_run(run_id).run_name == "renamed-again"
    client.create_registered_model("model")  # the registry is served (test_mlflow_registry.py)
    assert client.get_registered_model("model").name == "model"


def test_nan_and_infinity_round_trip(sqlite_url: str, keel_client: Client) -> None:
    experiment_id = mlflow.set_experiment("special-values").experiment_id
    with mlflow.start_run() as active:
        mlflow.log_metrics({"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "zero": 0.0})
    run_id = active.info.run_id
    client = MlflowClient()
    metrics = client.get_run(run_id).data.metrics
    assert math.isnan(metrics["nan"]) and metrics["zero"] == 0.0
    assert (metrics["inf"], metrics["ninf"]) == (math.inf, -math.inf)
    assert math.isnan(client.get_metric_history(run_id, "nan")[0].value)
    stored = keel_client.get_run(run_id).metrics
    assert math.isnan(stored["nan"]) and stored["ninf"] == -math.inf and stored["zero"] == 0.0
    found = client.search_runs([experiment_id], "metrics.inf > 1e300 and metrics.zero = 0")
    assert [r.info.run_id for r in found] == [run_id]


def test_large_artifact_streams_both_ways(
    sqlite_url: str, keel_client: Client, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "weights.bin").write_bytes(data)
    with mlflow.start_run() as active:
        mlflow.log_artifact(str(tmp_path / "weights.bin"), artifact_path="model/v1")
    run_id = active.info.run_id
    assert keel_client.read_artifact(run_id, "model/v1/weights.bin") == data
    local = MlflowClient().download_artifacts(run_id, "model", str(tmp_path / "out"))
    assert (Path(local) / "v1" / "weights.bin").read_bytes() == data


def test_writes_keep_an_mlflow_run_alive(
    home: Path, mlflow_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow clients send no heartbeats: their writes count as one, silence makes a run LOST."""
    monkeypatch.setenv("KEEL_LOST_RUN_TIMEOUT", "0.6")
    monkeypatch.setenv("KEEL_HEARTBEAT_INTERVAL", "0.05")
    with serve(Settings()) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        keel_client = Client(Settings())
        try:
            client = MlflowClient()
            run_id = client.create_run(client.create_experiment("liveness")).info.run_id
            for step in range(3):
                time.sleep(0.3)
                client.log_metric(run_id, "loss", 1.0, step=step)
                assert keel_client.mark_lost_runs() == []
            time.sleep(0.8)
            keel_client.mark_lost_runs()  # the server's own watcher may have marked it first
            assert keel_client.get_run(run_id).status.value == "LOST"
            assert client.get_run(run_id).info.status == "FAILED"  # MLflow has no LOST
            client.set_terminated(run_id)
            assert keel_client.get_run(run_id).status.value == "FINISHED"
        finally:
            keel_client.close()


def test_wire_errors_are_mlflow_shaped(sqlite_url: str) -> None:
    """What the client turns into MlflowException: status and error_code for each failure."""
    import httpx

    with httpx.Client(base_url=f"{sqlite_url}/api/2.0/mlflow") as http:

        def post(path: str, **kwargs: object) -> tuple[int, str]:
            response = http.post(path, **kwargs)  # type: ignore[arg-type]
            return response.status_code, response.json().get("error_code", "")

        assert post("/runs/create", content=b"{not json") == (400, "INVALID_PARAMETER_VALUE")
        assert post("/experiments/create", json={}) == (400, "INVALID_PARAMETER_VALUE")
        assert post("/experiments/create", json={"name": "a\x00b"}) == (
            400,
            "INVALID_PARAMETER_VALUE",
        )
        assert post("/runs/log-metric", json={"run_id": "f" * 32, "key": "k", "value": 1}) == (
            404,
            "RESOURCE_DOES_NOT_EXIST",
        )
        assert post("/runs/log-metric", json={"key": "k", "value": 1}) == (
            400,
            "INVALID_PARAMETER_VALUE",
        )
        assert post("/registered-models/rename", json={}) == (404, "ENDPOINT_NOT_FOUND")
        missing = http.get("/runs/get", params={"run_id": "f" * 32})
        assert missing.status_code == 404
        assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert "f" * 32 in missing.json()["message"]
        # a NaN metric goes out in protobuf's JSON spelling, not as a bare NaN token
        created = http.post("/runs/create", json={"experiment_id": "0"}).json()
        run_id = created["run"]["info"]["run_id"]
        logged = http.post("/runs/log-metric", json={"run_id": run_id, "key": "x", "value": "NaN"})
        assert logged.status_code == 200
        body = http.get("/runs/get", params={"run_id": run_id}).text
        assert '"value":"NaN"' in body.replace(" ", "")
