"""keel.autolog(): each outermost scikit-learn fit records one run (params, training metrics,
model with signature, training profile), nothing when disabled, and never breaks a fit."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import keel
import keel.models
from keel.data.profile_models import TableProfile
from keel.models.autolog import AUTOLOG_TAG, MAX_PARAM_CHARS, PROFILE_FILE, AutologWarning
from keel.models.packaging import read_manifest
from keel.tracking.fluent import get_client
from keel.tracking.models import Run
from tests.models.training import diabetes, iris


@pytest.fixture
def autologged(home: Path) -> Iterator[None]:
    keel.autolog()
    yield
    keel.autolog(disable=True)


def _runs() -> list[Run]:
    found = keel.search_runs()
    assert isinstance(found, list)
    return found


def _one_run() -> Run:
    runs = _runs()
    assert len(runs) == 1, [r.tags.get(AUTOLOG_TAG) for r in runs]
    return runs[0]


def test_a_regressor_fit_records_params_metrics_model_and_profile(autologged: None) -> None:
    X, y = diabetes()
    model = LinearRegression(fit_intercept=False).fit(X, y)

    run = _one_run()
    assert run.status.value == "FINISHED"
    assert run.params["fit_intercept"] == "False"
    assert set(run.params) == set(LinearRegression().get_params())
    rmse = float(np.sqrt(np.mean((model.predict(X) - y) ** 2)))
    assert run.metrics["training_rmse"] == pytest.approx(rmse)
    assert {"training_mae", "training_r2"} <= set(run.metrics)
    manifest, _ = read_manifest(run.run_id, "model", client=get_client())
    assert manifest.flavor == "sklearn"
    assert manifest.signature is not None
    assert [c.name for c in manifest.signature.inputs] == list(X.columns)  # type: ignore[union-attr]
    assert manifest.metrics["training_rmse"] == pytest.approx(rmse)
    loaded = keel.models.load(f"runs:/{run.run_id}/model")
    np.testing.assert_allclose(loaded.predict(X.head(3)), model.predict(X.head(3)))
    profile = TableProfile.model_validate_json(get_client().read_artifact(run.run_id, PROFILE_FILE))
    assert profile.rows == len(X)
    assert [c.name for c in profile.columns] == list(X.columns)
    assert json.loads(run.tags[AUTOLOG_TAG]) == [
        {
            "estimator": "sklearn.linear_model._base.LinearRegression",
            "model": "model",
            "profile": PROFILE_FILE,
        }
    ]


def test_a_classifier_fit_records_classification_metrics(autologged: None) -> None:
    X, y = iris()
    RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)

    run = _one_run()
    assert run.params["n_estimators"] == "5"
    assert run.metrics["training_accuracy"] > 0.9
    assert {"training_f1", "training_log_loss", "training_roc_auc"} <= set(run.metrics)
    assert "training_rmse" not in run.metrics
    manifest, _ = read_manifest(run.run_id, "model", client=get_client())
    assert manifest.model_class.endswith("RandomForestClassifier")


def test_a_pipeline_is_one_run_with_its_steps_params(autologged: None) -> None:
    X, y = diabetes()
    Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=0.3))]).fit(X, y)

    run = _one_run()  # the steps' own fits made no runs
    assert run.params["ridge__alpha"] == "0.3"
    assert run.params["scale__with_mean"] == "True"
    assert "training_r2" in run.metrics
    assert read_manifest(run.run_id, "model", client=get_client())[0].model_class.endswith(
        "Pipeline"
    )


def test_a_grid_search_is_one_run_with_the_best_params_and_score(autologged: None) -> None:
    X, y = diabetes()
    search = GridSearchCV(Ridge(), {"alpha": [0.01, 0.1, 1.0]}, cv=3).fit(X, y)

    run = _one_run()  # not 3 candidates x 3 folds + the refit
    assert run.params["best.alpha"] == str(search.best_params_["alpha"])
    assert run.metrics["best_cv_score"] == pytest.approx(search.best_score_)
    assert run.params["param_grid"] == str({"alpha": [0.01, 0.1, 1.0]})
    assert "training_rmse" in run.metrics


def test_numpy_input_gets_a_tensor_signature_and_a_profile_with_named_columns(
    autologged: None,
) -> None:
    X, y = diabetes()
    LinearRegression().fit(X.to_numpy(), y.to_numpy())

    run = _one_run()
    manifest, _ = read_manifest(run.run_id, "model", client=get_client())
    assert manifest.signature is not None
    profile = TableProfile.model_validate_json(get_client().read_artifact(run.run_id, PROFILE_FILE))
    assert [c.name for c in profile.columns][:2] == ["x0", "x1"]


def test_inside_an_active_run_fits_log_into_it(autologged: None) -> None:
    X, y = diabetes()
    with keel.start_run() as active:
        keel.log_param("note", "mine")
        LinearRegression().fit(X, y)
        with pytest.warns(AutologWarning, match="other values for fit_intercept"):
            LinearRegression(fit_intercept=False).fit(X, y)

    run = _one_run()
    assert run.run_id == active.run_id
    assert run.params["note"] == "mine"
    assert run.params["fit_intercept"] == "True"  # the first fit's
    records = json.loads(run.tags[AUTOLOG_TAG])
    assert [r["model"] for r in records] == ["model", "model-2"]
    assert [r["profile"] for r in records] == [PROFILE_FILE, "training_profile-2.json"]


def test_disable_restores_the_original_fit_methods(home: Path) -> None:
    X, y = diabetes()
    original = LinearRegression.fit
    keel.autolog()
    keel.autolog()  # idempotent: patched once
    assert LinearRegression.fit is not original
    assert LinearRegression.fit.__wrapped__ is original  # type: ignore[attr-defined]
    keel.autolog(disable=True)
    assert LinearRegression.fit is original
    assert "__init_subclass__" not in BaseEstimator.__dict__

    LinearRegression().fit(X, y)
    assert _runs() == []


def test_options_turn_off_the_model_and_the_profile(home: Path) -> None:
    X, y = diabetes()
    keel.autolog(log_models=False, log_datasets_profile=False)
    try:
        LinearRegression().fit(X, y)
    finally:
        keel.autolog(disable=True)

    run = _one_run()
    assert "training_rmse" in run.metrics
    assert [a.path for a in get_client().list_artifacts(run.run_id)] == []


class _BrokenPredict(RegressorMixin, BaseEstimator):
    """A regressor whose predict fails (so its training metrics cannot be computed)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def fit(self, X: Any, y: Any) -> _BrokenPredict:
        self.fitted_ = True
        return self

    def predict(self, X: Any) -> Any:
        raise RuntimeError("predict is broken")


