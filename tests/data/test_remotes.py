"""Remote configuration: ``.keel/config.yaml`` and ``config.local.yaml``, their round trip,
relative folders, the default remote, the ``.gitignore`` that makes the config committable, the
``keel remote`` commands and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from keel.data.remotes import (
    add_remote,
    get_remote,
    list_remotes,
    open_store,
    remove_remote,
    set_default_remote,
)
from keel.errors import AlreadyExists, InvalidInput, MissingExtra, NotFound
from keel.settings import Settings
from tests.conftest import run_main


def test_round_trip_and_relative_folders(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings()
    first = add_remote("nas", "../shared/keel", settings=settings)
    assert first.default  # the first remote becomes the default
    assert first.url == "../shared/keel"
    assert first.resolved_url == str(tmp_path.parent / "shared" / "keel")
    add_remote("origin", "memory://bucket/keel", default=True, settings=settings)
    add_remote("abs", str(tmp_path / "elsewhere"), settings=settings)
    add_remote("uri", f"file://{tmp_path / 'uri'}", settings=settings)

    remotes = {r.name: r for r in list_remotes(settings=settings)}
    assert list(remotes) == ["abs", "nas", "origin", "uri"]
    assert [r.name for r in remotes.values() if r.default] == ["origin"]
    assert remotes["uri"].resolved_url == str(tmp_path / "uri")
    assert remotes["origin"].resolved_url == "memory://bucket/keel"

    document = yaml.safe_load((home / "config.yaml").read_text())
    assert document["remotes"]["nas"] == {"url": "../shared/keel"}  # stored as written
    assert document["default_remote"] == "origin"

    # Resolved against the project folder (the one holding .keel), not the current folder.
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert get_remote("nas").resolved_url == first.resolved_url
    monkeypatch.chdir(tmp_path)

    assert get_remote(settings=settings).name == "origin"
    assert remove_remote("origin", settings=settings).url == "memory://bucket/keel"
    assert "default_remote" not in yaml.safe_load((home / "config.yaml").read_text())
    with pytest.raises(NotFound, match=r"several remotes .* none is the default"):
        get_remote(settings=settings)
    assert set_default_remote("abs", settings=settings).default
    assert get_remote(settings=settings).name == "abs"


def test_other_keys_in_config_are_kept(home: Path) -> None:
    home.mkdir()
    (home / "config.yaml").write_text("something_else:\n  keep: me\n")
    add_remote("origin", "memory://x")
    document = yaml.safe_load((home / "config.yaml").read_text())
    assert document["something_else"] == {"keep": "me"}
    assert document["remotes"] == {"origin": {"url": "memory://x"}}


def test_local_config_overrides_the_project(home: Path, tmp_path: Path) -> None:
    add_remote("origin", "memory://team", default=True)
    add_remote("mine", "../private", local=True)
    add_remote("origin", "memory://mirror", local=True)  # same name, other file: overrides
    remotes = {r.name: r for r in list_remotes()}
    assert remotes["origin"].url == "memory://mirror" and remotes["origin"].scope == "local"
    assert remotes["mine"].scope == "local"
    assert "mine" not in (home / "config.yaml").read_text()
    assert "mirror" not in (home / "config.yaml").read_text()
    assert "mirror" in (home / "config.local.yaml").read_text()

    set_default_remote("mine", local=True)
    assert get_remote().name == "mine"
    with pytest.raises(InvalidInput, match=r"config.local.yaml makes 'mine' the default"):
        set_default_remote("origin")
    # Removing the local override shows the project's remote again.
    remove_remote("origin")
    assert get_remote("origin").url == "memory://team"


def test_gitignore_keeps_only_the_config_for_git(home: Path, tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    home.mkdir()
    (home / "keel.db").write_text("x")
    (home / "artifacts" / "objects").mkdir(parents=True)
    (home / "artifacts" / "objects" / "ab").write_text("x")
    add_remote("origin", "../remote")
    add_remote("secret", "memory://secret", local=True)
    add_remote("other", "memory://other")  # the .gitignore is not written twice
    assert (home / ".gitignore").read_text().count("!/config.yaml") == 1
    listed = subprocess.run(
        ["git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert sorted(line[3:] for line in listed.splitlines()) == [
        ".keel/.gitignore",
        ".keel/config.yaml",
    ]


def test_errors(home: Path, tmp_path: Path) -> None:
    add_remote("origin", "memory://x")
    with pytest.raises(AlreadyExists, match=r"already in config\.yaml"):
        add_remote("origin", "memory://y")
    with pytest.raises(InvalidInput, match="not a valid remote name"):
        add_remote("no spaces", "memory://y")
    with pytest.raises(InvalidInput, match="unknown protocol 'nope'"):
        add_remote("bad", "nope://bucket")
    with pytest.raises(InvalidInput, match="is the local store itself"):
        add_remote("self", str(home / "artifacts"))
    with pytest.raises(InvalidInput, match="URL is empty"):
        add_remote("empty", "  ")
    with pytest.raises(NotFound, match="no remote named 'nah' \\(configured: origin\\)"):
        get_remote("nah")
    with pytest.raises(NotFound, match="no remote named"):
        remove_remote("nah")
    assert [r.name for r in list_remotes()] == ["origin"]  # nothing half-written

    (home / "config.yaml").write_text("remotes: [1, 2\n")
    with pytest.raises(InvalidInput, match=r"config.yaml is not valid YAML \(line"):
        list_remotes()
    (home / "config.yaml").write_text("remotes:\n  origin: memory://x\n")
    with pytest.raises(InvalidInput, match="must map each name to"):
        list_remotes()


def test_no_remote_configured(home: Path) -> None:
    assert list_remotes() == []
    with pytest.raises(NotFound, match="no remote is configured; add one with"):
        get_remote()


def test_missing_fsspec_package_names_the_pip_install(home: Path) -> None:
    try:
        import s3fs  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - depends on the environment
        pytest.skip("s3fs is installed here")
    with pytest.raises(MissingExtra, match=r"pip install 'keel\[s3\]'"):
        add_remote("s3", "s3://bucket/keel")


def test_open_store_of_a_missing_folder(home: Path, tmp_path: Path) -> None:
    remote = add_remote("origin", "../nowhere")
    with pytest.raises(NotFound, match=r"does not exist: .*nowhere; push to it first"):
        open_store(remote, must_exist=True)
    assert open_store(remote).url == remote.resolved_url


def test_concurrent_adds_all_land(home: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from keel.data.remotes import add_remote\n"
        "add_remote(sys.argv[1], 'memory://' + sys.argv[1])"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, f"r{i}"], cwd=tmp_path) for i in range(6)
    ]
    assert [p.wait(timeout=60) for p in processes] == [0] * 6
    assert sorted(r.name for r in list_remotes()) == [f"r{i}" for i in range(6)]


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_remote_commands(cli: CliRunner, home: Path, tmp_path: Path) -> None:
    result = run_main(cli, ["remote", "add", "nas", "../keel-remote"])
    assert result.exit_code == 0, result.output
    assert f"Added remote nas (default): {tmp_path.parent / 'keel-remote'}" in result.output
    assert "git add .keel/config.yaml .keel/.gitignore" in result.output
    result = run_main(cli, ["remote", "add", "origin", "memory://b", "--default"])
    assert result.exit_code == 0 and "Added remote origin (default)" in result.output
    result = run_main(cli, ["remote", "add", "mine", "memory://m", "--local"])
    assert result.exit_code == 0 and "config.local.yaml" in result.output

    result = run_main(cli, ["remote", "list"])
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "  mine  memory://m  (local)",
        f"  nas  ../keel-remote -> {tmp_path.parent / 'keel-remote'}",
        "* origin  memory://b",
    ]
    rows = json.loads(run_main(cli, ["remote", "list", "--json"]).output)
    assert [(r["name"], r["default"], r["scope"]) for r in rows] == [
        ("mine", False, "local"),
        ("nas", False, "project"),
        ("origin", True, "project"),
    ]

    result = run_main(cli, ["remote", "default", "nas"])
    assert result.exit_code == 0 and result.output.startswith("Default remote: nas")
    result = run_main(cli, ["remote", "remove", "mine"])
    assert result.exit_code == 0 and "Removed remote mine" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["remote", "add", "origin", "memory://again"], "already in config.yaml"),
        (["remote", "add", "x", "nope://b"], "unknown protocol 'nope'"),
        (["remote", "remove", "nah"], "no remote named 'nah'"),
        (["remote", "default", "nah"], "no remote named 'nah'"),
    ],
)
def test_cli_errors_are_one_red_line(
    cli: CliRunner, home: Path, args: list[str], message: str
) -> None:
    assert run_main(cli, ["remote", "add", "origin", "memory://b"]).exit_code == 0
    result = run_main(cli, args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


def test_cli_list_with_no_remotes(cli: CliRunner, home: Path) -> None:
    result = run_main(cli, ["remote", "list"])
    assert result.exit_code == 0 and "No remotes" in result.output
    assert json.loads(run_main(cli, ["remote", "list", "--json"]).output) == []
