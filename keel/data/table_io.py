"""Read a table as a stream of Arrow record batches: a CSV file, a Parquet file or a DataFrame.

Profiling and validation both make one pass over :func:`scan_table`'s batches, so memory stays
bounded by the batch size whatever the table's size. CSV column types are inferred by pyarrow
from the first 1 MB; a later value that does not fit (``abc`` in a column of integers) makes
the scan start again with that column widened (integer -> double -> string), and the widening
is reported so the caller can say so. Malformed input raises :class:`~keel.errors.InvalidInput`
naming the file and the line or reason.

pyarrow and pandas are imported inside the functions: ``keel --help`` may import this module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from keel.errors import InvalidInput

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "CSV_BLOCK_BYTES",
    "FRAME_SLICE_ROWS",
    "TableFormat",
    "TableScan",
    "detect_format",
    "scan_table",
]

TableFormat = Literal["csv", "parquet", "dataframe"]

#: bytes of CSV text parsed per batch (pyarrow infers column types from the first block)
CSV_BLOCK_BYTES = 8 << 20
#: pyarrow parses each piece in blocks of this size on its threads (types from the first one)
_PARSE_BLOCK_BYTES = 1 << 20
#: rows of a Parquet file or a DataFrame per batch
FRAME_SLICE_ROWS = 65_536
_CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".csv.bz2", ".csv.zst")
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_CONVERSION = re.compile(
    r"In CSV column #(\d+): CSV conversion error to (\S+): invalid value '(.*)'"
)

V = TypeVar("V")


@dataclass
class TableScan:
    """What a scan read: the format, the source's name, and columns it had to widen."""

    format: TableFormat
    source: str
    notes: dict[str, str] = field(default_factory=dict)


def scan_table(
    source: Any,
    visitor_factory: Callable[[pa.Schema], V],
    visit: Callable[[V, pa.RecordBatch], None],
    *,
    format: str | None = None,
    progress: Callable[[float], None] | None = None,
) -> tuple[V, TableScan]:
    """Feed every record batch of ``source`` to a visitor, in one pass (restarted on widening).

    Args:
        source: a CSV or Parquet path, or a pandas DataFrame.
        visitor_factory: makes a fresh visitor from the table's Arrow schema (again when a CSV
            column is widened and the scan starts over).
        visit: called with the visitor and each batch, in order.
        format: ``csv``, ``parquet`` or ``dataframe``; by default from the suffix, then the
            file's first bytes.
        progress: called after each batch with the share of the table read so far (0..1;
            not called for a compressed CSV, whose size is unknown).

    Returns:
        The visitor after the last batch, and what the scan read.

    Raises:
        InvalidInput: the file does not exist, the format is unknown, or the file is not
            valid CSV/Parquet (the message names the file and the line or reason).

    Example:
        >>> rows, scan = scan_table("train.csv", lambda schema: [0],
        ...                         lambda acc, batch: acc.__setitem__(0, acc[0] + len(batch)))
    """
    kind = detect_format(source, format)
    if kind == "dataframe":
        scan = TableScan(format="dataframe", source="DataFrame")
        schema, batches = _frame_batches(source, scan)
        return _visit_all(visitor_factory(schema), visit, batches, len(source), progress), scan
    path = Path(os.fspath(source))
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist or is not a file", path=str(path))
    if kind == "parquet":
        scan = TableScan(format="parquet", source=str(path))
        schema, batches, rows = _parquet_batches(path)
        return _visit_all(visitor_factory(schema), visit, batches, rows, progress), scan
    return _scan_csv(path, visitor_factory, visit, progress)


def _visit_all(
    visitor: V,
    visit: Callable[[V, pa.RecordBatch], None],
    batches: Iterator[pa.RecordBatch],
    rows: int,
    progress: Callable[[float], None] | None,
) -> V:
    done = 0
    for batch in batches:
        visit(visitor, batch)
        done += batch.num_rows
        if progress is not None and rows:
            progress(min(done / rows, 1.0))
    return visitor


