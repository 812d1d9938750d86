"""``keel data fsck``: a corrupted object (a byte flipped in the store) is found, quarantined
and reported with a non-zero exit; so are objects pointers need that are missing, pointers and
folder listings that do not parse, and objects quarantined earlier."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import keel.data
from keel.artifacts import ArtifactStore
from keel.data.maintenance import fsck
from keel.data.models import Pointer, dump_pointer
from keel.settings import Settings
from tests.conftest import run_main


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _store() -> ArtifactStore:
    return ArtifactStore(Settings().artifacts_url)


def _flip_a_byte(store: ArtifactStore, digest: str) -> None:
    path = store.path_of(digest)
    assert path is not None
    os.chmod(path, 0o644)  # objects are read-only files
    with open(path, "r+b") as handle:
        first = handle.read(1)
        handle.seek(0)
        handle.write(bytes([first[0] ^ 0x01]))


@pytest.fixture
def tracked(home: Path, tmp_path: Path) -> dict[str, str]:
    """images/ (3 files) and notes.txt added; name -> digest of each file's content."""
    contents = {"images/a.txt": "a" * 1000, "images/b.txt": "bb", "images/c/d.txt": "dd"}
    for rel, text in contents.items():
        _write(tmp_path / rel, text)
    _write(tmp_path / "notes.txt", "notes")
    keel.data.add(["images", "notes.txt"])
    store = _store()
    return {
        rel: store.put_bytes(text.encode()).digest
        for rel, text in {**contents, "notes.txt": "notes"}.items()
    }


def test_a_healthy_store(tracked: dict[str, str], cli: CliRunner) -> None:
    report = fsck(_store(), Path.cwd(), jobs=2)
    assert report.ok and report.pointers == 2
    assert report.objects == 5  # 4 files and the folder's manifest
    assert report.bytes == sum(blob.size for blob in _store().iter_objects())
    result = run_main(cli, ["data", "fsck"])
    assert result.exit_code == 0, result.output
    assert result.output == f"5 objects, {report.bytes / 1000:.1f} KB verified, no problems\n"


def test_a_corrupt_object_is_found_quarantined_and_reported(
    tracked: dict[str, str], cli: CliRunner
) -> None:
    store = _store()
    bad = tracked["images/a.txt"]
    _flip_a_byte(store, bad)

    result = run_main(cli, ["data", "fsck", "--jobs", "3"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert any(line.startswith(f"corrupt: artifact object {bad}") for line in lines)
    assert "It was quarantined" in result.output
    assert lines[-1].startswith("4 objects, ") and lines[-1].endswith("; 2 problems")
    assert "keel data pull fetches them" in result.output
    assert f"missing: images/a.txt ({bad}), in images.keel" in result.output
    assert not store.exists(bad)

    # the next run lists what is in quarantine, and what the pointer still misses
    document = json.loads(run_main(cli, ["data", "fsck", "--json"]).output)
    assert document["ok"] is False and document["objects"] == 4
    kinds = sorted((p["kind"], p["digest"]) for p in document["problems"])
    assert kinds == [("missing", bad), ("quarantined", bad)]

    # adding the intact working copy again stores it afresh; quarantine stays for a person
    keel.data.add(["images"])
    report = fsck(store, Path.cwd())
    assert [p.kind for p in report.problems] == ["quarantined"]


def test_missing_and_unparsable(tracked: dict[str, str], tmp_path: Path) -> None:
    store = _store()
    for digest in (tracked["images/c/d.txt"], tracked["notes.txt"]):
        path = store.path_of(digest)
        assert path is not None
        os.unlink(path)
    listing = store.put_bytes(b"not a manifest")
    pointer = Pointer(kind="directory", hash=listing.digest, size=1, files=1)
    (tmp_path / "fake.keel").write_text(dump_pointer(pointer))
    (tmp_path / "broken.keel").write_text("keel_pointer: 1\nhash: nope\n")
    gone = Pointer(kind="directory", hash="0" * 64, size=1, files=1)
    (tmp_path / "gone.keel").write_text(dump_pointer(gone))

    report = fsck(store, tmp_path)
    found = {(p.kind, p.path) for p in report.problems}
    assert found == {
        ("missing", "images/c/d.txt"),
        ("missing", "notes.txt.keel"),
        ("bad_manifest", "fake.keel"),
        ("bad_pointer", "broken.keel"),
        ("missing", "gone.keel"),
    }
    assert report.pointers == 5 and not report.ok
    gone_problem = next(p for p in report.problems if p.path == "gone.keel")
    assert "the folder listing of gone" in gone_problem.message


def test_an_empty_store(home: Path, cli: CliRunner) -> None:
    result = run_main(cli, ["data", "fsck"])
    assert result.exit_code == 0 and result.output == "0 objects, 0 B verified, no problems\n"
    assert run_main(cli, ["data", "fsck", "--jobs", "0"]).exit_code == 2  # a usage error
