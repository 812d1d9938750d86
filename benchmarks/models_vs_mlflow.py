"""Keel's models vs MLflow's, in one run: log + register + load of a scikit-learn Pipeline, and
the cost of the loaded model's checked ``predict`` over the bare Pipeline's.

Run by hand from the repository root::

    python benchmarks/models_vs_mlflow.py [--reps 6] [--report FILE]

Each tool runs ``_models_side.py`` in its own interpreter (MLflow in ``benchmarks/.venvs/mlflow``,
made as ``tracking_vs_mlflow.py`` makes it) in a fresh temporary folder holding its SQLite
database and artifacts. Both fit the same Pipelines (StandardScaler + 100-tree random forest on
the diabetes data, one random_state per repetition so every log writes new bytes). A cycle is
``log_model`` in a run (with a 5-row input example), ``register``, ``load`` of ``models:/NAME/V``
into an empty folder, and one 5-row predict. The first cycle of each process includes one-time
costs (database creation, lazy imports) and is reported apart; the figure compared is the
median of the others. Predict overhead: median of 200 calls on 1 row and 40 on 10,000 rows,
loaded model and bare Pipeline called alternately in the same process.

Results go to ``benchmarks/results/models-<date>.json`` and print as Markdown for
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _report import machine
from tracking_vs_mlflow import KEEL_PYTHON, MLFLOW_PYTHON, ensure_mlflow_venv, side_env

HERE = Path(__file__).resolve().parent
SIDE = HERE / "_models_side.py"
RESULTS = HERE / "results"
CYCLE_GOAL = 3.0  # Keel at least 3x faster end to end
PREDICT_GOAL = 0.10  # checked predict < 10% over the bare model on 10,000 rows


def run_side(tool: str, reps: int) -> dict[str, Any]:
    python = MLFLOW_PYTHON if tool == "mlflow" else KEEL_PYTHON
    with tempfile.TemporaryDirectory(prefix=f"bench-models-{tool}-") as tmp:
        done = subprocess.run(
            [str(python), str(SIDE), tool, str(reps)],
            cwd=tmp,
            env=side_env(tool, Path(tmp)),
            capture_output=True,
            text=True,
            timeout=3600,
        )
    if done.returncode != 0:
        sys.exit(f"{tool} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensure_sklearn_for_mlflow() -> None:
    """mlflow.sklearn needs scikit-learn in MLflow's virtualenv (full mlflow usually has it)."""
    check = subprocess.run([str(MLFLOW_PYTHON), "-c", "import sklearn"], capture_output=True)
    if check.returncode != 0:
        uv = Path(sys.executable).parent / "uv"
        subprocess.run(
            [str(uv), "pip", "install", "--python", str(MLFLOW_PYTHON), "scikit-learn"],
            check=True,
        )


def markdown(result: dict[str, Any]) -> str:
    keel, mlflow = result["keel"], result["mlflow"]
    ratio = mlflow["cycle_median_s"] / keel["cycle_median_s"]
    lines = [
        "| measure | MLflow | Keel | ratio | goal |",
        "|---|---|---|---|---|",
        f"| log + register + load + predict (median cycle) | {mlflow['cycle_median_s']:.3f} s "
        f"| {keel['cycle_median_s']:.3f} s | {ratio:.1f}x faster | >= {CYCLE_GOAL:.0f}x, "
        f"{'**met**' if ratio >= CYCLE_GOAL else 'missed'} |",
        f"| first cycle in a process | {mlflow['first_cycle_s']:.3f} s "
        f"| {keel['first_cycle_s']:.3f} s | {mlflow['first_cycle_s'] / keel['first_cycle_s']:.1f}x "
        "| |",
        f"| imports (numpy, pandas, sklearn, the tool) | {mlflow['import_s']:.3f} s "
        f"| {keel['import_s']:.3f} s "
        f"| {mlflow['import_s'] / keel['import_s']:.1f}x | |",
    ]
    for rows, key in (("1 row", "1"), ("10,000 rows", "10k")):
        cells = []
        for side in (mlflow, keel):
            bare, tool = side["predict_s"][f"bare_{key}"], side["predict_s"][f"tool_{key}"]
            cells.append(f"{tool * 1000:.2f} ms ({(tool / bare - 1) * 100:+.1f}% over "
                         f"{bare * 1000:.2f} ms bare)")  # fmt: skip
        overhead = keel["predict_s"][f"tool_{key}"] / keel["predict_s"][f"bare_{key}"] - 1
        goal = ""
        if key == "10k":
            goal = f"< {PREDICT_GOAL:.0%}, {'**met**' if overhead < PREDICT_GOAL else 'missed'}"
        lines.append(f"| loaded predict, {rows} | {cells[0]} | {cells[1]} | | {goal} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reps", type=int, default=6, help="cycles per tool (first reported apart)"
    )
    parser.add_argument("--report", type=Path, help="print the table of a saved results JSON")
    args = parser.parse_args()
    if args.report:
        print(markdown(json.loads(args.report.read_text())))
        return
    ensure_mlflow_venv()
    ensure_sklearn_for_mlflow()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_start": os.getloadavg(),
    }
    for tool in ("mlflow", "keel"):
        result[tool] = run_side(tool, args.reps)
        print(tool, json.dumps(result[tool]), flush=True)
    result["load_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"models-{datetime.now(UTC).strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['date']}; load {result['load_start']} -> {result['load_end']}\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
