"""Data versioning against real files and a real store: add, status, checkout, the stat cache."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from keel.artifacts import ArtifactStore, hash_file
from keel.data import Workspace, add, checkout, status
from keel.data.models import parse_pointer
from keel.data.store import RACY_WINDOW_NS
from keel.errors import Conflict, InvalidInput, NotFound, StorageError
from keel.settings import Settings


def _write(path: Path, text: str, *, age: float = 60.0) -> Path:
    """Write a file with an mtime ``age`` seconds in the past (older than the racy window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    past = time.time_ns() - int(age * 1e9)
    os.utime(path, ns=(past, past))
    return path


@pytest.fixture
def tree(home: Path, tmp_path: Path) -> Path:
    """A data folder with nested files, old enough for the stat cache to trust."""
    root = tmp_path / "images"
    _write(root / "cat.txt", "meow")
    _write(root / "dog.txt", "woof")
    _write(root / "birds" / "owl.txt", "hoot")
    _write(root / "birds" / "deep" / "wren.txt", "tweet")
    return root


def test_add_a_file_writes_pointer_store_object_and_gitignore(home: Path, tmp_path: Path) -> None:
    data = _write(tmp_path / "data" / "train.csv", "a,b\n1,2\n")
    [result] = add(["data/train.csv"])
    assert result.changed and result.path == "data/train.csv"
    pointer_file = tmp_path / "data" / "train.csv.keel"
    document = yaml.safe_load(pointer_file.read_text())
    digest = hash_file(data).digest
    assert document == {
        "keel_pointer": 1,
        "kind": "file",
        "hash": digest,
        "size": 8,
        "files": 1,
        "name": None,
        "version": None,
    }
    assert ArtifactStore(Settings().artifacts_url).read_bytes(digest) == b"a,b\n1,2\n"
    assert (tmp_path / "data" / ".gitignore").read_text() == "/train.csv\n"
    # adding again neither rewrites the pointer nor repeats the .gitignore line
    mtime = pointer_file.stat().st_mtime_ns
    [again] = add([data])
    assert not again.changed and not again.ignored
    assert pointer_file.stat().st_mtime_ns == mtime
    assert (tmp_path / "data" / ".gitignore").read_text() == "/train.csv\n"


def test_gitignore_keeps_existing_lines_and_escapes_patterns(home: Path, tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("*.pyc")  # no newline at the end
    _write(tmp_path / "weird[1]*.bin", "x")
    add(["weird[1]*.bin"])
    assert (tmp_path / ".gitignore").read_text() == "*.pyc\n/weird\\[1]\\*.bin\n"


def test_directory_is_a_manifest_with_nested_files(tree: Path, tmp_path: Path) -> None:
    [result] = add(["images"])
    assert result.pointer.kind == "directory" and result.pointer.files == 4
    assert result.pointer.size == 17
    assert result.pointer_path == "images.keel"
    store = ArtifactStore(Settings().artifacts_url)
    # the same objects and manifest digest as the artifact store's own put_dir
    assert result.pointer.hash == store.put_dir(tree).digest
    assert set(store.read_manifest(result.pointer.hash)) == {
        "cat.txt",
        "dog.txt",
        "birds/owl.txt",
        "birds/deep/wren.txt",
    }
    assert (tmp_path / ".gitignore").read_text() == "/images\n"


def test_readd_unchanged_reads_nothing(tree: Path) -> None:
    with Workspace() as ws:
        ws.add(["images"])
        assert ws.cache.misses == 4 and ws.cache.hits == 0
    with Workspace() as ws:
        [result] = ws.add(["images"])
        assert not result.changed
        assert ws.cache.hits == 4 and ws.cache.misses == 0
        [state] = ws.status()
        # the folder's snapshot answers: no lookup per file, no manifest read
        assert state.up_to_date and ws.cache.folder_hits == 1
        assert ws.cache.hits == 4 and ws.cache.misses == 0


def test_modify_status_checkout_round_trip(tree: Path) -> None:
    add(["images"])
    _write(tree / "birds" / "owl.txt", "HOOT")  # same size, new content
    (tree / "dog.txt").unlink()
    _write(tree / "birds" / "new.txt", "new")
    [state] = status()
    assert state.path == "images" and not state.up_to_date
    assert state.modified == ["images/birds/owl.txt"]
    assert state.deleted == ["images/dog.txt"]
    assert state.added == ["images/birds/new.txt"]

    [result] = checkout(["images"])
    assert result.restored == ["images/birds/owl.txt", "images/dog.txt"]
    assert result.extra == ["images/birds/new.txt"] and result.removed == []
    assert (tree / "birds" / "owl.txt").read_text() == "hoot"
    assert (tree / "dog.txt").read_text() == "woof"
    assert (tree / "birds" / "new.txt").exists()
    [state] = status(["images"])
    assert state.added == ["images/birds/new.txt"] and not state.modified and not state.deleted

    [result] = checkout(["images.keel"], force=True)
    assert result.removed == ["images/birds/new.txt"] and result.restored == []
    assert status()[0].up_to_date


def test_force_prunes_folders_left_empty(tree: Path) -> None:
    add(["images"])
    _write(tree / "extra" / "deeper" / "x.txt", "x")
    checkout(force=True)
    assert not (tree / "extra").exists()
    assert (tree / "birds" / "deep" / "wren.txt").exists()


def test_a_file_status_and_checkout(home: Path, tmp_path: Path) -> None:
    data = _write(tmp_path / "model.bin", "weights")
    add([data])
    assert status()[0].up_to_date
    _write(data, "tampered")
    [state] = status(["model.bin"])
    assert state.modified == ["model.bin"]
    checkout(["model.bin"])
    assert data.read_text() == "weights"
    data.unlink()
    assert status()[0].deleted == ["model.bin"]
    assert checkout()[0].restored == ["model.bin"]
    assert data.read_text() == "weights"


def test_editing_a_checked_out_file_leaves_the_store_intact(home: Path, tmp_path: Path) -> None:
    data = _write(tmp_path / "model.bin", "weights")
    [result] = add([data])
    data.unlink()
    checkout()
    with open(data, "a") as out:  # edit in place: must be a copy, not a link into the store
        out.write("!")
    store = ArtifactStore(Settings().artifacts_url)
    assert store.read_bytes(result.pointer.hash) == b"weights"


def test_a_change_right_after_hashing_is_not_hidden_by_the_cache(
    home: Path, tmp_path: Path
) -> None:
    data = tmp_path / "fresh.txt"
    data.write_text("aaaa")  # mtime now: inside the racy window
    add([data])
    before = data.stat()
    data.write_text("bbbb")  # same size; give it the very same mtime
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert status()[0].modified == ["fresh.txt"]
    assert RACY_WINDOW_NS > 0


def test_corrupt_object_is_a_clear_error_on_checkout(home: Path, tmp_path: Path) -> None:
    data = _write(tmp_path / "model.bin", "weights")
    [result] = add([data])
    obj = Path(Settings().artifacts_url) / "objects" / result.pointer.hash[:2]
    (obj / result.pointer.hash[2:]).write_bytes(b"WEIGHTS")
    data.unlink()
    with pytest.raises(StorageError, match="corrupt"):
        checkout()
    assert not data.exists()  # nothing half written


def test_wrong_kind_in_the_way_needs_force(tree: Path) -> None:
    add(["images"])
    import shutil

    shutil.rmtree(tree)
    tree.write_text("a file where the folder was")
    with pytest.raises(Conflict, match="--force"):
        checkout()
    checkout(force=True)
    assert (tree / "birds" / "owl.txt").read_text() == "hoot"


def test_mistakes(home: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file or directory: nope"):
        add(["nope"])
    _write(tmp_path / "a.txt", "a")
    add(["a.txt"])
    with pytest.raises(InvalidInput, match="pointer file"):
        add(["a.txt.keel"])
    with pytest.raises(InvalidInput, match="Keel home"):
        add(["."])
    (tmp_path / "other.txt").write_text("o")
    with pytest.raises(NotFound, match="not tracked"):
        status(["other.txt"])
    _write(tmp_path / "d" / "inner.txt", "i")
    add(["d"])
    with pytest.raises(InvalidInput, match="inside the tracked folder d"):
        add(["d/inner.txt"])


def test_corrupt_pointer_is_an_invalid_input(home: Path, tmp_path: Path) -> None:
    (tmp_path / "x.keel").write_text("keel_pointer: 1\nkind: [unclosed\n")
    with pytest.raises(InvalidInput, match=r"x.keel is not a valid Keel pointer: not YAML"):
        status()
    (tmp_path / "x.keel").write_text("keel_pointer: 1\nkind: file\nhash: abc\nsize: 1\nfiles: 1\n")
    with pytest.raises(InvalidInput, match="hash"):
        status()
    (tmp_path / "x.keel").write_text("keel_pointer: 2\n")
    with pytest.raises(InvalidInput, match="newer Keel"):
        status()


def test_pointer_round_trips(home: Path, tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", "a")
    [result] = add(["a.txt"])
    text = (tmp_path / "a.txt.keel").read_text()
    assert text.startswith("# Keel data pointer")
    assert parse_pointer(text, source="a.txt.keel") == result.pointer


def test_status_skips_git_keel_and_tracked_folders(tree: Path, tmp_path: Path) -> None:
    add(["images"])
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "stray.keel").write_text("not a pointer")
    (tree / "inside.keel").write_text("not a pointer either")  # inside tracked data
    assert [s.path for s in status()] == ["images"]


def test_concurrent_adds_of_different_paths(home: Path, tmp_path: Path) -> None:
    for i in range(6):
        for j in range(20):
            _write(tmp_path / "shared" / f"set{i}" / f"{j}.txt", f"{i}-{j}")
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            add([tmp_path / "shared" / f"set{i}"])
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    lines = (tmp_path / "shared" / ".gitignore").read_text().splitlines()
    assert sorted(lines) == [f"/set{i}" for i in range(6)]
    assert all(s.up_to_date for s in status())
    assert len(status()) == 6


def test_add_reports_progress_for_the_files_it_reads(tree: Path) -> None:
    calls: list[tuple[int, int]] = []
    add(["images"], progress=lambda done, total: calls.append((done, total)))
    assert sorted(calls) == [(1, 4), (2, 4), (3, 4), (4, 4)]

    calls.clear()
    add(["images"], progress=lambda done, total: calls.append((done, total)))
    assert calls == []  # nothing read: the stat cache answered


def test_named_version_functions_are_on_keel_data_without_a_heavy_import() -> None:
    import subprocess
    import sys

    code = (
        "import sys, keel.data\n"
        "assert 'sqlalchemy' not in sys.modules, 'import keel.data pulled in the database'\n"
        "import keel.data.versions as v\n"
        "assert keel.data.log_dataset is v.log_dataset and keel.data.load is v.load\n"
        "from keel.data import lineage, list_versions, resolve, get_version\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import keel.data

        keel.data.nothing  # noqa: B018


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs is Linux-only")
@pytest.mark.parametrize("durable", [False, True])
def test_data_fsync_decides_whether_add_flushes_its_objects(
    tree: Path, home: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    import keel.artifacts.backends as backends

    flushes: list[str] = []
    real_fsync, real_syncfs = os.fsync, backends._syncfs

    def fsync(fd: int) -> None:
        flushes.append("fsync")
        real_fsync(fd)

    def syncfs(fd: int) -> int:
        flushes.append("syncfs")
        return real_syncfs(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(backends, "_syncfs", syncfs)
    big = tree / "big.bin"
    big.write_bytes(os.urandom(9 << 20))  # large enough for the kernel-copy path
    with Workspace(Settings(home=home, data_fsync=durable)) as ws:
        result = ws.add([tree])[0]
    assert result.changed
    stored = ArtifactStore(home / "artifacts")
    assert stored.exists(hash_file(big).digest)
    if durable:
        assert "syncfs" in flushes or flushes.count("fsync") >= 2
    else:
        # only the pointer file (the user's, committed to git) is flushed, never the objects
        assert flushes == ["fsync"]
