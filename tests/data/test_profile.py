"""Table profiles: statistics against numpy/pandas, sketches within their error, streaming
memory, empty and malformed input, mixed-type CSV columns, and drift between profiles."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from keel.data import table_io
from keel.data.profile import JS_SHIFTED, PSI_SHIFTED, diff_profiles, profile_table
from keel.data.profile_models import ColumnProfile, TableProfile
from keel.errors import InvalidInput

RANK_ERROR = 0.0175  # KLL k=200: 1.65% normalized rank error (99% confidence)


def _frame(n: int = 20_000, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x": rng.normal(10 + shift, 2, n),
            "i": rng.integers(0, 50, n),
            "c": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]),
            "flag": rng.random(n) < 0.25,
            "t": pd.date_range("2024-01-01", periods=n, freq="min"),
            "empty": [None] * n,
        }
    )
    frame.loc[::10, "x"] = np.nan
    return frame


def _rank(values: np.ndarray, q: float) -> float:
    return float((values <= q).mean())


def _check_numeric(column: ColumnProfile, values: pd.Series) -> None:
    present = values.dropna().to_numpy(dtype=float)
    assert column.kind == "numeric"
    assert column.count == len(values) and column.nulls == int(values.isna().sum())
    assert column.min == present.min() and column.max == present.max()
    assert column.mean == pytest.approx(present.mean(), rel=1e-9)
    assert column.std == pytest.approx(present.std(ddof=1), rel=1e-9)
    for key, q in column.quantiles.items():
        # a quantile from the sketch sits at the asked rank within the sketch's rank error
        # (between the share below it and the share at or below it, for repeated values)
        slack = RANK_ERROR + 1 / len(present)
        below = float((present < q).mean())
        assert below - slack <= float(key) <= _rank(present, q) + slack, key
    assert len(column.percentiles) == 101
    assert column.percentiles[0] == present.min() and column.percentiles[-1] == present.max()
    assert sum(b.count for b in column.histogram) == len(present)
    assert column.histogram[0].low == present.min() and column.histogram[-1].high == present.max()
    # each bin holds the values in it, within the sketch's rank error
    for b in column.histogram[:-1]:
        exact = ((present >= b.low) & (present < b.high)).sum()
        assert abs(b.count - exact) <= 2 * RANK_ERROR * len(present)


@pytest.mark.parametrize("fmt", ["dataframe", "csv", "parquet"])
def test_statistics_match_numpy_and_pandas(tmp_path: Path, fmt: str) -> None:
    frame = _frame()
    source: object = frame
    if fmt == "csv":
        source = tmp_path / "t.csv"
        frame.to_csv(source, index=False)
    elif fmt == "parquet":
        source = tmp_path / "t.parquet"
        frame.to_parquet(source)
    profile = profile_table(source)
    assert profile.format == fmt and profile.rows == len(frame)
    assert [c.name for c in profile.columns] == list(frame.columns)

    _check_numeric(profile.column("x"), frame["x"])  # type: ignore[arg-type]
    i = profile.column("i")
    assert i is not None and i.type == "int64" and i.distinct == 50 and i.distinct_exact
    _check_numeric(i, frame["i"])

    c = profile.column("c")
    assert c is not None and c.kind == "categorical" and c.type == "string"
    counts = frame["c"].value_counts()
    assert [(t.value, t.count) for t in c.top] == list(zip(counts.index, counts, strict=True))
    assert c.distinct == 3 and c.min == "a" and c.max == "c"

    flag = profile.column("flag")
    assert flag is not None and flag.kind == "boolean" and flag.type == "bool"
    assert flag.mean == pytest.approx(frame["flag"].mean())
    assert {t.value: t.count for t in flag.top} == {
        "true": int(frame["flag"].sum()),
        "false": int((~frame["flag"]).sum()),
    }

    t = profile.column("t")
    assert t is not None and t.kind == "datetime" and t.type.startswith("timestamp")
    assert t.min == "2024-01-01T00:00:00"
    assert t.max == frame["t"].max().isoformat()
    seconds = (frame["t"] - pd.Timestamp(0)).dt.total_seconds().to_numpy()
    assert t.min == "2024-01-01T00:00:00" and t.percentiles[0] == seconds.min()
    assert abs(_rank(seconds, t.quantiles["0.5"]) - 0.5) <= RANK_ERROR

    empty = profile.column("empty")
    assert empty is not None and empty.nulls == empty.count == len(frame)
    assert empty.distinct == 0 and empty.mean is None and empty.histogram == []


def test_many_batches_merge_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small CSV blocks: mean, std and counts merged over ~100 batches equal numpy's."""
    monkeypatch.setattr(table_io, "CSV_BLOCK_BYTES", 16 << 10)
    frame = _frame(40_000)
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    batches = sum(
        1 for _ in pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=16 << 10))
    )
    assert batches > 50
    profile = profile_table(path)
    assert profile.rows == 40_000
    _check_numeric(profile.column("x"), frame["x"])  # type: ignore[arg-type]
    _check_numeric(profile.column("i"), frame["i"])  # type: ignore[arg-type]


