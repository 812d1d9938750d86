"""``keel batch-predict --engine ray`` on a real local Ray (started once for the module: it takes
10-20 s): the same rows, order and predictions as the local engine, the model shipped to the
actors through the object store, and errors that name the file."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from keel.errors import InvalidInput, SchemaMismatch
from keel.serving.batch import batch_predict
from keel.serving.batch_ray import MODEL_CACHE
from tests.conftest import run_main
from tests.serving.test_batch import Model, patients, write
from tests.serving.test_batch import model as model  # the fixture

ray = pytest.importorskip("ray")

pytestmark = [
    pytest.mark.slow,
    # Ray 2.60's DataContext trips its own deprecation warnings on its own defaults
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
]


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def worker_cache(model: Model) -> Iterator[Path]:
    """Where the actors write the model's files (on this machine, the shared tmp); removed."""
    folder = Path(tempfile.gettempdir()) / MODEL_CACHE / model.digest
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def both_engines(model: Model, source: Path, tmp_path: Path, **kwargs: object) -> pd.DataFrame:
    """Score ``source`` on each engine; assert the two Parquet files hold identical rows,
    schemas and model metadata; return the rows."""
    outputs = {}
    for engine in ("local", "ray"):
        output = tmp_path / f"{engine}.parquet"
        result = batch_predict(model.uri, str(source), str(output), engine=engine, **kwargs)  # type: ignore[arg-type]
        assert result.engine == engine
        outputs[engine] = pq.read_table(output)
    local, on_ray = outputs["local"], outputs["ray"]
    assert on_ray.schema.metadata.keys() == local.schema.metadata.keys()
    for key, value in local.schema.metadata.items():
        if key != b"keel.created_at":
            assert on_ray.schema.metadata[key] == value
    assert on_ray.replace_schema_metadata(None).equals(local.replace_schema_metadata(None))
    return on_ray.to_pandas()


def test_a_folder_of_parquet_files_scores_identically_to_the_local_engine(
    model: Model, tmp_path: Path, worker_cache: Path
) -> None:
    parts = {f"part-{i}.parquet": patients(300 + 50 * i, seed=i) for i in range(4)}
    for name, frame in parts.items():
        write(frame, tmp_path / "in" / name)
    out = both_engines(model, tmp_path / "in", tmp_path, keep=["id"], chunk_rows=97)
    expected = pd.concat([parts[name] for name in sorted(parts)], ignore_index=True)
    assert out["id"].tolist() == expected["id"].tolist()
    np.testing.assert_array_equal(out["prediction"], model.predict(expected))
    # the actors loaded the model from the files the driver put in the object store
    assert (worker_cache / "keel-model.json").is_file()


def test_a_csv_file_scores_identically_to_the_local_engine(model: Model, tmp_path: Path) -> None:
    data = patients(2_000, seed=5)
    source = write(data, tmp_path / "patients.csv")
    out = both_engines(model, source, tmp_path, keep_all=True, chunk_rows=450)
    assert list(out.columns) == [*data.columns, "prediction"]
    np.testing.assert_allclose(out["prediction"], model.predict(pd.read_csv(source)))


def test_a_chunk_the_model_refuses_names_its_file(model: Model, tmp_path: Path) -> None:
    write(patients(100, seed=1), tmp_path / "in" / "a.parquet")
    bad = patients(100, seed=2)
    bad.loc[40, "bmi"] = np.inf
    write(bad, tmp_path / "in" / "b.parquet")
    output = tmp_path / "out.parquet"
    with pytest.raises(InvalidInput) as raised:
        batch_predict(model.uri, str(tmp_path / "in"), str(output), engine="ray")
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'in' / 'b.parquet'} (100 rows): the model refused")
    assert not output.exists()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".keel", "in"]  # the home and the input: no temporary file left


def test_a_missing_column_fails_before_ray_is_asked(model: Model, tmp_path: Path) -> None:
    source = write(patients(50).drop(columns=["sex"]), tmp_path / "in.parquet")
    with pytest.raises(SchemaMismatch, match="column 'sex' is missing"):
        batch_predict(model.uri, str(source), str(tmp_path / "o.parquet"), engine="ray")


def test_the_cli_runs_the_ray_engine_with_a_progress_bar(
    model: Model, tmp_path: Path, cli: CliRunner
) -> None:
    data = patients(1_000, seed=3)
    source = write(data, tmp_path / "in.parquet")
    args = ["batch-predict", model.uri, "-i", str(source), "-o", str(tmp_path / "o.parquet")]
    result = run_main(cli, [*args, "--engine", "ray", "--keep", "id", "--progress"])
    assert result.exit_code == 0, result.output
    assert "Scored 1,000 rows from 1 file with diabetes version 1" in result.stdout
    assert "1,000 rows" in result.stderr
    assert "rows/s" in result.stderr
    out = pd.read_parquet(tmp_path / "o.parquet")
    assert out["id"].tolist() == data["id"].tolist()
    np.testing.assert_array_equal(out["prediction"], model.predict(data))
