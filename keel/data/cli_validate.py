"""``keel data validate``: check a table against a reference and rules; exit 1 when it fails.

The command calls :func:`keel.data.validate.validate` and prints the report with rich (or JSON
with ``--json``); a non-zero exit lets it gate CI.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from keel.data.validate import ValidationReport

__all__ = ["validate"]


@click.command()
@click.argument("path", type=click.Path())
@click.option(
    "--against",
    "against",
    metavar="REF",
    help="The reference: a dataset version NAME@VERSION, or a CSV/Parquet file.",
)
@click.option(
    "--rules",
    "rules",
    type=click.Path(),
    help="A rules YAML file: more rules, tolerances, inferred rules turned off.",
)
@click.option("--format", "format_", type=click.Choice(["csv", "parquet"]), help="PATH's format.")
@click.option("--all", "show_all", is_flag=True, help="List the checks that passed too.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate(
    path: str,
    against: str | None,
    rules: str | None,
    format_: str | None,
    show_all: bool,
    as_json: bool,
) -> None:
    """Check the table at PATH against rules inferred from a reference and written rules.

    Inferred from the reference's profile: the columns and their types, no nulls where it had
    none (else a null fraction within a tolerance), numeric ranges widened by 10% of their
    span, the allowed values of columns with at most 20 categories, and the row count within
    50%..150%. A rules file adds rules and changes tolerances (see docs/data-profiles.md).
    Exits 1 when any check fails, 0 when all pass.

    \b
    Example:
      keel data validate new_batch.csv --against diabetes@2
      keel data validate new.parquet --against train.parquet --rules rules.yaml --json
    """
    from keel.data.validate import validate as run_validation

    with _progress(f"Validating {path}") as advance:
        report = run_validation(
            path, against=against, rules=rules, format=format_, progress=advance
        )
    if as_json:
        body = report.model_dump(mode="json")
        body["passed"] = report.passed
        click.echo(json.dumps(body, indent=2))
    else:
        _print(report, show_all=show_all)
    if not report.passed:
        sys.exit(1)


@contextmanager
def _progress(label: str) -> Iterator[Callable[[float], None] | None]:
    """A rich progress bar on stderr while the table is read, when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    columns = (BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(
        "{task.description}", *columns, console=Console(stderr=True), transient=True
    ) as bar:
        task = bar.add_task(label, total=1.0)
        yield lambda share: bar.update(task, completed=share)


def _print(report: ValidationReport, *, show_all: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    against = f" against {report.reference}" if report.reference else ""
    console.print(f"Validated {report.source} ({report.rows:,} rows){against}")
    for column, note in report.notes.items():
        console.print(f"[yellow]note[/]: column {column}: {note}")
    shown = report.checks if show_all else report.failed
    if shown:
        table = Table(show_lines=False)
        for header in ("", "column", "check", "expected", "found", "failing", "examples"):
            table.add_column(header, overflow="fold")
        for check in shown:
            examples = ", ".join(
                f"row {e.row}: {e.value}" if e.row is not None else e.value for e in check.examples
            )
            table.add_row(
                "[green]ok[/]" if check.passed else "[red]FAIL[/]",
                check.column or "(table)",
                check.kind + ("" if check.source == "inferred" else " (rules)"),
                check.expected,
                check.actual or "",
                f"{check.failures:,}" if check.failures else "",
                examples,
            )
        console.print(table)
    failed, total = len(report.failed), len(report.checks)
    if failed:
        console.print(f"[red]FAILED[/]: {failed} of {total} checks failed")
    else:
        console.print(f"[green]PASSED[/]: all {total} checks passed")
