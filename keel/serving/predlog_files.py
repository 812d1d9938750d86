"""The Parquet files of prediction logs: rows to Arrow, files written, listed and read back.

Private to :mod:`keel.serving.predlog` (its writer thread and its readers); split out to keep
each module small. Conversion never fails on odd data: a column whose values have no common
Arrow type (ints in one request, text in another) is written as text, and files whose columns
differ (other model versions) are unified when read.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any

from keel.errors import MissingExtra, StorageError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "FEEDBACK_COLUMNS",
    "HOUR_MS",
    "PREDICTION_COLUMNS",
    "ROWS",
    "Sink",
    "filesystem",
    "read_rows",
    "table_of",
]

PREDICTION_COLUMNS = (
    "request_id",
    "row",
    "time",
    "deployment",
    "arm",
    "model",
    "version",
    "role",
    "latency_ms",
    "error",
)
"""The columns every prediction row has; ``input.<feature>`` and ``output`` (or
``output.<name>``) follow."""

FEEDBACK_COLUMNS = ("request_id", "row", "time", "deployment", "label")
"""The columns of a feedback (label) row."""

HOUR_MS = 3_600_000
logger = logging.getLogger("keel.serving.predlog")  # the writer's own

ROWS = 10
"""Where a buffered prediction keeps its row count. A buffered prediction is the tuple
(request_id, time_ms, arm, model, version, role, inputs, outputs, latency_ms, error, rows); a
buffered label is (request_id, row, label, time_ms)."""


# -- storage -----------------------------------------------------------------------------------


class Sink:
    """Where the files go: a local folder (plain os calls, atomic rename) or an fsspec URL."""

    def __init__(self, url: str) -> None:
        # what the writer thread uses, imported now rather than on its first write
        import numpy  # noqa: F401
        import pandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401

        self.fs, self.root = filesystem(url)
        self.local = "file" in _protocols(self.fs)

    def write(self, kind: str, deployment: str, hour: int, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        folder = _partition(self.root, kind, deployment, hour)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        if not self.local:  # object stores write whole objects
            self.fs.makedirs(folder, exist_ok=True)
            with self.fs.open(f"{folder}/{name}", "wb") as out:
                pq.write_table(table, out, compression="zstd")
            return
        os.makedirs(folder, exist_ok=True)
        partial = os.path.join(folder, f".{name}.partial")  # readers skip names starting "."
        try:
            pq.write_table(table, partial, compression="zstd")
            os.replace(partial, os.path.join(folder, name))
        except BaseException:
            if os.path.exists(partial):
                os.unlink(partial)
            raise


def filesystem(url: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    try:
        fs, root = url_to_fs(url)
    except ImportError as exc:
        package = exc.name or str(exc)
        extra = {"s3fs": "s3", "gcsfs": "gcs", "adlfs": "azure"}.get(package, package)
        raise MissingExtra(package, extra=extra) from None
    return fs, str(root).rstrip("/")


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _partition(root: str, kind: str, deployment: str, hour: int) -> str:
    label = datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%dT%H")
    return f"{root}/{kind}/deployment={deployment}/hour={label}"


# -- conversion to Arrow (on the writer thread) ------------------------------------------------


def table_of(kind: str, batch: list[tuple[Any, ...]], deployment: str) -> pa.Table:
    if kind == "feedback":
        return _feedback_table(batch, deployment)
    groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = defaultdict(list)
    names: dict[int, tuple[Any, ...]] = {}  # id of a columns Index (alive meanwhile) -> names
    for entry in batch:  # same input columns and output kind: one pandas.concat
        inputs, outputs = entry[6], entry[7]
        columns = None
        if isinstance(inputs, dict):
            columns = ("dict", tuple(inputs))
        elif inputs is not None:
            index = inputs.columns
            columns = names.get(id(index))
            if columns is None:
                columns = names[id(index)] = ("frame", _names(index))
        produced = _names(outputs.columns) if hasattr(outputs, "columns") else None
        groups[(columns, produced)].append(entry)
    tables = []
    for group in groups.values():  # one group that cannot be converted costs no other
        try:
            tables.append(_unique_table(group, deployment))
        except Exception:
            tables.extend(_entry_table(entry, deployment) for entry in group)
    return _concat(tables).sort_by("time")  # stable: a request's rows stay in order


def _entry_table(entry: tuple[Any, ...], deployment: str) -> pa.Table:
    """One entry alone; when even that fails, without its inputs, then without its outputs,
    so the request's row (id, time, arm, latency, error) is still logged."""
    try:
        return _unique_table([entry], deployment)
    except Exception:
        logger.warning("prediction log %s: inputs of request %s not logged", deployment, entry[0])
    try:
        return _unique_table([(*entry[:6], None, *entry[7:])], deployment)
    except Exception:
        logger.warning("prediction log %s: outputs of request %s not logged", deployment, entry[0])
    return _unique_table([(*entry[:6], None, None, *entry[8:])], deployment)


