"""Batch scoring (precompute): ``keel batch-predict`` and :func:`batch_predict` score CSV or
Parquet files, a file or a folder of them at any fsspec URL, in chunks of bounded memory, and
write one Parquet file of the kept input columns plus the predictions, with the model recorded
in its schema metadata. See ``docs/batch.md``.

Two engines run the same job: ``local`` streams the files through this process, chunk by
chunk; ``ray`` reads and scores them on a Ray cluster (:mod:`keel.serving.batch_ray`), with
results identical row for row. Either way the output is written to a hidden temporary file and
moved into place at the end, so a failed job leaves no file behind.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from keel.errors import InvalidInput
from keel.serving.batch_files import ParquetSink, check_output, open_input, read_chunks
from keel.serving.batch_ray import score_with_ray
from keel.serving.batch_scoring import BatchJob, BatchProgress, output_metadata, plan_job
from keel.serving.sources import load_for_serving

__all__ = ["DEFAULT_CHUNK_ROWS", "BatchResult", "batch_predict"]

DEFAULT_CHUNK_ROWS = 100_000
"""Rows scored at a time unless told: about 8 MB per ten float columns."""

Engine = Literal["local", "ray"]


@dataclass(frozen=True)
class BatchResult:
    """What a batch job did.

    Attributes:
        output: the Parquet file written.
        rows: rows scored (and written).
        files: input files read.
        seconds: wall time, model loading included.
        engine: ``local`` or ``ray``.
        model_uri: the URI the model was loaded from.
        model_name: its registered name (None for a ``runs:/`` model).
        model_version: its registered version (None for a ``runs:/`` model).
        model_digest: the model folder's digest.
    """

    output: str
    rows: int
    files: int
    seconds: float
    engine: Engine
    model_uri: str
    model_name: str | None
    model_version: int | None
    model_digest: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def batch_predict(
    uri: str,
    input: str,
    output: str,
    *,
    engine: Engine = "local",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    format: Literal["auto", "csv", "parquet"] = "auto",
    keep: Sequence[str] = (),
    keep_all: bool = False,
    overwrite: bool = False,
    ray_address: str | None = None,
    ray_actors: int | None = None,
    progress: BatchProgress | None = None,
) -> BatchResult:
    """Score every row of ``input`` with the model at ``uri`` into the Parquet file ``output``.

    Every input file's columns are checked against the model's signature before any row is
    scored; each chunk is then checked again (types, nulls) and scored. The output holds the
    kept input columns, then ``prediction`` (or ``prediction.<name>`` per named output, or a
    list per row), in input order. Its schema metadata records ``keel.model_uri``,
    ``keel.model_name``, ``keel.model_version``, ``keel.model_digest``, ``keel.model_run_id``,
    ``keel.input`` and ``keel.created_at``.

    Args:
        uri: the model (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/ID/PATH``).
        input: a CSV or Parquet file, or a folder of them (read recursively, in sorted order),
            as a path or fsspec URL.
        output: the Parquet file to write (path or fsspec URL).
        engine: ``local`` (this process) or ``ray`` (Ray Data on a cluster).
        chunk_rows: rows scored at a time; memory grows with it, not with the input.
        format: ``auto`` (by suffix), ``csv`` or ``parquet``.
        keep: input columns to copy into the output (an id, a timestamp).
        keep_all: copy every input column (of the first file) into the output.
        overwrite: replace ``output`` if it exists.
        ray_address: the Ray cluster (default ``RAY_ADDRESS``, else a local Ray).
        ray_actors: the most scoring actors on Ray (default the cluster's CPU count).
        progress: told the total and each chunk's rows (the CLI's progress bar).

    Returns:
        A :class:`BatchResult`.

    Raises:
        NotFound: the input or the model does not exist.
        AlreadyExists: ``output`` exists and ``overwrite`` is False.
        SchemaMismatch: an input file's columns or a chunk's values do not match the
            signature; the message names the file (and rows).
        InvalidInput: a bad argument, an unreadable file, or a chunk the model refused.
        MissingExtra: ``engine="ray"`` without Ray installed.

    Example:
        >>> result = batch_predict(
        ...     "models:/diabetes@champion", "s3://bucket/patients/", "scores.parquet",
        ...     keep=["patient_id"],
        ... )  # doctest: +SKIP
        >>> result.rows, result.model_version  # doctest: +SKIP
        (1000000, 3)
    """
    began = time.perf_counter()
    _check_arguments(engine=engine, chunk_rows=chunk_rows, keep=keep, keep_all=keep_all)
    source = open_input(input, format=format)
    check_output(output, overwrite=overwrite, source=source)
    predictor, version = load_for_serving(uri)
    job = plan_job(
        predictor, source, version=version, keep=keep, keep_all=keep_all, chunk_rows=chunk_rows
    )
    metadata = output_metadata(predictor, version, input_url=input)
    with ParquetSink(output, metadata=metadata, overwrite=overwrite) as sink:
        if engine == "ray":
            score_with_ray(job, sink, address=ray_address, actors=ray_actors, progress=progress)
        else:
            _score_locally(job, sink, progress)
    return BatchResult(
        output=output,
        rows=sink.rows,
        files=len(source.files),
        seconds=time.perf_counter() - began,
        engine=engine,
        model_uri=predictor.uri,
        model_name=version.name if version is not None else None,
        model_version=version.version if version is not None else None,
        model_digest=predictor.digest,
    )


def _check_arguments(*, engine: str, chunk_rows: int, keep: Sequence[str], keep_all: bool) -> None:
    if engine not in ("local", "ray"):
        raise InvalidInput(f"unknown engine {engine!r}: use local or ray", engine=engine)
    if chunk_rows < 1:
        raise InvalidInput(f"chunk_rows must be at least 1, not {chunk_rows}")
    if isinstance(keep, str):
        raise InvalidInput("keep is a list of column names, not one string")
    if keep and keep_all:
        raise InvalidInput("give either columns to keep or keep_all, not both")


def _score_locally(job: BatchJob, sink: ParquetSink, progress: BatchProgress | None) -> None:
    """Read, score and write chunk after chunk in this process."""
    source = job.source
    scorer = job.scorer()
    if progress is not None:
        progress.start(source.total_rows())
    chunks = read_chunks(
        source, columns=job.columns, chunk_rows=job.chunk_rows, csv_types=job.csv_types
    )
    for chunk in chunks:
        where = f"{source.display(chunk.path)} rows {chunk.start}-{chunk.stop - 1}"
        sink.write(scorer.score(chunk.table, where=where), where=where)
        if progress is not None:
            progress.advance(chunk.table.num_rows)