def detect_format(source: Any, format: str | None = None) -> TableFormat:
    """``csv``, ``parquet`` or ``dataframe`` for a source, by ``format``, suffix or magic bytes.

    Args:
        source: a path or a pandas DataFrame.
        format: the format the caller names, if any (checked, then returned).

    Returns:
        The format.

    Raises:
        InvalidInput: an unknown format name, or a file whose format cannot be told.

    Example:
        >>> detect_format("data/train.csv.gz")
        'csv'
    """
    if format is not None:
        if format not in ("csv", "parquet", "dataframe"):
            raise InvalidInput(
                f"unknown table format {format!r}: use csv, parquet or dataframe", format=format
            )
        return format  # type: ignore[return-value]
    if not isinstance(source, (str, os.PathLike)):
        if type(source).__name__ == "DataFrame" and hasattr(source, "columns"):
            return "dataframe"
        raise InvalidInput(
            f"cannot profile a {type(source).__name__}: pass a CSV or Parquet path or a "
            "pandas DataFrame"
        )
    name = os.fspath(source).lower()
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    try:
        with open(source, "rb") as f:
            magic = f.read(4)
    except OSError:
        magic = b""
    if magic == b"PAR1":
        return "parquet"
    raise InvalidInput(
        f"cannot tell the table format of {os.fspath(source)}: name it .csv or .parquet, or "
        "pass format='csv' / --format csv",
        path=os.fspath(source),
    )


