"""Request bodies to DataFrames, and predictions back to JSON, CSV or Arrow: the wire formats of
``POST /predict``, shared by the scoring app and the broker worker.

A body holds many rows, as JSON (``{"records": [...]}`` or ``{"columns": {...}}``), CSV with a
header line, or Arrow IPC (stream or file format). :func:`frame_from_body` picks the parser from
the ``Content-Type``; every malformed body is :class:`~keel.errors.InvalidInput` naming what is
wrong (the app answers 422), and an unknown content type is :class:`UnsupportedMediaType` (415).
The model is never asked about a body that is not a table.

Example:
    >>> frame_from_body(b'{"columns": {"age": [0.03], "bmi": [0.06]}}', "application/json")
       age   bmi
    0  0.03  0.06
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import orjson
import pandas as pd

from keel.errors import InvalidInput

__all__ = [
    "ARROW_FILE",
    "ARROW_STREAM",
    "CSV",
    "JSON",
    "UnsupportedMediaType",
    "dumps",
    "frame_from_arrow",
    "frame_from_body",
    "frame_from_csv",
    "frame_from_json",
    "predictions_arrow",
    "predictions_csv",
    "predictions_json",
    "response_type",
]

JSON = "application/json"
CSV = "text/csv"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
ARROW_FILE = "application/vnd.apache.arrow.file"

# what clients send when they do not say JSON but mean it: curl -d sends form-urlencoded
_JSON_ALIASES = frozenset(
    {"", "*/*", JSON, "text/json", "text/plain", "application/x-www-form-urlencoded"}
)
_ARROW_FILE_MAGIC = b"ARROW1"
_SHAPES = frozenset({"records", "columns"})


class UnsupportedMediaType(InvalidInput):
    """A ``Content-Type`` the scoring app cannot read (HTTP 415)."""

    status_code = 415
    code = "unsupported_media_type"


def frame_from_body(body: bytes, content_type: str | None) -> pd.DataFrame:
    """The request body as one DataFrame, parsed as its ``Content-Type`` says.

    Args:
        body: the raw request body.
        content_type: the header's value (parameters such as ``; charset=utf-8`` are ignored);
            None or ``application/json`` for JSON, ``text/csv``, or
            ``application/vnd.apache.arrow.stream`` / ``.file`` for Arrow IPC.

    Raises:
        InvalidInput: the body is empty or malformed for its type (the message says how).
        UnsupportedMediaType: the content type is none of the above.

    Example:
        >>> frame_from_body(b"age,bmi\\n0.03,0.06\\n", "text/csv; charset=utf-8")
           age   bmi
        0  0.03  0.06
    """
    kind = media_type(content_type)
    if kind in _JSON_ALIASES or kind.endswith("+json"):
        return frame_from_json(body)
    if kind in (CSV, "application/csv"):
        return frame_from_csv(body)
    if kind in (ARROW_STREAM, ARROW_FILE, "application/vnd.apache.arrow"):
        return frame_from_arrow(body)
    raise UnsupportedMediaType(
        f"cannot read a {kind!r} body: send {JSON} (records or columns), {CSV} with a header "
        f"line, or Arrow IPC ({ARROW_STREAM} or {ARROW_FILE})",
        field="Content-Type",
    )


def media_type(header: str | None) -> str:
    """The bare media type of a ``Content-Type`` or ``Accept`` value, lower-cased."""
    if not header:
        return ""
    return header.split(";", 1)[0].strip().lower()


def frame_from_json(body: bytes) -> pd.DataFrame:
    """``{"records": [{column: value}, ...]}`` or ``{"columns": {column: [values]}}`` as a
    DataFrame.

    Raises:
        InvalidInput: the body is empty, not JSON, or neither ``records`` (a non-empty list of
            objects with the same keys) nor ``columns`` (an object of equal-length lists);
            ``field`` names the part at fault.
    """
    if not body.strip():
        raise InvalidInput(
            'the request body is empty: send {"records": [{...}, ...]} or '
            '{"columns": {"name": [...]}}',
            field="body",
        )
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}", field="body") from None
    if not isinstance(payload, dict) or len(payload) != 1 or not payload.keys() & _SHAPES:
        given = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise InvalidInput(
            f'the body must be an object with one key, "records" or "columns"; got {given}',
            field="body",
        )
    if "records" in payload:
        return pd.DataFrame(_records_columns(payload["records"]))
    return pd.DataFrame(_checked_columns(payload["columns"]))


def frame_from_csv(body: bytes) -> pd.DataFrame:
    """A CSV body (UTF-8, a header line naming the columns, then one line per row).

    Empty cells, and the cells missing from a row shorter than the header, become nulls (the
    signature check refuses nulls where the model's training data had none); numbers are read
    as numbers, anything else as strings (the signature check then refuses a string where it
    expects a number, naming the column).

    Raises:
        InvalidInput: the body is empty, not UTF-8, has no data rows, or a row has more cells
            than the header.
    """
    from pandas.errors import EmptyDataError, ParserError, ParserWarning

    if not body.strip():
        raise InvalidInput(
            "the request body is empty: send a CSV header line, then one line per row",
            field="body",
        )
    try:
        with warnings.catch_warnings():  # a row longer than the header: refused, not cut
            warnings.simplefilter("error", ParserWarning)
            frame = pd.read_csv(io.BytesIO(body), encoding="utf-8", index_col=False)
    except ParserWarning:
        raise InvalidInput(
            "the CSV body has a row with more cells than the header names", field="body"
        ) from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the CSV body is not UTF-8: {exc}", field="body") from None
    except (ParserError, EmptyDataError) as exc:
        reason = str(exc).strip().rstrip(".")
        raise InvalidInput(f"the CSV body does not parse: {reason}", field="body") from None
    if frame.empty:
        raise InvalidInput(
            f"the CSV body has a header ({', '.join(map(str, frame.columns))}) but no rows",
            field="body",
        )
    unnamed = [str(name) for name in frame.columns if str(name).startswith("Unnamed: ")]
    if unnamed:
        raise InvalidInput(
            f"the CSV header has {len(unnamed)} empty column name(s): every column needs a name",
            field="body",
        )
    return frame


def frame_from_arrow(body: bytes) -> pd.DataFrame:
    """An Arrow IPC body, stream or file format (told apart by the file format's magic bytes),
    as a DataFrame.

    Raises:
        InvalidInput: the body is empty, not Arrow IPC, truncated, or holds no rows.
    """
    import pyarrow as pa
    import pyarrow.ipc

    if not body:
        raise InvalidInput(
            "the request body is empty: send an Arrow IPC stream or file", field="body"
        )
    is_file = body[: len(_ARROW_FILE_MAGIC)] == _ARROW_FILE_MAGIC
    try:
        if is_file:
            table = pyarrow.ipc.open_file(pa.BufferReader(body)).read_all()
        else:
            table = pyarrow.ipc.open_stream(pa.BufferReader(body)).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        kind = "file" if is_file else "stream"
        raise InvalidInput(
            f"the body is not a readable Arrow IPC {kind}: {exc}", field="body"
        ) from None
    if table.num_rows == 0:
        raise InvalidInput("the Arrow body holds no rows", field="body")
    names = table.column_names
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise InvalidInput(
            f"the Arrow body has columns named more than once: {', '.join(map(repr, twice))}",
            field=f"columns.{twice[0]}",
            column=twice[0],
        )
    return table.to_pandas()


def _checked_columns(columns: Any) -> dict[str, list[Any]]:
    if not isinstance(columns, dict) or not columns:
        raise InvalidInput(
            '"columns" must be a non-empty object of column name to list of values',
            field="columns",
        )
    lengths = set()
    for name, values in columns.items():
        if not isinstance(values, list):
            raise InvalidInput(
                f"column {name!r} must be a list of values, got {type(values).__name__}",
                field=f"columns.{name}",
                column=name,
            )
        lengths.add(len(values))
    if len(lengths) != 1:
        raise InvalidInput(
            f'the lists in "columns" differ in length: {sorted(lengths)}', field="columns"
        )
    if lengths == {0}:
        raise InvalidInput(
            'the lists in "columns" are empty: send at least one row', field="columns"
        )
    return columns


def _records_columns(records: Any) -> dict[str, list[Any]]:
    """``records`` as columns, refusing a record whose keys differ from the first's (a key left
    out of one row would otherwise become a silent NaN)."""
    if not isinstance(records, list) or not records:
        raise InvalidInput('"records" must be a non-empty list of objects', field="records")
    first = records[0]
    if not isinstance(first, dict):
        raise InvalidInput(
            f'"records" must hold objects; record 0 is a {type(first).__name__}',
            field="records[0]",
        )
    keys = first.keys()
    for index, record in enumerate(records):
        if not isinstance(record, dict) or record.keys() != keys:
            raise InvalidInput(_record_mismatch(index, record, keys), field=f"records[{index}]")
    return {name: [record[name] for record in records] for name in keys}


def _record_mismatch(index: int, record: Any, keys: Any) -> str:
    if not isinstance(record, dict):
        return f'"records" must hold objects; record {index} is a {type(record).__name__}'
    missing = sorted(set(keys) - set(record))
    extra = sorted(set(record) - set(keys))
    parts = [f"lacks {', '.join(map(repr, missing))}"] if missing else []
    parts += [f"has {', '.join(map(repr, extra))} that record 0 has not"] if extra else []
    return f"record {index} {' and '.join(parts)}: every record needs the same fields"


def dumps(value: Any) -> bytes:
    """``value`` as JSON bytes, numpy arrays and scalars included (a model's plain list of
    ``numpy.int64`` is written as numbers): how answers and replies are written."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def predictions_json(predictions: Any) -> list[Any]:
    """Predictions as JSON-ready values, one per row, NaN and missing values as None.

    An array or Series gives one value per row (a list per row for multi-output models); a
    DataFrame gives one ``{column: value}`` object per row.

    Example:
        >>> predictions_json(numpy.array([1.5, numpy.nan]))  # doctest: +SKIP
        [1.5, None]
    """
    if isinstance(predictions, pd.DataFrame):
        if predictions.isna().to_numpy().any():
            predictions = predictions.astype(object).where(predictions.notna(), None)
        return predictions.to_dict(orient="records")
    if isinstance(predictions, pd.Series):
        predictions = predictions.to_numpy()
    if hasattr(predictions, "dtype") and hasattr(predictions, "tolist"):  # an ndarray
        if predictions.dtype.kind in "fc" and np.isnan(predictions).any():
            return _without_nan(predictions.astype(object))
        if predictions.dtype.kind == "O":
            return _without_nan(predictions)
        return predictions.tolist()
    return [None if _is_nan(value) else value for value in predictions]


def _without_nan(array: Any) -> list[Any]:
    return [_null_for_nan(item) for item in array.tolist()]


def _null_for_nan(value: Any) -> Any:
    if isinstance(value, list):
        return [_null_for_nan(item) for item in value]
    if hasattr(value, "tolist"):  # an array inside an object array
        return _null_for_nan(value.tolist())
    return None if _is_nan(value) else value


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def response_type(accept: str | None) -> str:
    """The media type to answer with for an ``Accept`` header: CSV or Arrow when the client
    names one first, JSON otherwise (no header, ``*/*``, or anything else)."""
    for part in (accept or "").split(","):
        kind = media_type(part)
        if kind in (JSON, CSV, ARROW_STREAM, ARROW_FILE):
            return kind
    return JSON


def predictions_csv(predictions: Any) -> bytes:
    """Predictions as CSV: one column ``prediction`` (``prediction_0``... for multi-output
    arrays; a DataFrame keeps its own column names), one line per row."""
    return _predictions_frame(predictions).to_csv(index=False).encode()


def predictions_arrow(predictions: Any, *, file_format: bool = False) -> bytes:
    """Predictions as an Arrow IPC stream (or file), with :func:`predictions_csv`'s columns."""
    import pyarrow as pa
    import pyarrow.ipc

    table = pa.Table.from_pandas(_predictions_frame(predictions), preserve_index=False)
    sink = pa.BufferOutputStream()
    open_writer = pyarrow.ipc.new_file if file_format else pyarrow.ipc.new_stream
    with open_writer(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _predictions_frame(predictions: Any) -> pd.DataFrame:
    if isinstance(predictions, pd.DataFrame):
        return predictions.reset_index(drop=True)
    if isinstance(predictions, pd.Series):
        return pd.DataFrame({"prediction": predictions.to_numpy()})
    import numpy as np

    array = np.asarray(predictions)
    if array.ndim == 1:
        return pd.DataFrame({"prediction": array})
    if array.ndim == 2:
        return pd.DataFrame(array, columns=[f"prediction_{i}" for i in range(array.shape[1])])
    raise InvalidInput(
        f"predictions of {array.ndim} dimensions can only be answered as JSON: send Accept: {JSON}",
        field="Accept",
    )
