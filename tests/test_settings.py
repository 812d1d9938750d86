"""Settings: environment parsing, arguments over the environment, sources, and a light import."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from keel.errors import InvalidInput
from keel.settings import SecretStr, Settings
from tests.conftest import run_main


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No KEEL_* variable from the caller, and a working folder without a .keel above it."""
    for name in list(os.environ):
        if name.upper().startswith("KEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_building_settings_imports_no_pydantic(tmp_path: Path) -> None:
    code = (
        "import sys, keel.settings\n"
        "keel.settings.Settings()\n"
        "print(sorted(m for m in sys.modules if m.startswith('pydantic')))"
    )
    env = {**os.environ, "KEEL_HOME": str(tmp_path / ".keel")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_defaults_resolve_inside_the_home(tmp_path: Path) -> None:
    settings = Settings()
    assert settings.home_path == tmp_path.resolve() / ".keel"
    assert settings.db_url == f"sqlite:///{tmp_path.resolve() / '.keel' / 'keel.db'}"
    assert settings.artifacts_url == str(tmp_path.resolve() / ".keel" / "artifacts")
    assert settings.metric_flush_size == 5000 and settings.capture_source is True
    assert settings.tracking_token is None and settings.auth is False
    assert settings.sources() == {
        **{s.name: "default" for s in Settings.fields()},
        "home": "default (./.keel)",
        "database_url": "default (inside home)",
        "artifact_url": "default (inside home)",
    }


def test_home_is_found_walking_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".keel").mkdir()
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    settings = Settings()
    assert settings.home_path == tmp_path.resolve() / ".keel"
    assert settings.sources()["home"] == "found walking up from the current directory"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[(t, True) for t in ("1", "true", "True", "YES", "on", " On ")],
        *[(t, False) for t in ("0", "false", "FALSE", "no", "No", "off")],
    ],
)
def test_bool_from_the_environment(
    text: str, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_AUTH", text)
    settings = Settings()
    assert settings.auth is expected
    assert settings.sources()["auth"] == "environment (KEEL_AUTH)"


def test_each_type_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KEEL_HOME", "~/store")
    monkeypatch.setenv("KEEL_DATABASE_URL", "postgresql://keel@db/keel")
    monkeypatch.setenv("KEEL_TRACKING_TOKEN", "keel_abc_secret")
    monkeypatch.setenv("KEEL_METRIC_FLUSH_SIZE", " 250 ")
    monkeypatch.setenv("KEEL_METRIC_FLUSH_INTERVAL", "0.25")
    monkeypatch.setenv("KEEL_REMOTE_FLUSH_TIMEOUT", "0")  # ge=0 allows zero
    monkeypatch.setenv("KEEL_CAPTURE_SOURCE", "off")
    settings = Settings()
    assert settings.home_path == tmp_path.resolve() / "store"
    assert settings.db_url == "postgresql://keel@db/keel"
    assert settings.artifacts_url == str(tmp_path.resolve() / "store" / "artifacts")
    assert settings.metric_flush_size == 250 and isinstance(settings.metric_flush_size, int)
    assert settings.metric_flush_interval == 0.25
    assert settings.remote_flush_timeout == 0.0
    assert settings.capture_source is False
    assert settings.tracking_token == SecretStr("keel_abc_secret")
    assert settings.tracking_token.get_secret_value() == "keel_abc_secret"


def test_the_token_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_TRACKING_TOKEN", "keel_abc_secret")
    settings = Settings()
    assert "keel_abc_secret" not in repr(settings)
    assert str(settings.tracking_token) == "**********"
    assert repr(settings.tracking_token) == "SecretStr('**********')"
    rows = {row["name"]: row for row in settings.describe()}
    assert "keel_abc_secret" not in json.dumps(rows, default=str)


@pytest.mark.parametrize(
    ("variable", "text", "expected"),
    [
        ("KEEL_AUTH", "maybe", "true/false, 1/0, yes/no or on/off"),
        ("KEEL_AUTH", "", "true/false"),
        ("KEEL_METRIC_FLUSH_SIZE", "many", "an integer"),
        ("KEEL_METRIC_FLUSH_SIZE", "1.5", "an integer"),
        ("KEEL_METRIC_FLUSH_SIZE", "0", "an integer greater than 0"),
        ("KEEL_METRIC_FLUSH_INTERVAL", "soon", "a number"),
        ("KEEL_METRIC_FLUSH_INTERVAL", "-1", "a number greater than 0"),
        ("KEEL_METRIC_FLUSH_INTERVAL", "nan", "a number greater than 0"),
        ("KEEL_REMOTE_FLUSH_TIMEOUT", "-0.5", "a number of at least 0"),
    ],
)
def test_a_bad_variable_names_itself_its_value_and_what_is_expected(
    variable: str, text: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(InvalidInput) as caught:
        Settings()
    message = str(caught.value)
    assert f"{variable}={text!r}" in message and expected in message


def test_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("keel_metric_flush_size", "7")
    monkeypatch.setenv("Keel_Auth", "yes")
    settings = Settings()
    assert settings.metric_flush_size == 7 and settings.auth is True
    assert settings.sources()["metric_flush_size"] == "environment (keel_metric_flush_size)"


def test_arguments_win_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_METRIC_FLUSH_SIZE", "7")
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "from-env"))
    settings = Settings(metric_flush_size=9, home=tmp_path / "from-arg")
    assert settings.metric_flush_size == 9
    assert settings.home_path == tmp_path.resolve() / "from-arg"
    assert settings.sources()["metric_flush_size"] == "argument"
    assert settings.sources()["home"] == "argument"


