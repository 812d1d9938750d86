"""The in-venv steps of benchmarks/serving_vs_peers.py, each run by one tool's own interpreter.

    python _serving_side.py train DIR            # fit the model, write DIR/model.joblib + rows
    python _serving_side.py raw DIR SECONDS      # time model.predict in process (the floor)
    python _serving_side.py mlflow DIR OUT       # mlflow.sklearn.save_model to OUT
    python _serving_side.py bentoml DIR          # bentoml.sklearn.save_model (BENTOML_HOME)
    python _serving_side.py keel DIR             # keel log + register + @champion (KEEL_HOME)

``train`` fits one 100-tree RandomForestRegressor on scikit-learn's diabetes data (seed 0) and
writes it with joblib beside the first 100 rows (``rows.json``, records) and the model's own
predictions for 1 and 100 rows (``expected.json``). Every other step loads that same file, so
each server scores the very same trees. ``raw`` prints one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

SEED = 0
TREES = 100
ROWS = (1, 100)


def train(folder: Path) -> None:
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = RandomForestRegressor(n_estimators=TREES, random_state=SEED).fit(X, y)
    joblib.dump(model, folder / "model.joblib")
    rows = X.head(max(ROWS))
    (folder / "rows.json").write_text(json.dumps(rows.to_dict(orient="records")))
    expected = {str(n): model.predict(rows.head(n)).tolist() for n in ROWS}
    (folder / "expected.json").write_text(json.dumps(expected))


def _model_and_rows(folder: Path) -> tuple[Any, Any]:
    import joblib
    import pandas as pd

    rows = pd.DataFrame(json.loads((folder / "rows.json").read_text()))
    return joblib.load(folder / "model.joblib"), rows


def raw(folder: Path, seconds: float) -> None:
    """``model.predict`` on a prebuilt DataFrame of 1 and of 100 rows, called back to back for
    ``seconds`` each after 20 warm-up calls: median, p99 and calls per second."""
    model, rows = _model_and_rows(folder)
    result: dict[str, Any] = {}
    for n in ROWS:
        frame = rows.head(n)
        for _ in range(20):
            model.predict(frame)
        samples = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            model.predict(frame)
            samples.append(time.perf_counter() - started)
        samples.sort()
        result[str(n)] = {
            "calls": len(samples),
            "p50_ms": statistics.median(samples) * 1000,
            "p99_ms": samples[int(len(samples) * 0.99) - 1] * 1000,
            "per_s": len(samples) / sum(samples),
        }
    print(json.dumps(result))


def mlflow_model(folder: Path, out: Path) -> None:
    import mlflow.sklearn

    model, rows = _model_and_rows(folder)
    # cloudpickle: MLflow 3.17's default (skops) refuses to load a forest unless sklearn's Tree
    # is listed as trusted (FINDINGS, Serving)
    mlflow.sklearn.save_model(
        model, str(out), serialization_format="cloudpickle", input_example=rows.head(5)
    )


def bentoml_model(folder: Path) -> None:
    import bentoml

    model, _ = _model_and_rows(folder)
    bentoml.sklearn.save_model("diabetes", model)


def keel_model(folder: Path) -> None:
    import keel
    import keel.models
    from keel.models.api import set_alias

    model, rows = _model_and_rows(folder)
    with keel.start_run():
        logged = keel.models.log_model(model, input_example=rows.head(5))
    version = keel.models.register(logged.uri, "diabetes")
    set_alias("diabetes", "champion", version.version)


def main() -> None:
    step, folder = sys.argv[1], Path(sys.argv[2])
    if step == "train":
        train(folder)
    elif step == "raw":
        raw(folder, float(sys.argv[3]))
    elif step == "mlflow":
        mlflow_model(folder, Path(sys.argv[3]))
    elif step == "bentoml":
        bentoml_model(folder)
    elif step == "keel":
        keel_model(folder)
    else:
        sys.exit(f"unknown step {step!r}")


if __name__ == "__main__":
    main()
