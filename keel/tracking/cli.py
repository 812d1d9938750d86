"""``keel experiments ...`` and ``keel runs ...``: each command calls one Client method.

Listings print a rich table, or JSON with ``--json``; run ids may be abbreviated to any unique
prefix (``keel runs show 3f2a``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from keel.errors import InvalidInput, NotFound
from keel.tracking.api import Client
from keel.tracking.models import Experiment, Run, RunStatus
from keel.tracking.remote import TrackingClient, connect

__all__ = ["experiments", "runs"]

_STATUS_STYLE = {
    RunStatus.RUNNING: "cyan",
    RunStatus.FINISHED: "green",
    RunStatus.FAILED: "red",
    RunStatus.KILLED: "yellow",
    RunStatus.LOST: "magenta",
    RunStatus.SCHEDULED: "blue",
}
_MAX_DYNAMIC_COLUMNS = 8


def _client() -> TrackingClient:
    return connect()


def _console() -> Any:
    from rich.console import Console

    return Console()


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, allow_nan=True))


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(run: Run) -> str:
    ms = run.duration
    if ms is None:
        return ""
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _number(value: float) -> str:
    return f"{value:.6g}"


_BARS = "▁▂▃▄▅▆▇█"


def _sparkline(values: Sequence[float]) -> str:
    """Values as a row of block characters, lowest to highest (non-finite values as gaps)."""
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    scale = (len(_BARS) - 1) / (high - low) if high > low else 0
    return "".join(_BARS[round((v - low) * scale)] if v in finite else " " for v in values)


def _run_dict(run: Run) -> dict[str, Any]:
    data = run.model_dump(mode="json")
    data["duration_ms"] = run.duration
    return data


def _resolve_runs(client: TrackingClient, prefixes: Sequence[str]) -> list[str]:
    return [client.resolve_run_id(p) for p in prefixes]


def _experiment_ids(client: TrackingClient, names: Sequence[str]) -> list[int] | None:
    return [client.resolve_experiment(n).experiment_id for n in names] if names else None


# -- experiments --------------------------------------------------------------------------


@click.group()
def experiments() -> None:
    """Create, list, rename, delete and restore experiments.

    \b
    Example:
      keel experiments create churn-v2
    """


def _experiment_rows(items: Sequence[Experiment]) -> None:
    from rich.table import Table

    table = Table("id", "name", "stage", "created", box=None)
    for e in items:
        table.add_row(str(e.experiment_id), e.name, e.lifecycle_stage.value, _when(e.created_at))
    _console().print(table)


@experiments.command("list")
@click.option("--deleted", is_flag=True, help="Show deleted experiments instead.")
@click.option("--all", "show_all", is_flag=True, help="Show active and deleted experiments.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def experiments_list(deleted: bool, show_all: bool, as_json: bool) -> None:
    """List experiments.

    \b
    Example:
      keel experiments list --json
    """
    lifecycle = "all" if show_all else "deleted" if deleted else "active"
    items = _client().list_experiments(lifecycle=lifecycle)
    if as_json:
        _echo_json([e.model_dump(mode="json") for e in items])
    else:
        _experiment_rows(items)


@experiments.command("create")
@click.argument("name")
def experiments_create(name: str) -> None:
    """Create an experiment called NAME.

    \b
    Example:
      keel experiments create churn-v2
    """
    experiment = _client().create_experiment(name)
    click.echo(f"Created experiment {experiment.name!r} (id {experiment.experiment_id})")


@experiments.command("rename")
@click.argument("experiment")
@click.argument("new_name")
def experiments_rename(experiment: str, new_name: str) -> None:
    """Rename EXPERIMENT (a name or an id) to NEW_NAME.

    \b
    Example:
      keel experiments rename churn-v2 churn-2026
    """
    client = _client()
    found = client.resolve_experiment(experiment)
    renamed = client.rename_experiment(found.experiment_id, new_name)
    click.echo(f"Renamed experiment {found.name!r} to {renamed.name!r}")


@experiments.command("delete")
@click.argument("experiment")
def experiments_delete(experiment: str) -> None:
    """Delete EXPERIMENT and its runs (they can be restored).

    \b
    Example:
      keel experiments delete churn-v2
    """
    client = _client()
    found = client.resolve_experiment(experiment)
    client.delete_experiment(found.experiment_id)
    click.echo(
        f"Deleted experiment {found.name!r}; undo with: keel experiments restore "
        f"{found.experiment_id}"
    )


@experiments.command("restore")
@click.argument("experiment")
def experiments_restore(experiment: str) -> None:
    """Restore a deleted EXPERIMENT and its runs.

    \b
    Example:
      keel experiments restore 3
    """
    client = _client()
    found = client.resolve_experiment(experiment)
    client.restore_experiment(found.experiment_id)
    click.echo(f"Restored experiment {found.name!r}")


# -- runs ---------------------------------------------------------------------------------


@click.group()
def runs() -> None:
    """List, show, search, compare, export, delete, restore and reproduce runs.

    \b
    Example:
      keel runs search "metrics.rmse < 50" --order-by metrics.rmse
    """


def _dynamic_columns(items: Sequence[Run], wanted: Sequence[str], width: int) -> list[str]:
    """Metric and param columns that fit: those the query names first, then the rest."""
    present = [f"metrics.{k}" for k in sorted({k for r in items for k in r.metrics})]
    present += [f"params.{k}" for k in sorted({k for r in items for k in r.params})]
    ordered = [c for c in wanted if c in present] + [c for c in present if c not in wanted]
    chosen: list[str] = []
    used = 0
    for column in ordered[:_MAX_DYNAMIC_COLUMNS]:
        cost = max(len(column.split(".", 1)[1]), 8) + 2
        if chosen and used + cost > width:
            break
        chosen.append(column)
        used += cost
    return chosen


def _mentioned(*texts: str) -> list[str]:
    import re

    found = re.findall(r"\b(?:metrics?|params?)\.([\w./:-]+)", " ".join(texts))
    names = re.findall(r"\b(metrics?|params?)\.[\w./:-]+", " ".join(texts))
    columns = [
        f"{'metrics' if kind.startswith('metric') else 'params'}.{key}"
        for kind, key in zip(names, found, strict=True)
    ]
    return list(dict.fromkeys(columns))


def _runs_table(items: Sequence[Run], *, mentioned: Sequence[str] = ()) -> None:
    from rich.table import Table

    console = _console()
    columns = _dynamic_columns(items, mentioned, max(console.width - 52, 20))
    table = Table(box=None, header_style="bold")
    for column in ("run", "name", "status", "started", "duration"):
        table.add_column(column, no_wrap=True)
    for column in columns:
        kind, key = column.split(".", 1)
        metric = kind == "metrics"
        table.add_column(
            key,
            justify="right" if metric else "left",
            header_style="bold cyan" if metric else "bold magenta",
        )
    for r in items:
        style = _STATUS_STYLE.get(r.status, "")
        cells = []
        for column in columns:
            kind, key = column.split(".", 1)
            if kind == "metrics":
                cells.append(_number(r.metrics[key]) if key in r.metrics else "")
            else:
                cells.append(r.params.get(key, ""))
        table.add_row(
            r.run_id[:8],
            r.run_name,
            f"[{style}]{r.status.value}[/]",
            _when(r.start_time)[5:16],
            _duration(r),
            *cells,
        )
    console.print(table)
    if not items:
        click.echo("No runs matched.", err=True)
    elif columns:
        click.echo("(metrics in cyan, params in magenta; --json for everything)", err=True)


_order_option = click.option(
    "--order-by",
    "-o",
    multiple=True,
    help="Sort key, repeatable: 'metrics.rmse', 'start_time DESC'. Missing values sort last.",
)
_experiment_option = click.option(
    "--experiment", "-e", multiple=True, help="Limit to this experiment (name or id); repeatable."
)


def _limit_option(default: int) -> Any:
    return click.option(
        "--limit",
        "-n",
        default=default,
        show_default=True,
        type=click.IntRange(1, 10_000_000),
        help="At most this many runs.",
    )


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
_deleted_option = click.option("--deleted", is_flag=True, help="Search deleted runs instead.")


def _search(
    filter_string: str,
    order_by: Sequence[str],
    experiment: Sequence[str],
    limit: int,
    deleted: bool = False,
) -> list[Run]:
    client = _client()
    return client.search_all(
        filter_string,
        order_by=list(order_by),
        experiment_ids=_experiment_ids(client, experiment),
        max_results=limit,
        lifecycle="deleted" if deleted else "active",
    )


@runs.command("list")
@_experiment_option
@_order_option
@_limit_option(100)
@_deleted_option
@_json_option
def runs_list(
    experiment: tuple[str, ...],
    order_by: tuple[str, ...],
    limit: int,
    deleted: bool,
    as_json: bool,
) -> None:
    """List runs, newest first.

    \b
    Example:
      keel runs list -e diabetes -n 20
    """
    items = _search("", order_by, experiment, limit, deleted)
    if as_json:
        _echo_json([_run_dict(r) for r in items])
    else:
        _runs_table(items, mentioned=_mentioned(*order_by))


@runs.command("search")
@click.argument("filter_string", metavar="FILTER")
@_experiment_option
@_order_option
@_limit_option(100)
@_deleted_option
@_json_option
def runs_search(
    filter_string: str,
    experiment: tuple[str, ...],
    order_by: tuple[str, ...],
    limit: int,
    deleted: bool,
    as_json: bool,
) -> None:
    """Search runs with a filter (MLflow syntax plus OR, NOT, parentheses, IN, IS NULL).

    \b
    Examples:
      keel runs search "metrics.rmse < 55 and params.model = 'ridge'" -o metrics.rmse
      keel runs search "params.model IN ('tree', 'forest') OR tags.best IS NOT NULL"
    """
    items = _search(filter_string, order_by, experiment, limit, deleted)
    if as_json:
        _echo_json([_run_dict(r) for r in items])
    else:
        _runs_table(items, mentioned=_mentioned(*order_by, filter_string))


@runs.command("show")
@click.argument("run")
@_json_option
def runs_show(run: str, as_json: bool) -> None:
    """Show one RUN (an id or a unique prefix of one): params, metrics, tags, artifacts.

    \b
    Example:
      keel runs show 3f2a
    """
    from rich.table import Table

    client = _client()
    found = client.get_run(client.resolve_run_id(run))
    artifacts = client.list_artifacts(found.run_id)
    if as_json:
        data = _run_dict(found)
        data["artifacts"] = [a.model_dump() for a in artifacts]
        _echo_json(data)
        return
    console = _console()
    style = _STATUS_STYLE.get(found.status, "")
    console.print(f"[bold]{found.run_name}[/]  {found.run_id}  [{style}]{found.status.value}[/]")
    console.print(
        f"experiment {found.experiment_id} · user {found.user} · host {found.host} · "
        f"started {_when(found.start_time)} · duration {_duration(found) or 'running'}"
    )
    curves = client.metric_curves(found.run_id)
    if found.metrics:
        table = Table(
            "metric",
            "latest",
            "min",
            "max",
            "points",
            "curve",
            title="metrics",
            title_justify="left",
            box=None,
        )
        for key in sorted(found.metrics):
            curve = curves.get(key)
            table.add_row(
                key,
                _number(found.metrics[key]),
                _number(curve.low) if curve and curve.low is not None else "",
                _number(curve.high) if curve and curve.high is not None else "",
                f"{curve.count:,}" if curve else "",
                f"[cyan]{_sparkline(curve.means)}[/]" if curve and curve.count > 1 else "",
            )
        console.print(table)
    for title, values in (("params", found.params), ("tags", found.tags)):
        if not values:
            continue
        table = Table(title=title, title_justify="left", box=None, show_header=False)
        for key in sorted(values):
            value = values[key]
            table.add_row(key, _number(value) if isinstance(value, float) else str(value))
        console.print(table)
    if artifacts:
        table = Table("artifact", "size", title="artifacts", title_justify="left", box=None)
        for a in artifacts:
            table.add_row(a.path, f"{a.size:,}")
        console.print(table)


@runs.command("compare")
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN RUN...")
@click.option("--all-keys", is_flag=True, help="Show keys whose values are equal too.")
@_json_option
def runs_compare(run_ids: tuple[str, ...], all_keys: bool, as_json: bool) -> None:
    """Compare runs side by side: params and metrics, with differing values highlighted.

    \b
    Example:
      keel runs compare 3f2a 9c1b 77d0
    """
    from rich.table import Table

    if len(run_ids) < 2:
        raise InvalidInput("compare needs at least two runs: keel runs compare RUN RUN...")
    client = _client()
    found = client.get_runs(_resolve_runs(client, run_ids))
    rows: list[tuple[str, str, list[Any]]] = []
    for section in ("params", "metrics"):
        keys = sorted({k for r in found for k in getattr(r, section)})
        for key in keys:
            values = [getattr(r, section).get(key) for r in found]
            rows.append((section, key, values))
    if as_json:
        _echo_json(
            {
                "runs": [r.run_id for r in found],
                "rows": [
                    {"section": s, "key": k, "values": v, "differs": len({repr(x) for x in v}) > 1}
                    for s, k, v in rows
                ],
            }
        )
        return
    table = Table("", "key", *(f"{r.run_name}\n{r.run_id[:8]}" for r in found), box=None)
    shown = 0
    for section, key, values in rows:
        differs = len({repr(v) for v in values}) > 1
        if not differs and not all_keys:
            continue
        shown += 1
        cells = []
        for value in values:
            text = "—" if value is None else _number(value) if isinstance(value, float) else value
            cells.append(f"[bold yellow]{text}[/]" if differs else text)
        table.add_row(section, key, *cells)
    _console().print(table)
    if not shown:
        click.echo("The runs have identical params and metrics (use --all-keys to list them).")


@runs.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "parquet"]),
    default="csv",
    show_default=True,
    help="File format.",
)
@click.option("--filter", "filter_string", default="", help="Only runs matching this filter.")
@_experiment_option
@_order_option
@_limit_option(100_000)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="File to write (default: stdout; required for parquet).",
)
def runs_export(
    fmt: str,
    filter_string: str,
    experiment: tuple[str, ...],
    order_by: tuple[str, ...],
    limit: int,
    output: str | None,
) -> None:
    """Export runs with their params, metrics and tags (MLflow UI's "Download CSV").

    \b
    Examples:
      keel runs export --format csv --filter "status = 'FINISHED'" > runs.csv
      keel runs export --format parquet --output runs.parquet -e diabetes
    """
    if fmt == "parquet" and not output:
        raise InvalidInput("parquet is binary: name a file with --output runs.parquet")
    items = _search(filter_string, order_by, experiment, limit)
    frame = Client.runs_to_frame(items)
    for column in ("start_time", "end_time"):
        frame[column] = frame[column].map(lambda t: t.isoformat() if t == t else None)
    if fmt == "parquet":
        frame.to_parquet(output, index=False)
    elif fmt == "csv":
        frame.to_csv(output if output else sys.stdout, index=False)
    else:
        text = frame.to_json(orient="records", indent=2)
        if output:
            Path(output).write_text(text)
        else:
            click.echo(text)
    if output:
        click.echo(f"Wrote {len(items)} runs to {output}", err=True)


@runs.command("delete")
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN...")
def runs_delete(run_ids: tuple[str, ...]) -> None:
    """Delete runs (they can be restored with keel runs restore).

    \b
    Example:
      keel runs delete 3f2a 9c1b
    """
    client = _client()
    ids = _resolve_runs(client, run_ids)
    count = client.delete_runs(ids)
    click.echo(f"Deleted {count} run(s); undo with: keel runs restore {' '.join(run_ids)}")


@runs.command("restore")
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN...")
def runs_restore(run_ids: tuple[str, ...]) -> None:
    """Restore deleted runs.

    \b
    Example:
      keel runs restore 3f2a
    """
    client = _client()
    ids = _resolve_runs(client, run_ids)
    count = client.restore_runs(ids)
    if not count:
        raise NotFound("none of those runs exist")
    click.echo(f"Restored {count} run(s)")


@runs.command("reproduce")
@click.argument("run")
@click.option("--dry-run", is_flag=True, help="Print the plan only: no worktree, data or run.")
@click.option("--keep-worktree", is_flag=True, help="Leave the temporary git worktree in place.")
@_json_option
def runs_reproduce(run: str, dry_run: bool, keep_worktree: bool, as_json: bool) -> None:
    """Re-execute RUN's entry point at its git commit into a new run linked to it.

    A temporary git worktree at the run's commit (its recorded diff applied if the tree was
    dirty), its dataset versions and *.keel data checked out, the packages it recorded compared
    with this environment; then `python SCRIPT ARGS` in the worktree, whose runs record
    keel.reproduced_from=RUN, and a table of metric deltas. Exits 1 if the entry point fails.

    \b
    Example:
      keel runs reproduce 3f2a --dry-run
      keel runs reproduce 3f2a
    """
    from keel.tracking.reproduce import reproduce

    result = reproduce(run, keep_worktree=keep_worktree, dry_run=dry_run)
    if as_json:
        _echo_json(_reproduction_dict(result))
    else:
        _print_reproduction(result)
    if result.exit_code:
        sys.exit(1)


def _reproduction_dict(result: Any) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(result)
    data["deltas"] = [
        {**asdict(d), "delta": d.delta, "relative": d.relative} for d in result.deltas
    ]
    return data


def _print_reproduction(result: Any) -> None:
    from rich.table import Table

    console = _console()
    plan = result.plan
    console.print(
        f"[bold]{plan.run_name}[/] {plan.run_id} · commit {plan.commit[:12]} in {plan.repo}"
    )
    where = "" if plan.workdir == "." else f" (in the worktree's {plan.workdir}/)"
    console.print(f"command: {' '.join(plan.command)}{where}")
    console.print(f"data: {', '.join(plan.inputs) if plan.inputs else 'no dataset versions'}")
    if plan.differing:
        table = Table(
            "package",
            "recorded",
            "installed",
            title=f"packages that differ ({len(plan.differing)} of {plan.requirements})",
            title_justify="left",
            box=None,
        )
        for req in plan.differing:
            table.add_row(req.name, req.recorded, req.installed or "[red]missing[/]")
        console.print(table)
    else:
        console.print(f"packages: the {plan.requirements} recorded match this environment")
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    if result.run_id is None:
        console.print("[cyan]dry run:[/] nothing was checked out or run")
        return
    style = "green" if result.exit_code == 0 else "red"
    console.print(
        f"new run [bold]{result.run_id}[/] ([{style}]exit code {result.exit_code}[/]), "
        f"linked with keel.reproduced_from={plan.run_id}"
    )
    if result.inputs != plan.inputs:
        console.print(
            f"[yellow]warning:[/] the new run read {', '.join(result.inputs) or 'no dataset'}; "
            f"the original read {', '.join(plan.inputs) or 'none'}"
        )
    if result.other_runs:
        console.print(f"the entry point also started: {', '.join(result.other_runs)}")
    if result.worktree:
        console.print(f"worktree kept at {result.worktree}")
    table = Table(
        "metric",
        "original",
        "reproduced",
        "delta",
        "relative",
        title="metrics",
        title_justify="left",
        box=None,
    )
    for d in result.deltas:
        table.add_row(
            d.key,
            "" if d.original is None else _number(d.original),
            "" if d.reproduced is None else _number(d.reproduced),
            "" if d.delta is None else _number(d.delta),
            "" if d.relative is None else f"{d.relative:+.2%}",
        )
    console.print(table)
