"""``keel models policy|requests|approve|reject|card``: governance on the command line.

Each command calls one function of :mod:`keel.models.governance`; :func:`mount` adds them to
the ``keel models`` group. Locally the actor is the OS user, who owns the store (admin); with
``KEEL_TRACKING_URI`` the commands go to that keel server, and on one started with ``--auth``
the actor and role are those of ``KEEL_TRACKING_TOKEN``'s user. There is no option to act as
someone else: governance between people is enforced by the server's tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keel.models import governance
from keel.models.governance_models import Policy, approvers_text

__all__ = ["mount"]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def mount(group: click.Group) -> None:
    """Add the governance commands to ``keel models``."""
    for command in (policy, requests, approve, reject, card):
        group.add_command(command)


@click.group()
def policy() -> None:
    """Protect a model's aliases: who approves moving them, and what a version must pass.

    \b
    Example:
      keel models policy set churn --protect production --approvers admins \\
          --require "metrics.rmse < 60" --require-card
      keel models policy show churn
    """


@policy.command("set")
@click.argument("name")
@click.option("--protect", multiple=True, metavar="ALIAS", help="An alias to protect; repeatable.")
@click.option(
    "--approvers",
    multiple=True,
    required=True,
    metavar="admins|USER[,USER...]",
    help="Who may approve: admins (any admin) and/or user names.",
)
@click.option(
    "--require",
    "requires",
    multiple=True,
    metavar="EXPR",
    help='A check, e.g. "metrics.rmse < 60" or "tags.validated = \'yes\'"; repeatable.',
)
@click.option("--require-card", is_flag=True, help="The version must have a model card.")
def set_policy(
    name: str,
    protect: Sequence[str],
    approvers: Sequence[str],
    requires: Sequence[str],
    require_card: bool,
) -> None:
    """Set (replace) model NAME's policy.

    \b
    Example:
      keel models policy set churn --protect production --approvers admins,ana \\
          --require "metrics.rmse < 60" --require "params.solver = 'lbfgs'" --require-card
    """
    found = governance.set_policy(
        name,
        protect=list(protect),
        approvers=list(approvers),
        requires=list(requires),
        require_card=require_card,
    )
    click.echo(f"Policy of {name}: {_policy_line(found)}")


@policy.command("show")
@click.argument("name")
@_json_option
def show_policy(name: str, as_json: bool) -> None:
    """Show model NAME's policy.

    \b
    Example:
      keel models policy show churn --json
    """
    found = governance.get_policy(name)
    if as_json:
        _echo_json(found.model_dump(mode="json") if found else None)
        return
    if found is None:
        click.echo(f"{name} has no policy: its aliases move directly.")
        return
    click.echo(f"Policy of {name}: {_policy_line(found)}")
    click.echo(f"(set by {found.updated_by} {found.updated_at.astimezone():%Y-%m-%d %H:%M:%S})")


@policy.command("clear")
@click.argument("name")
def clear_policy(name: str) -> None:
    """Remove model NAME's policy; its pending requests are cancelled.

    \b
    Example:
      keel models policy clear churn
    """
    governance.clear_policy(name)
    click.echo(f"Cleared the policy of {name}; its aliases move directly now.")


@click.command()
@click.argument("name")
@click.option("--all", "show_all", is_flag=True, help="Also decided and cancelled requests.")
@_json_option
def requests(name: str, show_all: bool, as_json: bool) -> None:
    """List requests to move model NAME's protected aliases (pending ones unless --all).

    \b
    Example:
      keel models requests churn
      keel models requests churn --all --json
    """
    found = governance.list_requests(name, pending_only=not show_all)
    if as_json:
        _echo_json([r.model_dump(mode="json") for r in found])
        return
    if not found:
        click.echo(f"No {'' if show_all else 'pending '}requests for {name}.")
        return
    table = Table()
    for column in ("#", "alias", "version", "state", "requested", "by"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason")
    table.add_column("checks", overflow="fold")
    for r in found:
        state = r.state if r.decided_by is None else f"{r.state} by {r.decided_by}"
        table.add_row(
            str(r.id),
            escape(r.alias),
            str(r.version),
            escape(state),
            f"{r.created_at.astimezone():%Y-%m-%d %H:%M:%S}",
            escape(r.requested_by),
            escape(r.decision_reason or r.reason or ""),
            escape("; ".join(str(c) for c in r.checks)),
        )
    Console(highlight=False).print(table)


@click.command()
@click.argument("name")
@click.argument("request_id", type=click.IntRange(min=1), metavar="REQUEST_ID")
@click.option("--reason", help="Why; recorded in the audit trail (keel models history).")
def approve(name: str, request_id: int, reason: str | None) -> None:
    """Approve request REQUEST_ID of model NAME: the alias moves if the version passes the checks.

    You cannot approve your own request.

    \b
    Example:
      keel models approve churn 4 --reason "card reviewed, rmse 52"
    """
    done = governance.approve(name, request_id, reason=reason)
    checks = "; ".join(str(c) for c in done.checks) or "none"
    click.echo(
        f"Approved request #{done.id}: {name}@{done.alias} -> {done.version} "
        f"(requested by {done.requested_by}); checks: {checks}"
    )


@click.command()
@click.argument("name")
@click.argument("request_id", type=click.IntRange(min=1), metavar="REQUEST_ID")
@click.option("--reason", required=True, help="Why; recorded in the audit trail.")
def reject(name: str, request_id: int, reason: str) -> None:
    """Reject request REQUEST_ID of model NAME (or withdraw your own).

    \b
    Example:
      keel models reject churn 4 --reason "drift on the March data"
    """
    done = governance.reject(name, request_id, reason=reason)
    click.echo(f"Rejected request #{done.id}: {name}@{done.alias} stays where it was.")


@click.group()
def card() -> None:
    """Model cards: generate from lineage and metrics, show, edit.

    \b
    Example:
      keel models card generate churn/3
      keel models card show churn/3 > card.md
      keel models card edit churn/3 --file card.md
    """


@card.command("generate")
@click.argument("ref", metavar="NAME/VERSION|NAME@ALIAS")
@click.option("--replace", is_flag=True, help="Replace a card a person edited.")
def generate_card(ref: str, replace: bool) -> None:
    """Generate the version's card from its lineage, metrics and evaluations, and store it.

    \b
    Example:
      keel models card generate churn/3
    """
    done = governance.generate_card(ref, replace=replace)
    where = f"{done.name}/{done.version}"
    click.echo(f"Generated the card of {where} (keel models card show {where})")


@card.command("show")
@click.argument("ref", metavar="NAME/VERSION|NAME@ALIAS")
@_json_option
def show_card(ref: str, as_json: bool) -> None:
    """Print the version's card (Markdown).

    \b
    Example:
      keel models card show churn@champion > card.md
    """
    found = governance.get_card(ref)
    if as_json:
        _echo_json(found.model_dump(mode="json"))
        return
    click.echo(found.markdown, nl=not found.markdown.endswith("\n"))


@card.command("edit")
@click.argument("ref", metavar="NAME/VERSION|NAME@ALIAS")
@click.option(
    "--file",
    "source",
    type=click.File("r", encoding="utf-8"),
    required=True,
    help="The new card, Markdown; - reads standard input.",
)
def edit_card(ref: str, source: IO[str]) -> None:
    """Replace the version's card with a Markdown file (audited with what changed).

    \b
    Example:
      keel models card edit churn/3 --file card.md
    """
    done = governance.edit_card(ref, source.read())
    click.echo(f"Saved the card of {done.name}/{done.version}")


# -- output ------------------------------------------------------------------------------------


def _policy_line(found: Policy) -> str:
    parts = [f"protects {', '.join(found.protect)}", f"approvers {approvers_text(found.approvers)}"]
    if found.requires:
        parts.append(f"requires {', '.join(found.requires)}")
    if found.require_card:
        parts.append("requires a card")
    return "; ".join(parts)


def _echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))
