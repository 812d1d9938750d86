"""``keel batch-predict`` (local engine) against raw ``model.predict`` on the same chunks.

A 100-tree RandomForestRegressor is fitted on scikit-learn's diabetes data, logged and
registered in a temporary Keel home; ``--rows`` rows are drawn from the diabetes table with
replacement (plus an ``id`` column) and written as Parquet (and CSV). Then, alternating, with the
median of ``--repeats``:

- raw: the input already in memory as DataFrames of ``--chunk-rows`` rows, each given to the
  fitted forest's ``predict`` (the floor: no reading, checking or writing);
- keel: ``keel.serving.batch.batch_predict`` from the file to a Parquet file, keeping ``id``
  (model loading, schema checks, reading, signature checks, scoring and writing all timed).

Usage::

    python benchmarks/batch_predict.py                   # 1,000,000 rows, 3 repeats
    python benchmarks/batch_predict.py --rows 200000 --repeats 1 --csv --ray
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--csv", action="store_true", help="also score the same rows as CSV")
    parser.add_argument("--ray", action="store_true", help="also run the Ray engine (once)")
    parser.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/)")
    parser.add_argument("--report", type=Path, help="print the table of a saved JSON; no run")
    args = parser.parse_args()
    if args.report:
        report(json.loads(args.report.read_text()))
        return
    with tempfile.TemporaryDirectory(prefix="keel-batch-bench-") as tmp:
        results = run(Path(tmp), args)
    report(results)
    out = args.out or RESULTS / f"batch-{datetime.now(UTC):%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out}")


def run(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    for name in [name for name in os.environ if name.startswith("KEEL_")]:
        del os.environ[name]
    os.environ["KEEL_HOME"] = str(tmp / ".keel")
    os.environ["KEEL_CAPTURE_SOURCE"] = "false"
    forest, uri, features = _register_forest()
    data = _rows(args.rows, features)
    parquet = tmp / "rows.parquet"
    data.to_parquet(parquet, index=False)
    chunks = [
        data[features].iloc[start : start + args.chunk_rows]
        for start in range(0, len(data), args.chunk_rows)
    ]
    sources = {"parquet": parquet}
    if args.csv:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        sources["csv"] = tmp / "rows.csv"
        pcsv.write_csv(pa.Table.from_pandas(data, preserve_index=False), sources["csv"])
    from keel.serving.batch import batch_predict

    sides = ["raw", *sources]
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(args.repeats):
        order = sides[repeat % len(sides) :] + sides[: repeat % len(sides)]  # rotate: fair load
        for name in order:
            began, began_cpu = time.perf_counter(), time.process_time()
            if name == "raw":
                _raw(forest, chunks)
            else:
                output = tmp / f"out-{name}.parquet"
                result = batch_predict(
                    uri,
                    str(sources[name]),
                    str(output),
                    chunk_rows=args.chunk_rows,
                    keep=["id"],
                    overwrite=True,
                )
                assert result.rows == args.rows
            times[name].append(time.perf_counter() - began)
            cpu[name].append(time.process_time() - began_cpu)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    _check(forest, data, features, tmp / "out-parquet.parquet")
    ray_seconds = _ray(uri, parquet, tmp, args) if args.ray else None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "rows": args.rows,
        "chunk_rows": args.chunk_rows,
        "repeats": args.repeats,
        "model": "RandomForestRegressor(n_estimators=100, random_state=0), diabetes",
        "seconds": times,
        "cpu_seconds": cpu,
        "median_seconds": {name: statistics.median(values) for name, values in times.items()},
        "median_cpu_seconds": {name: statistics.median(values) for name, values in cpu.items()},
        # keel's rows/s over raw's in the same repeat (run next to each other: same load)
        "paired_ratio": {
            name: statistics.median(r / k for r, k in zip(times["raw"], times[name], strict=True))
            for name in sources
        },
        "ray_seconds": ray_seconds,
    }


def _register_forest() -> tuple[Any, str, list[str]]:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    import keel
    import keel.models
    from keel.models import api

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    forest = RandomForestRegressor(n_estimators=100, random_state=0).fit(X, y)
    with keel.start_run():
        logged = keel.models.log_model(forest, input_example=X.head(5))
    api.register(logged.uri, "diabetes")
    api.set_alias("diabetes", "champion", 1)
    return forest, "models:/diabetes@champion", list(X.columns)


def _rows(n: int, features: list[str]) -> Any:
    import numpy as np
    from sklearn.datasets import load_diabetes

    X, _ = load_diabetes(return_X_y=True, as_frame=True)
    data = X.sample(n, replace=True, random_state=0).reset_index(drop=True)
    data.insert(0, "id", np.arange(n, dtype="int64"))
    return data


def _raw(forest: Any, chunks: list[Any]) -> float:
    began = time.perf_counter()
    for chunk in chunks:
        forest.predict(chunk)
    return time.perf_counter() - began


def _check(forest: Any, data: Any, features: list[str], output: Path) -> None:
    """The benchmark's own output must be the forest's predictions, row for row."""
    import numpy as np
    import pandas as pd

    out = pd.read_parquet(output)
    sample = np.random.default_rng(0).choice(len(data), size=min(len(data), 20_000))
    np.testing.assert_array_equal(
        out["prediction"].to_numpy()[sample], forest.predict(data[features].iloc[sample])
    )
    assert out["id"].tolist() == data["id"].tolist()


def _ray(uri: str, parquet: Path, tmp: Path, args: argparse.Namespace) -> float:
    import ray

    from keel.serving.batch import batch_predict
    from keel.serving.batch_ray import MODEL_CACHE

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        began = time.perf_counter()
        result = batch_predict(
            uri,
            str(parquet),
            str(tmp / "out-ray.parquet"),
            engine="ray",
            chunk_rows=args.chunk_rows,
            keep=["id"],
        )
        seconds = time.perf_counter() - began
    finally:
        ray.shutdown()
    # the actors' copy of the model (see keel.serving.batch_ray)
    shutil.rmtree(Path(tempfile.gettempdir()) / MODEL_CACHE / result.model_digest)
    return seconds


def _machine() -> dict[str, Any]:
    import pyarrow
    import sklearn

    cpu = next(
        (line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if "model name" in line),
        platform.processor(),
    )
    load = os.getloadavg()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "pyarrow": pyarrow.__version__,
        "load_average_1m_at_end": round(load[0], 2),
    }


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def report(results: dict[str, Any]) -> None:
    """The Markdown table: rows/s of each side's fastest run (the least disturbed by other
    load), its paired ratio to raw predict (the median over repeats of keel's rows/s over raw's
    in the same repeat, run next to each other) and the median CPU seconds."""
    rows, seconds, cpu = results["rows"], results["seconds"], results["median_cpu_seconds"]
    print("\n| what | rows/s (best run) | of raw predict (paired) | CPU s |\n|---|---|---|---|")
    print(
        f"| raw `model.predict` on in-memory chunks (floor) | {rows / min(seconds['raw']):,.0f} "
        f"| 100% | {cpu['raw']:.1f} |"
    )
    for name, ratio in results["paired_ratio"].items():
        print(
            f"| `keel batch-predict`, {name} file to Parquet | {rows / min(seconds[name]):,.0f} "
            f"| {ratio:.0%} | {cpu[name]:.1f} |"
        )
    if results["ray_seconds"] is not None:
        rate = rows / results["ray_seconds"]
        print(f"| `keel batch-predict --engine ray`, parquet (one run) | {rate:,.0f} | | |")


if __name__ == "__main__":
    main()
