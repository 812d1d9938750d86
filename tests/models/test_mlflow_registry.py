"""The official MLflow client's registry calls against a real keel server on 127.0.0.1: create
a registered model, create versions from a run MLflow logged (an MLflow model folder) and from a
Keel-logged model, set and get aliases, search versions, the download URI; the stage-based calls
refused with a pointer to aliases; and with ``--auth``, who may write."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

# Before mlflow is imported: no telemetry leaves this machine, and a failed call fails at once.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import mlflow
from fastapi.testclient import TestClient
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import keel
import keel.models
from keel.models import api
from keel.models.packaging import folder_digest
from keel.server import create_app
from keel.settings import Settings
from keel.tracking.api import Client
from tests.auth.conftest import bearer, make_tokens
from tests.models.training import diabetes
from tests.server.conftest import serve

MLFLOW = "/api/2.0/mlflow"


@pytest.fixture
def server_url(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A keel server over SQLite and PostgreSQL, with MLFLOW_TRACKING_URI set to it."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    with serve(settings) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        yield url
    while mlflow.active_run() is not None:
        mlflow.end_run()


MLMODEL = """artifact_path: model
flavors:
  python_function:
    loader_module: mlflow.sklearn
    model_path: model.pkl
  sklearn:
    pickled_model: model.pkl
    serialization_format: pickle
