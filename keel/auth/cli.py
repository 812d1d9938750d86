"""``keel users``, ``keel tokens``, ``keel grants`` and ``keel audit``.

Each works on the local database, or, with ``KEEL_TRACKING_URI`` set, through the server as the
user of ``KEEL_TRACKING_TOKEN`` (see :mod:`keel.auth.api`). Listings take ``--json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click

from keel.auth.api import Admin, admin
from keel.auth.models import Permission, Role, TokenInfo
from keel.errors import InvalidInput

__all__ = ["audit", "grants", "tokens", "users"]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@contextmanager
def _admin() -> Iterator[Admin]:
    handle = admin()
    try:
        yield handle
    finally:
        handle.close()


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _print_table(columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, box=None, header_style="bold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhmw]?)\s*$")
_DAYS_PER = {"": 1.0, "d": 1.0, "w": 7.0, "h": 1 / 24, "m": 1 / 1440}


def parse_expiry(text: str) -> float:
    """Days from ``30d``, ``12h``, ``90m``, ``2w`` or a bare number of days."""
    match = _DURATION.match(text)
    days = float(match.group(1)) * _DAYS_PER[match.group(2)] if match else 0.0
    if not match or days <= 0 or days > 36_500:
        raise InvalidInput(
            f"--expires {text!r} is not a duration; use e.g. 30d, 12h, 90m, 2w (at most 100 years)"
        )
    return days


# -- users ------------------------------------------------------------------------------------
@click.group()
def users() -> None:
    """Create, list, disable and enable the users of a server with --auth.

    \b
    Example:
      keel users create alice && keel tokens create --user alice --role editor
    """


@users.command("create")
@click.argument("name")
def create_user(name: str) -> None:
    """Create a user (then give them a token with keel tokens create).

    \b
    Example:
      keel users create alice
    """
    with _admin() as handle:
        user = handle.create_user(name)
    click.echo(f"Created user {user.name}; make a token: keel tokens create --user {user.name}")


@users.command("list")
@_json_option
def list_users(as_json: bool) -> None:
    """List users.

    \b
    Example:
      keel users list --json
    """
    with _admin() as handle:
        found = handle.list_users()
    if as_json:
        _echo_json([u.model_dump() for u in found])
        return
    _print_table(
        ["user", "status", "created"],
        [[u.name, "disabled" if u.disabled else "active", _when(u.created_at)] for u in found],
    )


def _set_disabled(name: str, disabled: bool) -> None:
    with _admin() as handle:
        handle.set_user_disabled(name, disabled)
    click.echo(f"{'Disabled' if disabled else 'Enabled'} user {name}.")


@users.command("disable")
@click.argument("name")
def disable_user(name: str) -> None:
    """Disable a user: every token of theirs stops working at once.

    \b
    Example:
      keel users disable alice
    """
    _set_disabled(name, True)


@users.command("enable")
@click.argument("name")
def enable_user(name: str) -> None:
    """Enable a disabled user again (their tokens that are not revoked work again).

    \b
    Example:
      keel users enable alice
    """
    _set_disabled(name, False)


# -- tokens -----------------------------------------------------------------------------------
@click.group()
def tokens() -> None:
    """Create, list and revoke API tokens (stored only as salted hashes).

    \b
    Example:
      keel tokens create --user alice --role viewer --expires 30d
    """


@tokens.command("create")
@click.option("--user", "user", required=True, help="The user the token acts as.")
@click.option(
    "--role",
    type=click.Choice(["viewer", "editor", "admin"]),
    default="editor",
    show_default=True,
    help="viewer: read; editor: also write and create experiments; admin: everything.",
)
@click.option("--expires", default=None, help="Lifetime: 30d, 12h, 90m, 2w (default: never).")
@click.option("--label", default="", help="A note saying what the token is for.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the token.")
def create_token(user: str, role: str, expires: str | None, label: str, quiet: bool) -> None:
    """Make a token. It is printed once: Keel keeps only its salted hash.

    \b
    Examples:
      keel tokens create --user alice --role editor --expires 90d --label laptop
      export KEEL_TRACKING_TOKEN=$(keel tokens create --user ci --role editor -q)
    """
    days = parse_expiry(expires) if expires else None
    with _admin() as handle:
        token = handle.create_token(user, role=Role.parse(role), label=label, expires_in_days=days)
    if quiet:
        click.echo(token.token)
        return
    until = f", expires {_when(token.expires_at)}" if token.expires_at else ""
    click.echo(f"Token {token.token_id} for {token.user} (role {token.role}{until}):")
    click.echo(token.token)
    click.secho(
        "Save it now: it is not shown again. Use it as KEEL_TRACKING_TOKEN, or for MLflow "
        "clients as MLFLOW_TRACKING_TOKEN (or MLFLOW_TRACKING_USERNAME + "
        "MLFLOW_TRACKING_PASSWORD).",
        fg="yellow",
        err=True,
    )


@tokens.command("list")
@click.option("--user", "user", default=None, help="Only this user's tokens.")
@_json_option
def list_tokens(user: str | None, as_json: bool) -> None:
    """List tokens (never their secrets).

    \b
    Example:
      keel tokens list --user alice
    """
    with _admin() as handle:
        found = handle.list_tokens(user=user)
    if as_json:
        _echo_json([t.model_dump() for t in found])
        return

    now = datetime.now(tz=UTC).timestamp() * 1000

    def state(token: TokenInfo) -> str:
        if token.revoked_at is not None:
            return f"revoked {_when(token.revoked_at)}"
        if token.expires_at is not None:
            verb = "expired" if token.expires_at <= now else "expires"
            return f"{verb} {_when(token.expires_at)}"
        return "active"

    _print_table(
        ["id", "user", "role", "label", "created", "state"],
        [
            [
                t.token_id,
                t.user,
                t.role,
                t.label,
                _when(t.created_at),
                state(t),
            ]
            for t in found
        ],
    )


@tokens.command("revoke")
@click.argument("token_id")
def revoke_token(token_id: str) -> None:
    """Revoke a token at once.

    \b
    Example:
      keel tokens revoke 3f2a9c1d0b7e
    """
    with _admin() as handle:
        handle.revoke_token(token_id)
    click.echo(f"Revoked token {token_id}.")


# -- grants -----------------------------------------------------------------------------------
@click.group()
def grants() -> None:
    """Share an experiment: give users read or write on it (owners and admins).

    \b
    Example:
      keel grants add churn bob write
    """


@grants.command("list")
@click.argument("experiment")
@_json_option
def list_grants(experiment: str, as_json: bool) -> None:
    """Who may do what on EXPERIMENT (an id or a name).

    \b
    Example:
      keel grants list churn
    """
    with _admin() as handle:
        found = handle.list_grants(handle.experiment_id(experiment))
    if as_json:
        _echo_json([g.model_dump() for g in found])
        return
    _print_table(
        ["user", "permission", "granted by", "when"],
        [[g.user, g.permission, g.granted_by, _when(g.granted_at)] for g in found],
    )


@grants.command("add")
@click.argument("experiment")
@click.argument("user")
@click.argument(
    "permission", type=click.Choice(["read", "write", "owner"]), default="read", required=False
)
def add_grant(experiment: str, user: str, permission: str) -> None:
    """Give USER PERMISSION (read, the default; write; owner, admins only) on EXPERIMENT.

    \b
    Examples:
      keel grants add churn bob            # bob can see churn and its runs
      keel grants add 7 carol write        # carol can also log to it
    """
    with _admin() as handle:
        grant = handle.grant(handle.experiment_id(experiment), user, Permission.parse(permission))
    click.echo(f"{grant.user} has {grant.permission} on experiment {grant.experiment_id}.")


@grants.command("remove")
@click.argument("experiment")
@click.argument("user")
def remove_grant(experiment: str, user: str) -> None:
    """Take USER's grant on EXPERIMENT away (the experiment becomes invisible to them).

    \b
    Example:
      keel grants remove churn bob
    """
    with _admin() as handle:
        experiment_id = handle.experiment_id(experiment)
        handle.revoke_grant(experiment_id, user)
    click.echo(f"{user} no longer has access to experiment {experiment_id}.")


# -- the audit log ----------------------------------------------------------------------------
def _time(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{text!r} is not a date or time; use ISO 8601, e.g. 2026-11-22 or 2026-11-22T14:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return int(moment.timestamp() * 1000)


@click.command()
@click.option("--user", default=None, help="Only requests by this user.")
@click.option("--action", default=None, help="Only this operation (create_run, log_metrics ...).")
@click.option("--target", default=None, help='Only what touched "experiment/3" or "run/<id>".')
@click.option("--since", default=None, help="From this ISO date/time (local time if no zone).")
@click.option("--until", default=None, help="Before this ISO date/time.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--before-id", type=click.IntRange(0), default=None, help="Older than this entry (paging)."
)
@_json_option
def audit(
    user: str | None,
    action: str | None,
    target: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    before_id: int | None,
    as_json: bool,
) -> None:
    """Show the audit log, newest first: who wrote what, when, and the answer (admins).

    \b
    Examples:
      keel audit --user alice --since 2026-11-01
      keel audit --target experiment/3 --json
    """
    with _admin() as handle:
        entries, older = handle.audit(
            user=user,
            action=action,
            target=target,
            since=_time(since),
            until=_time(until),
            before_id=before_id,
            limit=limit,
        )
    if as_json:
        _echo_json([e.model_dump() for e in entries])
        return
    _print_table(
        ["when", "user", "action", "status", "targets", "request"],
        [
            [
                _when(e.at),
                e.user or "(anonymous)",
                e.action,
                str(e.status),
                " ".join(e.targets),
                f"{e.method} {e.path}",
            ]
            for e in entries
        ],
    )
    if older is not None:
        click.echo(f"(older entries: keel audit --before-id {older})", err=True)
