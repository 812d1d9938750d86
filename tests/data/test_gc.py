"""``keel data gc``: every keep rule keeps what it must and gc frees exactly the rest (bytes
reported = bytes gone); the grace period; --dry-run; refusing on what it cannot understand.

Real stores, real git repositories, real runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import keel.data
from keel.artifacts import ArtifactStore
from keel.data.maintenance import Reference, collect_garbage, fsck
from keel.data.versions import get_version, log_dataset, materialize
from keel.errors import Conflict, InvalidInput, NotFound
from keel.gc import gc, parse_duration
from keel.settings import Settings
from keel.tracking.api import Client
from keel.tracking.models import ArtifactEntry
from tests.conftest import run_main

HOUR = 3600


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
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    ).stdout


def _objects(settings: Settings) -> dict[str, int]:
    """digest -> size of every object, read from the store's folder (not through gc)."""
    root = Path(settings.artifacts_url) / "objects"
    if not root.exists():
        return {}
    return {
        p.parent.name + p.name: p.stat().st_size
        for p in root.glob("*/*")
        if len(p.parent.name + p.name) == 64
    }


def _age(settings: Settings, digests: object = None, *, seconds: float = 2 * HOUR) -> None:
    """Make objects look ``seconds`` old (all of them, or ``digests``)."""
    store = ArtifactStore(settings.artifacts_url)
    past = time.time() - seconds
    for digest in list(digests or _objects(settings)):  # type: ignore[call-overload]
        path = store.path_of(digest)
        assert path is not None
        os.utime(path, (past, past))


def _digest(settings: Settings, content: str) -> str:
    return ArtifactStore(settings.artifacts_url, fsync=False).put_bytes(content.encode()).digest