def _frame_batches(frame: Any, scan: TableScan) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The DataFrame's Arrow schema (inferred over whole columns) and its slices as batches.

    A column pyarrow cannot convert (mixed Python objects) is read as strings, with a note.
    """
    import pyarrow as pa

    frame = frame.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    fields = []
    for name in frame.columns:
        try:
            fields.append(pa.Schema.from_pandas(frame[[name]], preserve_index=False).field(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            column = frame[name]
            frame[name] = column.where(column.isna(), column.astype(str))
            fields.append(pa.field(name, pa.string()))
            scan.notes[name] = f"mixed Python types, read as string ({_first_line(error)})"
    schema = pa.schema(fields)

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(frame), FRAME_SLICE_ROWS):
            part = frame.iloc[start : start + FRAME_SLICE_ROWS]
            table = pa.Table.from_pandas(part, schema=schema, preserve_index=False)
            yield from table.to_batches()

    return schema, batches()


def _parquet_batches(path: Path) -> tuple[pa.Schema, Iterator[pa.RecordBatch], int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # pre_buffer (the default) reads ahead of the consumer: peak memory grew with the file
        parquet = pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowException, OSError) as error:
        raise InvalidInput(
            f"{path} is not a valid Parquet file: {_first_line(error)}", path=str(path)
        ) from None

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from parquet.iter_batches(batch_size=FRAME_SLICE_ROWS)
        except (pa.ArrowException, OSError) as error:
            raise InvalidInput(
                f"{path} is not a valid Parquet file: {_first_line(error)}", path=str(path)
            ) from None
        finally:
            parquet.close()

    return parquet.schema_arrow, batches(), parquet.metadata.num_rows


def _scan_csv(
    path: Path,
    visitor_factory: Callable[[pa.Schema], V],
    visit: Callable[[V, pa.RecordBatch], None],
    progress: Callable[[float], None] | None = None,
) -> tuple[V, TableScan]:
    """Scan a CSV, starting over with a column widened each time a value does not fit it."""
    import pyarrow as pa

    forced: dict[str, pa.DataType] = {}
    scan = TableScan(format="csv", source=str(path))
    while True:
        rows = 0
        names: list[str] = []
        try:
            visitor = None
            size = 0 if path.suffix in (".gz", ".bz2", ".zst") else path.stat().st_size
            read = [0]  # bytes of text parsed so far
            for table in _csv_tables(path, forced, read):
                if visitor is None:
                    names = table.schema.names
                    visitor = visitor_factory(table.schema)
                for batch in table.to_batches():
                    visit(visitor, batch)
                rows += table.num_rows
                if progress is not None and size:
                    progress(min(read[0] / size, 1.0))
            if visitor is None:  # an empty file
                visitor = visitor_factory(pa.schema([]))
            return visitor, scan
        except pa.ArrowInvalid as error:
            message = _first_line(error)
            match = _CONVERSION.search(message)
            if match is None or not names:
                raise _csv_error(path, message, rows) from None
            column = names[int(match.group(1))]
            wider = _wider(match.group(2))
            if forced.get(column) == wider:
                raise _csv_error(path, message, rows) from None
            forced[column] = wider
            scan.notes[column] = (
                f"inferred {match.group(2)} from the first rows, but a later value "
                f"{match.group(3)!r} is not; read as {wider}"
            )


def _csv_tables(path: Path, forced: dict[str, pa.DataType], read: list[int]) -> Iterator[pa.Table]:
    """The CSV's rows, about CSV_BLOCK_BYTES of text at a time, each parsed on its own.

    pyarrow's own streaming reader (``open_csv``) reads ahead of its consumer without bound
    (peak memory grew with the file), so the text is cut here at record boundaries (a newline
    after an even number of quote characters) and each piece is parsed with ``read_csv``, the
    header line prepended, in 1 MB blocks on pyarrow's threads. The types pyarrow infers from
    the first block are imposed on the rest.
    Compressed files (``.gz``, ``.bz2``, ``.zst``) are decompressed as they are read.
    ``read[0]`` counts the bytes of text parsed (for progress).
    """
    import pyarrow as pa
    import pyarrow.csv as csv

    name = path.name.lower().removesuffix(".gz").removesuffix(".bz2").removesuffix(".zst")
    parse = csv.ParseOptions(delimiter="\t" if name.endswith(".tsv") else ",")
    types = dict(forced)
    header: bytes | None = None
    pending = b""
    yielded = False
    with pa.input_stream(str(path)) as stream:
        while True:
            data = stream.read(CSV_BLOCK_BYTES)
            buffer = pending + data
            if not data:  # the end: what is left is the last piece
                body, pending = buffer, b""
            else:
                cut = _record_end(buffer, last=header is not None)
                if cut == -1:
                    pending = buffer
                    continue
                body, pending = buffer[:cut], buffer[cut:]
            if header is None:
                header, body = body, b""
                if not header.strip():
                    return
                if not header.endswith(b"\n"):
                    header += b"\n"
            if body or (not data and not yielded):  # (blank lines parse to no rows)
                text = header + body
                table = csv.read_csv(
                    pa.py_buffer(text),
                    read_options=csv.ReadOptions(block_size=_PARSE_BLOCK_BYTES),
                    parse_options=parse,
                    # an empty field is null, in text columns too (as pandas reads it)
                    convert_options=csv.ConvertOptions(
                        column_types=types, strings_can_be_null=True
                    ),
                )
                types = {f.name: f.type for f in table.schema}
                yielded = True
                read[0] += len(text)
                yield table
            if not data:
                return


def _record_end(buffer: bytes, *, last: bool) -> int:
    """Just past the last (or, ``last=False``, the first) newline that ends a CSV record.

    A newline ends a record when an even number of quote characters precede it (a quoted
    field may hold newlines; a quote inside one is doubled). -1 when there is none.
    """
    if not last:
        position = buffer.find(b"\n")
        while position != -1:
            if buffer.count(b'"', 0, position) % 2 == 0:
                return position + 1
            position = buffer.find(b"\n", position + 1)
        return -1
    position = buffer.rfind(b"\n")
    quotes = buffer.count(b'"', 0, position) if position != -1 else 0
    while position != -1:
        if quotes % 2 == 0:
            return position + 1
        previous = buffer.rfind(b"\n", 0, position)
        quotes -= buffer.count(b'"', previous + 1, position)
        position = previous
    return -1


def _wider(type_name: str) -> pa.DataType:
    """The type to read a CSV column as when a value does not fit ``type_name``."""
    import pyarrow as pa

    if type_name in ("null", "int64", "bool", "boolean"):
        # a column of nulls or integers may be a column of numbers; the next failure widens it
        # again to string
        return pa.float64() if type_name != "bool" else pa.string()
    return pa.string()


def _csv_error(path: Path, message: str, rows_before: int) -> InvalidInput:
    """An InvalidInput naming the CSV file and, when it can be found, the bad line."""
    reason = message.removeprefix("CSV parse error: ")
    bad_row = reason.rsplit(": ", 1)[1] if ": " in reason else None
    line = _find_line(path, bad_row, rows_before + 1) if bad_row else None
    where = f" at line {line}" if line else ""
    return InvalidInput(
        f"{path} is not valid CSV{where}: {reason}", path=str(path), line=line, reason=reason
    )


def _find_line(path: Path, text: str, skip: int) -> int | None:
    """The 1-based line number of the first line equal to ``text`` after ``skip`` lines."""
    if path.suffix in (".gz", ".bz2", ".zst"):
        return None
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for number, line in enumerate(f, start=1):
            if number > skip and line.rstrip("\r\n") == text:
                return number
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
