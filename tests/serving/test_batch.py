"""``keel batch-predict`` on the local engine: a real random forest logged and registered in a
tmp home scores real CSV and Parquet files (and folders of them) into Parquet, compared with the
model's own ``predict``; errors name the file and rows; memory is measured in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import keel
import keel.models
from keel.errors import AlreadyExists, InvalidInput, NotFound, SchemaMismatch
from keel.models import api
from keel.serving.batch import batch_predict
from tests.conftest import run_main
from tests.models.training import diabetes


@dataclass
class Model:
    uri: str
    sklearn: object
    digest: str
    run_id: str

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        X, _ = diabetes()
        return self.sklearn.predict(frame[list(X.columns)])  # type: ignore[attr-defined]


@pytest.fixture
def model(home: Path) -> Model:
    """A 10-tree forest on diabetes, registered as ``diabetes`` v1 @champion."""
    from sklearn.ensemble import RandomForestRegressor

    X, y = diabetes()
    forest = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y)
    with keel.start_run():
        logged = keel.models.log_model(forest, input_example=X.head(3))
    version = api.register(logged.uri, "diabetes")
    api.set_alias("diabetes", "champion", 1)
    assert version.run_id is not None
    return Model("models:/diabetes@champion", forest, version.digest, version.run_id)


def patients(n: int = 442, *, seed: int = 0) -> pd.DataFrame:
    """``n`` diabetes rows (resampled when more than 442) with an ``id`` column first."""
    X, _ = diabetes()
    if n != len(X):
        X = X.sample(n, replace=True, random_state=seed).reset_index(drop=True)
    X.insert(0, "id", np.arange(n, dtype="int64") + seed * 1_000_000)
    return X


def write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
@pytest.mark.parametrize("chunk_rows", [100, 442, 1000, 7])
def test_every_row_gets_the_models_own_prediction_in_order(
    model: Model, tmp_path: Path, suffix: str, chunk_rows: int
) -> None:
    data = patients()
    source = write(data, tmp_path / f"patients{suffix}")
    result = batch_predict(
        model.uri, str(source), str(tmp_path / "scores.parquet"), keep=["id"], chunk_rows=chunk_rows
    )
    out = pd.read_parquet(tmp_path / "scores.parquet")
    assert list(out.columns) == ["id", "prediction"]
    assert out["id"].tolist() == data["id"].tolist()
    expected = model.predict(pd.read_csv(source) if suffix == ".csv" else data)
    np.testing.assert_array_equal(out["prediction"].to_numpy(), expected)
    assert (result.rows, result.files, result.model_version) == (442, 1, 1)
    # each chunk is one row group: the file was written chunk by chunk
    row_groups = pq.ParquetFile(tmp_path / "scores.parquet").metadata.num_row_groups
    assert row_groups == -(-442 // chunk_rows)


def test_without_keep_the_output_is_the_predictions_only(model: Model, tmp_path: Path) -> None:
    source = write(patients(), tmp_path / "in.parquet")
    batch_predict(model.uri, str(source), str(tmp_path / "out.parquet"))
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out.columns) == ["prediction"]
    np.testing.assert_array_equal(out["prediction"], model.predict(patients()))


def test_keep_all_copies_every_input_column(model: Model, tmp_path: Path) -> None:
    data = patients()
    data["note"] = "x"
    source = write(data, tmp_path / "in.parquet")
    batch_predict(model.uri, str(source), str(tmp_path / "out.parquet"), keep_all=True)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out.columns) == [*data.columns, "prediction"]
    pd.testing.assert_frame_equal(out[list(data.columns)], data)


def test_a_folder_is_read_recursively_in_sorted_order(model: Model, tmp_path: Path) -> None:
    folder = tmp_path / "lake"
    parts = {
        "b/2.parquet": patients(50, seed=3),
        "a.parquet": patients(30, seed=1),
        "b/1.parquet": patients(40, seed=2),
    }
    for name, frame in parts.items():
        write(frame, folder / name)
    write(patients(5, seed=9), folder / ".hidden.parquet")
    write(patients(5, seed=8), folder / "_tmp" / "x.parquet")
    (folder / "_SUCCESS").write_text("")
    (folder / "README.txt").write_text("not data")
    result = batch_predict(
        model.uri, str(folder), str(tmp_path / "out.parquet"), keep=["id"], chunk_rows=16
    )
    expected = pd.concat([parts[name] for name in sorted(parts)], ignore_index=True)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out["id"].tolist() == expected["id"].tolist()
    np.testing.assert_array_equal(out["prediction"], model.predict(expected))
    assert (result.files, result.rows) == (3, 120)


def test_a_folder_of_csv_files_and_a_file_url(model: Model, tmp_path: Path) -> None:
    first, second = patients(60, seed=1), patients(25, seed=2)
    write(first, tmp_path / "in" / "day=1.csv")
    write(second, tmp_path / "in" / "day=2.csv")
    batch_predict(
        model.uri,
        (tmp_path / "in").as_uri(),
        (tmp_path / "out.parquet").as_uri(),
        keep=["id"],
        chunk_rows=50,
    )
    out = pd.read_parquet(tmp_path / "out.parquet")
    both = pd.concat([first, second], ignore_index=True)
    assert out["id"].tolist() == both["id"].tolist()
    np.testing.assert_allclose(out["prediction"], model.predict(both))


def test_an_fsspec_memory_url_in_and_out(model: Model) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    with fs.open("/batch-test/in.parquet", "wb") as f:
        patients().to_parquet(f, index=False)
    try:
        batch_predict(model.uri, "memory://batch-test/in.parquet", "memory://out/s.parquet")
        with fs.open("/out/s.parquet", "rb") as f:
            out = pd.read_parquet(f)
        np.testing.assert_array_equal(out["prediction"], model.predict(patients()))
        assert fs.ls("/out", detail=False) == ["/out/s.parquet"]  # no temporary file left
    finally:
        fs.rm("/batch-test", recursive=True)
        if fs.exists("/out"):
            fs.rm("/out", recursive=True)


def test_the_model_is_recorded_in_the_parquet_metadata(model: Model, tmp_path: Path) -> None:
    source = write(patients(), tmp_path / "in.parquet")
    batch_predict(model.uri, str(source), str(tmp_path / "out.parquet"))
    raw = pq.read_schema(tmp_path / "out.parquet").metadata
    metadata = {key.decode(): value.decode() for key, value in raw.items()}
    assert metadata["keel.model_uri"] == "models:/diabetes@champion"
    assert metadata["keel.model_name"] == "diabetes"
    assert metadata["keel.model_version"] == "1"
    assert metadata["keel.model_digest"] == model.digest
    assert metadata["keel.model_run_id"] == model.run_id
    assert metadata["keel.input"] == str(source)
    created = datetime.fromisoformat(metadata["keel.created_at"])
    assert created.tzinfo is not None
    assert abs((datetime.now(created.tzinfo) - created).total_seconds()) < 300


def test_a_runs_uri_records_no_registered_version(model: Model, tmp_path: Path) -> None:
    source = write(patients(), tmp_path / "in.parquet")
    uri = f"runs:/{model.run_id}/model"
    result = batch_predict(uri, str(source), str(tmp_path / "out.parquet"))
    metadata = pq.read_schema(tmp_path / "out.parquet").metadata
    assert metadata[b"keel.model_uri"] == uri.encode()
    assert b"keel.model_version" not in metadata
    assert (result.model_name, result.model_version, result.model_digest) == (
        None,
        None,
        model.digest,
    )


def test_an_existing_output_is_refused_unless_overwrite(model: Model, tmp_path: Path) -> None:
    source = write(patients(), tmp_path / "in.parquet")
    output = tmp_path / "out.parquet"
    output.write_bytes(b"precious")
    with pytest.raises(AlreadyExists, match="--overwrite"):
        batch_predict(model.uri, str(source), str(output))
    assert output.read_bytes() == b"precious"
    batch_predict(model.uri, str(source), str(output), overwrite=True)
    assert len(pd.read_parquet(output)) == 442


def test_a_failed_job_leaves_no_file_and_keeps_the_old_one(model: Model, tmp_path: Path) -> None:
    data = patients()
    data.loc[250, "bmi"] = np.inf  # the forest refuses infinity: the third chunk of 100 fails
    source = write(data, tmp_path / "in.parquet")
    output = tmp_path / "out" / "scores.parquet"
    with pytest.raises(InvalidInput) as raised:
        batch_predict(model.uri, str(source), str(output), chunk_rows=100)
    assert f"{source} rows 200-299: the model refused the input" in str(raised.value)
    assert not output.exists()
    assert list(output.parent.iterdir()) == []  # no temporary file either
    write(patients(3), output)
    with pytest.raises(InvalidInput):
        batch_predict(model.uri, str(source), str(output), chunk_rows=100, overwrite=True)
    assert len(pd.read_parquet(output)) == 3
    assert sorted(p.name for p in output.parent.iterdir()) == ["scores.parquet"]


def test_a_missing_column_fails_before_any_row_naming_the_file(
    model: Model, tmp_path: Path
) -> None:
    write(patients(30), tmp_path / "in" / "a.parquet")
    write(patients(30).drop(columns=["bmi"]), tmp_path / "in" / "b.parquet")
    with pytest.raises(SchemaMismatch) as raised:
        batch_predict(model.uri, str(tmp_path / "in"), str(tmp_path / "out.parquet"))
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'in' / 'b.parquet'}: column 'bmi' is missing")
    assert raised.value.context["column"] == "bmi"
    assert not (tmp_path / "out.parquet").exists()


def test_a_wrong_type_names_the_column(model: Model, tmp_path: Path) -> None:
    data = patients(20)
    data["age"] = "forty"
    source = write(data, tmp_path / "in.parquet")
    with pytest.raises(SchemaMismatch, match="column 'age' should hold float"):
        batch_predict(model.uri, str(source), str(tmp_path / "out.parquet"))


def test_a_csv_value_that_does_not_parse_names_the_file_and_rows(
    model: Model, tmp_path: Path
) -> None:
    data = patients(60_000).astype({"age": "object"})
    data.loc[50_000, "age"] = "forty"  # past the first block (4 MiB), read while scoring
    source = write(data, tmp_path / "in.csv")
    with pytest.raises(InvalidInput) as raised:
        batch_predict(model.uri, str(source), str(tmp_path / "out.parquet"), chunk_rows=1000)
    message = str(raised.value)
    assert message.startswith(f"cannot read {source} as CSV (at or after row ")
    assert 0 < raised.value.context["row"] <= 50_000
    assert "invalid value 'forty'" in message
    assert not (tmp_path / "out.parquet").exists()


def test_a_float_column_whose_first_csv_block_holds_integers_stays_float(
    model: Model, tmp_path: Path
) -> None:
    """pyarrow infers a CSV column's type from the first block: an ``age`` written "1" for the
    first 40,000 rows would become int64 and fail on "0.038..." later; the signature says float."""
    data = patients(60_000)
    ages = [1] * 40_000 + data["age"].iloc[40_000:].tolist()
    data["age"] = pd.Series(ages, dtype=object)  # written "1", then "0.038..."
    source = write(data, tmp_path / "in.csv")
    assert source.read_text().splitlines()[1].split(",")[1] == "1"
    batch_predict(model.uri, str(source), str(tmp_path / "out.parquet"), chunk_rows=10_000)
    out = pd.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_allclose(out["prediction"], model.predict(pd.read_csv(source)))


@pytest.mark.parametrize(
    ("setup", "error", "named"),
    [
        (lambda p: None, NotFound, "does not exist"),
        (lambda p: (p / "in.parquet").write_bytes(b"PAR1 not really"), InvalidInput, "Parquet"),
        (lambda p: (p / "in.parquet").mkdir(), InvalidInput, "holds no CSV or Parquet file"),
    ],
    ids=["missing", "corrupt", "empty-folder"],
)
def test_unreadable_inputs_are_clear_errors(
    model: Model, tmp_path: Path, setup: object, error: type, named: str
) -> None:
    setup(tmp_path)  # type: ignore[operator]
    with pytest.raises(error, match=named):
        batch_predict(model.uri, str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"))


def test_mixed_formats_in_a_folder_are_refused(model: Model, tmp_path: Path) -> None:
    write(patients(10), tmp_path / "in" / "a.csv")
    write(patients(10), tmp_path / "in" / "b.parquet")
    with pytest.raises(InvalidInput, match="mixes CSV and Parquet"):
        batch_predict(model.uri, str(tmp_path / "in"), str(tmp_path / "out.parquet"))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"keep": ["patient"]}, "has no column 'patient' to keep"),
        ({"keep": ["id"], "keep_all": True}, "not both"),
        ({"chunk_rows": 0}, "at least 1"),
        ({"engine": "spark"}, "unknown engine"),
        ({"keep": "id"}, "list of column names"),
    ],
)
def test_bad_arguments_are_refused(
    model: Model, tmp_path: Path, kwargs: dict[str, object], named: str
) -> None:
    source = write(patients(10), tmp_path / "in.parquet")
    with pytest.raises(InvalidInput, match=named):
        batch_predict(model.uri, str(source), str(tmp_path / "out.parquet"), **kwargs)  # type: ignore[arg-type]


def test_a_kept_column_named_prediction_is_refused(model: Model, tmp_path: Path) -> None:
    data = patients(10)
    data["prediction"] = 1.0
    source = write(data, tmp_path / "in.parquet")
    with pytest.raises(InvalidInput, match="clash with the output's prediction"):
        batch_predict(model.uri, str(source), str(tmp_path / "out.parquet"), keep_all=True)


def test_the_output_may_not_be_inside_the_input_folder(model: Model, tmp_path: Path) -> None:
    write(patients(10), tmp_path / "in" / "a.parquet")
    with pytest.raises(InvalidInput, match="inside the input"):
        batch_predict(model.uri, str(tmp_path / "in"), str(tmp_path / "in" / "out.parquet"))


def test_a_multi_output_model_writes_one_list_per_row(home: Path, tmp_path: Path) -> None:
    from sklearn.neighbors import KNeighborsRegressor

    X, y = diabetes()
    targets = np.column_stack([y, y * 2])
    knn = KNeighborsRegressor(n_neighbors=3).fit(X, targets)
    with keel.start_run():
        logged = keel.models.log_model(knn, input_example=X.head(3))
    source = write(X, tmp_path / "in.parquet")
    batch_predict(logged.uri, str(source), str(tmp_path / "out.parquet"), chunk_rows=100)
    out = pd.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_allclose(np.stack(out["prediction"].to_numpy()), knn.predict(X))


def test_the_cli_scores_and_says_what_it_did(model: Model, tmp_path: Path, cli: CliRunner) -> None:
    source = write(patients(), tmp_path / "in.csv")
    args = ["batch-predict", model.uri, "-i", str(source), "-o", str(tmp_path / "out.parquet")]
    result = run_main(cli, [*args, "--keep", "id", "--chunk-rows", "100", "--progress"])
    assert result.exit_code == 0, result.output
    assert "Scored 442 rows from 1 file with diabetes version 1" in result.stdout
    assert "rows/s" in result.stderr  # the progress bar: rows and rows/s
    assert "442 rows" in result.stderr
    out = pd.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_allclose(out["prediction"], model.predict(patients()))
    again = run_main(cli, [*args, "--overwrite", "--json"])
    assert again.exit_code == 0, again.output
    body = json.loads(again.stdout)
    assert (body["rows"], body["model_version"], body["engine"]) == (442, 1, "local")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.drop(columns=["bmi"]), "column 'bmi' is missing"),
        (lambda d: d.assign(age="forty"), "invalid value 'forty'"),
    ],
    ids=["missing-column", "bad-value"],
)
def test_cli_errors_are_one_red_line(
    model: Model, tmp_path: Path, cli: CliRunner, change: object, named: str
) -> None:
    source = write(change(patients()), tmp_path / "in.csv")  # type: ignore[operator]
    result = run_main(
        cli, ["batch-predict", model.uri, "-i", str(source), "-o", str(tmp_path / "o.parquet")]
    )
    assert result.exit_code == 1
    assert named in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_cli_refuses_a_missing_input_and_an_existing_output(
    model: Model, tmp_path: Path, cli: CliRunner
) -> None:
    missing = run_main(cli, ["batch-predict", model.uri, "-i", "nope.csv", "-o", "o.parquet"])
    assert missing.exit_code == 1
    assert "the input nope.csv does not exist" in missing.stderr
    source = write(patients(10), tmp_path / "in.parquet")
    (tmp_path / "o.parquet").write_bytes(b"old")
    exists = run_main(cli, ["batch-predict", model.uri, "-i", str(source), "-o", "o.parquet"])
    assert exists.exit_code == 1
    assert "exists; pass --overwrite" in exists.stderr
    assert len(exists.stderr.strip().splitlines()) == 1


_MEASURE = """
import sys
from keel.serving.batch import batch_predict

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

