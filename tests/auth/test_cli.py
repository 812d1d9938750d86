"""``keel users``, ``tokens``, ``grants`` and ``audit``: on the local database, and through a
real ``keel server --auth`` on 127.0.0.1 with KEEL_TRACKING_URI and KEEL_TRACKING_TOKEN set.

Commands go through :func:`keel.cli.main`, the console script's entry, so a user mistake is
checked the way a user sees it: one red ``Error:`` line on stderr, exit 1, no traceback.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner, Result

from keel.auth.store import AuthStore
from keel.db import make_engine
from keel.errors import Unauthenticated
from keel.settings import Settings
from keel.tracking.api import Client
from tests.server.conftest import serve

RED = "\x1b[31m"


def keel(runner: CliRunner, *args: str) -> Result:
    """``keel ARGS`` through :func:`keel.cli.main`, with colors kept so red can be checked."""

    @click.command(context_settings={"ignore_unknown_options": True})
    @click.argument("argv", nargs=-1, type=click.UNPROCESSED)
    def shim(argv: tuple[str, ...]) -> None:
        from keel.cli import main

        main(list(argv))

    return runner.invoke(shim, list(args), color=True)


def ok(runner: CliRunner, *args: str) -> str:
    result = keel(runner, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def listed(runner: CliRunner, *args: str) -> list[dict[str, object]]:
    data = json.loads(ok(runner, *args, "--json"))
    assert isinstance(data, list)
    return data


def one_red_line(result: Result) -> str:
    """The single red error line a failed command printed (asserting there is just that)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{RED}Error: "), lines[0]
    return click.unstyle(lines[0])


def create_experiment(settings: Settings, name: str) -> int:
    client = Client(settings)
    try:
        return client.create_experiment(name).experiment_id
    finally:
        client.close()


@pytest.fixture
def auth_store(settings: Settings) -> Iterator[AuthStore]:
    """The database the CLI works on, to check what its commands did."""
    Client(settings).close()  # a migrated schema
    engine = make_engine(settings.db_url)
    yield AuthStore(engine)
    engine.dispose()


# -- the local database ---------------------------------------------------------------------------
def test_users_create_list_disable_enable(cli: CliRunner, auth_store: AuthStore) -> None:
    assert "Created user alice" in ok(cli, "users", "create", "alice")
    ok(cli, "users", "create", "bob")
    users = listed(cli, "users", "list")
    assert [(u["name"], u["disabled"]) for u in users] == [("alice", False), ("bob", False)]

    token = ok(cli, "tokens", "create", "--user", "alice", "-q").strip()
    assert auth_store.authenticate(token).user == "alice"
    assert "Disabled user alice" in ok(cli, "users", "disable", "alice")
    assert [u["disabled"] for u in listed(cli, "users", "list")] == [True, False]
    table = ok(cli, "users", "list")
    assert "alice" in table and "disabled" in table and "active" in table
    with pytest.raises(Unauthenticated, match="disabled"):
        auth_store.authenticate(token)
    ok(cli, "users", "enable", "alice")
    assert auth_store.authenticate(token).user == "alice"  # the same token works again


