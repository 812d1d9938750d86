"""``keel data diff``: working pointers, pointers committed in git revisions, and the errors a
user meets (not a git repository, unknown revision, no pointer there, manifest not local)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import keel.data
from keel.data.diff import diff, resolve_version
from keel.data.versions import log_dataset
from keel.errors import InvalidInput, NotFound
from tests.conftest import run_main


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    completed = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return completed.stdout


@pytest.fixture
def repo(home: Path, tmp_path: Path) -> Path:
    """A git repository in tmp_path (the current folder) with two commits of images/:
    v1 = {cat 4 B, dog 4 B, old 3 B}, v2 = {cat 4 B, dog 9 B, new 5 B}; the working copy is
    v2 plus an extra file added but not committed (v3)."""
    _git(tmp_path, "init", "-q", "-b", "main")
    _write(tmp_path / "images" / "cat.txt", "meow")
    _write(tmp_path / "images" / "sub" / "dog.txt", "woof")
    _write(tmp_path / "images" / "old.txt", "old")
    _write(tmp_path / "labels.csv", "a,b\n")
    keel.data.add(["images", "labels.csv"])
    _git(tmp_path, "add", "images.keel", "labels.csv.keel", ".gitignore")
    _git(tmp_path, "commit", "-q", "-m", "v1")
    _git(tmp_path, "tag", "v1")
    _write(tmp_path / "images" / "sub" / "dog.txt", "woof woof")
    (tmp_path / "images" / "old.txt").unlink()
    _write(tmp_path / "images" / "new.txt", "fresh")
    _write(tmp_path / "labels.csv", "a,b\n1,2\n")
    keel.data.add(["images", "labels.csv"])
    _git(tmp_path, "commit", "-q", "-am", "v2")
    _write(tmp_path / "images" / "extra.txt", "xx")
    keel.data.add(["images"])
    return tmp_path


def test_git_revisions_and_working_pointer(repo: Path) -> None:
    result = diff("v1:images", "HEAD:images")
    assert [c.path for c in result.added] == ["new.txt"]
    assert [(c.path, c.size_a) for c in result.deleted] == [("old.txt", 3)]
    assert [(c.path, c.size_a, c.size_b) for c in result.modified] == [("sub/dog.txt", 4, 9)]
    assert result.bytes_changed == 5 + 3 + 9
    assert result.a.commit == _git(repo, "rev-parse", "v1").strip()
    assert (result.a.files, result.b.files) == (3, 3)

    # HEAD~1 is v1, and the working pointer has extra.txt on top of HEAD
    assert diff("HEAD~1:images", "images").summary()["added"] == 2
    working = diff("images")  # HEAD vs the working pointer
    assert [c.path for c in working.added] == ["extra.txt"]
    assert not working.deleted and not working.modified
    assert diff("images.keel", "images").identical

    labels = diff("v1:labels.csv")  # a file: one entry, named by the data path
    assert [(c.path, c.size_a, c.size_b) for c in labels.modified] == [("labels.csv", 4, 8)]


def test_paths_resolve_from_a_subfolder(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo / "images")
    assert resolve_version("v1:../images.keel").digest == resolve_version("v1:../images").digest
    assert diff("v1:../images", "../images").summary()["modified"] == 1


def test_cli_text_and_json(repo: Path, cli: CliRunner) -> None:
    result = run_main(cli, ["data", "diff", "v1:images", "images"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("v1:images (") and "-> images (4 files, 20 B)" in lines[0]
    assert "  added:    extra.txt (2 B)" in lines
    assert "  added:    new.txt (5 B)" in lines
    assert "  deleted:  old.txt (3 B)" in lines
    assert "  modified: sub/dog.txt (4 B -> 9 B)" in lines
    assert lines[-1] == "2 added, 1 deleted, 1 modified; 19 B changed (total +9 B)"

    document = json.loads(run_main(cli, ["data", "diff", "v1:images", "--json"]).output)
    assert document["summary"] == {
        "added": 2,
        "deleted": 1,
        "modified": 1,
        "bytes_changed": 19,
        "size_a": 11,
        "size_b": 20,
    }
    assert document["a"]["source"] == "git" and document["b"]["source"] == "pointer"
    assert document["modified"] == [{"path": "sub/dog.txt", "size_a": 4, "size_b": 9}]
    assert document["profile"] is None

    same = run_main(cli, ["data", "diff", "HEAD:labels.csv", "labels.csv"])
    assert same.exit_code == 0 and "No differences" in same.output


def test_errors(repo: Path, cli: CliRunner, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="unknown git revision 'nope'"):
        diff("nope:images", "images")
    with pytest.raises(NotFound, match=r"there is no pointer missing\.keel in v1"):
        diff("v1:missing", "images")
    with pytest.raises(NotFound, match=r"there is no ghost\.keel here"):
        diff("ghost", "images")
    with pytest.raises(InvalidInput, match="expected REV:PATH"):
        diff(":images", "images")
    with pytest.raises(InvalidInput, match="diabetes@1"):
        diff("diabetes@2")  # one dataset version: nothing to compare it with

    (repo / "broken.keel").write_text("hash: [")
    with pytest.raises(InvalidInput, match=r"broken\.keel is not a valid Keel pointer"):
        diff("broken", "images")

    # a manifest that is not in the local store: pull it first
    shutil.rmtree(repo / ".keel" / "artifacts")
    result = run_main(cli, ["data", "diff", "v1:images", "images"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "is not in the local store" in result.output and "keel data pull" in result.output


def test_not_a_git_repository(
    home: Path, tmp_path: Path, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.chdir(outside)
    _write(outside / "a.txt", "a")
    keel.data.add(["a.txt"])
    with pytest.raises(InvalidInput, match="is not in a git repository"):
        diff("a.txt")
    result = run_main(cli, ["data", "diff", "HEAD:a.txt", "a.txt"])
    assert result.exit_code == 1 and "not in a git repository" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_pointer_against_pointer_of_another_path(home: Path, tmp_path: Path) -> None:
    _write(tmp_path / "a" / "x.txt", "same")
    _write(tmp_path / "a" / "y.txt", "1")
    _write(tmp_path / "b" / "x.txt", "same")
    _write(tmp_path / "b" / "z.txt", "22")
    _write(tmp_path / "one.bin", "1")
    keel.data.add(["a", "b", "one.bin"])
    result = diff("a", "b.keel")
    assert [c.path for c in result.added] == ["z.txt"]
    assert [c.path for c in result.deleted] == ["y.txt"]
    assert not result.modified

    mixed = diff("one.bin", "a")  # a file and a folder: nothing in common
    assert [c.path for c in mixed.deleted] == ["one.bin"]
    assert [c.path for c in mixed.added] == ["x.txt", "y.txt"]


def test_dataset_versions_of_tables(home: Path, tmp_path: Path, cli: CliRunner) -> None:
    rows_a = ["age,sex,score"] + [f"{20 + i % 30},{'mf'[i % 2]},{i}" for i in range(400)]
    rows_b = ["age,sex,city"] + [f"{50 + i % 30},{'mf'[i % 2]},x" for i in range(500)]
    _write(tmp_path / "a.csv", "\n".join(rows_a) + "\n")
    _write(tmp_path / "b.csv", "\n".join(rows_b) + "\n")
    log_dataset(tmp_path / "a.csv", name="people")
    log_dataset(tmp_path / "b.csv", name="people")

    result = diff("people@1", "people@2")
    assert [(c.path, c.size_a, c.size_b) for c in result.modified] == [
        ("people", (tmp_path / "a.csv").stat().st_size, (tmp_path / "b.csv").stat().st_size)
    ]
    assert result.profile is not None and result.profile.schema_changed
    changes = {c.name: c.change for c in result.profile.columns}
    assert changes == {"age": "shifted", "sex": "unchanged", "score": "removed", "city": "added"}
    assert (result.profile.rows_a, result.profile.rows_b) == (400, 500)

    text = run_main(cli, ["data", "diff", "people@1", "people@2"])
    assert text.exit_code == 0, text.output
    assert "Schema changed; 400 -> 500 rows" in text.output
    age = next(line for line in text.output.splitlines() if "│ age" in line)
    assert "shifted" in age and "psi" in age
    document = json.loads(run_main(cli, ["data", "diff", "people@1", "people@2", "--json"]).output)
    assert document["a"]["source"] == "dataset" and document["b"]["spec"] == "people@2"
    assert {c["name"] for c in document["profile"]["columns"]} == {"age", "sex", "score", "city"}

    with pytest.raises(NotFound):
        diff("people@1", "people@9")
