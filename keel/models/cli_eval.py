"""``keel models evaluate``, ``evaluations`` and ``gate``: score versions on dataset versions and
gate releases in CI.

The commands are mounted on the ``keel models`` group by :func:`mount`, which
:mod:`keel.models.cli` calls. ``gate`` exits 0 when the candidate passes, 1 when it fails and
2 when the gate cannot decide (no evaluation in common, an unknown metric, a missing version),
so a CI step can tell a worse model from a misconfigured gate.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keel.errors import KeelError
from keel.models.evaluation import evaluate as evaluate_version
from keel.models.evaluation import list_evaluations
from keel.models.evaluation_models import Evaluation, GateVerdict
from keel.models.release_gate import gate as run_gate

__all__ = ["GATE_ERROR", "GATE_FAILED", "mount"]

GATE_FAILED = 1
"""``keel models gate``'s exit status when the candidate does not pass."""

GATE_ERROR = 2
"""``keel models gate``'s exit status when it cannot decide (a usage problem)."""

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.command()
@click.argument("ref", metavar="NAME/VERSION")
@click.option("--data", required=True, metavar="NAME@VERSION", help="The dataset version.")
@click.option("--target", required=True, metavar="COLUMN", help="The column of true values.")
@click.option(
    "--task",
    type=click.Choice(["regression", "classification"]),
    help="Default: inferred from the target column (the output says what was inferred).",
)
@_json_option
def evaluate(ref: str, data: str, target: str, task: str | None, as_json: bool) -> None:
    """Score version REF on a dataset version's table and record the metrics on the version.

    The table's TARGET column holds the true values; its other columns go to the model's
    predict, checked against its signature.

    \b
    Example:
      keel models evaluate diabetes/3 --data diabetes-test@1 --target progression
      keel models evaluate iris@challenger --data iris-test --target species --json
    """
    found = evaluate_version(ref, data=data, target=target, task=task)  # type: ignore[arg-type]
    if as_json:
        _echo_json(found.model_dump(mode="json"))
        return
    console = _console()
    console.print(
        f"Evaluated [bold]{escape(found.ref)}[/] on {escape(found.dataset)} "
        f"(target {escape(found.target)}, {found.rows:,} rows): {found.task} "
        f"({escape(str(found.detail.get('task', 'given')))})"
    )
    table = Table("metric", "value")
    for name, value in found.metrics.items():
        table.add_row(name, f"{value:.6g}")
    console.print(table)
    if "confusion_matrix" in found.detail:
        console.print("confusion matrix (rows: true, columns: predicted)")
        console.print(_confusion(found))
    for note in found.detail.get("notes", []):
        console.print(f"[dim]{escape(note)}[/]")


@click.command()
@click.argument("ref", metavar="NAME[/VERSION]")
@_json_option
def evaluations(ref: str, as_json: bool) -> None:
    """List the evaluations of model NAME, or of one version, newest first.

    \b
    Example:
      keel models evaluations diabetes
      keel models evaluations diabetes/3 --json
    """
    found = list_evaluations(ref)
    if as_json:
        _echo_json([e.model_dump(mode="json") for e in found])
        return
    if not found:
        click.echo(
            f"No evaluations of {ref} yet (keel models evaluate NAME/VERSION --data "
            "DATASET@VERSION --target COLUMN)."
        )
        return
    table = Table()
    for column in ("id", "version", "dataset", "target", "rows", "at"):
        table.add_column(column, no_wrap=column in ("id", "version", "dataset", "rows"))
    table.add_column("metrics", ratio=1, min_width=20)
    for e in found:
        table.add_row(
            str(e.id),
            str(e.version),
            escape(e.dataset),
            escape(e.target),
            f"{e.rows:,}",
            e.created_at.astimezone().strftime("%Y-%m-%d %H:%M"),
            ", ".join(f"{k}={v:.4g}" for k, v in e.metrics.items()),
        )
    _console().print(table)