def test_token_authenticates_until_revoked_and_its_secret_is_never_listed(
    cli: CliRunner, auth_store: AuthStore
) -> None:
    ok(cli, "users", "create", "ci")
    created = keel(cli, "tokens", "create", "--user", "ci", "--role", "viewer", "--label", "bot")
    assert created.exit_code == 0, created.output
    token = created.stdout.splitlines()[-1]
    assert token.startswith("keel_") and "Save it now" in created.stderr
    principal = auth_store.authenticate(token)
    assert (principal.user, principal.role.label) == ("ci", "viewer")

    quiet = ok(cli, "tokens", "create", "--user", "ci", "--role", "admin", "--expires", "30d", "-q")
    assert quiet.count("\n") == 1 and quiet.startswith("keel_")  # only the token: $(...) works
    admin = auth_store.authenticate(quiet.strip())
    assert admin.role.label == "admin"

    tokens = listed(cli, "tokens", "list")
    assert [(t["token_id"], t["role"], t["label"]) for t in tokens] == [
        (principal.token_id, "viewer", "bot"),
        (admin.token_id, "admin", ""),
    ]
    created_at, expires_at = tokens[1]["created_at"], tokens[1]["expires_at"]
    assert isinstance(created_at, int) and isinstance(expires_at, int)
    assert expires_at - created_at == 30 * 86_400_000 and tokens[0]["expires_at"] is None
    everything = ok(cli, "tokens", "list", "--json") + ok(cli, "tokens", "list")
    for secret in (token, quiet.strip()):
        assert secret.rsplit("_", 1)[1] not in everything

    assert f"Revoked token {principal.token_id}" in ok(cli, "tokens", "revoke", principal.token_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        auth_store.authenticate(token)
    assert auth_store.authenticate(quiet.strip()).user == "ci"  # the other token still works
    assert [t["revoked_at"] is not None for t in listed(cli, "tokens", "list")] == [True, False]
    table = ok(cli, "tokens", "list", "--user", "ci")
    row = next(line for line in table.splitlines() if principal.token_id in line)
    assert "viewer" in row and "bot" in row and "revoked" in row


def test_grants_by_experiment_id_and_by_name(
    cli: CliRunner, settings: Settings, auth_store: AuthStore
) -> None:
    churn = create_experiment(settings, "churn")
    for name in ("alice", "bob"):
        ok(cli, "users", "create", name)

    assert f"bob has read on experiment {churn}" in ok(cli, "grants", "add", "churn", "bob")
    assert "alice has write" in ok(cli, "grants", "add", str(churn), "alice", "write")
    grants = listed(cli, "grants", "list", "churn")
    who = f"local:{getpass.getuser()}"
    assert [(g["user"], g["permission"], g["granted_by"]) for g in grants] == [
        ("alice", "write", who),
        ("bob", "read", who),
    ]
    assert listed(cli, "grants", "list", str(churn)) == grants
    bob = auth_store.authenticate(ok(cli, "tokens", "create", "--user", "bob", "-q").strip())
    assert auth_store.permission(bob.user_id, churn) is not None

    ok(cli, "grants", "add", "churn", "bob", "owner")  # replaces bob's read
    bob_row = next(x for x in ok(cli, "grants", "list", "churn").splitlines() if "bob" in x)
    assert "owner" in bob_row and who in bob_row
    assert "bob no longer has access" in ok(cli, "grants", "remove", "churn", "bob")
    assert [g["user"] for g in listed(cli, "grants", "list", "churn")] == ["alice"]
    assert auth_store.permission(bob.user_id, churn) is None


def test_audit_shows_local_actions_as_the_login(
    cli: CliRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    churn = create_experiment(settings, "churn")
    monkeypatch.setattr(sys, "argv", ["keel", "users", "create", "carol"])
    ok(cli, "users", "create", "carol")
    ok(cli, "tokens", "create", "--user", "carol", "-q")
    token_id = str(listed(cli, "tokens", "list")[0]["token_id"])
    ok(cli, "grants", "add", "churn", "carol", "write")
    ok(cli, "tokens", "revoke", token_id)
    ok(cli, "users", "disable", "carol")

    entries = listed(cli, "audit")
    assert [e["action"] for e in entries] == [
        "disable_user",
        "revoke_token",
        "set_grant",
        "create_token",
        "create_user",
    ]
    assert {e["user"] for e in entries} == {f"local:{getpass.getuser()}"}
    assert {(e["method"], e["status"], e["client"]) for e in entries} == {("CLI", 200, "local")}
    assert entries[-1]["path"] == "keel users create carol"
    assert entries[2]["targets"] == [f"experiment/{churn}", "user/carol"]
    assert entries[1]["targets"] == [f"token/{token_id}"]

    assert [e["action"] for e in listed(cli, "audit", "--action", "set_grant")] == ["set_grant"]
    targeted = listed(cli, "audit", "--target", f"experiment/{churn}")
    assert [e["action"] for e in targeted] == ["set_grant"]
    assert len(listed(cli, "audit", "--limit", "2")) == 2
    assert len(listed(cli, "audit", "--since", "2000-01-01")) == 5
    assert listed(cli, "audit", "--until", "2000-01-01") == []
    assert listed(cli, "audit", "--user", "nobody") == []
    table = ok(cli, "audit")
    assert "create_user" in table and "user/carol" in table


MISTAKES = [
    (["tokens", "create", "--user", "ghost"], "no user named 'ghost'"),
    (["users", "create", "alice"], "user 'alice' already exists"),
    (["users", "create", "no spaces"], "invalid user name 'no spaces'"),
    (["users", "disable", "ghost"], "no user named 'ghost'"),
    (["tokens", "create", "--user", "alice", "--expires", "soon"], "--expires 'soon'"),
    (["tokens", "create", "--user", "alice", "--expires", "0d"], "is not a duration"),
    (["tokens", "revoke", "0123456789ab"], "no token '0123456789ab'"),
    (["grants", "add", "no-such-experiment", "alice"], "no experiment named"),
    (["grants", "list", "999"], "999"),
    (["grants", "add", "churn", "ghost"], "no user named 'ghost'"),
    (["grants", "remove", "churn", "alice"], "user 'alice' has no grant on experiment"),
    (["audit", "--since", "last tuesday"], "'last tuesday' is not a date or time"),
]


def test_mistakes_are_one_red_line(cli: CliRunner, settings: Settings) -> None:
    create_experiment(settings, "churn")
    ok(cli, "users", "create", "alice")
    for args, message in MISTAKES:
        assert message in one_red_line(keel(cli, *args)), args
    assert [u["name"] for u in listed(cli, "users", "list")] == ["alice"]
    assert listed(cli, "tokens", "list") == []


def test_a_bad_role_or_permission_is_a_usage_error(cli: CliRunner, settings: Settings) -> None:
    ok(cli, "users", "create", "alice")
    for args in (
        ["tokens", "create", "--user", "alice", "--role", "root"],
        ["grants", "add", "churn", "alice", "everything"],
    ):
        result = keel(cli, *args)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "Error: Invalid value" in click.unstyle(result.stderr)
        assert "viewer" in result.stderr or "read" in result.stderr  # the choices are named
    assert listed(cli, "tokens", "list") == []


# -- through a server started with --auth ---------------------------------------------------------
def test_remote_admin_owner_and_editor(
    cli: CliRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(cli, "users", "create", "root")
    admin = ok(cli, "tokens", "create", "--user", "root", "--role", "admin", "-q").strip()
    with serve(settings.replace(auth=True)) as url:
        monkeypatch.setenv("KEEL_TRACKING_URI", url)

        def as_token(token: str) -> None:
            monkeypatch.setenv("KEEL_TRACKING_TOKEN", token)

        as_token(admin)
        ok(cli, "users", "create", "alice")
        ok(cli, "users", "create", "bob")
        alice = ok(cli, "tokens", "create", "--user", "alice", "--role", "editor", "-q").strip()
        assert [u["name"] for u in listed(cli, "users", "list")] == ["alice", "bob", "root"]

        as_token(alice)
        ok(cli, "experiments", "create", "churn")
        assert "bob has read" in ok(cli, "grants", "add", "churn", "bob")
        grants = listed(cli, "grants", "list", "churn")
        assert [(g["user"], g["permission"], g["granted_by"]) for g in grants] == [
            ("alice", "owner", "alice"),
            ("bob", "read", "alice"),
        ]
        experiment_id = str(grants[0]["experiment_id"])
        assert listed(cli, "grants", "list", experiment_id) == grants
        mine = listed(cli, "tokens", "list")  # an editor sees their own tokens only
        assert [t["user"] for t in mine] == ["alice"]

        denied = one_red_line(keel(cli, "users", "list"))
        assert "needs an admin token" in denied and "editor" in denied
        assert "only admins make other users owners" in one_red_line(
            keel(cli, "grants", "add", "churn", "bob", "owner")
        )

        as_token(admin)
        entries = listed(cli, "audit")
        assert [(e["user"], e["action"], e["status"]) for e in entries] == [
            ("alice", "set_grant", 403),
            ("alice", "set_grant", 200),
            ("alice", "create_experiment", 201),
            ("root", "create_token", 201),
            ("root", "create_user", 201),
            ("root", "create_user", 201),
            (f"local:{getpass.getuser()}", "create_token", 200),
            (f"local:{getpass.getuser()}", "create_user", 200),
        ]
        assert entries[1]["method"] == "PUT" and entries[1]["client"] == "127.0.0.1"
        assert entries[1]["targets"] == [f"experiment/{experiment_id}", "user/bob"]
        alice_only = listed(cli, "audit", "--user", "alice", "--action", "set_grant")
        assert [e["status"] for e in alice_only] == [403, 200]

        as_token("keel_000000000000_wrong")
        assert "not valid" in one_red_line(keel(cli, "users", "list"))


def test_remote_admin_needs_a_server_with_auth(
    cli: CliRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(settings) as url:
        monkeypatch.setenv("KEEL_TRACKING_URI", url)
        message = one_red_line(keel(cli, "users", "list"))
    assert "runs without authentication" in message and "--auth" in message
