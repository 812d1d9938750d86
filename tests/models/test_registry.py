"""The registry's API with real logged models (scikit-learn on diabetes) on SQLite and PostgreSQL:
register, load by version and alias, diff, lineage, the audit trail, gc after a run is gone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

import keel
import keel.data
import keel.models
from keel.artifacts import ArtifactStore
from keel.db import make_engine
from keel.errors import InvalidInput, NotFound, StorageError
from keel.models import api
from keel.models.models import MANIFEST_FILE
from keel.settings import Settings
from tests.models.training import diabetes


def _train(alpha: float, *, columns: list[str] | None = None, data: str | None = None):  # type: ignore[no-untyped-def]
    """A Ridge model trained and logged in a new run (reading dataset ``data`` if given)."""
    from sklearn.linear_model import Ridge

    X, y = diabetes()
    with keel.start_run(f"ridge-{alpha}") as run:
        if data is not None:
            X = keel.data.load(data, context="train")
            y = X.pop("target")
        X = X[columns] if columns else X
        model = Ridge(alpha=alpha).fit(X, y)
        keel.log_param("alpha", alpha)
        keel.log_metric("rmse", float(np.sqrt(np.mean((model.predict(X) - y) ** 2))))
        keel.set_tag("keel.source.git_commit", "c0ffee")
        logged = keel.models.log_model(model, input_example=X.head())
    return run.run_id, logged, model, X


def test_register_load_by_version_and_alias(settings: Settings) -> None:
    run_id, logged, model, X = _train(0.5)
    first = keel.models.register(logged.uri, "diabetes", description="ridge", tags={"team": "ml"})
    assert (first.name, first.version, first.uri) == ("diabetes", 1, "models:/diabetes/1")
    assert (first.source, first.run_id, first.digest) == (logged.uri, run_id, logged.digest)
    assert first.flavor == "sklearn" and first.signature == logged.manifest.signature
    assert first.tags == {"team": "ml"} and first.description == "ridge"
    second = keel.models.register(logged.uri, "diabetes")
    assert second.version == 2 and second.digest == first.digest

    api.set_alias("diabetes", "champion", 1, reason="first")
    loaded = keel.models.load("models:/diabetes@champion")
    np.testing.assert_allclose(loaded.predict(X.head(20)), model.predict(X.head(20)))
    assert api.get_version("diabetes", "champion").version == 1
    assert api.get_version("diabetes", "2").version == 2
    assert api.get_version("diabetes").version == 2  # latest
    assert api.get_model("diabetes").aliases == {"champion": 1}
    moved = api.set_alias("diabetes", "champion", 2, reason="same model, retagged")
    assert moved.aliases == ["champion"]
    assert keel.models.load("models:/diabetes@champion").digest == logged.digest
    assert [v.version for v in api.list_versions("diabetes")] == [2, 1]
    assert [m.name for m in api.list_models()] == ["diabetes"]


def test_history_says_who_did_what_and_why(settings: Settings) -> None:
    _, logged, _, _ = _train(0.5)
    keel.models.register(logged.uri, "diabetes")
    keel.models.register(logged.uri, "diabetes")
    api.set_alias("diabetes", "champion", 1)
    api.set_alias("diabetes", "champion", 2, reason="better rmse")
    api.set_tag("diabetes", "validated", "yes", version=2)
    api.set_description("diabetes", "predicts progression")
    api.delete_alias("diabetes", "champion", reason="rollback drill")
    events = api.history("diabetes")
    assert [e.action for e in events] == [
        "create_model",
        "create_version",
        "create_version",
        "set_alias",
        "set_alias",
        "set_tag",
        "set_description",
        "delete_alias",
    ]
    from keel.tracking.source import current_user

    assert {e.actor for e in events} == {current_user()}
    assert events[4].reason == "better rmse" and events[4].detail == {"from": 1, "to": 2}
    assert events[1].detail["source"] == logged.uri


def test_register_refuses_what_is_not_a_logged_model(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hi")
    with keel.start_run() as run:
        keel.log_artifacts(tmp_path / "notes", "notes")
    with pytest.raises(InvalidInput, match="is not a Keel model"):
        keel.models.register(f"runs:/{run.run_id}/notes", "m")
    with pytest.raises(NotFound, match="no model at 'model'"):
        keel.models.register(f"runs:/{run.run_id}/model", "m")
    with pytest.raises(NotFound):
        keel.models.register("runs:/0123456789abcdef0123456789abcdef/model", "m")
    with pytest.raises(InvalidInput, match="register a run's logged model"):
        keel.models.register("models:/m/1", "m")
    with pytest.raises(InvalidInput, match="invalid model name"):
        keel.models.register(f"runs:/{run.run_id}/notes", "bad/name")
    with pytest.raises(InvalidInput, match="malformed model URI"):
        keel.models.register("model.pkl", "m")
    with pytest.raises(NotFound, match="none is registered yet"):
        api.list_versions("m")


def test_aliases_are_checked(settings: Settings) -> None:
    _, logged, _, _ = _train(0.5)
    keel.models.register(logged.uri, "diabetes")
    with pytest.raises(InvalidInput, match="'latest' is reserved"):
        api.set_alias("diabetes", "latest", 1)
    with pytest.raises(InvalidInput, match="invalid alias"):
        api.set_alias("diabetes", "Champion", 1)
    with pytest.raises(NotFound, match="has no version 3; it has 1"):
        api.set_alias("diabetes", "champion", 3)
    with pytest.raises(InvalidInput, match="a version number"):
        api.set_alias("diabetes", "champion", "challenger")
    with pytest.raises(NotFound, match="no alias 'champion'"):
        keel.models.load("models:/diabetes@champion")


def test_diff_compares_params_metrics_signature_requirements_and_data(settings: Settings) -> None:
    X, y = diabetes()
    keel.data.log_dataset(X.assign(target=y), "diabetes")
    keel.data.log_dataset(X.assign(target=y).head(300), "diabetes")
    _, old, _, _ = _train(0.5, data="diabetes@1")
    _, new, _, _ = _train(2.0, data="diabetes@2", columns=["age", "bmi", "bp"])
    keel.models.register(old.uri, "diabetes")
    keel.models.register(new.uri, "diabetes")
    api.set_alias("diabetes", "champion", 1)

    diff = api.diff("diabetes@champion", "diabetes/2")
    assert (diff.left.version, diff.right.version) == (1, 2)
    assert [(c.key, c.left, c.right) for c in diff.params] == [("alpha", "0.5", "2.0")]
    (rmse,) = diff.metrics
    assert rmse.key == "rmse" and rmse.delta == pytest.approx(rmse.right - rmse.left)
    removed = {c.key for c in diff.signature if c.right is None}
    assert "inputs.s1" in removed and "inputs.age" not in removed
    assert [(c.key, c.left, c.right) for c in diff.training_data] == [
        ("diabetes (train)", "diabetes@1", "diabetes@2")
    ]
    assert diff.requirements == []  # same environment
    assert not diff.same
    assert api.diff("diabetes/1", "models:/diabetes/1").same


def test_lineage_chains_data_run_version_and_aliases(settings: Settings) -> None:
    X, y = diabetes()
    keel.data.log_dataset(X.assign(target=y), "diabetes")
    run_id, logged, _, _ = _train(0.5, data="diabetes@1")
    keel.models.register(logged.uri, "diabetes")
    api.set_alias("diabetes", "champion", 1)
    api.set_alias("diabetes", "challenger", 1)

    graph = api.lineage("diabetes@champion")
    assert graph.root == "model:diabetes/1"
    assert [n.id for n in graph.nodes] == [
        "dataset:diabetes@1",
        f"run:{run_id}",
        "model:diabetes/1",
        "alias:diabetes@challenger",
        "alias:diabetes@champion",
    ]
    edges = {(e.source, e.target, e.relation, e.context) for e in graph.edges}
    assert edges == {
        ("dataset:diabetes@1", f"run:{run_id}", "input", "train"),
        (f"run:{run_id}", "model:diabetes/1", "logged", None),
        ("model:diabetes/1", "alias:diabetes@challenger", "alias", None),
        ("model:diabetes/1", "alias:diabetes@champion", "alias", None),
    }
    run = graph.node(f"run:{run_id}")
    assert run.attributes["commit"] == "c0ffee" and run.attributes["params"] == {"alpha": "0.5"}
    assert graph.node("dataset:diabetes@1").attributes["rows"] == 442
    from_run = api.lineage(logged.uri)
    assert from_run.root == f"run:{run_id}" and "model:diabetes/1" in {n.id for n in from_run.nodes}


def test_with_a_tracking_server_the_registry_is_the_servers(settings: Settings) -> None:
    """The module functions go to the server (test_remote.py drives a real one); a server that
    is down is a StorageError naming it, never a write to the local database."""
    remote = settings.replace(tracking_uri="http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(
        StorageError, match=r"cannot reach the keel server at http://127\.0\.0\.1:9"
    ):
        api.list_models(settings=remote)
    with pytest.raises(StorageError, match="cannot reach the keel server"):
        keel.models.register("runs:/abc/model", "m", settings=remote)
    assert api.list_models(settings=settings) == []  # nothing registered locally


def test_gc_keeps_a_registered_models_objects_after_its_run_is_gone(
    settings: Settings, tmp_path: Path
) -> None:
    from keel.gc import gc

    kept_run, kept, _, _ = _train(0.5)
    lost_run, lost, _, _ = _train(3.0)
    version = keel.models.register(kept.uri, "diabetes")
    engine = make_engine(settings.db_url)
    with engine.begin() as conn:  # what purging both runs would do
        conn.execute(
            text("DELETE FROM runs WHERE run_id IN (:a, :b)"), {"a": kept_run, "b": lost_run}
        )
    engine.dispose()
    store = ArtifactStore(settings.artifacts_url)
    lost_files = store.read_manifest(lost.digest)

    report = gc(grace=0, settings=settings, root=tmp_path)
    assert report.references["model versions"] == 1

    files = store.read_manifest(version.digest)
    assert MANIFEST_FILE in files and all(store.exists(b.digest) for b in files.values())
    with api.Registry(settings) as registry:
        assert registry.manifest(version).run_id == kept_run
    assert not store.exists(lost.digest)  # the unregistered model went with its run
    assert not any(
        store.exists(b.digest)
        for b in lost_files.values()
        if b.digest not in {f.digest for f in files.values()}
    )
