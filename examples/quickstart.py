"""Keel quick start: train several scikit-learn models on the diabetes data, track, compare.

Run it from anywhere; it uses the nearest .keel store (created in the current folder if none):

    python examples/quickstart.py

Then explore the runs it made with the CLI (it prints the same commands at the end).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Lasso, LinearRegression, Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeRegressor

import keel

EXPERIMENT = "diabetes"

CANDIDATES = {
    "linear": (LinearRegression, {}),
    "ridge-0.1": (Ridge, {"alpha": 0.1}),
    "ridge-1": (Ridge, {"alpha": 1.0}),
    "lasso-0.1": (Lasso, {"alpha": 0.1}),
    "tree-depth-3": (DecisionTreeRegressor, {"max_depth": 3, "random_state": 0}),
    "tree-depth-8": (DecisionTreeRegressor, {"max_depth": 8, "random_state": 0}),
    "forest": (RandomForestRegressor, {"n_estimators": 100, "max_depth": 6, "random_state": 0}),
    "boosting": (
        GradientBoostingRegressor,
        {"n_estimators": 150, "learning_rate": 0.05, "max_depth": 3, "random_state": 0},
    ),
}


def train_all() -> list[str]:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=42)
    keel.set_experiment(EXPERIMENT)
    run_ids = []
    for name, (estimator, params) in CANDIDATES.items():
        with keel.start_run(name=name, tags={"dataset": "sklearn-diabetes"}) as run:
            keel.log_params(
                {
                    "model": estimator.__name__,
                    **params,
                    "n_train": len(X_train),
                    "n_test": len(X_test),
                }
            )
            model = estimator(**params).fit(X_train, y_train)
            if hasattr(model, "staged_predict"):  # a learning curve: one point per stage
                for step, pred in enumerate(model.staged_predict(X_test)):
                    keel.log_metric(
                        "test_rmse", float(np.sqrt(mean_squared_error(y_test, pred))), step=step
                    )
            pred = model.predict(X_test)
            keel.log_metrics(
                {
                    "rmse": float(np.sqrt(mean_squared_error(y_test, pred))),
                    "mae": float(mean_absolute_error(y_test, pred)),
                    "r2": float(r2_score(y_test, pred)),
                }
            )
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.pkl"
                path.write_bytes(pickle.dumps(model))
                keel.log_artifact(path, artifact_path="model")
            fig, ax = plt.subplots(figsize=(4, 4))
            ax.scatter(y_test, pred, s=8)
            ax.plot([y.min(), y.max()], [y.min(), y.max()], color="grey", linewidth=1)
            ax.set(xlabel="actual", ylabel="predicted", title=name)
            keel.log_figure(fig, "plots/predicted_vs_actual.png")
            plt.close(fig)
            keel.log_table(X_test.assign(actual=y_test, predicted=pred), "predictions.parquet")
            run_ids.append(run.run_id)
            print(f"  {name:<14} rmse={keel.get_run(run.run_id).metrics['rmse']:.2f}")
    return run_ids


def keel_cli(*args: str) -> None:
    print(f"\n$ keel {' '.join(a if ' ' not in a else repr(a) for a in args)}", flush=True)
    subprocess.run([sys.executable, "-m", "keel", *args], check=True)


def main() -> None:
    print(f"Training {len(CANDIDATES)} models on the diabetes data, tracked by Keel:")
    train_all()
    best = keel.search_runs(order_by=["metrics.rmse"], max_results=2, experiment_names=[EXPERIMENT])
    keel_cli(
        "runs",
        "search",
        "metrics.rmse < 60 and params.model IN ('Ridge', "
        "'RandomForestRegressor', 'GradientBoostingRegressor')",
        "-e",
        EXPERIMENT,
        "-o",
        "metrics.rmse",
    )
    keel_cli("runs", "compare", best[0].run_id[:8], best[1].run_id[:8])
    print(
        f"\nBest model: {best[0].run_name} (rmse {best[0].metrics['rmse']:.2f}). "
        "Export every run with: keel runs export --format csv --output runs.csv"
    )


if __name__ == "__main__":
    main()