def test_sketches_beyond_exact_limits() -> None:
    """Above 4,096 distinct values the counts are estimates within their error."""
    rng = np.random.default_rng(1)
    n = 200_000
    ids = rng.integers(0, 60_000, n)
    # a skewed categorical: 'hot' is 20% of rows, then thousands of rare values
    words = np.where(rng.random(n) < 0.2, "hot", np.char.add("w", (ids % 30_000).astype(str)))
    frame = pd.DataFrame({"id": ids, "word": words})
    profile = profile_table(frame)
    id_col, word = profile.column("id"), profile.column("word")
    assert id_col is not None and word is not None
    true_ids, true_words = len(np.unique(ids)), len(np.unique(words))
    assert not id_col.distinct_exact and abs(id_col.distinct - true_ids) / true_ids < 0.05
    assert not word.distinct_exact and abs(word.distinct - true_words) / true_words < 0.05
    assert not word.top_exact
    assert word.top[0].value == "hot"
    hot = int((words == "hot").sum())
    assert abs(word.top[0].count - hot) / hot < 0.02


def test_empty_tables(tmp_path: Path) -> None:
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b\n")
    profile = profile_table(header_only)
    assert profile.rows == 0 and [c.name for c in profile.columns] == ["a", "b"]
    assert all(c.count == 0 and c.nulls == 0 for c in profile.columns)

    nothing = tmp_path / "nothing.csv"
    nothing.write_text("")
    assert profile_table(nothing) == TableProfile(format="csv", rows=0, columns=[])

    frame = pd.DataFrame({"x": pd.Series([], dtype="float64"), "s": pd.Series([], dtype=str)})
    profile = profile_table(frame)
    assert profile.rows == 0 and profile.column("x").type == "double"  # type: ignore[union-attr]
    pq.write_table(pa.table({"x": pa.array([], pa.int32())}), tmp_path / "e.parquet")
    assert profile_table(tmp_path / "e.parquet").rows == 0

    nulls = tmp_path / "nulls.csv"
    nulls.write_text("a,b\n,1\n,2\n")
    a = profile_table(nulls).column("a")
    assert a is not None and a.type == "null" and a.kind == "other" and a.nulls == 2


