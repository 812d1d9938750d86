"""``keel models policy|requests|approve|reject|card`` and the history of governance, on SQLite
and PostgreSQL; mistakes are one red line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from keel.auth.models import Role
from keel.models.api import Registry
from keel.settings import Settings
from tests.conftest import run_main
from tests.models.test_cli import _logged, _ok, _one_red_line


def test_policy_requests_approve_reject_and_history(cli: CliRunner, settings: Settings) -> None:
    uri = _logged(0.5)
    _ok(cli, ["models", "register", uri, "diabetes"])
    _ok(cli, ["models", "register", uri, "diabetes"])
    _ok(cli, ["models", "alias", "set", "diabetes", "production", "1"])
    assert "has no policy" in _ok(cli, ["models", "policy", "show", "diabetes"])
    assert json.loads(_ok(cli, ["models", "policy", "show", "diabetes", "--json"])) is None
    out = _ok(
        cli,
        [
            "models", "policy", "set", "diabetes", "--protect", "production",
            "--approvers", "admins,carol", "--require", "metrics.rmse<70",
        ],
    )  # fmt: skip
    assert out == (
        "Policy of diabetes: protects production; approvers admins or carol; "
        "requires metrics.rmse < 70\n"
    )
    shown = json.loads(_ok(cli, ["models", "policy", "show", "diabetes", "--json"]))
    assert shown["approvers"] == ["@admin", "carol"]

    # the OS user asks; alice (an editor) may not approve, carol may
    asked = run_main(cli, ["models", "alias", "set", "diabetes", "production", "2"])
    assert asked.exit_code == 3, asked.output  # a request awaits approval: the alias did not move
    assert asked.stdout.startswith(
        "request #1: moving production to 2 needs approval by admins or carol"
    )
    assert "did not move; keel models approve diabetes 1 moves it" in asked.stderr
    line = _one_red_line(cli, ["models", "approve", "diabetes", "1"])
    assert "needs an approval by a user other than the requester" in line
    listed = _ok(cli, ["models", "requests", "diabetes"])
    assert "production" in listed and "pending" in listed and "metrics.rmse < 70" in listed
    with Registry(actor="alice", role=Role.EDITOR) as alice:
        alice_request = alice.set_alias("diabetes", "production", 2)
    with Registry(actor="carol", role=Role.EDITOR) as carol:
        carol.approve("diabetes", 1, reason="ok")
    assert "production -> 2" in _ok(cli, ["models", "list"])

    usage = run_main(cli, ["models", "reject", "diabetes", "2"])
    assert usage.exit_code == 2 and "--reason" in usage.output
    out = _ok(cli, ["models", "reject", "diabetes", str(alice_request.id), "--reason", "dup"])
    assert out == "Rejected request #2: diabetes@production stays where it was.\n"
    assert "No pending requests for diabetes." in _ok(cli, ["models", "requests", "diabetes"])
    everything = json.loads(_ok(cli, ["models", "requests", "diabetes", "--all", "--json"]))
    assert [(r["id"], r["state"]) for r in everything] == [(2, "rejected"), (1, "approved")]
    assert "is rejected already" in _one_red_line(cli, ["models", "approve", "diabetes", "2"])

    line = _one_red_line(cli, ["models", "alias", "delete", "diabetes", "production"])
    assert "the model's policy protects it" in line
    table = _ok(cli, ["models", "history", "diabetes"])
    assert "set_policy" in table and "protect production; approvers @admin, carol" in table
    assert "#1 production -> 2" in table and "requested by" in table
    assert "production -> 2 (was 1) by request #1" in table and "dup" in table
    _ok(cli, ["models", "policy", "clear", "diabetes"])
    assert "clear_policy" in _ok(cli, ["models", "history", "diabetes"])
    assert _ok(cli, ["models", "alias", "delete", "diabetes", "production"]).startswith("Removed")


def test_policy_mistakes_are_one_red_line(cli: CliRunner, settings: Settings) -> None:
    _ok(cli, ["models", "register", _logged(0.5), "diabetes"])
    line = _one_red_line(
        cli,
        ["models", "policy", "set", "diabetes", "--protect", "production", "--approvers",
         "admins", "--require", "rmse < 60"],
    )  # fmt: skip
    assert line == (
        "Error: malformed check 'rmse < 60': 'rmse' is not metrics.NAME, params.NAME or tags.NAME"
    )
    line = _one_red_line(cli, ["models", "policy", "set", "diabetes", "--approvers", "admins"])
    assert "protects at least one alias" in line
    assert "has no policy" in _one_red_line(cli, ["models", "policy", "clear", "diabetes"])
    assert "no request #3" in _one_red_line(cli, ["models", "approve", "diabetes", "3"])


def test_card_generate_show_edit(cli: CliRunner, settings: Settings, tmp_path: Path) -> None:
    _ok(cli, ["models", "register", _logged(0.5), "diabetes"])
    assert "no model card yet" in _one_red_line(cli, ["models", "card", "show", "diabetes/1"])
    out = _ok(cli, ["models", "card", "generate", "diabetes/1"])
    assert out == "Generated the card of diabetes/1 (keel models card show diabetes/1)\n"
    card = _ok(cli, ["models", "card", "show", "diabetes/1"])
    assert card.startswith("# diabetes/1\n") and "## Intended use" in card
    edited = tmp_path / "card.md"
    edited.write_text(card.replace("_To be filled in: who", "Triage nurses; who"))
    assert _ok(cli, ["models", "card", "edit", "diabetes/1", "--file", str(edited)]) == (
        "Saved the card of diabetes/1\n"
    )
    document = json.loads(_ok(cli, ["models", "card", "show", "diabetes/1", "--json"]))
    assert document["generated"] is False and "Triage nurses" in document["markdown"]
    line = _one_red_line(cli, ["models", "card", "generate", "diabetes/1"])
    assert "was edited by" in line and "--replace" in line
    _ok(cli, ["models", "card", "generate", "diabetes/1", "--replace"])
    assert "card +1 -1 lines in Intended use" in _ok(cli, ["models", "history", "diabetes"])


def test_help_has_examples(cli: CliRunner) -> None:
    from keel.cli import cli as keel_cli

    for args in (
        ["models", "policy"],
        ["models", "policy", "set"],
        ["models", "requests"],
        ["models", "approve"],
        ["models", "reject"],
        ["models", "card"],
        ["models", "card", "edit"],
    ):
        result = cli.invoke(keel_cli, [*args, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, result.output
