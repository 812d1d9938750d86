"""``keel models`` on the command line against real logged models, on SQLite and PostgreSQL:
each command, its JSON, and user mistakes as one red line."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

import keel
import keel.data
import keel.models
from keel.settings import Settings
from tests.conftest import run_main
from tests.models.training import diabetes


def _logged(alpha: float, *, data: str | None = None) -> str:
    from sklearn.linear_model import Ridge

    X, y = diabetes()
    with keel.start_run(f"ridge-{alpha}"):
        if data is not None:
            X = keel.data.load(data)
            y = X.pop("target")
        model = Ridge(alpha=alpha).fit(X, y)
        keel.log_param("alpha", alpha)
        keel.log_metric("rmse", float(np.sqrt(np.mean((model.predict(X) - y) ** 2))))
        keel.set_tag("keel.source.git_commit", "c0ffee1234567890")
        return keel.models.log_model(model, input_example=X.head()).uri


def _ok(cli: CliRunner, args: list[str]) -> str:
    result = run_main(cli, args)
    assert result.exit_code == 0, result.output
    return str(result.output)


def _one_red_line(cli: CliRunner, args: list[str]) -> str:
    result = run_main(cli, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return str(lines[0])


def test_register_list_show_versions(cli: CliRunner, settings: Settings) -> None:
    assert "No registered models yet" in _ok(cli, ["models", "list"])
    uri = _logged(0.5)
    out = _ok(cli, ["models", "register", uri, "diabetes", "--tag", "team=ml", "-d", "ridge"])
    assert out == f"Registered models:/diabetes/1 (sklearn, from {uri})\n"
    _ok(cli, ["models", "register", uri, "diabetes"])
    _ok(cli, ["models", "alias", "set", "diabetes", "champion", "1"])

    listed = _ok(cli, ["models", "list"])
    assert "diabetes" in listed and "champion -> 1" in listed
    [row] = json.loads(_ok(cli, ["models", "list", "--json"]))
    assert row["name"] == "diabetes" and row["latest_version"] == 2
    assert row["aliases"] == {"champion": 1}
    assert json.loads(_ok(cli, ["models", "list", "--name-like", "x%", "--json"])) == []

    shown = _ok(cli, ["models", "show", "diabetes"])
    assert "aliases: champion -> 1" in shown and uri in shown
    document = json.loads(_ok(cli, ["models", "show", "diabetes", "--json"]))
    assert [v["version"] for v in document["versions"]] == [2, 1]
    versions = json.loads(_ok(cli, ["models", "versions", "diabetes", "--json"]))
    assert versions[1]["tags"] == {"team": "ml"} and versions[1]["description"] == "ridge"
    assert versions[1]["aliases"] == ["champion"]
    assert "team=ml" in _ok(cli, ["models", "versions", "diabetes"])


def test_alias_tag_and_history(cli: CliRunner, settings: Settings) -> None:
    uri = _logged(0.5)
    _ok(cli, ["models", "register", uri, "diabetes"])
    _ok(cli, ["models", "register", uri, "diabetes"])
    assert _ok(cli, ["models", "alias", "set", "diabetes", "champion", "1"]) == (
        "diabetes@champion -> 1\n"
    )
    out = _ok(cli, ["models", "alias", "set", "diabetes", "champion", "2", "--reason", "better"])
    assert out == "diabetes@champion -> 2 (was 1)\n"
    _ok(cli, ["models", "alias", "set", "diabetes", "challenger", "1"])
    out = _ok(cli, ["models", "alias", "delete", "diabetes", "challenger"])
    assert out == "Removed diabetes@challenger (it pointed at 1)\n"
    assert _ok(cli, ["models", "tag", "diabetes", "owner", "ana"]) == "Tagged diabetes: owner=ana\n"
    _ok(cli, ["models", "tag", "diabetes/2", "validated", "yes"])
    _ok(cli, ["models", "tag", "diabetes/2", "validated", "--delete"])
    assert keel.models.api.get_model("diabetes").tags == {"owner": "ana"}

    events = json.loads(_ok(cli, ["models", "history", "diabetes", "--json"]))
    assert [e["action"] for e in events] == [
        "create_model",
        "create_version",
        "create_version",
        "set_alias",
        "set_alias",
        "set_alias",
        "delete_alias",
        "set_tag",
        "set_tag",
        "delete_tag",
    ]
    assert events[4]["reason"] == "better" and events[4]["detail"] == {"from": 1, "to": 2}
    table = _ok(cli, ["models", "history", "diabetes"])
    assert "better" in table and "champion -> 2 (was 1)" in table


def test_diff_and_lineage(cli: CliRunner, settings: Settings) -> None:
    X, y = diabetes()
    keel.data.log_dataset(X.assign(target=y), "diabetes")
    keel.data.log_dataset(X.assign(target=y).head(300), "diabetes")
    _ok(cli, ["models", "register", _logged(0.5, data="diabetes@1"), "diabetes"])
    _ok(cli, ["models", "register", _logged(2.0, data="diabetes@2"), "diabetes"])
    _ok(cli, ["models", "alias", "set", "diabetes", "champion", "1"])

    out = _ok(cli, ["models", "diff", "diabetes@champion", "diabetes/2"])
    assert "alpha" in out and "0.5" in out and "2.0" in out
    assert "rmse" in out and "diabetes@1" in out and "diabetes@2" in out
    found = json.loads(_ok(cli, ["models", "diff", "diabetes/1", "diabetes/2", "--json"]))
    assert [c["key"] for c in found["params"]] == ["alpha"]
    assert "No differences" in _ok(cli, ["models", "diff", "diabetes/1", "diabetes@champion"])

    tree = _ok(cli, ["models", "lineage", "diabetes@champion"])
    assert "diabetes/1" in tree and "logged by run ridge-0.5" in tree
    assert "commit c0ffee123456" in tree and "alpha=0.5" in tree
    assert "diabetes@1" in tree and "442 rows" in tree and "(train)" in tree
    assert "aliases: champion" in tree
    graph = json.loads(_ok(cli, ["models", "lineage", "diabetes/2", "--json"]))
    assert graph["root"] == "model:diabetes/2"
    assert {n["kind"] for n in graph["nodes"]} == {"dataset", "run", "model_version"}


def test_mistakes_are_one_red_line(cli: CliRunner, settings: Settings) -> None:
    assert "none is registered yet" in _one_red_line(cli, ["models", "show", "nothing"])
    assert "malformed model URI" in _one_red_line(cli, ["models", "register", "m.pkl", "m"])
    uri = _logged(0.5)
    _ok(cli, ["models", "register", uri, "diabetes"])
    assert "did you mean diabetes" in _one_red_line(cli, ["models", "versions", "diabetis"])
    line = _one_red_line(cli, ["models", "alias", "set", "diabetes", "champion", "7"])
    assert "has no version 7; it has 1" in line
    assert "'latest' is reserved" in _one_red_line(
        cli, ["models", "alias", "set", "diabetes", "latest", "1"]
    )
    assert "no alias 'champion'" in _one_red_line(
        cli, ["models", "diff", "diabetes@champion", "diabetes/1"]
    )
    assert "NAME/VERSION or NAME@ALIAS" in _one_red_line(cli, ["models", "lineage", "diabetes"])
    assert "no tag 'k'" in _one_red_line(cli, ["models", "tag", "diabetes", "k", "--delete"])
    usage = run_main(cli, ["models", "tag", "diabetes", "k"])
    assert usage.exit_code == 2 and "give a VALUE" in usage.output


def test_help_has_examples(cli: CliRunner) -> None:
    from keel.cli import cli as keel_cli

    for args in (["models"], ["models", "alias"], ["models", "alias", "set"], ["models", "diff"]):
        result = cli.invoke(keel_cli, [*args, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, result.output
