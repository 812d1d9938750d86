"""keel runs reproduce: a real git repository, a training script that reads a dataset version
and logs metrics, run once, changed and committed after; reproducing runs the old code into a
new linked run with the same metrics, and leaves the repository as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import keel
import keel.data
from keel.tracking.models import Run
from keel.tracking.source import ARGS_TAG, COMMIT_TAG, REPRODUCED_FROM_TAG, WORKDIR_TAG
from tests.conftest import run_main

pytestmark = pytest.mark.slow  # each reproduction starts Python twice

TRAIN = """\
import sys

import keel
import keel.data

with keel.start_run(name="train") as run:
    frame = keel.data.load("points@1")
    scale = float(sys.argv[1])
    keel.log_param("scale", scale)
    keel.log_metric("total", float(frame["x"].sum()) * scale)
    keel.log_metric("rows", len(frame))
    print(run.run_id)
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def repo(home: Path, tmp_path: Path) -> Path:
    """A git repository with train.py committed, and the dataset points@1 (and a later @2)."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "test@example.com")
    _git(root, "config", "user.name", "Test")
    (root / "src" / "train.py").write_text(TRAIN)
    (root / ".gitignore").write_text(".keel/\n")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "train")
    keel.data.log_dataset(pd.DataFrame({"x": [1.0, 2.0, 3.5]}), "points")
    return root


def _train(repo: Path, home: Path, *args: str) -> str:
    """Run src/train.py as a user would (from the repository's root), return its run id."""
    env = {**os.environ, "KEEL_HOME": str(home), "KEEL_CAPTURE_SOURCE": "true"}
    done = subprocess.run(
        [sys.executable, "src/train.py", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def _runs() -> list[Run]:
    found = keel.search_runs()
    assert isinstance(found, list)
    return found


def _worktrees(repo: Path) -> list[str]:
    return [
        line
        for line in _git(repo, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]


def test_reproduce_runs_the_recorded_commit_into_a_linked_run(
    repo: Path, home: Path, cli: CliRunner
) -> None:
    run_id = _train(repo, home, "2.0")
    original = keel.get_run(run_id)
    assert original.tags[ARGS_TAG] == '["2.0"]'
    assert original.tags[WORKDIR_TAG] == "."
    # after the run: the script changes and a new data version lands
    (repo / "src" / "train.py").write_text(TRAIN.replace("* scale", "* scale * 100"))
    _git(repo, "commit", "-q", "-am", "scale up")
    keel.data.log_dataset(pd.DataFrame({"x": [9.0]}), "points")
    head = _git(repo, "rev-parse", "HEAD").strip()

    result = run_main(cli, ["runs", "reproduce", run_id[:8], "--json"])

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    new = keel.get_run(report["run_id"])
    assert new.run_id != run_id
    assert new.tags[REPRODUCED_FROM_TAG] == run_id
    assert new.tags[COMMIT_TAG] == original.tags[COMMIT_TAG] != head
    assert new.metrics == original.metrics == {"total": 13.0, "rows": 3.0}
    assert new.params == {"scale": "2.0"}
    assert {d["key"]: (d["delta"], d["relative"]) for d in report["deltas"]} == {
        "rows": (0.0, 0.0),
        "total": (0.0, 0.0),
    }
    assert report["plan"]["inputs"] == report["inputs"] == ["points@1 (train)"]
    assert report["plan"]["commit"] == original.tags[COMMIT_TAG]
    assert report["worktree"] is None
    assert len(_worktrees(repo)) == 1  # the temporary worktree is gone
    assert _git(repo, "rev-parse", "HEAD").strip() == head
    assert _git(repo, "status", "--porcelain") == ""


def test_the_table_shows_metric_deltas_and_the_link(repo: Path, home: Path, cli: CliRunner) -> None:
    run_id = _train(repo, home, "1.5")

    result = run_main(cli, ["runs", "reproduce", run_id])

    assert result.exit_code == 0, result.output
    assert f"keel.reproduced_from={run_id}" in result.stdout
    assert "total" in result.stdout and "+0.00%" in result.stdout
    assert "points@1 (train)" in result.stdout


def test_a_dirty_run_is_reproduced_with_its_recorded_diff(
    repo: Path, home: Path, cli: CliRunner
) -> None:
    (repo / "src" / "train.py").write_text(TRAIN.replace("* scale", "* scale + 1"))
    run_id = _train(repo, home, "1.0")  # uncommitted change: recorded as keel/source.diff
    assert keel.get_run(run_id).metrics["total"] == 7.5
    _git(repo, "checkout", "--", "src/train.py")

    result = run_main(cli, ["runs", "reproduce", run_id, "--json"])

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["plan"]["dirty"] and report["plan"]["diff_recorded"]
    assert any("dirty" in w for w in report["plan"]["warnings"])
    assert keel.get_run(report["run_id"]).metrics["total"] == 7.5


def test_dry_run_prints_the_plan_and_writes_nothing(repo: Path, home: Path, cli: CliRunner) -> None:
    run_id = _train(repo, home, "2.0")
    before = {r.run_id for r in _runs()}

    result = run_main(cli, ["runs", "reproduce", run_id, "--dry-run"])

    assert result.exit_code == 0, result.output
    assert "dry run" in result.stdout
    assert "src/train.py 2.0" in result.stdout
    assert {r.run_id for r in _runs()} == before
    assert len(_worktrees(repo)) == 1


def test_keep_worktree_leaves_it_checked_out(repo: Path, home: Path, cli: CliRunner) -> None:
    run_id = _train(repo, home, "2.0")

    result = run_main(cli, ["runs", "reproduce", run_id, "--keep-worktree", "--json"])

    assert result.exit_code == 0, result.output
    worktree = Path(json.loads(result.stdout)["worktree"])
    try:
        assert (worktree / "src" / "train.py").read_text() == TRAIN
        assert len(_worktrees(repo)) == 2
    finally:
        _git(repo, "worktree", "remove", "--force", str(worktree))
        worktree.parent.rmdir()


def test_a_run_without_a_commit_is_refused(home: Path, cli: CliRunner) -> None:
    with keel.start_run() as run:  # the test environment records no source
        keel.log_metric("total", 1.0)

    result = run_main(cli, ["runs", "reproduce", run.run_id])

    assert result.exit_code == 1
    assert "recorded no git commit" in result.output
    assert [r.run_id for r in _runs()] == [run.run_id]


def test_a_missing_commit_is_refused(repo: Path, home: Path, cli: CliRunner) -> None:
    run_id = _train(repo, home, "2.0")
    commit = keel.get_run(run_id).tags[COMMIT_TAG]
    _git(repo, "checkout", "-q", "--orphan", "other")
    _git(repo, "commit", "-q", "-m", "other history")
    _git(repo, "branch", "-D", "main")
    _git(repo, "reflog", "expire", "--expire=now", "--all")
    _git(repo, "gc", "-q", "--prune=now")

    result = run_main(cli, ["runs", "reproduce", run_id])

    assert result.exit_code == 1
    assert f"commit {commit} of run {run_id} is not in" in result.output


def test_edited_tags_that_leave_the_repository_or_do_not_parse_are_refused(
    repo: Path, home: Path, cli: CliRunner
) -> None:
    """The workdir, entry point and args come from tags anyone who may write to the run can
    edit: each is checked, and a bad one is one red line, not a traceback or a run elsewhere."""
    from keel.settings import Settings
    from keel.tracking.api import Client
    from keel.tracking.source import ENTRY_POINT_TAG

    run_id = _train(repo, home, "2.0")
    recorded = keel.get_run(run_id).tags
    client = Client(Settings())
    try:
        for tag, value, said in [
            (WORKDIR_TAG, "../..", "is not a folder inside its repository"),
            (WORKDIR_TAG, "src/../../x", "is not a folder inside its repository"),
            (WORKDIR_TAG, "/etc", "is not a folder inside its repository"),
            (ENTRY_POINT_TAG, "../outside.py", "is outside its repository"),
            (ENTRY_POINT_TAG, "src/../../../outside.py", "is outside its repository"),
            (ENTRY_POINT_TAG, "-m ../outside", "does not name a module"),
            (ARGS_TAG, "[not json", "is not a JSON list of strings"),
            (ARGS_TAG, '{"scale": 2}', "is not a JSON list of strings"),
        ]:
            client.set_tag(run_id, tag, value)
            result = run_main(cli, ["runs", "reproduce", run_id, "--dry-run"])
            assert result.exit_code == 1, (tag, value, result.output)
            assert isinstance(result.exception, SystemExit), (tag, value, result.exception)
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
            assert said in lines[0], (tag, value, lines[0])
            client.set_tag(run_id, tag, recorded[tag])
    finally:
        client.close()


def test_a_workdir_that_resolves_outside_the_worktree_is_refused(
    repo: Path, home: Path, cli: CliRunner
) -> None:
    (repo / "out").symlink_to(repo.parent)  # committed: a link out of the repository
    _git(repo, "add", "out")
    _git(repo, "commit", "-q", "-m", "link")
    run_id = _train(repo, home, "2.0")
    from keel.settings import Settings
    from keel.tracking.api import Client

    client = Client(Settings())
    try:
        client.set_tag(run_id, WORKDIR_TAG, "out")
    finally:
        client.close()

    result = run_main(cli, ["runs", "reproduce", run_id])

    assert result.exit_code == 1, result.output
    assert "working folder 'out' is not a folder inside its repository" in result.output
    assert [r.run_id for r in _runs()] == [run_id]  # nothing ran
    assert len(_worktrees(repo)) == 1  # the temporary worktree is gone
