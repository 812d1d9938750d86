"""keel data under concurrency and failure, with real processes: per-path locks, kill -9 mid-add,
checked-out files that are edited, and the folder snapshot that answers status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from keel.artifacts import ArtifactStore, hash_file
from keel.artifacts.store import KERNEL_COPY_MIN_SIZE
from keel.data import Workspace, add, checkout, status
from keel.data.api import LOCKS_FOLDER
from keel.settings import Settings

MiB = 1 << 20
_CLI = "import sys; from keel.cli import main; main(sys.argv[1:])"

# Holds the lock of one data path until the file named by argv[3] appears.
_HOLDER = """
import sys, time
from pathlib import Path
from keel.data.workspace import path_lock
with path_lock(Path(sys.argv[1]), Path(sys.argv[2])):
    Path(sys.argv[3] + ".held").touch()
    while not Path(sys.argv[3]).exists():
        time.sleep(0.01)
"""


def _old(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    past = time.time_ns() - 60_000_000_000
    os.utime(path, ns=(past, past))
    return path


def _keel(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_adds_of_one_path_take_turns_and_other_paths_never_wait(home: Path, tmp_path: Path) -> None:
    _old(tmp_path / "locked" / "a.txt", b"first")
    _old(tmp_path / "free" / "b.txt", b"second")
    release = tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(home / LOCKS_FOLDER), str(tmp_path / "locked"),
         str(release)]
    )  # fmt: skip
    try:
        _wait_for(Path(f"{release}.held"), holder)
        blocked = _keel("data", "add", "locked")
        other = _keel("data", "add", "free")
        _, err = other.communicate(timeout=120)  # completes while "locked" is held
        assert other.returncode == 0, err.decode()
        assert (tmp_path / "free.keel").exists()

        assert blocked.poll() is None  # still waiting for the lock
        assert not (tmp_path / "locked.keel").exists()
        release.touch()
        _, err = blocked.communicate(timeout=120)
        assert blocked.returncode == 0, err.decode()
    finally:
        release.touch()
        holder.wait(timeout=60)
    assert [s.path for s in status()] == ["free", "locked"]
    assert all(s.up_to_date for s in status())


def test_checkout_waits_for_an_add_of_the_same_path(home: Path, tmp_path: Path) -> None:
    data = _old(tmp_path / "model.bin", b"weights")
    add([data])
    data.unlink()
    release = tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(home / LOCKS_FOLDER), str(data), str(release)]
    )
    try:
        _wait_for(Path(f"{release}.held"), holder)
        waiting = _keel("data", "checkout", "model.bin")
        time.sleep(0.5)  # give it every chance to (wrongly) run now
        assert waiting.poll() is None and not data.exists()
        release.touch()
        _, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, err.decode()
    finally:
        release.touch()
        holder.wait(timeout=60)
    assert data.read_bytes() == b"weights"


@pytest.mark.slow
def test_an_add_killed_midway_leaves_no_partial_object_and_runs_again(
    home: Path, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as out:
        for _ in range(768):
            out.write(os.urandom(MiB))
    store_root = home / "artifacts"
    killed = False
    for _attempt in range(5):  # the add may win the race on a fast machine: try again
        proc = _keel("data", "add", "big.bin")
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            parts = list((store_root / "tmp").glob("*.part")) if store_root.exists() else []
            if any(p.stat().st_size > 0 for p in parts if p.exists()):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=60)
        if proc.returncode == -signal.SIGKILL:
            killed = True
            break
        assert proc.returncode == 0, proc.communicate()
        # it finished first: start over from nothing
        (tmp_path / "big.bin.keel").unlink()
        for blob in ArtifactStore(store_root).iter_objects():
            ArtifactStore(store_root).delete(blob.digest)
    assert killed, "the add always finished before it could be killed"

    store = ArtifactStore(store_root)
    for blob in store.iter_objects():  # nothing visible has wrong content
        assert store.verify(blob.digest) == blob
    assert not store.exists(hash_file(big).digest)
    assert not (tmp_path / "big.bin.keel").exists()
    leftovers = list((store_root / "tmp").glob("*.part"))
    assert leftovers  # the temp file of the killed write, until cleaned
    past = time.time() - 2 * 86400
    for part in leftovers:
        os.utime(part, (past, past))

    [result] = add([big])  # runs again, and cleans what is a day old

    assert result.pointer.hash == hash_file(big).digest
    assert list((store_root / "tmp").glob("*.part")) == []
    assert store.verify(result.pointer.hash).size == 768 * MiB
    assert status()[0].up_to_date


def test_editing_a_large_checked_out_file_never_changes_the_store(
    home: Path, tmp_path: Path
) -> None:
    content = os.urandom(KERNEL_COPY_MIN_SIZE + MiB)
    data = _old(tmp_path / "weights.bin", content)
    [result] = add([data])
    data.unlink()

    checkout()
    with open(data, "r+b") as edited:  # in place, as numpy.memmap or an editor would
        edited.seek(5 * MiB)
        edited.write(b"EDITED")

    store = ArtifactStore(Settings().artifacts_url)
    assert store.verify(result.pointer.hash).digest == result.pointer.hash
    assert status()[0].modified == ["weights.bin"]
    checkout()
    assert data.read_bytes() == content


def test_status_sees_every_change_after_the_folder_snapshot(home: Path, tmp_path: Path) -> None:
    for i in range(30):
        _old(tmp_path / "images" / f"{i:02d}.txt", f"image {i:02d}".encode())
    add(["images"])
    with Workspace() as ws:
        assert ws.status()[0].up_to_date and ws.cache.folder_hits == 1

    _old(tmp_path / "images" / "03.txt", b"IMAGE 03")  # same size, new mtime
    (tmp_path / "images" / "04.txt").unlink()
    _old(tmp_path / "images" / "new.txt", b"new")
    with Workspace() as ws:
        [state] = ws.status()
        assert ws.cache.folder_hits == 0
    assert state.modified == ["images/03.txt"]
    assert state.deleted == ["images/04.txt"]
    assert state.added == ["images/new.txt"]

    checkout(force=True)  # restored files are new: inside the racy window, so no snapshot
    with Workspace() as ws:
        assert ws.status()[0].up_to_date and ws.cache.folder_hits == 0


def test_a_folder_changed_right_after_its_add_is_not_hidden_by_the_snapshot(
    home: Path, tmp_path: Path
) -> None:
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "a.txt").write_text("aaaa")  # mtime now: inside the racy window
    add(["fresh"])
    before = (tmp_path / "fresh" / "a.txt").stat()
    (tmp_path / "fresh" / "a.txt").write_text("bbbb")  # same size, same mtime, same inode
    os.utime(tmp_path / "fresh" / "a.txt", ns=(before.st_atime_ns, before.st_mtime_ns))

    assert status()[0].modified == ["fresh/a.txt"]


def test_the_pointer_names_what_was_stored_by_the_kernel_copy(home: Path, tmp_path: Path) -> None:
    content = os.urandom(KERNEL_COPY_MIN_SIZE * 2 + 12345)
    data = _old(tmp_path / "big.bin", content)

    add([data])

    pointer = yaml.safe_load((tmp_path / "big.bin.keel").read_text())
    assert pointer["hash"] == hash_file(data).digest and pointer["size"] == len(content)
    assert ArtifactStore(Settings().artifacts_url).read_bytes(pointer["hash"]) == content
