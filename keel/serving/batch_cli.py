"""``keel batch-predict``: score CSV or Parquet files into Parquet, locally or on Ray."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from keel.serving.batch import BatchResult

__all__ = ["batch_predict"]


@click.command("batch-predict")
@click.argument("model_uri")
@click.option("--input", "-i", "input_", required=True, help="CSV or Parquet file or folder.")
@click.option("--output", "-o", required=True, help="The Parquet file to write.")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Score in this process, or through Ray Data on a Ray cluster.",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Rows read and scored at a time (memory grows with it, not with the input).",
)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["auto", "csv", "parquet"]),
    default="auto",
    show_default=True,
    help="Input format; auto decides by suffix (.csv, .parquet, .pq).",
)
@click.option(
    "--keep",
    "keep",
    multiple=True,
    metavar="COLUMNS",
    help="Input columns to copy into the output, comma-separated (an id, a time).",
)
@click.option("--keep-all", is_flag=True, help="Copy every input column into the output.")
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@click.option(
    "--ray-address",
    envvar="RAY_ADDRESS",
    metavar="ADDR",
    help="Ray cluster to run on with --engine ray (default: RAY_ADDRESS, else a local Ray).",
)
@click.option(
    "--ray-actors",
    type=click.IntRange(min=1),
    help="Most scoring actors on Ray, each with one copy of the model (default: CPUs).",
)
@click.option(
    "--progress/--no-progress",
    "show_progress",
    default=None,
    help="Show a progress bar (default: when stderr is a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON for scripts.")
def batch_predict(
    model_uri: str,
    input_: str,
    output: str,
    engine: str,
    chunk_rows: int,
    format_: str,
    keep: tuple[str, ...],
    keep_all: bool,
    overwrite: bool,
    ray_address: str | None,
    ray_actors: int | None,
    show_progress: bool | None,
    as_json: bool,
) -> None:
    """Score every row of --input with MODEL_URI into the Parquet file --output.

    The input is a CSV or Parquet file, or a folder of them (read recursively in sorted
    order), as a path or fsspec URL (s3://, gs://, ...). Rows are read and scored in chunks,
    so memory stays bounded whatever the input's size. The output holds the kept columns and
    `prediction`, in input order, with the model's URI, name, version and digest in its
    Parquet metadata; it appears only when the whole job succeeded.

    \b
    Examples:
      keel batch-predict models:/diabetes@champion -i patients.csv -o scores.parquet
      keel batch-predict models:/churn/3 -i s3://lake/customers/ -o s3://lake/churn.parquet \\
          --keep customer_id --chunk-rows 200000
      keel batch-predict models:/churn@champion -i data/ -o out.parquet --engine ray \\
          --ray-address ray://head:10001
    """
    from keel.serving.batch import batch_predict as run

    columns = [name.strip() for value in keep for name in value.split(",") if name.strip()]
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    with _progress_bar(enabled=show_progress) as progress:
        result = run(
            model_uri,
            input_,
            output,
            engine=engine,  # type: ignore[arg-type]
            chunk_rows=chunk_rows,
            format=format_,  # type: ignore[arg-type]
            keep=columns,
            keep_all=keep_all,
            overwrite=overwrite,
            ray_address=ray_address,
            ray_actors=ray_actors,
            progress=progress,
        )
    if as_json:
        click.echo(json.dumps({**asdict(result), "rows_per_second": result.rows_per_second}))
    else:
        click.echo(_summary(result))


def _summary(result: BatchResult) -> str:
    model = result.model_uri
    if result.model_name is not None:
        model = f"{result.model_name} version {result.model_version}"
    files = f"{result.files} file{'s' if result.files != 1 else ''}"
    return (
        f"Scored {result.rows:,} rows from {files} with {model} "
        f"(digest {result.model_digest[:12]}) in {result.seconds:.1f} s "
        f"({result.rows_per_second:,.0f} rows/s) into {result.output}"
    )


class _RichProgress:
    """:class:`~keel.serving.batch_scoring.BatchProgress` drawn by a rich progress bar."""

    def __init__(self, bar: Progress) -> None:
        self._bar = bar
        self._task: TaskID | None = None

    def start(self, total: int | None) -> None:
        self._task = self._bar.add_task("scoring", total=total)

    def advance(self, rows: int) -> None:
        if self._task is not None:
            self._bar.advance(self._task, rows)


@contextmanager
def _progress_bar(*, enabled: bool) -> Iterator[_RichProgress | None]:
    """A progress bar of rows and rows/s on stderr while the job runs, or None."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Rows/s since the start (rich's own speed needs several updates in a window)."""

        def render(self, task: Any) -> Text:
            elapsed = task.finished_time or task.elapsed
            rate = task.completed / elapsed if elapsed else 0.0
            return Text(f"{rate:,.0f} rows/s")

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} rows"),
        RateColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    with bar:
        yield _RichProgress(bar)