def test_arguments_are_converted_and_checked_like_variables(tmp_path: Path) -> None:
    settings = Settings(
        home=str(tmp_path / "k"),  # type: ignore[arg-type]
        tracking_token="keel_tok",  # type: ignore[arg-type]
        metric_flush_interval=2,
        auth="yes",  # type: ignore[arg-type]
    )
    assert settings.home_path == tmp_path.resolve() / "k"
    assert isinstance(settings.tracking_token, SecretStr)
    assert settings.metric_flush_interval == 2.0
    assert isinstance(settings.metric_flush_interval, float)
    assert settings.auth is True
    with pytest.raises(InvalidInput, match="metric_flush_size=0: expected an integer greater"):
        Settings(metric_flush_size=0)
    with pytest.raises(InvalidInput, match="metric_flush_size=True: expected an integer"):
        Settings(metric_flush_size=True)
    with pytest.raises(InvalidInput, match="capture_source=None: expected true/false"):
        Settings(capture_source=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"tracking_token=\(hidden\)"):
        Settings(tracking_token=12345)  # type: ignore[arg-type]


def test_unknown_and_empty_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_NO_SUCH_SETTING", "whatever")
    monkeypatch.setenv("KEEL_TRACKING_URI", "")
    monkeypatch.setenv("KEEL_DATABASE_URL", "")
    settings = Settings()
    assert settings.tracking_uri is None
    assert settings.db_url.startswith("sqlite:///")
    assert settings.sources()["database_url"] == "default (inside home)"


def test_replace_checks_changes_and_follows_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "a", metric_flush_size=10)
    server = settings.replace(auth=True)
    assert server.auth is True and settings.auth is False
    assert server.metric_flush_size == 10 and server.db_url == settings.db_url
    assert server.sources()["auth"] == "argument"
    assert server.sources()["database_url"] == "default (inside home)"
    moved = settings.replace(home=tmp_path / "b")
    assert moved.db_url == f"sqlite:///{tmp_path.resolve() / 'b' / 'keel.db'}"
    assert moved.artifacts_url == str(tmp_path.resolve() / "b" / "artifacts")
    with pytest.raises(InvalidInput, match="greater than 0"):
        settings.replace(heartbeat_interval=0)
    with pytest.raises(InvalidInput, match="unknown setting"):
        settings.replace(colour="blue")


def test_settings_are_frozen_comparable_and_picklable(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "k", tracking_token=SecretStr("t"))
    with pytest.raises(AttributeError):
        settings.auth = True  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(settings)) == settings
    assert Settings(home=tmp_path / "k", tracking_token=SecretStr("t")) == settings
    assert settings.replace(auth=True) != settings


def test_fields_list_every_setting_once_with_its_default() -> None:
    fields = Settings.fields()
    assert [f.env for f in fields] == [f"KEEL_{f.name.upper()}" for f in fields]
    assert len({f.name for f in fields}) == len(fields) == 15
    defaults = {f.name: f.default for f in fields}
    assert defaults["metric_flush_size"] == 5000 and defaults["auth"] is False


def test_keel_config_prints_every_setting_with_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / ".keel"))
    monkeypatch.setenv("KEEL_TRACKING_TOKEN", "keel_abc_secret")
    runner = CliRunner()
    rows = json.loads(run_main(runner, ["config", "--json"]).output)
    assert [row["name"] for row in rows] == [f.name for f in Settings.fields()]
    by_name = {row["name"]: row for row in rows}
    assert by_name["home"]["source"] == "environment (KEEL_HOME)"
    assert by_name["tracking_token"]["value"] == "**********"
    assert by_name["metric_flush_size"] == {
        "name": "metric_flush_size",
        "env": "KEEL_METRIC_FLUSH_SIZE",
        "value": 5000,
        "source": "default",
        "description": next(
            f for f in Settings.fields() if f.name == "metric_flush_size"
        ).description,
    }
    table = run_main(runner, ["config"]).output
    assert "keel_abc_secret" not in table
    for field in Settings.fields():
        line = next(line for line in table.splitlines() if line.split()[:1] == [field.name])
        assert field.env in line and line.split()[2].startswith(("default", "env")), line


def test_a_bad_variable_is_one_line_from_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "KEEL_HOME": str(tmp_path / ".keel"), "KEEL_METRIC_FLUSH_SIZE": "lots"}
    done = subprocess.run(
        [sys.executable, "-m", "keel", "config"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "Error: invalid setting KEEL_METRIC_FLUSH_SIZE='lots': expected an integer greater than 0"
    )