mlflow_version: {version}
"""


def _mlflow_logged_run(tmp_path: Path) -> tuple[str, object]:
    """A run MLflow logs, holding an MLflow model folder (``MLmodel`` + ``model.pkl``) at
    ``model``, logged as artifacts: MLflow 3's ``log_model`` needs logged-model endpoints Keel
    does not serve, and ``mlflow.sklearn`` warns at import on this machine."""
    from sklearn.linear_model import Ridge

    X, y = diabetes()
    model = Ridge(alpha=0.5).fit(X, y)
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "MLmodel").write_text(MLMODEL.format(version=mlflow.__version__))
    (folder / "model.pkl").write_bytes(pickle.dumps(model))
    mlflow.set_experiment("mlflow-registry")
    with mlflow.start_run() as active:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_artifacts(str(folder), artifact_path="model")
    return active.info.run_id, model


def error_code(exc: pytest.ExceptionInfo[MlflowException]) -> str:
    return str(exc.value.error_code)


def test_mlflow_client_registers_aliases_and_searches(
    server_url: str, settings: Settings, tmp_path: Path
) -> None:
    run_id, model = _mlflow_logged_run(tmp_path)
    client = MlflowClient()

    created = client.create_registered_model(
        "mlflow-ridge", tags={"team": "ml"}, description="ridge on diabetes"
    )
    assert (created.name, created.tags, created.description) == (
        "mlflow-ridge",
        {"team": "ml"},
        "ridge on diabetes",
    )
    with pytest.raises(MlflowException) as exists:
        client.create_registered_model("mlflow-ridge")
    assert error_code(exists) == "RESOURCE_ALREADY_EXISTS"

    # mlflow.register_model resolves runs:/ to the run's artifact URI; Keel maps it back
    first = mlflow.register_model(f"runs:/{run_id}/model", "mlflow-ridge")
    assert (first.version, first.status, first.run_id) == ("1", "READY", run_id)
    assert first.source == f"runs:/{run_id}/model" and first.current_stage == "None"
    second = client.create_model_version("mlflow-ridge", f"runs:/{run_id}/model", run_id=run_id)
    assert second.version == "2"

    # what Keel recorded: flavor mlflow, no signature, the folder's digest
    keel_client = Client(settings)
    try:
        digest = folder_digest(keel_client.list_artifacts(run_id, "model"), "model")
    finally:
        keel_client.close()
    recorded = api.get_version("mlflow-ridge", 1, settings=settings)
    assert (recorded.flavor, recorded.signature, recorded.digest) == ("mlflow", None, digest)

    # a model Keel logged registers through the same endpoint with its manifest's flavor
    X, y = diabetes()
    with keel.start_run("keel-ridge"):
        from sklearn.linear_model import Ridge

        logged = keel.models.log_model(Ridge(alpha=2.0).fit(X, y), input_example=X.head())
    third = client.create_model_version("mlflow-ridge", logged.uri, run_id=logged.run_id)
    assert third.version == "3"
    assert api.get_version("mlflow-ridge", 3, settings=settings).flavor == "sklearn"

    client.set_registered_model_alias("mlflow-ridge", "champion", "1")
    by_alias = client.get_model_version_by_alias("mlflow-ridge", "champion")
    assert (by_alias.version, by_alias.aliases) == ("1", ["champion"])
    assert client.get_registered_model("mlflow-ridge").aliases == {"champion": "1"}
    assert api.get_model("mlflow-ridge", settings=settings).aliases == {"champion": 1}
    client.set_registered_model_alias("mlflow-ridge", "champion", "3")
    assert client.get_model_version_by_alias("mlflow-ridge", "champion").version == "3"
    with pytest.raises(MlflowException) as bad_alias:
        client.set_registered_model_alias("mlflow-ridge", "Not An Alias", "1")
    assert error_code(bad_alias) == "INVALID_PARAMETER_VALUE"

    got = client.get_model_version("mlflow-ridge", "2")
    assert (got.version, got.run_id, got.creation_timestamp > 0) == ("2", run_id, True)
    with pytest.raises(MlflowException) as missing:
        client.get_model_version("mlflow-ridge", "9")
    assert error_code(missing) == "RESOURCE_DOES_NOT_EXIST"

    def versions(**kwargs: object) -> list[str]:
        return [v.version for v in client.search_model_versions(**kwargs)]  # type: ignore[arg-type]

    assert versions(filter_string="name='mlflow-ridge'") == ["3", "2", "1"]
    assert versions(filter_string=f"run_id = '{run_id}'") == ["2", "1"]
    assert versions(filter_string=f"name = 'mlflow-ridge' AND run_id = '{logged.run_id}'") == ["3"]
    assert versions(filter_string="name = 'other'") == []
    page = client.search_model_versions("name='mlflow-ridge'", max_results=2)
    assert [v.version for v in page] == ["3", "2"] and page.token
    rest = client.search_model_versions("name='mlflow-ridge'", max_results=2, page_token=page.token)
    assert [v.version for v in rest] == ["1"] and not rest.token
    with pytest.raises(MlflowException) as bad_filter:
        client.search_model_versions("source_path = 'y'")
    assert error_code(bad_filter) == "INVALID_PARAMETER_VALUE"

    assert [m.name for m in client.search_registered_models("name LIKE 'mlflow-%'")] == [
        "mlflow-ridge"
    ]
    assert client.search_registered_models("name = 'nope'") == []
    latest = client.get_registered_model("mlflow-ridge").latest_versions
    assert [v.version for v in latest] == ["3"]

    # the version's files, through MLflow's own models:/ resolution and the artifact proxy
    # (S301: our own pickle, written above)
    uri = client.get_model_version_download_uri("mlflow-ridge", "1")
    assert uri.startswith("mlflow-artifacts:/") and uri.endswith(f"/{run_id}/artifacts/model")
    local = Path(mlflow.artifacts.download_artifacts("models:/mlflow-ridge/1"))
    assert (local / "MLmodel").exists()
    loaded = pickle.loads((local / "model.pkl").read_bytes())
    np.testing.assert_allclose(loaded.predict(X.head(5)), model.predict(X.head(5)))  # type: ignore[attr-defined]

    client.delete_registered_model_alias("mlflow-ridge", "champion")
    assert client.get_registered_model("mlflow-ridge").aliases == {}
    with pytest.raises(MlflowException) as gone:
        client.get_model_version_by_alias("mlflow-ridge", "champion")
    assert error_code(gone) == "RESOURCE_DOES_NOT_EXIST"

    # every change is in Keel's audit trail
    actions = [e.action for e in api.history("mlflow-ridge", settings=settings)]
    assert actions.count("create_version") == 3
    assert actions[-1] == "delete_alias" and actions.count("set_alias") == 2


def test_stage_calls_say_keel_uses_aliases(server_url: str, tmp_path: Path) -> None:
    run_id, _ = _mlflow_logged_run(tmp_path)
    client = MlflowClient()
    client.create_model_version("staged", f"runs:/{run_id}/model", run_id=run_id)
    with pytest.raises(MlflowException) as transition, pytest.warns(FutureWarning):
        client.transition_model_version_stage("staged", "1", "Production")
    assert error_code(transition) == "ENDPOINT_NOT_FOUND"
    assert "aliases" in str(transition.value)
    with pytest.raises(MlflowException) as latest, pytest.warns(FutureWarning):
        client.get_latest_versions("staged", stages=["Production"])
    assert "aliases" in str(latest.value)
    # a source that is not a run's folder is refused, and nothing is registered
    with pytest.raises(MlflowException) as bad_source:
        client.create_model_version("staged", "s3://bucket/model")
    assert error_code(bad_source) == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as not_a_model:
        client.create_model_version("staged", f"runs:/{run_id}/nothing-here", run_id=run_id)
    assert error_code(not_a_model) == "RESOURCE_DOES_NOT_EXIST"
    assert [v.version for v in client.search_model_versions("name = 'staged'")] == ["1"]


def test_with_auth_mlflow_registry_writes_need_an_editor(settings: Settings) -> None:
    app = create_app(settings.replace(auth=True))
    with TestClient(app, base_url="http://testserver" + MLFLOW) as http:
        tokens = make_tokens(app.state.auth_store)
        body = {"name": "guarded"}
        assert http.post("/registered-models/create", json=body).status_code == 401
        denied = http.post(
            "/registered-models/create", json=body, headers=bearer(tokens.bob_viewer)
        )
        assert denied.status_code == 403 and denied.json()["error_code"] == "PERMISSION_DENIED"
        made = http.post("/registered-models/create", json=body, headers=bearer(tokens.alice))
        assert made.status_code == 200 and made.json()["registered_model"]["user_id"] == "alice"
        read = http.get(
            "/registered-models/get", params={"name": "guarded"}, headers=bearer(tokens.bob_viewer)
        )
        assert read.status_code == 200
    assert [(e.action, e.actor) for e in api.history("guarded", settings=settings)] == [
        ("create_model", "alice")
    ]
