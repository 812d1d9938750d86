"""``keel data versions``, ``keel data lineage`` and ``keel data show``: named dataset versions.

Each command calls one function of :mod:`keel.data.versions` and prints with rich, or JSON with
``--json``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keel.data.cli_output import size_text
from keel.data.profile_models import ColumnProfile, HistogramBin, TableProfile
from keel.data.version_models import DatasetVersion
from keel.data.versions import DatasetRun, get_version, list_datasets, list_versions
from keel.data.versions import lineage as version_lineage

__all__ = ["lineage", "show", "versions"]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
_BAR_WIDTH = 30
_MAX_BINS = 10


@click.command()
@click.argument("name", required=False)
@_json_option
def versions(name: str | None, as_json: bool) -> None:
    """List the versions of dataset NAME, newest first (no NAME: every dataset).

    Each version shows when it was logged, its size, files, rows (tables), where it came from
    and the run that logged it.

    \b
    Example:
      keel data versions diabetes
      keel data versions --json
    """
    if name is None:
        datasets = list_datasets()
        if as_json:
            rows = [d.model_dump(mode="json", exclude={"latest": {"profile"}}) for d in datasets]
            click.echo(json.dumps(rows, indent=2))
            return
        if not datasets:
            click.echo("No named datasets yet (keel.data.log_dataset, keel data add --name).")
            return
        table = Table("dataset", "versions", "latest", "created", "size", "rows")
        for d in datasets:
            table.add_row(
                escape(d.name),
                str(d.versions),
                str(d.latest.version),
                _when(d.latest),
                size_text(d.latest.size),
                _rows(d.latest),
            )
        _console().print(table)
        return
    found = list_versions(name)
    if as_json:
        rows = [_version_json(v) for v in found]
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("version", "created", "kind", "size", "files", "rows", "source", "run")
    for v in found:
        table.add_row(
            str(v.version),
            _when(v),
            v.format or v.kind,
            size_text(v.size),
            f"{v.files:,}",
            _rows(v),
            escape(v.source or "-"),
            v.run_id or "-",
        )
    console = _console()
    console.print(f"[bold]{escape(name)}[/]: {len(found)} version{'s' if len(found) != 1 else ''}")
    console.print(table)


@click.command()
@click.argument("ref", metavar="NAME@VERSION")
@_json_option
def lineage(ref: str, as_json: bool) -> None:
    """List the run that logged dataset version NAME@VERSION and the runs that used it.

    A run uses a version when it reads it through keel.data.load or calls keel.log_input.
    NAME alone (or NAME@latest) is the latest version.

    \b
    Example:
      keel data lineage diabetes@2
      keel data lineage diabetes --json
    """
    found = version_lineage(ref)
    if as_json:
        document = found.model_dump(mode="json")
        document["version"] = _version_json(found.version)
        click.echo(json.dumps(document, indent=2))
        return
    console = _console()
    v = found.version
    console.print(f"[bold]{escape(v.ref)}[/] ({_describe(v)})")
    if found.produced_by is not None:
        console.print(f"Logged by run {_run_line(found.produced_by)}")
    else:
        console.print("Logged outside a run.")
    if not found.used_by:
        console.print("No run has used it yet.")
        return
    table = Table("run", "experiment", "run name", "status", "context", "used at")
    for run in found.used_by:
        table.add_row(
            run.run_id,
            escape(run.experiment),
            escape(run.run_name),
            _status(run.status),
            escape(run.context or "-"),
            run.at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    n = len(found.used_by)
    console.print(f"Used by {n} run{'s' if n != 1 else ''}:")
    console.print(table)


@click.command()
@click.argument("ref", metavar="NAME@VERSION")
@_json_option
def show(ref: str, as_json: bool) -> None:
    """Print dataset version NAME@VERSION: its schema and profile for a table.

    Per column: type, count, nulls, distinct values, min/max/mean/std, quantiles, a small
    histogram (numbers) and the most frequent values (categories). NAME alone is the latest.

    \b
    Example:
      keel data show diabetes@2
      keel data show diabetes --json
    """
    version = get_version(ref)
    if as_json:
        click.echo(json.dumps(version.model_dump(mode="json"), indent=2))
        return
    console = _console()
    console.print(f"[bold]{escape(version.ref)}[/] ({_describe(version)})")
    console.print(f"  digest:  {version.digest}")
    console.print(f"  created: {_when(version)}")
    console.print(f"  source:  {escape(version.source or '-')}")
    if version.run_id:
        console.print(f"  run:     {version.run_id}")
    profile = version.profile
    if profile is None:
        what = "a folder" if version.kind == "directory" else "not a CSV or Parquet table"
        console.print(f"No profile: {what}.")
        return
    console.print(f"\n[bold]{profile.rows:,} rows, {len(profile.columns)} columns[/]")
    console.print(_schema_table(profile))
    quantiles = _quantile_table(profile)
    if quantiles is not None:
        console.print(quantiles)
    for column in profile.columns:
        _print_distribution(console, column)


# -- show ------------------------------------------------------------------------------------


def _schema_table(profile: TableProfile) -> Table:
    table = Table(
        "column", "type", "count", "nulls", "distinct", "min", "max", "mean", "std", title="Schema"
    )
    for c in profile.columns:
        distinct = f"{'' if c.distinct_exact else '~'}{c.distinct:,}"
        nulls = f"{c.nulls:,}" + (f" ({c.null_fraction:.1%})" if c.nulls else "")
        table.add_row(
            escape(c.name),
            escape(c.type),
            f"{c.count:,}",
            nulls,
            distinct,
            _value(c.min),
            _value(c.max),
            _value(c.mean),
            _value(c.std),
        )
    return table


def _quantile_table(profile: TableProfile) -> Table | None:
    with_quantiles = [c for c in profile.columns if c.quantiles]
    if not with_quantiles:
        return None
    keys = sorted({k for c in with_quantiles for k in c.quantiles}, key=float)
    table = Table("column", *[f"p{float(k) * 100:g}" for k in keys], title="Quantiles")
    for c in with_quantiles:
        table.add_row(escape(c.name), *[_value(c.quantiles.get(k)) for k in keys])
    return table


def _print_distribution(console: Console, column: ColumnProfile) -> None:
    if column.histogram:
        console.print(f"\n[bold]{escape(column.name)}[/] histogram")
        bins = _merge_bins(column.histogram)
        peak = max(count for _, _, count in bins) or 1
        for low, high, count in bins:
            bar = "█" * math.ceil(_BAR_WIDTH * count / peak) if count else ""
            console.print(f"  {_value(low):>10} – {_value(high):<10} {bar} {count:,}")
    elif column.top:
        exact = "" if column.top_exact else " (estimated)"
        console.print(f"\n[bold]{escape(column.name)}[/] top values{exact}")
        peak = max(t.count for t in column.top) or 1
        width = min(max(len(t.value) for t in column.top), 24)
        for t in column.top:
            bar = "█" * math.ceil(_BAR_WIDTH * t.count / peak) if t.count else ""
            share = f" ({t.count / column.count:.1%})" if column.count else ""
            label = t.value if len(t.value) <= width else t.value[: width - 1] + "…"
            console.print(f"  {escape(label):<{width}} {bar} {t.count:,}{share}")
    if column.note:
        console.print(f"  [dim]{escape(column.note)}[/]")


def _merge_bins(bins: list[HistogramBin]) -> list[tuple[float, float, int]]:
    """At most :data:`_MAX_BINS` bins for the terminal: neighbours are added together."""
    step = math.ceil(len(bins) / _MAX_BINS)
    return [
        (group[0].low, group[-1].high, sum(b.count for b in group))
        for group in (bins[i : i + step] for i in range(0, len(bins), step))
    ]


# -- formatting ------------------------------------------------------------------------------


def _console() -> Console:
    return Console(highlight=False)


def _version_json(v: DatasetVersion) -> dict[str, Any]:
    """A version for listings: everything but the (large) profile, plus the row count."""
    document = v.model_dump(mode="json", exclude={"profile"})
    document["ref"] = v.ref
    document["rows"] = v.profile.rows if v.profile is not None else None
    return document


def _describe(v: DatasetVersion) -> str:
    kind = f"{v.format} table" if v.format else ("folder" if v.kind == "directory" else "file")
    files = f", {v.files:,} files" if v.kind == "directory" else ""
    rows = f", {v.profile.rows:,} rows" if v.profile is not None else ""
    return f"{kind}, {size_text(v.size)}{files}{rows}"


def _run_line(run: DatasetRun) -> str:
    return (
        f"{run.run_id} ({escape(run.experiment)} / {escape(run.run_name)}, "
        f"{_status(run.status)}, started {run.at:%Y-%m-%d %H:%M:%S})"
    )


def _status(status: str) -> str:
    color = {"FINISHED": "green", "RUNNING": "blue", "FAILED": "red"}.get(status, "yellow")
    return f"[{color}]{status}[/]"


def _when(v: DatasetVersion) -> str:
    return v.created_at.strftime("%Y-%m-%d %H:%M:%S")


def _rows(v: DatasetVersion) -> str:
    return f"{v.profile.rows:,}" if v.profile is not None else "-"


def _value(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return escape(value if len(value) <= 24 else value[:23] + "…")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.4g}"
