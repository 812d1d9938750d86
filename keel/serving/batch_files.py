"""The files of a batch-scoring job: which input files to read and how (:class:`BatchInput`),
their rows in chunks of a bounded size (:func:`read_chunks`), and the Parquet output written
whole or not at all (:class:`ParquetSink`).

Paths are fsspec URLs (a local path, ``file://``, ``s3://``, ``memory://``...). A folder is read
recursively in sorted path order, skipping hidden files and ``_``-prefixed ones (``_SUCCESS``,
``_metadata``); CSV and Parquet files may not be mixed in one job. Memory stays bounded whatever
the input size: Parquet is read ``chunk_rows`` rows at a time through a 1 MiB buffer (not a
whole row group at once), CSV through pyarrow's streaming reader in blocks whose rows are
gathered into chunks.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from keel.errors import AlreadyExists, InvalidInput, NotFound

if TYPE_CHECKING:
    import pyarrow as pa
    from fsspec import AbstractFileSystem

__all__ = [
    "BatchInput",
    "Chunk",
    "Format",
    "ParquetSink",
    "check_output",
    "csv_options",
    "csv_reader",
    "open_input",
    "read_chunks",
]

Format = Literal["csv", "parquet"]

_SUFFIXES: dict[str, Format] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_CSV_BLOCK_BYTES = 1 << 20
"""CSV is parsed in blocks of this many bytes (pyarrow's default). pyarrow's streaming reader
reads about 35 blocks ahead whatever is asked: 37 MB of buffers at 1 MiB, 150 MB at 4 MiB
(measured), and the same for a file twice as large."""
_BUFFER = 1 << 20
"""Parquet column chunks are read through a buffer of this many bytes: without one, pyarrow
reads a row group's column chunks whole (80 MB for a row group of a million rows of ten float
columns, pyarrow's default size) before the first chunk is scored."""


@dataclass(frozen=True)
class BatchInput:
    """The input of a job: its files, all of one format, on one filesystem.

    Attributes:
        url: what the caller gave.
        fs: the fsspec filesystem the files are on.
        root: ``url``'s path on ``fs`` (a file, or the folder the files were found in).
        files: the files' paths on ``fs``, sorted.
        format: ``csv`` or ``parquet``.
    """

    url: str
    fs: AbstractFileSystem
    root: str
    files: tuple[str, ...]
    format: Format

    @property
    def is_local(self) -> bool:
        """The files are on the local disk (pyarrow then reads them natively)."""
        return _is_local(self.fs)

    def display(self, path: str) -> str:
        """How errors name the file ``path``: relative to the folder given, else as given."""
        if path == self.root:
            return self.url
        return posixpath.join(self.url.rstrip("/"), posixpath.relpath(path, self.root))

    def total_rows(self) -> int | None:
        """The number of rows to score when cheap to know (Parquet footers), else None."""
        if self.format != "parquet":
            return None
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(self.source(path)).metadata.num_rows for path in self.files)

    def source(self, path: str) -> Any:
        """What pyarrow should read ``path`` from: the path itself on the local disk (native
        reads), an open fsspec file elsewhere."""
        return path if self.is_local else self.fs.open(path, "rb")