def _unique_table(entries: list[tuple[Any, ...]], deployment: str) -> pa.Table:
    """:func:`_group_table`, refusing a table with a column twice (it could not be merged with
    the others, and would cost the whole flush)."""
    table = _group_table(entries, deployment)
    if len(set(table.column_names)) != table.num_columns:
        raise ValueError("a column is named twice")
    return table


def _names(index: Any) -> tuple[Any, ...]:
    """A columns Index as a tuple: through Arrow for pandas' Arrow-backed strings (2x faster
    than ``tolist``, 3x than ``tuple(index)``), else ``tolist``."""
    arrow = getattr(index.array, "__arrow_array__", None)
    if arrow is not None:
        return tuple(arrow().to_pylist())
    return tuple(index.tolist())


def _group_table(entries: list[tuple[Any, ...]], deployment: str) -> pa.Table:
    import numpy as np
    import pyarrow as pa

    counts = np.fromiter((e[ROWS] for e in entries), dtype=np.int64, count=len(entries))
    total = int(counts.sum())
    take = np.repeat(np.arange(len(entries)), counts)
    starts = np.cumsum(counts) - counts

    def per_entry(at: int, kind: pa.DataType) -> pa.Array:
        values = [e[at] for e in entries]
        try:
            array = pa.array(values, type=kind)
        except (pa.ArrowException, TypeError, ValueError):
            if kind != pa.string():
                raise
            array = _text(values)  # an arm or model named by something else than a string
        return array.take(take)

    columns = {
        "request_id": per_entry(0, pa.string()),
        "row": pa.array(np.arange(total) - np.repeat(starts, counts), type=pa.int32()),
        "time": per_entry(1, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "deployment": pa.array([deployment] * total, type=pa.string()),
        "arm": per_entry(2, pa.string()),
        "model": per_entry(3, pa.string()),
        "version": per_entry(4, pa.int64()),
        "role": per_entry(5, pa.string()),
        "latency_ms": per_entry(8, pa.float64()),
        "error": per_entry(9, pa.string()),
    }
    table = pa.table(columns)
    if isinstance(entries[0][6], dict):
        for name in entries[0][6]:
            values = chain.from_iterable(e[6][name] for e in entries)
            table = table.append_column(f"input.{name}", _array(list(values)))
    elif entries[0][6] is not None:
        table = _append(table, _frames_table([e[6] for e in entries], "input."))
    if hasattr(entries[0][7], "columns"):
        return _append(table, _frames_table([e[7] for e in entries], "output."))
    values = chain.from_iterable(_outputs(e[7], e[ROWS]) for e in entries)
    return table.append_column("output", _array(list(values)))


def _outputs(outputs: Any, rows: int) -> Iterable[Any]:
    if outputs is None:
        return repeat(None, rows)
    if hasattr(outputs, "tolist"):  # an ndarray or a Series: numpy scalars become Python's
        return outputs.tolist()
    return outputs


def _frames_table(frames: list[Any], prefix: str) -> pa.Table:
    """One table of ``frames`` (same columns; dtypes may differ: concat widens them)."""
    import pandas as pd

    if len(frames) > 1:
        stacked = _stacked(frames, prefix)
        if stacked is not None:
            return stacked
    try:
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        return _frame_table(frame, prefix)
    except Exception:  # e.g. a warning turned error, duplicate columns: frame by frame
        return _concat([_frame_table(frame, prefix) for frame in frames])


def _stacked(frames: list[Any], prefix: str) -> pa.Table | None:
    """Frames whose columns all have one numpy number or bool dtype as one 2-D array (one
    ``to_numpy`` each): 5-10x faster than ``pandas.concat`` for many small frames. None when
    they do not all qualify (then ``pandas.concat`` does it, at about 150-300 us a frame)."""
    import numpy as np
    import pyarrow as pa

    kinds = set(frames[0].dtypes)
    kind = kinds.pop() if len(kinds) == 1 else None
    if not isinstance(kind, np.dtype) or kind.kind not in "biuf":
        return None
    arrays = [frame.to_numpy() for frame in frames]
    if any(array.dtype != kind for array in arrays):
        return None
    matrix = np.concatenate(arrays)
    columns = [pa.array(matrix[:, at], from_pandas=True) for at in range(matrix.shape[1])]
    return pa.table(columns, names=[f"{prefix}{name}" for name in frames[0].columns])


def _frame_table(frame: Any, prefix: str) -> pa.Table:
    import pyarrow as pa

    names = [f"{prefix}{name}" for name in frame.columns]
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        return table.replace_schema_metadata(None).rename_columns(names)
    except (pa.ArrowException, ValueError, TypeError):  # a column mixing kinds of values
        arrays = [_array(frame.iloc[:, at].tolist()) for at in range(frame.shape[1])]
        return pa.table(arrays, names=names)


def _append(table: pa.Table, other: pa.Table) -> pa.Table:
    for name, column in zip(other.column_names, other.columns, strict=True):
        table = table.append_column(name, column)
    return table


def _array(values: list[Any]) -> pa.Array:
    """``values`` as one Arrow array, or as text when they have no common Arrow type."""
    import pyarrow as pa

    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return _text(values)


def _text(values: Iterable[Any]) -> pa.Array:
    """Strings as they are, other values as JSON text, None as null."""
    import pyarrow as pa

    return pa.array([_as_text(value) for value in values], type=pa.string())


def _as_text(value: Any) -> str | None:
    import orjson

    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value != value:
        return None  # NaN: pandas' missing value
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return str(value)


def _feedback_table(batch: list[tuple[Any, ...]], deployment: str) -> pa.Table:
    import pyarrow as pa

    labels = [entry[2] for entry in batch]
    nested = any(isinstance(label, dict | list | tuple) for label in labels)
    return pa.table(
        {
            "request_id": pa.array([e[0] for e in batch], type=pa.string()),
            "row": pa.array([e[1] for e in batch], type=pa.int32()),
            "time": pa.array([e[3] for e in batch], type=pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
            "deployment": pa.array([deployment] * len(batch), type=pa.string()),
            "label": _text(labels) if nested else _array(labels),
        }
    )


def _concat(tables: list[pa.Table]) -> pa.Table:
    """One table of ``tables`` whose columns may differ: missing columns become nulls, numbers
    widen (int and float to float), and a column with no common type becomes text."""
    import pyarrow as pa

    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    kinds: dict[str, set[pa.DataType]] = defaultdict(set)
    for table in tables:
        for field in table.schema:
            if not pa.types.is_null(field.type):
                kinds[field.name].add(field.type)
    clashing = {name for name, types in kinds.items() if not _unifiable(name, types)}
    return pa.concat_tables(
        [_as_text_columns(table, clashing) for table in tables], promote_options="permissive"
    )


def _unifiable(name: str, types: set[pa.DataType]) -> bool:
    import pyarrow as pa

    try:
        pa.unify_schemas(
            [pa.schema([(name, kind)]) for kind in types], promote_options="permissive"
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False
    return True


def _as_text_columns(table: pa.Table, names: set[str]) -> pa.Table:
    import pyarrow as pa
    import pyarrow.compute as pc

    for at, name in enumerate(table.column_names):
        if name not in names:
            continue
        column = table.column(at)
        try:
            if pa.types.is_nested(column.type) or pa.types.is_binary(column.type):
                raise pa.ArrowNotImplementedError("JSON instead")
            text = pc.cast(column, pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            text = pa.chunked_array([_text(column.to_pylist())], type=pa.string())
        table = table.set_column(at, name, text)
    return table


# -- reading ------------------------------------------------------------------------------------


def _prediction_schema() -> pa.Schema:
    import pyarrow as pa

    text, stamp = pa.string(), pa.timestamp("ms", tz="UTC")
    kinds = [text, pa.int32(), stamp, text, text, text, pa.int64(), text, pa.float64(), text]
    return pa.schema(list(zip(PREDICTION_COLUMNS, kinds, strict=True)))


def _feedback_schema() -> pa.Schema:
    import pyarrow as pa

    kinds = [pa.string(), pa.int32(), pa.timestamp("ms", tz="UTC"), pa.string(), pa.string()]
    return pa.schema(list(zip(FEEDBACK_COLUMNS, kinds, strict=True)))


def read_rows(
    url: str, kind: str, deployment: str, since_ms: int | None, until_ms: int | None
) -> pd.DataFrame:
    """The rows of ``kind`` (``predictions`` or ``feedback``) of ``deployment`` with
    ``since_ms <= time <= until_ms``, sorted by time: base columns first, then inputs, then
    outputs. Only hour folders overlapping the range are read, several files at once."""
    import pyarrow.compute as pc

    fs, root = filesystem(url)
    local = "file" in _protocols(fs)
    files = list(_files(fs, f"{root}/{kind}/deployment={deployment}", since_ms, until_ms))
    base = _prediction_schema() if kind == "predictions" else _feedback_schema()
    if not files:
        return _frame(base.empty_table())
    with ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
        tables = list(pool.map(lambda path: _read_file(fs, local, path, since_ms, until_ms), files))
    # a file whose rows all fall outside the range says nothing about the columns' types
    tables = [t for t in tables if t.num_rows] or tables[:1]
    # files are sorted by time when written: in order of their first row, they are often
    # sorted as a whole (one writer), which spares a sort and take of every column
    tables.sort(key=lambda t: t["time"][0].value if t.num_rows else 0)
    table = _concat(tables)
    times = table["time"].combine_chunks()
    if len(times) > 1 and not pc.all(pc.greater_equal(times[1:], times[:-1])).as_py():
        table = table.take(pc.sort_indices(table, sort_keys=[("time", "ascending")]))
    names = table.column_names
    inputs = [name for name in names if name.startswith("input.")]
    rest = [name for name in names if name not in base.names and name not in inputs]
    return _frame(table.select([name for name in base.names if name in names] + inputs + rest))


def _frame(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas()
    if "version" in frame.columns:  # null for runs:/ models: keep it an integer
        frame["version"] = frame["version"].astype("Int64")
    return frame


def _files(fs: Any, folder: str, since_ms: int | None, until_ms: int | None) -> Iterator[str]:
    """Parquet files of the hour folders overlapping [since, until], oldest hour first."""
    try:
        hours = sorted(fs.ls(folder, detail=False))
    except (FileNotFoundError, NotADirectoryError):
        return
    for path in hours:
        start = _hour_start(path.rstrip("/").rsplit("/", 1)[-1])
        if start is None:
            continue
        if since_ms is not None and start + HOUR_MS <= since_ms:
            continue
        if until_ms is not None and start > until_ms:
            continue
        names = sorted(fs.ls(path, detail=False))
        for name in names:
            base = name.rsplit("/", 1)[-1]
            if base.endswith(".parquet") and not base.startswith((".", "_")):
                yield name


def _hour_start(name: str) -> int | None:
    if not name.startswith("hour="):
        return None
    try:
        hour = datetime.strptime(name[5:], "%Y-%m-%dT%H").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(hour.timestamp()) * 1000


def _read_file(
    fs: Any, local: bool, path: str, since_ms: int | None, until_ms: int | None
) -> pa.Table:
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    stamp = pa.timestamp("ms", tz="UTC")
    condition = None
    if since_ms is not None:
        condition = ds.field("time") >= pa.scalar(since_ms, type=stamp)
    if until_ms is not None:
        before = ds.field("time") <= pa.scalar(until_ms, type=stamp)
        condition = before if condition is None else condition & before
    try:
        table = pq.read_table(path, filesystem=None if local else fs, filters=condition)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(
            f"cannot read the prediction log file {path}: {exc}; move it aside if it is damaged",
            path=path,
        ) from None
    return table.replace_schema_metadata(None)