uri, small, big, out, chunk = sys.argv[1:6]
batch_predict(uri, small, out + ".small.parquet", chunk_rows=int(chunk), keep=["id"])
before = peak_mb()
result = batch_predict(uri, big, out, chunk_rows=int(chunk), keep=["id"])
print(result.rows, before, peak_mb())
"""


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_memory_stays_bounded_on_a_file_much_larger_than_a_chunk(
    model: Model, tmp_path: Path, suffix: str
) -> None:
    """Peak RSS (VmHWM) of a subprocess grows by a bounded amount, not with the input: 3M rows
    of 11 columns are 252 MB as Arrow (reading the Parquet file whole with pandas grows the
    peak by 623 MB), a chunk of 20,000 rows 1.7 MB. Measured: 28 MB (Parquet), 66 MB (CSV,
    whose pyarrow reader buffers about 37 MB ahead)."""
    rows = 3_000_000
    big = _write_fast(patients(rows), tmp_path / f"big{suffix}")
    small = write(patients(20_000, seed=1), tmp_path / f"small{suffix}")
    output = tmp_path / "out.parquet"
    args = [model.uri, str(small), str(big), str(output), "20000"]
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MEASURE), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
        check=False,
    )
    big.unlink()
    assert done.returncode == 0, done.stderr
    scored, before, after = done.stdout.split()
    assert int(scored) == rows
    growth = float(after) - float(before)
    in_memory = rows * 11 * 8 / 2**20
    assert growth < 100, f"peak RSS grew {growth:.0f} MB scoring {in_memory:.0f} MB of rows"
    assert pq.ParquetFile(output).metadata.num_rows == rows


def _write_fast(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` written by pyarrow (pandas' to_csv takes half a minute for 3M rows)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if path.suffix == ".csv":
        pcsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path