def open_input(url: str, *, format: Literal["auto", "csv", "parquet"] = "auto") -> BatchInput:
    """The files to score at ``url``: one file, or every CSV or Parquet file under a folder.

    Args:
        url: a file or folder path or fsspec URL.
        format: ``auto`` decides by the files' suffixes (``.csv``, ``.parquet``, ``.pq``);
            ``csv`` or ``parquet`` reads a file, or every non-hidden file of a folder, as that.

    Raises:
        NotFound: nothing is at ``url``.
        InvalidInput: the folder holds no input file, mixes CSV and Parquet, or a file's format
            cannot be told from its name.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(root):
        raise NotFound(f"the input {url} does not exist", path=url)
    files = _folder_files(fs, root, url, format) if fs.isdir(root) else [root]
    chosen = format if format != "auto" else _format_of(files, url)
    return BatchInput(url=url, fs=fs, root=root, files=tuple(files), format=chosen)


def _folder_files(fs: AbstractFileSystem, root: str, url: str, format: str) -> list[str]:
    found = sorted(
        path
        for path in fs.find(root)
        if not any(part.startswith((".", "_")) for part in _relative_parts(path, root))
    )
    if format == "auto":
        found = [path for path in found if _suffix(path) in _SUFFIXES]
    if not found:
        raise InvalidInput(
            f"the folder {url} holds no CSV or Parquet file (.csv, .parquet, .pq)", path=url
        )
    return found


def _relative_parts(path: str, root: str) -> list[str]:
    return posixpath.relpath(path, root).split("/")


def _format_of(files: Sequence[str], url: str) -> Format:
    formats = {_SUFFIXES.get(_suffix(path)) for path in files}
    if None in formats:
        raise InvalidInput(
            f"cannot tell the format of {url} from its name: name it .csv or .parquet, or "
            "pass --format csv or --format parquet",
            path=url,
        )
    if len(formats) > 1:
        raise InvalidInput(
            f"the folder {url} mixes CSV and Parquet files; score each format in its own job "
            "(or move one kind out of the folder)",
            path=url,
        )
    return formats.pop()  # type: ignore[return-value]


def _suffix(path: str) -> str:
    return posixpath.splitext(path)[1].lower()


def _is_local(fs: AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols


@dataclass(frozen=True)
class Chunk:
    """Rows of one input file: ``table`` holds rows ``start`` to ``start + len - 1`` of
    ``path`` (counted from 0, after a CSV's header)."""

    path: str
    start: int
    table: pa.Table

    @property
    def stop(self) -> int:
        return self.start + self.table.num_rows


def read_chunks(
    source: BatchInput,
    *,
    columns: Sequence[str],
    chunk_rows: int,
    csv_types: Mapping[str, pa.DataType] | None = None,
) -> Iterator[Chunk]:
    """The rows of every input file, ``columns`` only, in chunks of at most ``chunk_rows``.

    A chunk never spans two files, so an error can name the file and rows it came from.

    Raises:
        InvalidInput: a file cannot be read or parsed (the message names it and the rows).
    """
    for path in source.files:
        if source.format == "parquet":
            yield from _parquet_chunks(source, path, columns, chunk_rows)
        else:
            yield from _csv_chunks(source, path, columns, chunk_rows, csv_types or {})


def _parquet_chunks(
    source: BatchInput, path: str, columns: Sequence[str], chunk_rows: int
) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = 0
    try:
        reader = pq.ParquetFile(source.source(path), pre_buffer=False, buffer_size=_BUFFER)
        for batch in reader.iter_batches(batch_size=chunk_rows, columns=list(columns)):
            yield Chunk(path, start, pa.Table.from_batches([batch]))
            start += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(source, path, start, exc) from None


def _csv_chunks(
    source: BatchInput,
    path: str,
    columns: Sequence[str],
    chunk_rows: int,
    types: Mapping[str, pa.DataType],
) -> Iterator[Chunk]:
    """A CSV file's rows in chunks of exactly ``chunk_rows`` (the last may be shorter): the
    streaming reader's blocks are gathered until a chunk is full."""
    import pyarrow as pa

    start, pending, held = 0, [], 0
    try:
        for batch in csv_reader(source, path, columns=columns, types=types):
            pending.append(batch)
            held += batch.num_rows
            while held >= chunk_rows:
                table = pa.Table.from_batches(pending)
                yield Chunk(path, start, table.slice(0, chunk_rows))
                start, held = start + chunk_rows, held - chunk_rows
                pending = table.slice(chunk_rows).to_batches() if held else []
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(source, path, start + held, exc) from None
    if held:
        yield Chunk(path, start, pa.Table.from_batches(pending))


def csv_reader(
    source: BatchInput,
    path: str,
    *,
    columns: Sequence[str] | None = None,
    types: Mapping[str, pa.DataType] | None = None,
) -> Any:
    """pyarrow's streaming CSV reader on ``path`` (it parses the first block when opened).

    ``types`` fixes the listed columns' types; pyarrow infers the others from the first block.
    """
    import pyarrow.csv as pcsv

    return pcsv.open_csv(source.source(path), **csv_options(columns=columns, types=types))


def csv_options(
    *, columns: Sequence[str] | None = None, types: Mapping[str, pa.DataType] | None = None
) -> dict[str, Any]:
    """pyarrow's CSV ``read_options`` and ``convert_options`` for ``columns`` (None: all) with
    ``types`` fixed: what the local reader and Ray's ``read_csv`` both use."""
    import pyarrow.csv as pcsv

    return {
        "read_options": pcsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
        "convert_options": pcsv.ConvertOptions(
            column_types=dict(types or {}),
            include_columns=list(columns) if columns is not None else None,
        ),
    }


def _unreadable(source: BatchInput, path: str, row: int, exc: Exception) -> InvalidInput:
    kind = "Parquet" if source.format == "parquet" else "CSV"
    where = f"at or after row {row}" if row else "at its start"
    return InvalidInput(
        f"cannot read {source.display(path)} as {kind} ({where}): {exc}",
        path=source.display(path),
        row=row,
    )


def check_output(url: str, *, overwrite: bool, source: BatchInput) -> None:
    """Refuse an output that would replace something without ``overwrite``, is a folder, or
    lies inside the input folder (a later job would read it as input).

    Raises:
        AlreadyExists: ``url`` exists and ``overwrite`` is False.
        InvalidInput: ``url`` is a folder, or inside the input folder.
    """
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        if fs.isdir(path):
            raise InvalidInput(f"the output {url} is a folder; name a .parquet file", path=url)
        if not overwrite:
            raise AlreadyExists(
                f"the output {url} exists; pass --overwrite (overwrite=True) to replace it",
                path=url,
            )
    same_fs = type(fs) is type(source.fs)
    if same_fs and (path == source.root or path.startswith(source.root.rstrip("/") + "/")):
        raise InvalidInput(
            f"the output {url} is inside the input {source.url}; write it elsewhere (a "
            "later job would read it as input)",
            path=url,
        )


class ParquetSink:
    """One Parquet file written chunk by chunk into a hidden temporary file beside ``url``,
    moved into place by :meth:`commit` (a failed job leaves no file, half or whole).

    The first table written sets the schema, and ``metadata`` goes into it; later tables are
    cast to it (a column whose type changes between input files fails with a clear error).

    Example:
        >>> with ParquetSink("out.parquet", metadata={"keel.model_uri": uri}) as sink:
        ...     sink.write(table)  # doctest: +SKIP
    """

    def __init__(self, url: str, *, metadata: Mapping[str, str], overwrite: bool = False) -> None:
        import fsspec

        self.url = url
        self.fs, self.path = fsspec.core.url_to_fs(url)
        parent, name = posixpath.split(self.path)
        self._temp = posixpath.join(parent, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
        self._metadata = {key.encode(): value.encode() for key, value in metadata.items()}
        self._overwrite = overwrite
        self._file: Any = None
        self._writer: Any = None
        self.rows = 0

    @property
    def schema(self) -> pa.Schema | None:
        """The output's schema, once the first table is written."""
        return self._writer.schema if self._writer is not None else None

    def write(self, table: pa.Table, *, where: str) -> None:
        """Append ``table``'s rows; ``where`` names the input rows in an error.

        Raises:
            InvalidInput: its columns' types differ from the first table's and cannot be cast.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            schema = table.schema.with_metadata(self._metadata)
            self.fs.makedirs(posixpath.dirname(self.path) or ".", exist_ok=True)
            self._file = self.fs.open(self._temp, "wb")
            self._writer = pq.ParquetWriter(self._file, schema)
        elif not table.schema.equals(self._writer.schema):
            try:
                table = table.cast(self._writer.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise InvalidInput(
                    f"{where}: the output's columns would change type from the earlier rows "
                    f"({_schema_text(self._writer.schema)} then {_schema_text(table.schema)}): "
                    f"{exc}; give every input file the same column types",
                    where=where,
                ) from None
        self._writer.write_table(table)
        self.rows += table.num_rows

    def commit(self) -> None:
        """Close the file and move it to ``url``.

        Raises:
            InvalidInput: nothing was written (the input has no rows).
            AlreadyExists: ``url`` appeared meanwhile and ``overwrite`` is False.
        """
        if self._writer is None:
            raise InvalidInput("the input has no rows: nothing was scored or written")
        self._close()
        if not self._overwrite and self.fs.exists(self.path):
            raise AlreadyExists(
                f"the output {self.url} was created while this job ran; pass --overwrite "
                "to replace it",
                path=self.url,
            )
        self.fs.mv(self._temp, self.path)

    def abort(self) -> None:
        """Close and delete the temporary file."""
        self._close()
        if self.fs.exists(self._temp):
            self.fs.rm(self._temp)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.close()
        self._writer = self._file = None

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def _schema_text(schema: pa.Schema) -> str:
    return ", ".join(f"{field.name}: {field.type}" for field in schema)
