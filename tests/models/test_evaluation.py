"""``keel.models.evaluate`` and ``keel models evaluate|evaluations`` with real scikit-learn models
on diabetes (regression), breast cancer (binary) and iris (multiclass), logged, registered and
scored on dataset versions, on SQLite and PostgreSQL: the metrics equal scikit-learn's computed
directly, the task is inferred, mistakes are named, and each evaluation is recorded and audited.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import keel
import keel.data
import keel.models
from keel.errors import InvalidInput, SchemaMismatch
from keel.models import api, evaluation
from keel.models.evaluation import infer_task, list_evaluations
from keel.settings import Settings
from tests.conftest import run_main
from tests.models.training import diabetes, iris


def _register(model: Any, X: pd.DataFrame, name: str) -> str:
    """``model`` logged in a new run and registered as the next version of ``name``."""
    with keel.start_run(f"train-{name}"):
        logged = keel.models.log_model(model, input_example=X.head())
    version = keel.models.register(logged.uri, name)
    return f"{name}/{version.version}"


def _diabetes_split() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    X, y = diabetes()
    return X.iloc[:300], y.iloc[:300], X.iloc[300:], y.iloc[300:]


def _breast_cancer() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X.columns = [c.replace(" ", "_") for c in X.columns]
    return X, y


def _classifier() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def test_regression_metrics_equal_sklearns_and_are_recorded(settings: Settings) -> None:
    from sklearn import metrics
    from sklearn.linear_model import Ridge

    X, y, X_test, y_test = _diabetes_split()
    model = Ridge(alpha=0.5).fit(X, y)
    ref = _register(model, X, "diabetes")
    data = keel.data.log_dataset(X_test.assign(progression=y_test), "diabetes-test")

    found = keel.models.evaluate(ref, data="diabetes-test", target="progression")

    predicted = model.predict(X_test)
    expected = {
        "rmse": math.sqrt(metrics.mean_squared_error(y_test, predicted)),
        "mae": metrics.mean_absolute_error(y_test, predicted),
        "r2": metrics.r2_score(y_test, predicted),
        "mape": metrics.mean_absolute_percentage_error(y_test, predicted),
        "max_error": metrics.max_error(y_test, predicted),
    }
    assert found.metrics == pytest.approx(expected, rel=1e-12)
    assert set(found.metrics) == set(expected)
    assert (found.name, found.version, found.rows) == ("diabetes", 1, 142)
    assert (found.dataset, found.dataset_digest) == ("diabetes-test@1", data.digest)
    assert found.target == "progression" and found.task == "regression"
    assert found.detail["task"].startswith("inferred: numeric target with ")

    # recorded on the version, listed newest first, and in the audit trail
    again = keel.models.evaluate("diabetes@latest", data="diabetes-test@1", target="progression")
    assert [e.id for e in list_evaluations("diabetes")] == [again.id, found.id]
    assert [e.id for e in list_evaluations("diabetes/1")] == [again.id, found.id]
    assert list_evaluations("diabetes", settings=settings)[1].metrics == found.metrics
    events = [e for e in api.history("diabetes") if e.action == "evaluate"]
    assert len(events) == 2 and events[0].version == 1
    assert events[0].detail["evaluation"] == found.id
    assert events[0].detail["dataset"] == "diabetes-test@1"
    assert events[0].detail["metrics"]["rmse"] == pytest.approx(expected["rmse"])


def test_binary_classification_metrics_equal_sklearns(settings: Settings) -> None:
    from sklearn import metrics

    X, y = _breast_cancer()
    train, test = slice(0, 400), slice(400, None)
    model = _classifier().fit(X.iloc[train], y.iloc[train])
    ref = _register(model, X.iloc[train], "cancer")
    keel.data.log_dataset(X.iloc[test].assign(malignant=y.iloc[test]), "cancer-test")

    found = keel.models.evaluate(ref, data="cancer-test@1", target="malignant")

    y_test = y.iloc[test]
    predicted = model.predict(X.iloc[test])
    proba = model.predict_proba(X.iloc[test])
    expected = {
        "accuracy": metrics.accuracy_score(y_test, predicted),
        "log_loss": metrics.log_loss(y_test, proba),
        "roc_auc": metrics.roc_auc_score(y_test, proba[:, 1]),
    }
    for average in ("macro", "weighted"):
        for name, score in (
            ("precision", metrics.precision_score),
            ("recall", metrics.recall_score),
            ("f1", metrics.f1_score),
        ):
            expected[f"{name}_{average}"] = score(
                y_test, predicted, average=average, zero_division=0
            )
    assert found.metrics == pytest.approx(expected, rel=1e-12)
    assert set(found.metrics) == set(expected)
    assert found.task == "classification" and found.rows == len(y_test)
    assert found.detail["task"] == "inferred: numeric target of only 2 distinct values"
    assert found.detail["labels"] == [0, 1]
    assert found.detail["confusion_matrix"] == metrics.confusion_matrix(y_test, predicted).tolist()


def test_multiclass_metrics_roc_auc_one_against_the_rest(settings: Settings) -> None:
    from sklearn import metrics

    X, y = iris()
    model = _classifier().fit(X, y)
    ref = _register(model, X, "iris")
    # every fifth row: 30 rows, 10 of each class
    keel.data.log_dataset(X.iloc[::5].assign(species=y.iloc[::5]), "iris-test")

    found = keel.models.evaluate(ref, data="iris-test", target="species", task="classification")

    y_test = y.iloc[::5]
    proba = model.predict_proba(X.iloc[::5])
    predicted = model.predict(X.iloc[::5])
    assert found.metrics["roc_auc"] == pytest.approx(
        metrics.roc_auc_score(y_test, proba, multi_class="ovr")
    )
    assert found.metrics["log_loss"] == pytest.approx(metrics.log_loss(y_test, proba))
    assert found.metrics["f1_macro"] == pytest.approx(
        metrics.f1_score(y_test, predicted, average="macro")
    )
    assert found.detail["task"] == "given"
    assert found.detail["labels"] == [0, 1, 2]
    assert np.array(found.detail["confusion_matrix"]).shape == (3, 3)
    assert np.array(found.detail["confusion_matrix"]).sum() == 30


def test_a_model_without_predict_proba_gets_no_log_loss_or_roc_auc(settings: Settings) -> None:
    from sklearn.svm import SVC

    X, y = iris()
    ref = _register(SVC().fit(X, y), X, "iris-svc")
    keel.data.log_dataset(X.assign(species=y), "iris-all")

    found = keel.models.evaluate(ref, data="iris-all", target="species")

    assert "log_loss" not in found.metrics and "roc_auc" not in found.metrics
    assert found.metrics["accuracy"] > 0.9
    assert "log_loss and roc_auc left out: the model has no predict_proba" in found.detail["notes"]


def test_mape_is_left_out_when_the_target_holds_zeros(settings: Settings) -> None:
    from sklearn.linear_model import Ridge

    X, y, X_test, y_test = _diabetes_split()
    ref = _register(Ridge().fit(X, y), X, "diabetes")
    y_test = y_test.copy()
    y_test.iloc[:3] = 0.0
    keel.data.log_dataset(X_test.assign(progression=y_test), "diabetes-zeros")

    found = keel.models.evaluate(ref, data="diabetes-zeros", target="progression")

    assert "mape" not in found.metrics
    assert {"rmse", "mae", "r2", "max_error"} <= set(found.metrics)
    assert any(
        n.startswith("mape left out: the target is 0 in 3 rows") for n in found.detail["notes"]
    )


def test_empty_targets_are_left_out_and_predict_runs_in_chunks(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn import metrics

    X, y = _breast_cancer()
    model = _classifier().fit(X, y)
    ref = _register(model, X, "cancer")
    target = y.astype("float64")
    target.iloc[[5, 50]] = np.nan
    keel.data.log_dataset(X.assign(malignant=target), "cancer-holes")
    monkeypatch.setattr(evaluation, "CHUNK_ROWS", 64)  # 567 rows in 9 chunks

    found = keel.models.evaluate(ref, data="cancer-holes", target="malignant")

    kept = target.notna()
    proba = model.predict_proba(X[kept])
    assert found.rows == len(y) - 2
    assert "2 rows with an empty 'malignant' left out" in found.detail["notes"]
    assert found.metrics["roc_auc"] == pytest.approx(
        metrics.roc_auc_score(y[kept], proba[:, 1]), rel=1e-12
    )
    assert found.metrics["log_loss"] == pytest.approx(metrics.log_loss(y[kept], proba), rel=1e-12)


def test_a_missing_target_column_and_a_mismatched_table_are_named(settings: Settings) -> None:
    from sklearn.linear_model import Ridge

    X, y, X_test, y_test = _diabetes_split()
    ref = _register(Ridge().fit(X, y), X, "diabetes")
    keel.data.log_dataset(X_test.assign(progression=y_test), "diabetes-test")

    with pytest.raises(InvalidInput) as caught:
        keel.models.evaluate(ref, data="diabetes-test@1", target="target")
    message = str(caught.value)
    assert "diabetes-test@1 has no column 'target'" in message
    assert "its columns are age, sex, bmi, bp, s1, s2, s3, s4, s5, s6, progression" in message

    keel.data.log_dataset(X_test.assign(progression=y_test, extra=1.0), "diabetes-extra")
    with pytest.raises(SchemaMismatch, match="extra"):
        keel.models.evaluate(ref, data="diabetes-extra", target="progression")
    assert list_evaluations("diabetes") == []


def test_task_inference() -> None:
    assert infer_task(pd.Series([151.0, 75.0, 141.0] * 10 + list(range(30))))[0] == "regression"
    assert infer_task(pd.Series([0.5, 1.0, 2.0])) == (
        "regression",
        "numeric target with fractional values",
    )
    assert infer_task(pd.Series([0, 1, 2, 1] * 5)) == (
        "classification",
        "numeric target of only 3 distinct values",
    )
    assert infer_task(pd.Series([1.0, 0.0, 1.0])) == (
        "classification",
        "numeric target of only 2 distinct values",
    )
    assert infer_task(pd.Series(["cat", "dog"])) == (
        "classification",
        "non-numeric target of 2 distinct values",
    )
    assert infer_task(pd.Series([True, False]))[0] == "classification"
    assert infer_task(pd.Series(range(21)))[0] == "regression"
    assert infer_task(pd.Series(range(20)))[0] == "classification"


def test_evaluate_and_evaluations_on_the_command_line(cli: CliRunner, settings: Settings) -> None:
    X, y = iris()
    ref = _register(_classifier().fit(X, y), X, "iris")
    keel.data.log_dataset(X.assign(species=y), "iris-all")

    result = run_main(
        cli, ["models", "evaluate", ref, "--data", "iris-all@1", "--target", "species"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "Evaluated iris/1 on iris-all@1 (target species, 150 rows): classification (inferred: "
        "numeric target of only 3 distinct values)"
    )
    assert "accuracy" in result.output and "roc_auc" in result.output
    assert "confusion matrix (rows: true, columns: predicted)" in result.output

    result = run_main(
        cli,
        [
            "models",
            "evaluate",
            ref,
            "--data",
            "iris-all",
            "--target",
            "species",
            "--task",
            "classification",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["task"] == "classification" and document["detail"]["task"] == "given"

    listed = json.loads(run_main(cli, ["models", "evaluations", "iris", "--json"]).output)
    assert [e["id"] for e in listed] == [document["id"], document["id"] - 1]
    table = run_main(cli, ["models", "evaluations", "iris/1"])
    assert table.exit_code == 0 and "iris-all@1" in table.output and "accuracy=" in table.output

    missing = run_main(cli, ["models", "evaluate", ref, "--data", "iris-all", "--target", "kind"])
    assert missing.exit_code == 1
    assert "Error: dataset iris-all@1 has no column 'kind'" in missing.output
    none = run_main(cli, ["models", "evaluations", "nothing"])
    assert none.exit_code == 1 and "no registered model named 'nothing'" in none.output


def test_evaluate_loads_the_model_from_the_registry_it_is_given(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version is scored from ``settings``' store, not resolved again under the default
    ``Settings()`` (here another, empty home)."""
    from sklearn.linear_model import Ridge

    from keel.tracking.fluent import set_client

    X, y, X_test, y_test = _diabetes_split()
    ref = _register(Ridge().fit(X, y), X, "diabetes")
    keel.data.log_dataset(X_test.assign(progression=y_test), "diabetes-test")
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("KEEL_HOME", str(elsewhere))
    monkeypatch.setenv("KEEL_DATABASE_URL", f"sqlite:///{elsewhere / 'keel.db'}")
    set_client(None)
    try:
        found = keel.models.evaluate(
            ref, data="diabetes-test", target="progression", settings=settings
        )
    finally:
        set_client(None)
    assert (found.name, found.version, found.rows) == ("diabetes", 1, 142)
    assert list_evaluations("diabetes", settings=settings)[0].id == found.id
