"""One side of benchmarks/models_vs_mlflow.py, run in that tool's own interpreter.

    python _models_side.py keel|mlflow REPS

Fits the same scikit-learn Pipeline (StandardScaler + 100-tree RandomForestRegressor on the
diabetes data, a different random_state per repetition so no tool can reuse stored bytes),
then times log + register + load (+ one predict) per repetition, and the predict of the loaded
model against the bare Pipeline's on 1 and 10,000 rows. Prints one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.ensemble import RandomForestRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def pipelines(reps: int) -> tuple[pd.DataFrame, list[Any]]:
    X, y = load_diabetes(as_frame=True, return_X_y=True)
    fitted = [
        make_pipeline(
            StandardScaler(), RandomForestRegressor(n_estimators=100, random_state=i)
        ).fit(X, y)
        for i in range(reps)
    ]
    return X, fitted


def keel_cycle(model: Any, X: pd.DataFrame, index: int, cache: Path) -> Any:
    import keel
    import keel.models

    with keel.start_run():
        logged = keel.models.log_model(model, input_example=X.head(5))
    version = keel.models.register(logged.uri, "diabetes")
    loaded = keel.models.load(f"models:/diabetes/{version.version}", dst=cache / str(index))
    loaded.predict(X.head(5))
    return loaded


def mlflow_cycle(model: Any, X: pd.DataFrame, index: int, cache: Path) -> Any:
    import mlflow
    import mlflow.sklearn

    with mlflow.start_run():
        # MLflow 3.17 saves with skops by default, and then refuses to load a forest unless the
        # caller lists sklearn's Tree as trusted; cloudpickle is what its docs offer instead,
        # and the same trust model as Keel's joblib file (content-addressed, hash-checked).
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=X.head(5), serialization_format="cloudpickle"
        )
    version = mlflow.register_model(info.model_uri, "diabetes")
    loaded = mlflow.pyfunc.load_model(f"models:/diabetes/{version.version}")
    loaded.predict(X.head(5))
    return loaded


def timed_predicts(bare: Any, tool: Any, data: pd.DataFrame, runs: int) -> tuple[float, float]:
    """Median seconds of ``bare(data)`` and ``tool(data)``, called alternately so that drift in
    the machine's speed hits both alike."""
    bare(data), tool(data)  # warm
    bare_s, tool_s = [], []
    for _ in range(runs):
        for predict, samples in ((bare, bare_s), (tool, tool_s)):
            started = time.perf_counter()
            predict(data)
            samples.append(time.perf_counter() - started)
    return statistics.median(bare_s), statistics.median(tool_s)


def main() -> None:
    tool, reps = sys.argv[1], int(sys.argv[2])
    if tool == "keel":
        import keel.models  # noqa: F401
    else:
        import mlflow  # noqa: F401
    imported = time.perf_counter() - STARTED
    X, fitted = pipelines(reps)
    cycle = keel_cycle if tool == "keel" else mlflow_cycle
    cycles = []
    with tempfile.TemporaryDirectory() as tmp:
        loaded = None
        for index, model in enumerate(fitted):
            started = time.perf_counter()
            loaded = cycle(model, X, index, Path(tmp))
            cycles.append(time.perf_counter() - started)
        one = X.head(1)
        many = pd.DataFrame(np.tile(X.to_numpy(), (23, 1))[:10_000], columns=X.columns)
        bare, checked = fitted[-1].predict, loaded.predict  # type: ignore[union-attr]
        predict = dict(
            zip(("bare_1", "tool_1"), timed_predicts(bare, checked, one, 200), strict=True)
        ) | dict(
            zip(("bare_10k", "tool_10k"), timed_predicts(bare, checked, many, 40), strict=True)
        )
    print(
        json.dumps(
            {
                "tool": tool,
                "import_s": imported,  # numpy, pandas, sklearn and the tool
                "cycle_s": cycles,
                "cycle_median_s": statistics.median(cycles[1:] or cycles),
                "first_cycle_s": cycles[0],
                "predict_s": predict,
            }
        )
    )


if __name__ == "__main__":
    main()
