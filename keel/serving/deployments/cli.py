"""``keel deploy``: create deployments, shift traffic, promote, roll back, and watch their arms.

Each command calls one function of :mod:`keel.serving.deployments.api` (or
:func:`keel.serving.deployments.status.status`) and prints with rich, or JSON with ``--json``
on the reading commands. Versions are written ``NAME@alias`` or ``NAME/VERSION``; weights
``REF=25%`` (the ``%`` is optional).

Exit status: 0 done; 1 an error (one red line: a malformed argument, a reference that does not
resolve, no such deployment...); 2 a usage error (click); 3 ``promote --move-alias`` on a
protected alias: the deployment was promoted but the alias did not move, a request awaits
approval (:data:`ALIAS_REQUESTED`).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keel.errors import InvalidInput
from keel.serving.deployments import api
from keel.serving.deployments.models import DeploymentConfig, Revision

__all__ = ["ALIAS_REQUESTED", "deploy"]

ALIAS_REQUESTED = 3
"""``keel deploy promote --move-alias``'s exit status when the alias is protected: the
deployment was promoted, the alias did not move, a request awaits approval."""

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
_note_option = click.option("--note", help="Why; kept with the revision (keel deploy history).")


@click.group()
def deploy() -> None:
    """Deployments: canary, A/B and shadow traffic between registered model versions.

    A deployment names what `keel serve --deployment NAME` serves; every change is a new
    revision (keel deploy history), and a running service follows it within seconds.

    \b
    Example:
      keel deploy create churn --model churn@champion --canary churn@challenger=10%
      keel deploy set-traffic churn churn@challenger=25%
      keel deploy status churn --since 1h
      keel deploy promote churn --move-alias
      keel deploy rollback churn
    """


@deploy.command()
@click.argument("name")
@click.option("--model", "model", required=True, metavar="REF", help="The main version.")
@click.option(
    "--canary",
    "canaries",
    multiple=True,
    metavar="REF=PCT%",
    help="Another primary and its share of traffic; repeatable. --model takes the rest.",
)
@click.option(
    "--shadow",
    "shadows",
    multiple=True,
    metavar="REF",
    help="A version that gets a copy of every request (logged, never returned); repeatable.",
)
@_note_option
def create(
    name: str, model: str, canaries: tuple[str, ...], shadows: tuple[str, ...], note: str | None
) -> None:
    """Create deployment NAME serving --model, with canaries and shadows.

    Every reference must resolve in the model registry now (an alias is followed later).

    \b
    Examples:
      keel deploy create churn --model churn@champion
      keel deploy create churn --model churn@champion --canary churn@challenger=10% \\
          --shadow churn/7 --note "try the new features on 10%"
    """
    weights = _weights(canaries)
    done = api.create(name, model, canaries=weights, shadows=shadows, note=note)
    click.echo(f"{done.name} revision {done.revision}: {done.config.describe()}")


@deploy.command("list")
@_json_option
def list_(as_json: bool) -> None:
    """List deployments: current revision and traffic.

    \b
    Example:
      keel deploy list --json
    """
    found = api.list_deployments()
    if as_json:
        _echo_json([d.model_dump(mode="json") for d in found])
        return
    if not found:
        click.echo("No deployments yet (keel deploy create NAME --model MODEL@ALIAS).")
        return
    table = Table("deployment", "revision", "traffic", "shadows", "updated")
    for d in found:
        primaries = ", ".join(f"{a.ref}={a.weight:g}%" for a in d.config.primaries)
        table.add_row(
            escape(d.name),
            str(d.revision),
            escape(primaries),
            escape(", ".join(d.config.shadows) or "-"),
            f"{_when(d.updated_at)} by {escape(d.updated_by)}",
        )
    _console().print(table)


@deploy.command()
@click.argument("name")
@_json_option
def show(name: str, as_json: bool) -> None:
    """Show deployment NAME: its arms, their weights and the versions they resolved to.

    \b
    Example:
      keel deploy show churn
    """
    found = api.get(name)
    if as_json:
        _echo_json(found.model_dump(mode="json"))
        return
    console = _console()
    console.print(
        f"[bold]{escape(found.name)}[/] revision {found.revision} (updated "
        f"{_when(found.updated_at)} by {escape(found.updated_by)}; created by "
        f"{escape(found.created_by)})"
    )
    console.print(_arms_table(found.config, found.resolved))


@deploy.command()
@click.argument("name")
@_json_option
def history(name: str, as_json: bool) -> None:
    """Show every revision of deployment NAME, oldest first.

    \b
    Example:
      keel deploy history churn
    """
    found = api.history(name)
    if as_json:
        _echo_json([r.model_dump(mode="json") for r in found])
        return
    table = Table("rev", "action", "configuration", "by", "when", "note")
    for r in found:
        table.add_row(
            str(r.revision),
            r.action,
            escape(_described(r)),
            escape(r.actor),
            _when(r.created_at),
            escape(r.note or ""),
        )
    _console().print(table)


@deploy.command("set-traffic")
@click.argument("name")
@click.argument("weights", nargs=-1, required=True, metavar="REF=PCT%...")
@_note_option
def set_traffic(name: str, weights: tuple[str, ...], note: str | None) -> None:
    """Give the arms named their share of traffic; the other primaries share the rest.

    0% removes a primary; a version not in the deployment (or a shadow) becomes a primary.

    \b
    Examples:
      keel deploy set-traffic churn churn@challenger=25%
      keel deploy set-traffic churn churn@champion=50% churn@challenger=50%
    """
    done = api.set_traffic(name, _weights(weights), note=note)
    click.echo(f"{done.name} revision {done.revision}: {done.config.describe()}")


@deploy.command()
@click.argument("name")
@click.argument("arm", required=False, metavar="[REF]")
@click.option(
    "--move-alias",
    is_flag=True,
    help="Also move the main arm's alias (champion of churn@champion) to the promoted "
    "version; a protected alias makes an approval request instead (exit 3).",
)
@_note_option
def promote(name: str, arm: str | None, move_alias: bool, note: str | None) -> None:
    """The canary (or REF, a primary or a shadow) of NAME takes 100% of traffic.

    The other primaries go; shadows stay.

    \b
    Examples:
      keel deploy promote churn
      keel deploy promote churn churn/7 --move-alias --note "7 beat 5 on a week of traffic"
    """
    done = api.promote(name, arm, move_alias=move_alias, note=note)
    deployment = done.deployment
    click.echo(f"{deployment.name} revision {deployment.revision}: {deployment.config.describe()}")
    if done.moved is not None:
        click.echo(f"{done.alias} -> {done.moved.version}")
    if done.request is not None:
        click.echo(done.request.summary)
        click.echo(
            f"{done.alias} did not move; keel models approve {done.request.name} "
            f"{done.request.id} moves it. The deployment serves {done.promoted} meanwhile.",
            err=True,
        )
        sys.exit(ALIAS_REQUESTED)


@deploy.command()
@click.argument("name")
@click.option(
    "--to",
    "to",
    type=click.IntRange(min=1),
    help="The revision to go back to (default: the previous one).",
)
@_note_option
def rollback(name: str, to: int | None, note: str | None) -> None:
    """Make a new revision of NAME with the configuration of the previous one (or --to N).

    Aliases are resolved again: a rollback restores what the deployment named.

    \b
    Examples:
      keel deploy rollback churn
      keel deploy rollback churn --to 2 --note "canary errors"
    """
    done = api.rollback(name, to=to, note=note)
    click.echo(f"{done.name} revision {done.revision}: {done.config.describe()}")
    shared: dict[int, list[str]] = {}
    for ref in done.config.refs:
        shared.setdefault(done.resolved[ref], []).append(ref)
    for version, refs in shared.items():
        if len(refs) > 1:
            click.echo(
                f"note: {' and '.join(refs)} resolve to the same version ({version}) now",
                err=True,
            )


@deploy.command("add-shadow")
@click.argument("name")
@click.argument("ref")
@_note_option
def add_shadow(name: str, ref: str, note: str | None) -> None:
    """Send a copy of every request of NAME to REF as well (logged, never returned).

    \b
    Example:
      keel deploy add-shadow churn churn/8
    """
    done = api.add_shadow(name, ref, note=note)
    click.echo(f"{done.name} revision {done.revision}: {done.config.describe()}")


@deploy.command("remove-shadow")
@click.argument("name")
@click.argument("ref")
@_note_option
def remove_shadow(name: str, ref: str, note: str | None) -> None:
    """Stop shadowing REF in deployment NAME.

    \b
    Example:
      keel deploy remove-shadow churn churn/8
    """
    done = api.remove_shadow(name, ref, note=note)
    click.echo(f"{done.name} revision {done.revision}: {done.config.describe()}")


@deploy.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete(name: str, yes: bool) -> None:
    """Delete deployment NAME and its history (services serving it keep what they have).

    \b
    Example:
      keel deploy delete churn --yes
    """
    if not yes:
        click.confirm(f"Delete deployment {name} and its history?", abort=True)
    revision = api.delete(name)
    click.echo(f"Deleted {name} (it was at revision {revision})")


@deploy.command()
@click.argument("name")
@click.option(
    "--since", default="1h", show_default=True, help="A duration (30m, 1h, 2d) or an ISO time."
)
@click.option(
    "--tolerance",
    default=0.01,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Relative tolerance of floating-point shadow agreement (0.01 = 1%).",
)
@click.option(
    "--logs",
    metavar="URL",
    help="The prediction logs' root, when not <KEEL_ARTIFACT_URL>/predictions-log.",
)
@_json_option
def status(name: str, since: str, tolerance: float, logs: str | None, as_json: bool) -> None:
    """Per arm of NAME: requests, rows, errors, p50/p99 latency, and each shadow's agreement
    with the primary on the same requests, from the prediction logs.

    \b
    Examples:
      keel deploy status churn
      keel deploy status churn --since 24h --json
    """
    from keel.serving.deployments.status import parse_since
    from keel.serving.deployments.status import status as compute

    found = compute(name, since_ms=parse_since(since), tolerance=tolerance, logs=logs)
    if as_json:
        _echo_json(found.model_dump(mode="json"))
        return
    console = _console()
    revision = f" revision {found.revision}" if found.revision is not None else ""
    console.print(
        f"[bold]{escape(found.deployment)}[/]{revision}, {_when(found.since or found.until)} "
        f"to {_when(found.until)}"
    )
    table = Table(
        "arm",
        "role",
        "ref",
        "weight",
        "requests",
        "rows",
        "errors",
        "p50 ms",
        "p99 ms",
        "agreement",
        "mean |diff|",
    )
    for a in found.arms:
        table.add_row(
            escape(a.arm),
            a.role,
            escape(a.ref or "-"),
            f"{a.weight:g}%" if a.weight is not None else "-",
            str(a.requests),
            str(a.rows),
            str(a.errors),
            _number(a.p50_ms),
            _number(a.p99_ms),
            f"{a.agreement:.1%} of {a.compared}" if a.agreement is not None else "-",
            _number(a.mean_abs_diff, digits=4),
        )
    console.print(table)
    console.print(found.note, style="dim")


# -- helpers -----------------------------------------------------------------------------------


def _weights(items: tuple[str, ...]) -> dict[str, float]:
    """``("churn@challenger=10%", ...)`` as ``{"churn@challenger": 10.0}``."""
    weights: dict[str, float] = {}
    for item in items:
        ref, sign, text = item.rpartition("=")
        number = text.strip().removesuffix("%").strip()
        try:
            weight = float(number)
        except ValueError:
            weight = float("nan")
        if not sign or not ref or weight != weight:
            raise InvalidInput(
                f"a weight is written REF=PCT% (churn@challenger=10%), not {item!r}", item=item
            )
        if ref in weights:
            raise InvalidInput(f"{ref} is given two weights", ref=ref)
        weights[ref] = weight
    return weights


def _arms_table(config: DeploymentConfig, resolved: dict[str, int]) -> Table:
    table = Table("arm", "role", "weight", "version when written")
    for arm in config.primaries:
        table.add_row(escape(arm.ref), "primary", f"{arm.weight:g}%", _version(arm.ref, resolved))
    for ref in config.shadows:
        table.add_row(escape(ref), "shadow", "-", _version(ref, resolved))
    return table


def _version(ref: str, resolved: dict[str, int]) -> str:
    number = resolved.get(ref)
    return str(number) if number is not None else "-"


def _described(revision: Revision) -> str:
    parts = []
    for arm in revision.config.primaries:
        at = revision.resolved.get(arm.ref)
        pinned = f" (v{at})" if at is not None and "@" in arm.ref else ""
        parts.append(f"{arm.ref}{pinned}={arm.weight:g}%")
    text = ", ".join(parts)
    if revision.config.shadows:
        text += "; shadows: " + ", ".join(revision.config.shadows)
    return text


def _number(value: float | None, *, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if value is not None else "-"


def _when(at: datetime) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))


def _console() -> Console:
    return Console(highlight=False)
