"""log_model and load end to end: the manifest a run gets, the cache keyed by digest, corrupt
objects caught on load, registered versions by number and alias, and a real ``keel server``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
import keel.data
import keel.models
from keel.artifacts import ArtifactStore
from keel.errors import AlreadyExists, InvalidInput, NotFound, SchemaMismatch, StorageError
from keel.models import api
from keel.models.packaging import MODELS_TAG, LoggedModel, read_manifest
from keel.settings import Settings
from keel.tracking.fluent import get_client, set_client
from keel.tracking.models import ArtifactEntry
from tests.models.training import diabetes


@pytest.fixture
def forest() -> Iterator[object]:
    from sklearn.ensemble import RandomForestRegressor

    X, y = diabetes()
    yield RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y)


def _log(model: object, **options: object) -> LoggedModel:
    X, _ = diabetes()
    with keel.start_run():
        keel.log_params({"n_estimators": 10})
        keel.log_metric("rmse", 53.5)
        return keel.models.log_model(model, input_example=X.head(3), **options)  # type: ignore[arg-type]


def test_log_model_needs_an_active_run(home: Path, forest: object) -> None:
    with pytest.raises(InvalidInput, match=r"inside `with keel\.start_run\(\):`"):
        keel.models.log_model(forest)


def test_the_manifest_records_what_loading_and_tracing_need(home: Path, forest: object) -> None:
    import sklearn

    logged = _log(forest, requirements=["pandas>=2.2", "shap==0.46"])
    manifest = logged.manifest
    assert logged.uri == f"runs:/{logged.run_id}/model"
    assert manifest.run_id == logged.run_id
    assert manifest.artifact_path == "model"
    assert manifest.flavor == "sklearn"
    assert manifest.flavor_version == sklearn.__version__
    assert manifest.metrics == {"rmse": 53.5}
    assert manifest.params == {"n_estimators": "10"}
    assert f"scikit-learn=={sklearn.__version__}" in manifest.requirements
    assert f"numpy=={np.__version__}" in manifest.requirements
    assert "pandas>=2.2" in manifest.requirements  # the user's line replaced the pin
    assert not any(r.startswith("pandas==") for r in manifest.requirements)
    assert "shap==0.46" in manifest.requirements
    assert manifest.input_example == "input_example.parquet"
    assert manifest.signature is not None
    assert [c.name for c in manifest.signature.inputs] == list(diabetes()[0].columns)  # type: ignore[union-attr]

    client = get_client()
    stored, digest = read_manifest(logged.run_id, "model", client=client)
    assert stored == manifest
    assert digest == logged.digest
    assert json.loads(client.get_run(logged.run_id).tags[MODELS_TAG]) == ["model"]
    files = {e.path for e in client.list_artifacts(logged.run_id, "model")}
    assert files == {"model/keel-model.json", "model/model.joblib", "model/input_example.parquet"}


def test_the_manifest_lists_the_dataset_versions_the_run_read(home: Path, forest: object) -> None:
    X, y = diabetes()
    train = keel.data.log_dataset(X.assign(target=y), name="diabetes")
    with keel.start_run():
        keel.data.load("diabetes@1")
        keel.log_input(train, context="eval")
        logged = keel.models.log_model(forest, input_example=X.head(3))
    refs = sorted((r.name, r.version, r.context, r.digest) for r in logged.manifest.inputs)
    assert refs == [
        ("diabetes", 1, "eval", train.digest),
        ("diabetes", 1, "train", train.digest),
    ]


def test_the_digest_is_the_artifact_store_digest_of_the_folder(
    home: Path, forest: object, tmp_path: Path
) -> None:
    logged = _log(forest)
    folder = get_client().download_artifacts(logged.run_id, "model", dst=tmp_path / "copy")
    assert ArtifactStore(tmp_path / "scratch").put_dir(folder).digest == logged.digest


def test_two_models_in_one_run_and_no_overwrite(home: Path, forest: object) -> None:
    from sklearn.linear_model import Ridge

    X, y = diabetes()
    with keel.start_run() as run:
        keel.models.log_model(forest, input_example=X.head(2))
        keel.models.log_model(Ridge().fit(X, y), "baseline/ridge")
        with pytest.raises(AlreadyExists, match="already has artifacts at 'model'"):
            keel.models.log_model(forest)
    tag = get_client().get_run(run.run_id).tags[MODELS_TAG]
    assert json.loads(tag) == ["model", "baseline/ridge"]
    ridge = keel.models.load(f"runs:/{run.run_id}/baseline/ridge")
    assert ridge.signature is None
    np.testing.assert_allclose(ridge.predict(X), ridge.raw.predict(X))


def test_load_predicts_from_frames_dicts_and_rows_with_the_example_kept(
    home: Path, forest: object
) -> None:
    X, _ = diabetes()
    loaded = keel.models.load(_log(forest).uri)
    expected = forest.predict(X.head(3))  # type: ignore[attr-defined]
    np.testing.assert_array_equal(loaded.predict(X.head(3)), expected)
    np.testing.assert_array_equal(loaded.predict(X.head(3).to_dict("list")), expected)
    np.testing.assert_array_equal(loaded.predict(X.head(3).to_dict("records")), expected)
    np.testing.assert_array_equal(loaded.predict(X.head(1).iloc[0].to_dict()), expected[:1])
    pd.testing.assert_frame_equal(loaded.input_example(), X.head(3).reset_index(drop=True))
    with pytest.raises(SchemaMismatch, match="column 's1' should hold float values"):
        loaded.predict(X.head(3).assign(s1="high"))


def test_a_second_load_reads_no_model_bytes(home: Path, forest: object) -> None:
    X, _ = diabetes()
    logged = _log(forest)
    first = keel.models.load(logged.uri)
    assert first.path == home / "models" / logged.digest
    store = ArtifactStore(Settings().artifacts_url)
    for entry in get_client().list_artifacts(logged.run_id, "model"):
        Path(store.path_of(entry.digest)).unlink()  # type: ignore[arg-type]
    second = keel.models.load(logged.uri)  # served from <home>/models/<digest>
    assert second.path == first.path
    np.testing.assert_array_equal(second.predict(X), first.predict(X))


def test_a_corrupt_object_is_caught_on_load_and_named(
    home: Path, forest: object, tmp_path: Path
) -> None:
    logged = _log(forest)
    entry = next(
        e for e in get_client().list_artifacts(logged.run_id, "model") if e.path.endswith("joblib")
    )
    path = Path(ArtifactStore(Settings().artifacts_url).path_of(entry.digest))  # type: ignore[arg-type]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError) as caught:
        keel.models.load(logged.uri, dst=tmp_path / "cache")
    assert entry.digest in str(caught.value)
    assert not (tmp_path / "cache" / logged.digest).exists()  # nothing half-written is kept


def test_a_folder_that_is_not_a_keel_model_is_refused(home: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with keel.start_run() as run:
        keel.log_artifact(tmp_path / "notes.txt", "stuff")
    with pytest.raises(InvalidInput, match=r"is not a Keel model: it has no keel-model\.json"):
        keel.models.load(f"runs:/{run.run_id}/stuff")
    with pytest.raises(NotFound, match="has no model at 'nothing'"):
        keel.models.load(f"runs:/{run.run_id}/nothing")


def test_registered_versions_load_by_number_alias_and_latest(home: Path, forest: object) -> None:
    from sklearn.linear_model import Ridge

    X, y = diabetes()
    first = _log(forest)
    second = _log(Ridge().fit(X, y))
    api.register(first.uri, "diabetes")
    api.register(second.uri, "diabetes")
    api.set_alias("diabetes", "champion", 1)
    assert keel.models.load("models:/diabetes/1").digest == first.digest
    champion = keel.models.load("models:/diabetes@champion")
    np.testing.assert_array_equal(champion.predict(X), forest.predict(X))  # type: ignore[attr-defined]
    assert type(keel.models.load("models:/diabetes/latest").raw).__name__ == "Ridge"
    # loaded once, a version comes from the cache without touching the run's artifacts
    store = ArtifactStore(Settings().artifacts_url)
    for entry in get_client().list_artifacts(first.run_id, "model"):
        Path(store.path_of(entry.digest)).unlink()  # type: ignore[arg-type]
    assert keel.models.load("models:/diabetes@champion").digest == first.digest


def test_a_registered_version_loads_the_files_registered_whatever_its_run_did_since(
    home: Path, forest: object, tmp_path: Path
) -> None:
    from sqlalchemy import create_engine, text

    logged = _log(forest)
    version = api.register(logged.uri, "pinned")
    (tmp_path / "extra.txt").write_text("slipped in")
    get_client().log_artifact(logged.run_id, tmp_path / "extra.txt", artifact_path="model")
    model = keel.models.load("models:/pinned/1", dst=tmp_path / "cache")
    assert model.digest == version.digest == logged.digest
    assert not (model.path / "extra.txt").exists()  # the run's folder gained it; the version not

    engine = create_engine(Settings().db_url)  # the run's artifact records are gone
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM artifacts WHERE run_id = :r"), {"r": logged.run_id})
    engine.dispose()
    assert get_client().list_artifacts(logged.run_id, "model") == []
    X, _ = diabetes()
    again = keel.models.load("models:/pinned@latest", dst=tmp_path / "cache-2")
    assert list(again.predict(X.head(4))) == list(forest.predict(X.head(4)))  # type: ignore[attr-defined]


@pytest.mark.slow
def test_log_and_load_through_a_keel_server(
    home: Path, tmp_path: Path, forest: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.tracking.test_remote import Server

    root = tmp_path / "server"
    root.mkdir()
    server = Server(root)
    server.start()
    try:
        monkeypatch.setenv("KEEL_TRACKING_URI", server.url)
        set_client(None)
        X, _ = diabetes()
        logged = _log(forest)
        loaded = keel.models.load(logged.uri)
        np.testing.assert_array_equal(loaded.predict(X), forest.predict(X))  # type: ignore[attr-defined]
        assert loaded.path == home / "models" / logged.digest
        with server.store() as local:  # the server's own store holds the same folder digest
            manifest, digest = read_manifest(logged.run_id, "model", client=local)
        assert digest == logged.digest
        assert manifest.run_id == logged.run_id
    finally:
        set_client(None)
        server.stop()


def test_a_file_overwritten_while_loading_is_refused_not_cached_under_the_old_digest(
    home: Path, forest: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = _log(forest)
    client = get_client()
    real_list = client.list_artifacts
    (tmp_path / "keel-model.json").write_text(
        (keel.models.load(logged.uri, dst=tmp_path / "first").path / "keel-model.json")
        .read_text()
        .replace('"rmse"', '"RMSE"')
    )

    def list_then_overwrite(run_id: str, path: str = "") -> list[ArtifactEntry]:
        listed = real_list(run_id, path)
        # another process overwrites the manifest between load's listing and its download
        monkeypatch.setattr(client, "list_artifacts", real_list)
        client.log_artifact(logged.run_id, tmp_path / "keel-model.json", artifact_path="model")
        return listed

    monkeypatch.setattr(client, "list_artifacts", list_then_overwrite)
    cache = tmp_path / "cache"
    with pytest.raises(StorageError) as caught:
        keel.models.load(logged.uri, dst=cache)
    overwritten = keel.models.load(logged.uri, dst=tmp_path / "again").digest
    assert overwritten != logged.digest
    assert logged.digest in str(caught.value) and overwritten in str(caught.value)
    assert not (cache / logged.digest).exists()  # nothing cached under the listed digest
    assert [p.name for p in cache.iterdir()] == []  # and no staging folder left behind


def test_a_malformed_manifest_is_invalid_input_naming_the_field(home: Path, tmp_path: Path) -> None:
    (tmp_path / "keel-model.json").write_text('{"flavor": "sklearn", "files": "model.joblib"}')
    with keel.start_run() as run:
        keel.log_artifact(tmp_path / "keel-model.json", "model")
    uri = f"runs:/{run.run_id}/model"
    with pytest.raises(InvalidInput, match="is not a valid Keel model manifest: model_class: "):
        keel.models.load(uri, dst=tmp_path / "cache")
    (tmp_path / "keel-model.json").write_text("not json")
    with keel.start_run() as run:
        keel.log_artifact(tmp_path / "keel-model.json", "model")
    with pytest.raises(InvalidInput, match=r"not a valid Keel model manifest: the file: Invalid"):
        api.register(f"runs:/{run.run_id}/model", "broken")


def test_an_mlflow_format_version_is_refused_with_how_to_load_it(
    home: Path, tmp_path: Path
) -> None:
    from keel.models.mlflow_compat import register_folder
    from keel.models.uris import RunsUri

    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors:\n  python_function:\n    model_path: model.pkl\n")
    (folder / "model.pkl").write_bytes(b"not loaded")
    with keel.start_run() as run:
        keel.log_artifacts(folder, "model")
    with api.Registry() as registry:
        version = register_folder(registry, RunsUri(run.run_id, "model"), "from-mlflow")
    assert version.flavor == "mlflow"
    cache = tmp_path / "cache"
    for _ in range(2):  # the same answer every time, and nothing materialised
        with pytest.raises(InvalidInput, match="MLflow-format model") as caught:
            keel.models.load("models:/from-mlflow/1", dst=cache)
        assert "mlflow.pyfunc.load_model('models:/from-mlflow/1')" in str(caught.value)
    assert not cache.exists()
