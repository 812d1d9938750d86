"""Scoring tables of input rows for ``keel batch-predict``: what a job reads and keeps
(:class:`BatchJob`, checked against every input file before any row is scored by
:func:`plan_job`), and a :class:`Scorer` that turns a table of input rows into the output
table, the kept input columns plus the predictions, with the same code on the local engine and
on Ray actors.

Each table is checked against the model's signature (:meth:`Predictor.check`) and scored with
:meth:`Predictor.predict_checked`, so a job enforces the signature exactly as ``keel serve``
does. A model with a column signature gets its signature's columns (other input columns are
only read when kept); a model without one (a tensor signature, or none) gets every column of
the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from keel.errors import InvalidInput, KeelError, SchemaMismatch
from keel.models.loading import Predictor
from keel.models.models import ModelVersion, Signature
from keel.serving.batch_files import BatchInput, csv_reader

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "PREDICTION",
    "BatchJob",
    "BatchProgress",
    "Scorer",
    "output_metadata",
    "plan_job",
]

PREDICTION = "prediction"
"""The output column of a single-output model; ``prediction.<name>`` for each named output."""

# signature column type -> the type a CSV column is parsed as (others are inferred)
_CSV_TYPES = {
    "float": "float64",
    "integer": "int64",
    "boolean": "bool_",
    "string": "string",
}


class BatchProgress(Protocol):
    """What a job reports its progress to (the CLI's rich progress bar)."""

    def start(self, total: int | None) -> None:
        """The job begins; ``total`` rows when known (Parquet input), else None."""

    def advance(self, rows: int) -> None:
        """``rows`` more rows were scored and written."""


@dataclass(frozen=True)
class BatchJob:
    """What a batch job reads, gives the model and keeps, decided once for every input file.

    Attributes:
        predictor: the loaded model.
        version: the registered version it was loaded as (None for a ``runs:/`` model).
        source: the input files.
        features: the columns the model gets, in the order read.
        keep: the input columns copied into the output, in the order given.
        chunk_rows: rows scored at a time.
        csv_types: types CSV columns are parsed as (the signature's, then the first file's
            for kept columns), so every block and file reads alike.
    """

    predictor: Predictor
    version: ModelVersion | None
    source: BatchInput
    features: tuple[str, ...]
    keep: tuple[str, ...]
    chunk_rows: int
    csv_types: dict[str, pa.DataType] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """Every column read: the features, then the kept columns the model does not get."""
        return [*self.features, *(name for name in self.keep if name not in self.features)]

    def scorer(self) -> Scorer:
        return Scorer(self.predictor, features=self.features, keep=self.keep)


def plan_job(
    predictor: Predictor,
    source: BatchInput,
    *,
    version: ModelVersion | None = None,
    keep: Sequence[str] = (),
    keep_all: bool = False,
    chunk_rows: int,
) -> BatchJob:
    """The job scoring ``source`` with ``predictor``, after checking every input file's columns
    against the signature and ``keep`` (schemas only: Parquet footers, a CSV's first block), so
    a bad file fails the job before any row is scored.

    Raises:
        SchemaMismatch: a file lacks a column the model needs, or holds one of the wrong type
            (the message names the file and the column).
        InvalidInput: a kept column is missing from a file or clashes with the prediction
            columns; a file cannot be read.
    """
    signature = predictor.signature
    schemas = [_file_schema(source, path, signature) for path in source.files]
    first = schemas[0]
    kept = tuple(first.names) if keep_all else tuple(dict.fromkeys(keep))
    for name in kept:
        if name == PREDICTION or name.startswith(PREDICTION + "."):
            raise InvalidInput(
                f"the kept column {name!r} would clash with the output's prediction columns; "
                "rename it in the input or do not keep it",
                column=name,
            )
    features = _features(signature, first)
    csv_types = _csv_types(signature, first, kept) if source.format == "csv" else {}
    job = BatchJob(predictor, version, source, features, kept, chunk_rows, csv_types)
    scorer = job.scorer()
    for path, schema in zip(source.files, schemas, strict=True):
        where = source.display(path)
        scorer.check(schema.empty_table(), where=where)
        for name in kept:
            if name not in schema.names:
                raise InvalidInput(
                    f"{where} has no column {name!r} to keep; it has {', '.join(schema.names)}",
                    path=where,
                    column=name,
                )
    return job


def _file_schema(source: BatchInput, path: str, signature: Signature | None) -> pa.Schema:
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = source.display(path)
    try:
        if source.format == "parquet":
            return pq.ParquetFile(source.source(path)).schema_arrow
        return csv_reader(source, path, types=_csv_types(signature, None, ())).schema
    except (pa.ArrowException, OSError) as exc:
        kind = "Parquet" if source.format == "parquet" else "CSV"
        raise InvalidInput(f"cannot read {where} as {kind}: {exc}", path=where) from None


def _features(signature: Signature | None, schema: pa.Schema) -> tuple[str, ...]:
    if signature is not None and isinstance(signature.inputs, list):
        return tuple(spec.name for spec in signature.inputs)
    return tuple(schema.names)


def _csv_types(
    signature: Signature | None, schema: pa.Schema | None, keep: Sequence[str]
) -> dict[str, pa.DataType]:
    """Parse a signature's columns as its types (a float column whose first block holds only
    integers must not become int64), kept ones as the first file read them."""
    import pyarrow as pa

    types: dict[str, pa.DataType] = {}
    if schema is not None:
        types.update((name, schema.field(name).type) for name in keep if name in schema.names)
    if signature is not None and isinstance(signature.inputs, list):
        for spec in signature.inputs:
            if spec.type in _CSV_TYPES:
                types[spec.name] = getattr(pa, _CSV_TYPES[spec.type])()
    return types


class Scorer:
    """Turns a table of input rows into output rows: the kept columns, then the predictions.

    Example:
        >>> scorer = Scorer(predictor, features=("age", "bmi"), keep=("id",))
        >>> scorer.score(table, where="people.parquet rows 0-9")  # doctest: +SKIP
    """

    def __init__(self, predictor: Predictor, *, features: Sequence[str], keep: Sequence[str]):
        self.predictor = predictor
        self.features = list(features)
        self.keep = list(keep)

    def check(self, table: pa.Table, *, where: str) -> Any:
        """The features of ``table`` checked against the signature (what the model gets).

        Raises:
            SchemaMismatch: as :meth:`Predictor.check`, the message starting with ``where``.
        """
        try:
            return self.predictor.check(_frame(table, self.features))
        except KeelError as exc:
            raise _located(exc, where) from None

    def score(self, table: pa.Table, *, where: str) -> pa.Table:
        """The output rows for ``table``'s input rows (same count, same order).

        Raises:
            SchemaMismatch: the rows do not match the signature.
            InvalidInput: the model refused them, or returned a row count or values that do
                not make a table; every message starts with ``where``.
        """
        checked = self.check(table, where=where)
        try:
            predictions = self.predictor.predict_checked(checked)
        except (ValueError, TypeError) as exc:  # the model refused what the signature allowed
            raise InvalidInput(f"{where}: the model refused the input: {exc}") from None
        columns = _prediction_columns(predictions, self.predictor.signature, where=where)
        output = table.select(self.keep)
        for name, values in columns:
            if len(values) != table.num_rows:
                raise InvalidInput(
                    f"{where}: the model returned {len(values)} predictions for "
                    f"{table.num_rows} rows",
                    where=where,
                )
            output = output.append_column(name, values)
        return output


def _frame(table: pa.Table, features: Sequence[str]) -> Any:
    """The features ``table`` has, as a DataFrame (the signature check names any missing)."""
    present = set(table.column_names)
    return table.select([name for name in features if name in present]).to_pandas()


def _located(exc: KeelError, where: str) -> KeelError:
    """``exc`` with ``where`` in front of its message, of the same kind when it is a mismatch."""
    kind = SchemaMismatch if isinstance(exc, SchemaMismatch) else type(exc)
    if kind not in (SchemaMismatch, InvalidInput):
        return exc
    return kind(f"{where}: {exc.message}", **{**exc.context, "where": where})


def _prediction_columns(
    predictions: Any, signature: Signature | None, *, where: str
) -> list[tuple[str, pa.Array]]:
    """Predictions as named Arrow columns: ``prediction`` for one output, ``prediction.<name>``
    for named outputs (a DataFrame, or a 2-D array whose signature names its columns), else one
    ``prediction`` column of fixed-size lists."""
    import numpy as np
    import pyarrow as pa

    try:
        if hasattr(predictions, "columns") and hasattr(predictions, "iloc"):  # a DataFrame
            return [
                (f"{PREDICTION}.{name}", pa.Array.from_pandas(predictions[name]))
                for name in predictions.columns
            ]
        if hasattr(predictions, "iloc"):  # a Series
            return [(PREDICTION, pa.Array.from_pandas(predictions))]
        array = np.asarray(predictions)
        if array.ndim <= 1:
            return [(PREDICTION, pa.array(array))]
        array = array.reshape(len(array), -1)
        outputs = signature.outputs if signature is not None else None
        if isinstance(outputs, list) and len(outputs) == array.shape[1]:
            return [
                (f"{PREDICTION}.{spec.name}", pa.array(array[:, i]))
                for i, spec in enumerate(outputs)
            ]
        flat = pa.array(np.ascontiguousarray(array).ravel())
        return [(PREDICTION, pa.FixedSizeListArray.from_arrays(flat, array.shape[1]))]
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise InvalidInput(
            f"{where}: the model's predictions cannot be written as a Parquet column: {exc}",
            where=where,
        ) from None


def output_metadata(
    predictor: Predictor, version: ModelVersion | None, *, input_url: str
) -> dict[str, str]:
    """What the output's Parquet schema records about the model and the job."""
    metadata = {
        "keel.model_uri": predictor.uri,
        "keel.model_digest": predictor.digest,
        "keel.created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "keel.input": input_url,
    }
    if version is not None:
        metadata["keel.model_name"] = version.name
        metadata["keel.model_version"] = str(version.version)
    if predictor.manifest.run_id:
        metadata["keel.model_run_id"] = predictor.manifest.run_id
    return metadata