def test_mixed_type_csv_columns_are_widened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow infers types from the first block; a later misfit re-reads the column wider."""
    monkeypatch.setattr(table_io, "CSV_BLOCK_BYTES", 4 << 10)
    lines = ["code,amount,n"] + [f"{i},{i},{i}" for i in range(3000)]
    lines += ["A-17,2.5,3001"]
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(lines) + "\n")
    profile = profile_table(path)
    code, amount, n = (profile.column(x) for x in ("code", "amount", "n"))
    assert code is not None and amount is not None and n is not None
    assert code.type == "string" and code.kind == "categorical" and code.distinct == 3001
    assert code.note is not None and "'A-17'" in code.note and "string" in code.note
    assert amount.type == "double" and amount.max == 2999 and amount.note is not None
    assert n.type == "int64" and n.note is None and n.max == 3001
    assert profile.rows == 3001


def test_dataframe_with_mixed_objects() -> None:
    frame = pd.DataFrame({"m": [1, "two", 3.0, None], "ok": [1, 2, 3, 4]})
    profile = profile_table(frame)
    m = profile.column("m")
    assert m is not None and m.type == "string" and m.note and "mixed" in m.note
    assert m.nulls == 1 and m.distinct == 3


def test_malformed_input_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n4,5,6\n7,8\n9,10,11\n")
    with pytest.raises(InvalidInput, match=r"bad\.csv is not valid CSV at line 4: Expected 3 "):
        profile_table(bad)

    garbage = tmp_path / "g.parquet"
    garbage.write_bytes(b"not parquet at all" * 10)
    with pytest.raises(InvalidInput, match=r"g\.parquet is not a valid Parquet file: .*magic"):
        profile_table(garbage)

    with pytest.raises(InvalidInput, match="does not exist"):
        profile_table(tmp_path / "missing.csv")
    odd = tmp_path / "data.bin"
    odd.write_text("a\n1\n")
    with pytest.raises(InvalidInput, match="cannot tell the table format"):
        profile_table(odd)
    assert profile_table(odd, format="csv").rows == 1
    with pytest.raises(InvalidInput, match="pass a CSV or Parquet path"):
        profile_table(42)


def test_parquet_without_suffix_is_sniffed(tmp_path: Path) -> None:
    path = tmp_path / "table"
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0]}), path)
    profile = profile_table(path)
    assert profile.format == "parquet" and profile.column("x").mean == 2.0  # type: ignore[union-attr]


def test_profile_round_trips_through_json() -> None:
    profile = profile_table(_frame(2_000))
    again = TableProfile.model_validate(json.loads(profile.model_dump_json()))
    assert again == profile


def test_diff_flags_the_shifted_column_only() -> None:
    rng = np.random.default_rng(7)
    n = 50_000
    base = pd.DataFrame(
        {
            "steady": rng.normal(0, 1, n),
            "moved": rng.normal(0, 1, n),
            "cat": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]),
            "cat_moved": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]),
            "dropped": rng.integers(0, 3, n),
        }
    )
    new = pd.DataFrame(
        {
            "steady": rng.normal(0, 1, n),  # a fresh sample of the same distribution
            "moved": rng.normal(0.8, 1, n),
            "cat": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]),
            "cat_moved": rng.choice(["a", "b", "c"], n, p=[0.2, 0.3, 0.5]),
            "extra": rng.integers(0, 3, n),
        }
    )
    diff = diff_profiles(profile_table(base), profile_table(new))
    by_name = {c.name: c for c in diff.columns}
    assert [c.name for c in diff.columns] == [*base.columns, "extra"]
    assert by_name["steady"].change == "unchanged" and by_name["steady"].statistic == "psi"
    assert by_name["steady"].value is not None and by_name["steady"].value < 0.05
    assert by_name["steady"].details["ks"] < 0.05  # type: ignore[operator]
    assert by_name["moved"].change == "shifted" and by_name["moved"].value > PSI_SHIFTED  # type: ignore[operator]
    # KS of N(0,1) vs N(0.8,1) is 2*Phi(0.4)-1 = 0.311
    assert by_name["moved"].details["ks"] == pytest.approx(0.311, abs=0.04)
    assert by_name["cat"].change == "unchanged" and by_name["cat"].statistic == "jensen_shannon"
    assert by_name["cat"].value < 0.02  # type: ignore[operator]
    assert by_name["cat_moved"].change == "shifted" and by_name["cat_moved"].value > JS_SHIFTED  # type: ignore[operator]
    assert by_name["dropped"].change == "removed" and by_name["extra"].change == "added"
    assert diff.schema_changed and diff.rows_a == diff.rows_b == n


def test_diff_of_identical_profiles_is_zero_and_type_changes_show() -> None:
    frame = _frame(5_000)
    profile = profile_table(frame)
    diff = diff_profiles(profile, profile)
    assert all(c.change == "unchanged" for c in diff.columns) and not diff.schema_changed
    assert all(c.value in (None, 0.0) for c in diff.columns)
    changed = frame.assign(i=frame["i"].astype(float) + 0.5)
    diff = diff_profiles(profile, profile_table(changed))
    i = next(c for c in diff.columns if c.name == "i")
    assert i.change == "type_changed" and (i.old_type, i.new_type) == ("int64", "double")
    assert diff.schema_changed


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys, time
    from keel.data import table_io
    from keel.data.profile import profile_table
    table_io.CSV_BLOCK_BYTES = 1 << 20  # the working set is a few pieces: far below both files
    start = time.perf_counter()
    profile = profile_table(sys.argv[1])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(profile.rows, peak, seconds)
    """
)


