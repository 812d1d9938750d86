"""``keel deploy`` through the real entry point (keel.cli.main) on a tmp home with real
registered models: every command, its JSON, its exit status, and one red line for mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from keel.cli import cli as keel_cli
from keel.models import api as registry
from keel.models import governance
from keel.serving.deployments import api
from keel.serving.deployments.cli import ALIAS_REQUESTED
from tests.conftest import run_main
from tests.serving.deployments.conftest import Registered, train_and_register


@pytest.fixture
def registered(home: Path) -> Registered:
    return train_and_register()


def _ok(cli: CliRunner, *args: str) -> str:
    result = run_main(cli, list(args))
    assert result.exit_code == 0, result.output
    return str(result.output)


def _fails(cli: CliRunner, *args: str, code: int = 1) -> str:
    result = run_main(cli, list(args))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return str(result.output)


def test_create_list_show_set_traffic_promote_rollback_history_delete(
    registered: Registered, cli: CliRunner
) -> None:
    created = _ok(
        cli,
        *("deploy", "create", "churn", "--model", "diabetes@champion"),
        *("--canary", "diabetes@challenger=10%", "--shadow", "diabetes/3", "--note", "go"),
    )
    assert created.strip() == (
        "churn revision 1: diabetes@champion=90%, diabetes@challenger=10%; shadows: diabetes/3"
    )
    listed = json.loads(_ok(cli, "deploy", "list", "--json"))
    assert [(d["name"], d["revision"]) for d in listed] == [("churn", 1)]
    assert listed[0]["config"]["primaries"][1] == {"ref": "diabetes@challenger", "weight": 10.0}
    table = _ok(cli, "deploy", "list")
    assert "churn" in table and "diabetes@champion=90%" in table and "diabetes/3" in table
    shown = _ok(cli, "deploy", "show", "churn")
    assert "churn revision 1" in shown and "shadow" in shown and "90%" in shown
    assert json.loads(_ok(cli, "deploy", "show", "churn", "--json"))["resolved"] == {
        "diabetes/3": 3,
        "diabetes@challenger": 2,
        "diabetes@champion": 1,
    }

    moved = _ok(cli, "deploy", "set-traffic", "churn", "diabetes@challenger=25")
    assert "churn revision 2: diabetes@champion=75%, diabetes@challenger=25%" in moved
    promoted = _ok(cli, "deploy", "promote", "churn", "--move-alias", "--note", "2 wins")
    assert "churn revision 3: diabetes@champion=100%; shadows: diabetes/3" in promoted
    assert "diabetes@champion -> 2" in promoted
    assert registry.get_version("diabetes", "champion").version == 2
    # champion moved to 2, where challenger points: both arms of revision 2 are version 2 now
    back = _ok(cli, "deploy", "rollback", "churn", "--to", "2")
    assert "churn revision 4: diabetes@champion=75%, diabetes@challenger=25%" in back
    assert "diabetes@champion and diabetes@challenger resolve to the same version (2)" in back
    assert "churn revision 5:" in _ok(cli, "deploy", "remove-shadow", "churn", "diabetes/3")
    assert "shadows: diabetes/3" in _ok(cli, "deploy", "add-shadow", "churn", "diabetes/3")

    history = json.loads(_ok(cli, "deploy", "history", "churn", "--json"))
    assert [(r["revision"], r["action"]) for r in history] == [
        (1, "create"),
        (2, "set-traffic"),
        (3, "promote"),
        (4, "rollback"),
        (5, "remove-shadow"),
        (6, "add-shadow"),
    ]
    assert history[0]["note"] == "go" and history[3]["note"] == "rollback to revision 2"
    printed = _ok(cli, "deploy", "history", "churn")
    assert "promote" in printed and "2 wins" in printed and "diabetes@champion (v2)" in printed

    aborted = run_main(cli, ["deploy", "delete", "churn"])  # asks; no answer aborts
    assert aborted.exit_code == 1 and api.get("churn").revision == 6
    assert "it was at revision 6" in _ok(cli, "deploy", "delete", "churn", "--yes")
    assert "No deployments yet" in _ok(cli, "deploy", "list")


def test_promote_to_a_protected_alias_exits_3_with_the_request(
    registered: Registered, cli: CliRunner
) -> None:
    governance.set_policy("diabetes", protect=["champion"], approvers=["admins"])
    _ok(
        cli,
        "deploy",
        "create",
        "churn",
        "--model",
        "diabetes@champion",
        "--canary",
        "diabetes/3=5%",
    )
    result = run_main(cli, ["deploy", "promote", "churn", "--move-alias"])
    assert result.exit_code == ALIAS_REQUESTED == 3, result.output
    assert "churn revision 2: diabetes/3=100%" in result.output
    assert "moving champion to 3 needs approval" in result.output
    assert "diabetes@champion did not move; keel models approve diabetes" in result.output
    assert registry.get_version("diabetes", "champion").version == 1


_MISTAKES = [
    (["create", "churn", "--model", "diabetes@nope"], "diabetes@nope does not resolve"),
    (["create", "churn", "--model", "diabetes/1", "--canary", "diabetes/2"], "REF=PCT%"),
    (["create", "churn", "--model", "diabetes/1", "--canary", "d/2=x%"], "REF=PCT%"),
    (["create", "bad name", "--model", "diabetes/1"], "invalid deployment name"),
    (["show", "nope"], "no deployment named 'nope'"),
    (["set-traffic", "churn", "diabetes/2=120%"], "at most 100%"),
    (["promote", "churn"], "nothing to promote"),
    (["rollback", "churn"], "nothing to roll back to"),
    (["status", "churn", "--since", "yesterday"], "--since takes a duration"),
    (["status", "nothing"], "no deployment named 'nothing', and nothing logged"),
]


def test_mistakes_are_one_red_line(registered: Registered, cli: CliRunner) -> None:
    api.create("churn", "diabetes/1")
    for args, message in _MISTAKES:
        output = _fails(cli, "deploy", *args)
        lines = output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:"), output
        assert message in lines[0], output


def test_usage_errors_exit_2(home: Path, cli: CliRunner) -> None:
    assert "--model" in _fails(cli, "deploy", "create", "churn", code=2)
    assert "Missing argument" in _fails(cli, "deploy", "set-traffic", "churn", code=2)
    assert "0<=x<1" in _fails(cli, "deploy", "status", "x", "--tolerance", "1", code=2)


def test_help_has_examples(cli: CliRunner) -> None:
    for command in (
        "create",
        "list",
        "show",
        "history",
        "status",
        "set-traffic",
        "promote",
        "rollback",
        "add-shadow",
        "remove-shadow",
        "delete",
    ):
        result = cli.invoke(keel_cli, ["deploy", command, "--help"])
        assert result.exit_code == 0, result.output
        help_text = result.output
        assert "Example" in help_text and f"keel deploy {command}" in help_text, command