def test_a_broken_metric_warns_once_and_the_fit_goes_on(autologged: None) -> None:
    X, y = diabetes()

    class Broken(_BrokenPredict):  # a class defined while autolog is on
        def fit(self, X: Any, y: Any) -> Broken:
            super().fit(X, y)  # the inherited fit runs unrecorded inside this one
            return self

    with pytest.warns(AutologWarning) as caught:
        fitted = Broken(scale=2.0).fit(X, y)
        Broken(scale=2.0).fit(X, y)  # the same failures again: no more warnings
    assert fitted.fitted_
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2, messages
    assert "could not compute training metrics (RuntimeError: predict is broken)" in messages[0]
    assert "could not log the model (PicklingError" in messages[1]  # a class local to a test

    runs = _runs()
    assert len(runs) == 2
    for run in runs:
        assert run.status.value == "FINISHED"
        assert run.params == {"scale": "2.0"}
        assert run.metrics == {}
        assert [a.path for a in get_client().list_artifacts(run.run_id)] == [PROFILE_FILE]


def test_a_failing_fit_raises_and_its_run_ends_failed(autologged: None) -> None:
    with pytest.raises(ValueError):
        LinearRegression().fit([[1.0], [2.0]], [1.0])  # inconsistent lengths

    run = _one_run()
    assert run.status.value == "FAILED"
    assert run.params["fit_intercept"] == "True"  # logged before the fit


def test_long_param_values_are_cut_with_a_note(autologged: None) -> None:
    X, y = diabetes()
    grid = {"alpha": [float(a) for a in np.linspace(0.01, 10, 150)]}
    GridSearchCV(Ridge(), grid, cv=2).fit(X, y)

    value = _one_run().params["param_grid"]
    assert len(value) == MAX_PARAM_CHARS
    assert value.endswith(f"(truncated from {len(str(grid)):,} characters)")


def test_fits_in_threads_each_record_their_own_run(autologged: None) -> None:
    X, y = diabetes()
    errors: list[BaseException] = []

    def fit(alpha: float) -> None:
        try:
            Ridge(alpha=alpha).fit(X, y)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fit, args=(a,)) for a in (0.1, 0.2, 0.3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(r.params["alpha"] for r in _runs()) == ["0.1", "0.2", "0.3"]
