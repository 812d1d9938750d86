"""``keel data diff``: the files added, deleted and modified between two versions of tracked
data, and for two profiled tables their schema changes and distribution shift.

Calls :func:`keel.data.diff.diff` and prints its :class:`~keel.data.diff.DataDiff` with rich,
or as JSON.
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keel.data.cli_output import size_text
from keel.data.diff import DataDiff, DataVersion
from keel.data.diff import diff as diff_versions
from keel.data.profile_models import ColumnDiff, ProfileDiff

__all__ = ["diff"]

_COLORS = {"added": "green", "deleted": "red", "modified": "yellow"}


@click.command()
@click.argument("a")
@click.argument("b", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def diff(a: str, b: str | None, as_json: bool) -> None:
    """Compare two versions of tracked data: files added, deleted, modified.

    A and B are each a tracked path (the pointer as it is now: images, images.keel), REV:PATH
    (the pointer committed in a git revision: HEAD~1:images, v1.0:data/train.csv) or
    NAME@VERSION (a named dataset version). With B omitted, A's path as committed in HEAD
    (or in REV for REV:PATH) is compared with its working pointer. Two table versions with
    profiles also show schema changes and per-column distribution shift. Only folder
    listings are read from the store, never file content.

    \b
    Example:
      keel data diff HEAD~1:images images
      keel data diff images                  # HEAD vs the working pointer
      keel data diff diabetes@1 diabetes@2 --json
    """
    result = diff_versions(a, b)
    if as_json:
        document = {
            "a": result.a.model_dump(mode="json", exclude={"dataset"}),
            "b": result.b.model_dump(mode="json", exclude={"dataset"}),
            "added": [{"path": c.path, "size": c.size_b} for c in result.added],
            "deleted": [{"path": c.path, "size": c.size_a} for c in result.deleted],
            "modified": [c.model_dump() for c in result.modified],
            "summary": result.summary(),
            "profile": result.profile.model_dump(mode="json") if result.profile else None,
        }
        click.echo(json.dumps(document, indent=2))
        return
    _print(result)


def _print(result: DataDiff) -> None:
    console = Console(highlight=False, soft_wrap=True)
    a, b = escape(_describe(result.a)), escape(_describe(result.b))
    console.print(f"[bold]{a}[/] -> [bold]{b}[/]")
    for change in result.added:
        console.print(f"  [green]added:    {escape(change.path)}[/] ({_size(change.size_b)})")
    for change in result.deleted:
        console.print(f"  [red]deleted:  {escape(change.path)}[/] ({_size(change.size_a)})")
    for change in result.modified:
        sizes = f"{_size(change.size_a)} -> {_size(change.size_b)}"
        console.print(f"  [yellow]modified: {escape(change.path)}[/] ({sizes})")
    if result.identical:
        console.print("No differences: both versions hold the same files.")
    else:
        console.print(_summary_line(result))
    if result.profile is not None:
        _print_profile(console, result.profile)


def _describe(version: DataVersion) -> str:
    what = f"{version.files} file{'s' if version.files != 1 else ''}, {_size(version.size)}"
    if version.source == "git" and version.commit:
        return f"{version.spec} ({version.commit[:8]}; {what})"
    return f"{version.spec} ({what})"


def _summary_line(result: DataDiff) -> str:
    s = result.summary()
    delta = s["size_b"] - s["size_a"]
    sign = "+" if delta >= 0 else "-"
    return (
        f"{s['added']} added, {s['deleted']} deleted, {s['modified']} modified; "
        f"{_size(s['bytes_changed'])} changed (total {sign}{_size(abs(delta))})"
    )


def _print_profile(console: Console, profile: ProfileDiff) -> None:
    rows = f"{profile.rows_a:,} -> {profile.rows_b:,} rows"
    title = "Schema changed" if profile.schema_changed else "Schema unchanged"
    table = Table(title=f"{title}; {rows}", title_justify="left")
    for header in ("column", "change", "type", "shift", "details"):
        table.add_column(header)
    for column in profile.columns:
        table.add_row(*_profile_row(column))
    console.print(table)


def _profile_row(column: ColumnDiff) -> tuple[str, str, str, str, str]:
    colors = {
        "added": "green",
        "removed": "red",
        "type_changed": "magenta",
        "shifted": "yellow",
        "unchanged": "dim",
    }
    change = f"[{colors[column.change]}]{column.change.replace('_', ' ')}[/]"
    if column.old_type and column.new_type and column.old_type != column.new_type:
        types = f"{column.old_type} -> {column.new_type}"
    else:
        types = column.new_type or column.old_type or ""
    shift = ""
    if column.statistic and column.value is not None:
        shift = f"{column.statistic.replace('_', '-')} {column.value:.3g}"
    details = ", ".join(f"{k} {_format(v)}" for k, v in column.details.items())
    return escape(column.name), change, escape(types), shift, escape(details)


def _format(value: float | int | str | None) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _size(n: int | None) -> str:
    return "-" if n is None else size_text(n)