class World:
    """A repository, its data, a run with artifacts, and which objects each rule keeps."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root
        self.settings = settings
        store = ArtifactStore(settings.artifacts_url)
        _git(root, "init", "-q", "-b", "main")
        # history only: a.txt as first committed, then changed and committed again
        _write(root / "a.txt", "version one")
        _write(root / "images" / "cat.txt", "meow")
        _write(root / "images" / "sub" / "dog.txt", "woof")
        keel.data.add(["a.txt", "images"])
        self.history_only = {_digest(settings, "version one")}
        _git(root, "add", "a.txt.keel", "images.keel", ".gitignore")
        _git(root, "commit", "-q", "-m", "v1")
        _write(root / "a.txt", "version two")
        keel.data.add(["a.txt"])
        _git(root, "commit", "-q", "-am", "v2")
        images = keel.data.status(["images"])[0]
        assert images.up_to_date
        manifest = (root / "images.keel").read_text().split("hash: ")[1].split()[0]
        self.working = {
            _digest(settings, "version two"),
            manifest,
            _digest(settings, "meow"),
            _digest(settings, "woof"),
        }
        # on a branch only, not checked out
        _git(root, "checkout", "-q", "-b", "side")
        _write(root / "a.txt", "on a side branch")
        _write(root / "deep" / "er" / "x.csv", "in a subfolder, on a side branch")
        keel.data.add(["a.txt", "deep/er/x.csv"])
        _git(root, "add", "deep")
        _git(root, "commit", "-q", "-am", "side")
        _git(root, "checkout", "-q", "main")
        keel.data.checkout(["a.txt"])
        self.history_only.add(_digest(settings, "on a side branch"))
        self.history_only.add(_digest(settings, "in a subfolder, on a side branch"))
        assert not (root / "deep" / "er" / "x.csv.keel").exists()
        # runs: a file, a folder's files, and a folder recorded as its manifest (kind 'dir')
        client = Client(settings)
        try:
            experiment = client.get_or_create_experiment("gc").experiment_id
            run = client.create_run(experiment).run_id
            _write(root / "out" / "model.bin", "weights")
            client.log_artifact(run, root / "out" / "model.bin")
            _write(root / "report" / "r.txt", "report")
            client.log_artifacts(run, root / "report", artifact_path="report")
            _write(root / "listing" / "x.txt", "listed only by a manifest")
            listing = store.put_dir(root / "listing")
            client.store.record_artifacts(
                run, [ArtifactEntry(path="listing", digest=listing.digest, size=25, kind="dir")]
            )
            client.end_run(run)
            self.run_id = run
        finally:
            client.close()
        self.runs = {
            _digest(settings, "weights"),
            _digest(settings, "report"),
            listing.digest,
            _digest(settings, "listed only by a manifest"),
        }
        # a dataset version of a folder, which no pointer names
        _write(root / "ds" / "part-0.csv", "a,b\n1,2\n")
        version = log_dataset(root / "ds", name="parts")
        self.datasets = {version.digest, _digest(settings, "a,b\n1,2\n")}
        # garbage: a pointer deleted, and the manifest put_dir made for the report folder
        _write(root / "b.txt", "orphan")
        keel.data.add(["b.txt"])
        (root / "b.txt.keel").unlink()
        everything = set(_objects(settings))
        self.garbage = everything - self.working - self.history_only - self.runs - self.datasets
        assert _digest(settings, "orphan") in self.garbage
        assert len(self.garbage) == 2  # the orphan, and log_artifacts' unreferenced manifest
        _age(settings)


@pytest.fixture
def world(settings: Settings, tmp_path: Path) -> World:
    return World(tmp_path, settings)


def test_each_rule_keeps_what_it_must_and_gc_frees_exactly_the_rest(world: World) -> None:
    settings = world.settings
    before = _objects(settings)

    dry = gc(dry_run=True, all_commits=True, settings=settings)
    assert _objects(settings) == before  # nothing deleted
    assert dry.deleted == len(world.garbage)
    assert dry.bytes_freed == sum(before[d] for d in world.garbage)

    report = gc(all_commits=True, settings=settings)
    after = _objects(settings)
    assert set(after) == set(before) - world.garbage
    assert report.deleted == len(world.garbage)
    assert report.bytes_freed == sum(before.values()) - sum(after.values())
    assert report.references == {
        "working tree pointers": 2,
        "git history pointers": 5,  # a.txt x3 contents, images, deep/er/x.csv
        "runs": 3,  # model.bin, report/r.txt, and listing (a dir)
        "dataset versions": 1,
    }
    assert report.missing == 0

    # without --all-commits, what only history names goes too
    report = gc(settings=settings)
    assert set(_objects(settings)) == world.working | world.runs | world.datasets
    assert report.bytes_freed == sum(before[d] for d in world.history_only)

    # what is kept still works
    (world.root / "images" / "sub" / "dog.txt").unlink()
    keel.data.checkout(["images"])
    assert (world.root / "images" / "sub" / "dog.txt").read_text() == "woof"
    client = Client(settings)
    try:
        assert client.read_artifact(world.run_id, "report/r.txt") == b"report"
        assert client.read_artifact(world.run_id, "listing/x.txt") == b"listed only by a manifest"
    finally:
        client.close()
    assert materialize(get_version("parts@1", settings=settings), settings=settings).is_dir()
    assert gc(settings=settings).deleted == 0


def test_grace_period(world: World) -> None:
    settings = world.settings
    young = _digest(settings, "written a moment ago")  # its pointer is not written yet
    report = gc(settings=settings, all_commits=True)
    assert young in _objects(settings)
    assert (report.young, report.deleted) == (1, len(world.garbage))
    assert gc(settings=settings, all_commits=True, grace=10).young == 1
    _age(settings, [young], seconds=20)
    report = gc(settings=settings, all_commits=True, grace=10)
    assert (report.young, report.deleted) == (0, 1) and young not in _objects(settings)

    assert parse_duration("1h") == HOUR and parse_duration("30m") == 1800
    assert parse_duration("7d") == 7 * 24 * HOUR and parse_duration("45") == 45
    for bad in ("soon", "-1h", "1y", ""):
        with pytest.raises(InvalidInput):
            parse_duration(bad)


def test_refuses_what_it_cannot_understand(world: World) -> None:
    settings = world.settings
    before = _objects(settings)

    (world.root / "broken.keel").write_text("keel_pointer: 1\nkind: folder\n")
    with pytest.raises(InvalidInput, match=r"nothing was deleted: broken\.keel is not a valid"):
        gc(settings=settings)
    (world.root / "broken.keel").unlink()

    # a folder pointer whose manifest is gone: gc cannot know which files it keeps
    manifest = next(d for d in world.working if d not in world.runs and before[d] > 100)
    path = ArtifactStore(settings.artifacts_url).path_of(manifest)
    assert path is not None
    content = Path(path).read_bytes()
    os.chmod(path, 0o644)
    os.unlink(path)
    with pytest.raises(NotFound, match=r"nothing was deleted: images\.keel names the folder"):
        gc(settings=settings)
    assert set(_objects(settings)) == set(before) - {manifest}

    # a committed pointer that does not parse stops --all-commits, not the working-tree gc
    ArtifactStore(settings.artifacts_url).put_bytes(content)
    _write(world.root / "bad.keel", "not: a pointer")
    _git(world.root, "add", "bad.keel")
    _git(world.root, "commit", "-q", "-m", "bad")
    (world.root / "bad.keel").unlink()
    with pytest.raises(InvalidInput, match=r"bad\.keel in commit [0-9a-f]{12}.*without --all"):
        gc(settings=settings, all_commits=True)
    assert len(_objects(settings)) == len(before)
    assert gc(settings=settings).deleted > 0


def test_runs_on_a_server_and_no_git(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidInput, match="not in a git repository"):
        gc(all_commits=True)
    monkeypatch.setenv("KEEL_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(Conflict, match="cannot know which objects runs use"):
        gc()


def test_a_store_without_a_database_or_git(home: Path, tmp_path: Path) -> None:
    _write(tmp_path / "kept.txt", "kept")
    keel.data.add(["kept.txt"])
    orphan = _digest(Settings(), "gone")
    _age(Settings())
    report = gc()
    assert (report.deleted, report.bytes_freed, report.referenced) == (1, 4, 1)
    assert set(_objects(Settings())) == {_digest(Settings(), "kept")} - {orphan}
    assert not (home / "keel.db").exists()  # gc created no database


def test_cli(world: World, cli: CliRunner) -> None:
    result = run_main(cli, ["data", "gc", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Would delete 5 objects, ") and lines[0].endswith("(dry run).")
    assert "working tree pointers 2, runs 3, dataset versions 1" in lines[2]

    result = run_main(cli, ["data", "gc", "--all-commits", "--json"])
    document = json.loads(result.output)
    assert document["deleted"] == 2 and document["dry_run"] is False

    result = run_main(cli, ["data", "gc", "--grace", "soon"])
    assert result.exit_code == 1 and result.output.startswith("Error: not a duration: 'soon'")
    assert "Traceback" not in result.output


def test_a_store_that_does_not_report_ages(home: Path) -> None:
    store = ArtifactStore(f"memory://gc-{os.getpid()}-{time.time_ns()}")
    kept = store.put_bytes(b"kept")
    store.put_bytes(b"unreferenced")
    sources = {"pointers": lambda: [Reference(kept.digest, False, "a pointer")]}
    with pytest.raises(InvalidInput, match="run gc with --grace 0"):
        collect_garbage(store, sources, grace=HOUR)
    report = collect_garbage(store, sources, grace=0)
    assert (report.deleted, report.bytes_freed) == (1, len(b"unreferenced"))
    assert [blob.digest for blob in store.iter_objects()] == [kept.digest]


def test_gc_while_an_add_runs_keeps_what_the_add_writes(home: Path, tmp_path: Path) -> None:
    for i in range(1500):
        _write(tmp_path / "big" / f"{i % 30}" / f"{i}.txt", f"file {i} " * 50)
    add = subprocess.Popen(
        [sys.executable, "-m", "keel", "data", "add", "big"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    runs = 0
    while add.poll() is None or runs == 0:
        gc()  # the default grace period: objects the add wrote are minutes old at most
        runs += 1
    assert add.wait() == 0, add.stdout.read() if add.stdout else ""
    gc()
    [status] = keel.data.status(["big"])
    assert status.up_to_date
    report = fsck(ArtifactStore(Settings().artifacts_url), tmp_path)
    assert report.ok, report.problems[:3]
    assert report.objects == 1501  # every file and the manifest