def _write_table(path: Path, rows: int) -> None:
    rng = np.random.default_rng(3)
    chunk = 100_000
    schema = pa.schema(
        [("x", pa.float64()), ("n", pa.int64()), ("s", pa.string()), ("c", pa.string())]
    )
    kind = pq.ParquetWriter if path.suffix == ".parquet" else pacsv.CSVWriter
    with kind(path, schema) as writer:
        for start in range(0, rows, chunk):
            m = min(chunk, rows - start)
            ids = np.arange(start, start + m)
            writer.write_table(
                pa.table(
                    {
                        "x": rng.normal(0, 1, m),
                        "n": rng.integers(0, 1_000_000, m),
                        "s": pa.array(np.char.add("id-", ids.astype(str))),
                        "c": pa.array(rng.choice(["red", "green", "blue"], m)),
                    }
                )
            )


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_memory_does_not_grow_with_file_size(tmp_path: Path, suffix: str) -> None:
    """Profiling a 10x larger table in a fresh process: peak RSS grows by far less than the
    data (the pieces of CSV text are made 1 MB so that both files span many; the Parquet
    files have row groups of 100,000 rows)."""
    small, large = tmp_path / f"small{suffix}", tmp_path / f"large{suffix}"
    _write_table(small, 100_000)
    _write_table(large, 1_000_000)
    peaks = {}
    for path in (small, large):
        done = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows, peak, _ = done.stdout.split()
        assert int(rows) == (100_000 if path is small else 1_000_000)
        peaks[path] = int(peak)
    growth = peaks[large] - peaks[small]
    # the data added, as Arrow holds it in memory (Parquet compresses it on disk)
    read = pacsv.read_csv if suffix == ".csv" else pq.read_table
    added = read(large).nbytes * 9 // 10
    assert added > 30_000_000
    assert growth < 0.25 * added, (peaks, added)


@pytest.mark.parametrize("block", [7, 64, 1 << 20])
def test_csv_pieces_cut_only_between_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """Quoted fields holding newlines and doubled quotes survive any piece size."""
    monkeypatch.setattr(table_io, "CSV_BLOCK_BYTES", block)
    notes = [f'line {i}\nsays "hi"' if i % 3 == 0 else f"plain {i}" for i in range(200)]
    frame = pd.DataFrame({"id": range(200), "note": notes})
    path = tmp_path / "quoted.csv"
    frame.to_csv(path, index=False)
    profile = profile_table(path)
    note = profile.column("note")
    assert profile.rows == 200 and note is not None and note.distinct == 200
    assert profile.column("id").max == 199  # type: ignore[union-attr]
    assert note.min == min(notes) and note.max == max(notes)


def test_tsv_and_gzip(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    frame.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    frame.to_csv(tmp_path / "t.csv.gz", index=False, compression="gzip")
    for name in ("t.tsv", "t.csv.gz"):
        profile = profile_table(tmp_path / name)
        assert profile.rows == 3 and [c.name for c in profile.columns] == ["a", "b"], name
        assert profile.column("a").mean == 2.0  # type: ignore[union-attr]


def test_a_distinct_estimate_never_exceeds_the_values() -> None:
    """Just above the exact limit, every value distinct: the HLL estimate is capped at n."""
    for seed in range(5):
        values = np.random.default_rng(seed).random(5_000)
        frame = pd.DataFrame({"x": values, "s": values.astype(str)})
        for column in profile_table(frame).columns:
            assert not column.distinct_exact
            assert 0.95 * 5_000 <= column.distinct <= 5_000, (seed, column.name)


def test_dates_time_zones_categoricals_and_empty_text(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        "d,ts,cat\n2024-01-01,2024-01-01T10:00:00Z,a\n2024-02-01,2024-01-02T10:00:00Z,b\n,,\n"
    )
    profile = profile_table(path)
    d, ts, cat = profile.columns
    assert (d.type, d.kind, d.min, d.max, d.nulls) == (
        "date32[day]",
        "datetime",
        "2024-01-01",
        "2024-02-01",
        1,
    )
    assert ts.type == "timestamp[s, tz=UTC]" and ts.max == "2024-01-02T10:00:00+00:00"
    assert ts.percentiles[-1] == 1704189600.0  # seconds since the epoch
    assert (cat.nulls, cat.distinct, cat.min) == (1, 2, "a")  # an empty field is null

    frame = pd.DataFrame(
        {
            "tz": pd.date_range("2024-01-01", periods=5, freq="D", tz="Europe/Paris"),
            "cat": pd.Categorical(list("aabba")),
        }
    )
    tz, cat = profile_table(frame).columns
    assert tz.min == "2024-01-01T00:00:00+01:00" and tz.kind == "datetime"
    assert cat.type == "string" and [(t.value, t.count) for t in cat.top] == [("a", 3), ("b", 2)]


@pytest.mark.parametrize("fmt", ["dataframe", "csv", "parquet"])
def test_progress_rises_to_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    monkeypatch.setattr(table_io, "CSV_BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(table_io, "FRAME_SLICE_ROWS", 5_000)
    frame = _frame(30_000)
    source: object = frame
    if fmt == "csv":
        source = tmp_path / "t.csv"
        frame.to_csv(source, index=False)
    elif fmt == "parquet":
        source = tmp_path / "t.parquet"
        frame.to_parquet(source, row_group_size=5_000)
    shares: list[float] = []
    profile_table(source, progress=shares.append)
    assert len(shares) >= 5 and shares == sorted(shares) and shares[-1] == 1.0