@click.command()
@click.argument("candidate", metavar="CANDIDATE")
@click.option("--against", required=True, metavar="NAME@ALIAS", help="Usually NAME@champion.")
@click.option("--metric", required=True, help="An evaluation metric: rmse, r2, accuracy, ...")
@click.option(
    "--min-improvement",
    metavar="N|N%",
    help="The candidate must be better by at least this (absolute, or % of the champion).",
)
@click.option(
    "--max-regression",
    metavar="N|N%",
    help="The candidate may be worse by at most this (absolute, or % of the champion).",
)
@click.option("--data", metavar="NAME@VERSION", help="Compare on this dataset version.")
@click.option("--target", metavar="COLUMN", help="Its target column (with --data).")
@click.option(
    "--higher-is-better/--lower-is-better",
    "higher",
    default=None,
    help="The metric's direction; needed only for a metric Keel does not know.",
)
@click.option(
    "--allow-no-champion",
    is_flag=True,
    help="Pass when the --against alias is not set although the model has other aliases.",
)
@_json_option
def gate(
    candidate: str,
    against: str,
    metric: str,
    min_improvement: str | None,
    max_regression: str | None,
    data: str | None,
    target: str | None,
    higher: bool | None,
    allow_no_champion: bool,
    as_json: bool,
) -> None:
    """Pass or fail CANDIDATE against the champion on a metric, for CI; the verdict is recorded.

    Both versions' evaluations of one dataset version are compared (the latest they share, or
    --data/--target, evaluating them first where needed). Without a threshold the candidate
    must be at least as good. No champion passes only when the model has no aliases yet, or
    with --allow-no-champion; an unset alias of a model that has others (a typo) exits 2
    naming them. Exit status: 0 pass, 1 fail, 2 the gate could not decide (the message says
    what to run).

    \b
    Example:
      keel models gate diabetes/4 --against diabetes@champion --metric rmse \\
          --min-improvement 1% --data diabetes-test@2 --target progression
      keel models gate iris/7 --against iris@champion --metric accuracy --max-regression 0.01
    """
    try:
        verdict = run_gate(
            candidate,
            against=against,
            metric=metric,
            min_improvement=min_improvement,
            max_regression=max_regression,
            data=data,
            target=target,
            higher_is_better=higher,
            allow_no_champion=allow_no_champion,
        )
    except KeelError as exc:
        click.secho(f"Error: {exc}", fg="red", err=True)
        sys.exit(GATE_ERROR)
    if as_json:
        _echo_json(verdict.model_dump(mode="json"))
    else:
        _print_verdict(_console(), verdict)
    if not verdict.passed:
        sys.exit(GATE_FAILED)


def mount(group: click.Group) -> None:
    """Add ``evaluate``, ``evaluations`` and ``gate`` to ``group`` (``keel models``)."""
    for command in (evaluate, evaluations, gate):
        group.add_command(command)


# -- output ------------------------------------------------------------------------------------


def _print_verdict(console: Console, verdict: GateVerdict) -> None:
    d = verdict.detail
    word = "[bold green]PASS[/]" if verdict.passed else "[bold red]FAIL[/]"
    against = escape(verdict.against)
    if verdict.against_version is not None:
        against += f" (version {verdict.against_version})"
    console.print(
        f"{word} {escape(verdict.name)}/{verdict.version} against {against} on {verdict.metric}"
    )
    if d.get("champion") is None:
        console.print(f"  {escape(str(d.get('reason', '')))}")
        return
    relative = d.get("relative_change")
    share = f" ({relative:+.2%})" if relative is not None else ""
    better = "higher" if d["direction"] == "higher" else "lower"
    rows = [
        ("data", f"{escape(d['dataset'])}, target {escape(d['target'])}"),
        ("candidate", f"{d['candidate_value']:.6g}"),
        ("champion", f"{d['champion_value']:.6g}"),
        ("change", f"{d['change']:+.6g}{share}, {better} is better"),
    ]
    for check in d["checks"]:
        mark = "[green]passed[/]" if check["passed"] else "[red]failed[/]"
        rows.append(("threshold", f"{escape(check['text'])}: {mark}"))
    for label, text in rows:
        console.print(f"  {label:<10} {text}")


def _confusion(found: Evaluation) -> Table:
    labels = [str(label) for label in found.detail["labels"]]
    table = Table()
    table.add_column("")
    for label in labels:
        table.add_column(escape(label), justify="right")
    for label, row in zip(labels, found.detail["confusion_matrix"], strict=True):
        table.add_row(escape(label), *(str(n) for n in row))
    return table


def _echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))


def _console() -> Console:
    return Console(highlight=False)
