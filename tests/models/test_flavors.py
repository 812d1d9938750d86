"""Every flavor with a real model trained on diabetes (or iris for classifiers): logged in a real
run, loaded back from the store, and predicting exactly what the trained model predicts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import keel
import keel.models
from keel.errors import InvalidInput, SchemaMismatch
from keel.models.flavors import detect_flavor
from keel.models.loading import Predictor
from keel.models.models import ColumnSpec, TensorSpec
from tests.models.training import diabetes, iris, need


def _roundtrip(model: Any, example: Any, **options: Any) -> Predictor:
    with keel.start_run():
        logged = keel.models.log_model(model, input_example=example, **options)
    return keel.models.load(logged.uri)


# -- scikit-learn ------------------------------------------------------------------------------


def test_a_sklearn_pipeline_predicts_the_same_after_loading(home: Path) -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = diabetes()
    pipeline = make_pipeline(StandardScaler(), Ridge(alpha=0.5)).fit(X, y)
    loaded = _roundtrip(pipeline, X.head())
    assert loaded.manifest.flavor == "sklearn"
    assert loaded.manifest.model_class == "sklearn.pipeline.Pipeline"
    assert type(loaded.raw).__name__ == "Pipeline"
    np.testing.assert_array_equal(loaded.predict(X), pipeline.predict(X))


def test_a_sklearn_classifier_gives_the_same_labels(home: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    X, y = iris()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, names)
    loaded = _roundtrip(model, X.head())
    assert loaded.signature is not None
    assert loaded.signature.outputs == [ColumnSpec(name="prediction", type="string")]
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


# -- XGBoost -----------------------------------------------------------------------------------


def test_an_xgboost_regressor_is_stored_in_its_own_format(home: Path) -> None:
    xgb = need("xgboost")
    X, y = diabetes()
    model = xgb.XGBRegressor(n_estimators=30, max_depth=3).fit(X, y)
    loaded = _roundtrip(model, X.head())
    assert loaded.manifest.files == ["model.ubj"]
    assert loaded.manifest.flavor_version == xgb.__version__
    assert f"xgboost=={xgb.__version__}" in loaded.manifest.requirements
    assert type(loaded.raw) is xgb.XGBRegressor
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_an_xgboost_classifier_and_booster_round_trip(home: Path) -> None:
    xgb = need("xgboost")
    X, y = iris()
    classifier = xgb.XGBClassifier(n_estimators=10, max_depth=2).fit(X, y)
    np.testing.assert_array_equal(
        _roundtrip(classifier, X.head()).predict(X), classifier.predict(X)
    )
    booster = xgb.train({"max_depth": 3}, xgb.DMatrix(X, label=y), num_boost_round=10)
    loaded = _roundtrip(booster, X.head())
    assert isinstance(loaded.raw, xgb.Booster)
    np.testing.assert_array_equal(loaded.predict(X), booster.predict(xgb.DMatrix(X)))


# -- LightGBM ----------------------------------------------------------------------------------


def test_a_lightgbm_regressor_and_booster_round_trip(home: Path) -> None:
    lgb = need("lightgbm")
    X, y = diabetes()
    model = lgb.LGBMRegressor(n_estimators=30, verbose=-1).fit(X, y)
    loaded = _roundtrip(model, X.head())
    assert sorted(loaded.manifest.files) == ["model.joblib", "model.txt"]
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    booster = lgb.train(
        {"objective": "regression", "verbose": -1}, lgb.Dataset(X, y), num_boost_round=20
    )
    loaded_booster = _roundtrip(booster, X.head())
    assert loaded_booster.manifest.files == ["model.txt"]
    np.testing.assert_allclose(loaded_booster.predict(X), booster.predict(X), rtol=1e-12)


def test_a_lightgbm_classifier_still_predicts_labels(home: Path) -> None:
    lgb = need("lightgbm")
    X, y = iris()
    model = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(X, y)
    np.testing.assert_array_equal(_roundtrip(model, X.head()).predict(X), model.predict(X))


# -- PyTorch -----------------------------------------------------------------------------------


def _torch_regressor(torch: Any, X: pd.DataFrame, y: pd.Series) -> Any:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(X.shape[1], 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
    )
    inputs = torch.tensor(X.to_numpy(), dtype=torch.float32)
    target = torch.tensor(y.to_numpy(), dtype=torch.float32).reshape(-1, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(50):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs), target)
        loss.backward()
        optimizer.step()
    return model


def _torch_predict(torch: Any, model: Any, X: pd.DataFrame) -> np.ndarray:
    with torch.no_grad():
        result: np.ndarray = model(torch.tensor(X.to_numpy(), dtype=torch.float32)).numpy()
    return result


@pytest.mark.slow
def test_a_torch_module_is_exported_and_loads_without_its_code(home: Path) -> None:
    torch = need("torch")
    X, y = diabetes()
    model = _torch_regressor(torch, X, y)
    loaded = _roundtrip(model, X.to_numpy(dtype=np.float32)[:5])
    assert loaded.manifest.files == ["model.pt2"]
    assert loaded.signature is not None
    assert loaded.signature.inputs == TensorSpec(dtype="float32", shape=(-1, 10))
    expected = _torch_predict(torch, model, X)
    np.testing.assert_allclose(loaded.predict(X.to_numpy(dtype=np.float32)), expected, rtol=1e-6)
    one_row = loaded.predict(X.to_numpy(dtype=np.float32)[:1])  # the batch size is dynamic
    np.testing.assert_allclose(one_row, expected[:1], rtol=1e-6)
    with pytest.raises(SchemaMismatch, match=r"shape \(any, 10\), got \(3, 4\)"):
        loaded.predict(np.zeros((3, 4), dtype=np.float32))


def test_a_torch_module_logged_without_an_example_is_saved_whole(home: Path) -> None:
    torch = need("torch")
    X, y = diabetes()
    model = _torch_regressor(torch, X, y)
    with keel.start_run():
        logged = keel.models.log_model(model)
    loaded = keel.models.load(logged.uri)
    assert loaded.manifest.files == ["model.pth"]
    assert loaded.signature is None
    np.testing.assert_allclose(
        loaded.predict(X.to_numpy(dtype=np.float32)), _torch_predict(torch, model, X), rtol=1e-6
    )


# -- ONNX --------------------------------------------------------------------------------------


def test_an_onnx_model_runs_in_onnxruntime(home: Path) -> None:
    need("onnxruntime")
    skl2onnx = need("skl2onnx")
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestRegressor

    X, y = diabetes()
    forest = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y)
    proto = skl2onnx.convert_sklearn(
        forest, initial_types=[("input", FloatTensorType([None, X.shape[1]]))]
    )
    loaded = _roundtrip(proto, X.head())
    assert loaded.manifest.flavor == "onnx"
    assert loaded.manifest.files == ["model.onnx"]
    predictions = loaded.predict(X)
    assert predictions.shape == (len(X),)
    np.testing.assert_allclose(predictions, forest.predict(X), rtol=1e-4)
    with pytest.raises(SchemaMismatch, match="column 'bmi' is missing"):
        loaded.predict(X.drop(columns=["bmi"]))


# -- PythonModel -------------------------------------------------------------------------------


class Shrinker(keel.models.PythonModel):
    """A fitted Ridge whose predictions are scaled by a factor read from an artifact file."""

    def __init__(self, ridge: Any) -> None:
        self.ridge = ridge
        self.factor = 1.0

    def load_context(self, context: Any) -> None:
        self.factor = float(Path(context.artifacts["factor"]).read_text())

    def predict(self, context: Any, model_input: pd.DataFrame) -> Any:
        return self.ridge.predict(model_input) * self.factor


def test_a_python_model_gets_its_artifacts_back_where_it_is_loaded(
    home: Path, tmp_path: Path
) -> None:
    from sklearn.linear_model import Ridge

    X, y = diabetes()
    ridge = Ridge().fit(X, y)
    factor = tmp_path / "factor.txt"
    factor.write_text("0.5")
    loaded = _roundtrip(Shrinker(ridge), X.head(), artifacts={"factor": factor})
    factor.unlink()  # the loaded model reads its own copy
    assert loaded.manifest.flavor == "python"
    assert "artifacts/factor/factor.txt" in loaded.manifest.files
    assert any(r.startswith("cloudpickle==") for r in loaded.manifest.requirements)
    np.testing.assert_allclose(loaded.predict(X), ridge.predict(X) * 0.5)


def test_artifacts_are_refused_for_other_flavors(home: Path, tmp_path: Path) -> None:
    from sklearn.linear_model import Ridge

    X, y = diabetes()
    (tmp_path / "f.txt").write_text("1")
    with keel.start_run(), pytest.raises(InvalidInput, match="artifacts are for"):
        keel.models.log_model(Ridge().fit(X, y), artifacts={"f": tmp_path / "f.txt"})


# -- detection and missing frameworks ----------------------------------------------------------


def test_an_object_no_flavor_knows_is_refused_with_what_to_do(home: Path) -> None:
    with keel.start_run(), pytest.raises(InvalidInput, match=r"wrap it in a keel\.models"):
        keel.models.log_model(object())


def test_an_unknown_flavor_name_lists_the_known_ones(home: Path) -> None:
    with keel.start_run(), pytest.raises(InvalidInput, match="use one of lightgbm, onnx"):
        keel.models.log_model(object(), flavor="keras")


def test_sklearn_style_wrappers_get_their_framework_flavor() -> None:
    xgb = need("xgboost")
    lgb = need("lightgbm")
    from sklearn.linear_model import Ridge

    assert detect_flavor(xgb.XGBRegressor()).name == "xgboost"
    assert detect_flavor(lgb.LGBMClassifier()).name == "lightgbm"
    assert detect_flavor(Ridge()).name == "sklearn"


def test_loading_without_the_framework_names_the_pip_extra(home: Path, tmp_path: Path) -> None:
    xgb = need("xgboost")
    X, y = diabetes()
    with keel.start_run():
        logged = keel.models.log_model(xgb.XGBRegressor(n_estimators=2).fit(X, y))
    script = (
        "import sys; sys.modules['xgboost'] = None\n"  # as if xgboost were not installed
        "import keel.models\n"
        "from keel.errors import MissingExtra\n"
        "try:\n"
        f"    keel.models.load({logged.uri!r}, dst={str(tmp_path / 'cache')!r})\n"
        "except MissingExtra as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=tmp_path,
        timeout=120,
        check=True,
    )
    assert "xgboost is not installed; install it with: pip install 'keel[xgboost]'" in (
        result.stdout
    ), result.stderr
