"""Package-wide promises: exports, light imports, documented settings and commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

import keel
from keel.cli import LAZY_COMMANDS, cli
from keel.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["pandas", "pyarrow", "scipy", "sklearn", "matplotlib", "numpy", "fastapi"]


def test_all_is_sorted_and_complete() -> None:
    assert keel.__all__ == sorted(keel.__all__, key=lambda n: (not n[0].isupper(), n))
    for name in keel.__all__:
        assert getattr(keel, name) is not None, name
    from keel.tracking import fluent

    fluent_public = {n for n in fluent.__all__ if n not in ("get_client", "set_client")}
    assert fluent_public <= set(keel.__all__)


@pytest.mark.parametrize(
    "package", ["keel.tracking", "keel.artifacts", "keel.db", "keel.auth", "keel.data"]
)
def test_subpackages_have_a_docstring_and_all(package: str) -> None:
    module = __import__(package, fromlist=["__all__"])
    assert module.__doc__ and isinstance(module.__all__, list)


def _modules_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(list(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_import_keel_is_light() -> None:
    loaded = _modules_after("import keel")
    assert not [m for m in [*HEAVY, "sqlalchemy", "pydantic"] if m in loaded]


def test_tracking_api_does_not_load_data_libraries() -> None:
    loaded = _modules_after("import keel\nkeel.log_metric\nkeel.Client")
    assert not [m for m in HEAVY if m in loaded]


def test_cli_help_is_light() -> None:
    loaded = _modules_after(
        "from keel.cli import cli\ntry:\n    cli.main(['--help'], standalone_mode=False)\n"
        "except SystemExit:\n    pass"
    )
    assert not [m for m in [*HEAVY, "sqlalchemy", "keel.tracking"] if m in loaded]


def _commands(group: click.Group, ctx: click.Context, prefix: str = ""):  # type: ignore[no-untyped-def]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, ctx, f"{prefix}{name} ")


def test_every_command_has_help_with_an_example() -> None:
    ctx = click.Context(cli)
    names = []
    for name, command in _commands(cli, ctx):
        names.append(name)
        assert command.help, f"keel {name} has no help"
        assert "Example" in command.help, f"keel {name} help shows no example"
    assert set(LAZY_COMMANDS) <= set(names)


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for setting in Settings.fields():
        assert setting.description, f"setting {setting.name} has no description"
        assert f"`{setting.env}`" in doc, f"{setting.env} missing from the docs"
