"""Small objects and checked-out files written whole: O_TMPFILE and its fallback, temp names,
killed writes, folder checks made once per folder, and puts of verified bytes."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

from keel.artifacts import ArtifactStore, Blob
from keel.artifacts.writer import FileWriter, temp_name
from keel.errors import Conflict, InvalidInput

LINUX = sys.platform.startswith("linux")
needs_tmpfile = pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="O_TMPFILE is Linux-only")


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@needs_tmpfile
def test_an_unnamed_file_is_linked_in_whole_and_replaces_what_was_there(tmp_path: Path) -> None:
    writer = FileWriter()

    writer.write(str(tmp_path), "a.bin", b"first", mode=0o644)
    writer.write(str(tmp_path), "a.bin", b"second, longer", mode=0o644)  # linkat: EEXIST

    assert writer.tmpfile  # the filesystem took O_TMPFILE: no fallback
    assert (tmp_path / "a.bin").read_bytes() == b"second, longer"
    assert _names(tmp_path) == ["a.bin"]  # no temp file left beside it
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644 & ~_umask()


@pytest.mark.parametrize("tmpfile", [False, True], ids=["named-temp", "tmpfile"])
def test_a_writer_replaces_a_file_and_leaves_no_temp_file(tmp_path: Path, tmpfile: bool) -> None:
    writer = FileWriter(tmpfile=tmpfile)
    (tmp_path / "a.txt").write_bytes(b"old content")

    writer.write(str(tmp_path), "a.txt", b"new", mode=0o666)
    writer.write(str(tmp_path), "b.txt", b"", mode=0o666)

    assert (tmp_path / "a.txt").read_bytes() == b"new"
    assert (tmp_path / "b.txt").read_bytes() == b""
    assert _names(tmp_path) == ["a.txt", "b.txt"]


@needs_tmpfile
def test_a_filesystem_refusing_o_tmpfile_falls_back_to_a_named_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    refused = []

    def open_without_tmpfile(path: str, flags: int, mode: int = 0o777, **kw: object) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:  # as NFS, or a kernel before 3.11, says
            refused.append(path)
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP), path)
        return real_open(path, flags, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_without_tmpfile)
    store = ArtifactStore(tmp_path / "store", fsync=False)

    blobs = [store.put_bytes(f"object {i}".encode()) for i in range(5)]

    assert len(refused) == 1  # asked once, then named temp files for the rest
    assert [store.read_bytes(b.digest) for b in blobs] == [f"object {i}".encode() for i in range(5)]
    assert list((tmp_path / "store" / "tmp").iterdir()) == []  # each renamed into place
    out = store.get_files({f"d/f{i}.txt": b.digest for i, b in enumerate(blobs)}, tmp_path / "out")
    assert _names(out / "d") == [f"f{i}.txt" for i in range(5)]
    assert len(refused) == 2  # the store's writer for the checkout gave up once too


def test_temp_names_differ_across_calls_and_processes(tmp_path: Path) -> None:
    names = {temp_name() for _ in range(1000)}
    code = "from keel.artifacts.writer import temp_name; print(temp_name())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert len(names) == 1000
    assert child.stdout.strip() not in names
    assert all(name.startswith(f"{os.getpid()}-") for name in names)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_its_parents_temp_names() -> None:
    before = temp_name()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, temp_name().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)

    assert child.rpartition("-")[0] != before.rpartition("-")[0]


# -- killed writers ------------------------------------------------------------------------------

_PUT_FOREVER = """
import os, sys
from keel.artifacts import ArtifactStore
store = ArtifactStore(sys.argv[1], fsync=False)
i = 0
while True:
    store.put_bytes(os.urandom(4096 + i % 5000))
    i += 1
"""

_CHECKOUT_FOREVER = """
import itertools, sys
from keel.artifacts import ArtifactStore
store = ArtifactStore(sys.argv[1], fsync=False)
files = {f"d{i % 7}/f{i}.bin": digest for i, digest in enumerate(sys.argv[3:])}
for n in itertools.count():  # a fresh folder each time: files are created, not replaced
    store.get_files(files, f"{sys.argv[2]}/{n}")
"""


def _kill_when(child: subprocess.Popen[bytes], ready: Callable[[], bool]) -> None:
    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert child.poll() is None, "the writer ended before it could be killed"
            assert time.monotonic() < deadline, "the writer never got going"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL


def test_a_writer_of_small_objects_killed_midway_leaves_only_whole_objects(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    child = subprocess.Popen([sys.executable, "-c", _PUT_FOREVER, str(root)])
    objects = root / "objects"

    _kill_when(child, lambda: objects.is_dir() and sum(1 for _ in objects.rglob("*")) > 400)

    store = ArtifactStore(root, fsync=False)
    found = list(store.iter_objects())
    assert len(found) > 100
    for blob in found:  # every name holds exactly its content: none half-written
        assert store.verify(blob.digest) == blob
    stray = [p for p in objects.rglob("*") if p.is_file() and len(p.parent.name + p.name) != 64]
    assert stray == []
    if LINUX:  # unnamed files vanish with the process: nothing to clean up
        assert not (root / "tmp").exists() or list((root / "tmp").iterdir()) == []


def test_a_checkout_killed_midway_leaves_only_whole_files(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store", fsync=False)
    contents = [os.urandom(2000 + i) for i in range(300)]
    digests = [store.put_bytes(data).digest for data in contents]
    out = tmp_path / "out"
    args = [sys.executable, "-c", _CHECKOUT_FOREVER, str(tmp_path / "store"), str(out)]
    child = subprocess.Popen(args + digests)

    _kill_when(child, lambda: (out / "3").is_dir())

    expected = {f"d{i % 7}/f{i}.bin": data for i, data in enumerate(contents)}
    checked = 0
    for path in out.rglob("*"):
        if path.is_file():
            rel = path.relative_to(out).as_posix().partition("/")[2]
            if LINUX:
                assert rel in expected  # no .keel-tmp file: the unnamed one died with it
            if rel in expected:
                assert path.read_bytes() == expected[rel]
                checked += 1
    assert checked >= 3 * len(contents)  # three rounds done before the fourth began


# -- checkout: folders checked and made once -----------------------------------------------------


def test_many_files_into_a_folder_with_a_folder_in_the_way_write_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    blob = store.put_bytes(b"x")
    out = tmp_path / "out"
    (out / "sub" / "f7.txt").mkdir(parents=True)  # where the 8th of 40 files goes
    (out / "sub" / "f7.txt" / "kept").write_text("mine")
    files = {f"sub/f{i}.txt": blob.digest for i in range(40)}
    files |= {f"new/deeper/f{i}.txt": blob.digest for i in range(3)}

    with pytest.raises(Conflict) as raised:
        store.get_files(files, out)

    assert f"{out / 'sub' / 'f7.txt'} is a folder, and the artifact has a file there" in str(
        raised.value
    )
    assert _names(out) == ["sub"]  # new/ was not created either
    assert _names(out / "sub") == ["f7.txt"]
    assert (out / "sub" / "f7.txt" / "kept").read_text() == "mine"


def test_a_symlink_where_a_file_goes_is_replaced_not_followed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    blob = store.put_bytes(b"content")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "f0.txt").symlink_to(elsewhere)  # a link to a folder: not a folder in the way
    files = {f"f{i}.txt": blob.digest for i in range(20)}

    store.get_files(files, out)

    assert not (out / "f0.txt").is_symlink()
    assert (out / "f0.txt").read_bytes() == b"content"
    assert list(elsewhere.iterdir()) == []


def test_a_path_that_is_both_a_file_and_a_folder_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    blob = store.put_bytes(b"x")

    with pytest.raises(InvalidInput, match="'a/b' is both a file and a folder"):
        store.get_files({"a/b": blob.digest, "a/b/c.txt": blob.digest}, tmp_path / "out")

    assert not (tmp_path / "out").exists()


def test_get_files_writes_one_object_to_every_file_that_holds_it(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    small, empty = store.put_bytes(b"shared"), store.put_bytes(b"")
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "1.txt").write_bytes(b"modified since")

    store.get_files({"a/1.txt": small.digest, "b/2.txt": small.digest, "e": empty.digest}, out)

    assert (out / "a" / "1.txt").read_bytes() == b"shared"
    assert (out / "b" / "2.txt").read_bytes() == b"shared"
    assert (out / "e").read_bytes() == b""
    assert _names(out / "a") == ["1.txt"]


# -- puts and reads of small objects -------------------------------------------------------------


def test_put_verified_stores_the_bytes_under_the_given_digest(tmp_path: Path) -> None:
    source = ArtifactStore(tmp_path / "source")
    dest = ArtifactStore(tmp_path / "dest")
    blob = source.put_bytes(b"checked on read")

    copied = dest.put_verified(source.read_bytes(blob.digest), blob.digest)
    again = dest.put_verified(b"checked on read", blob.digest)

    assert copied == again == blob
    assert dest.read_bytes(blob.digest) == b"checked on read"
    assert [b.digest for b in dest.iter_objects()] == [blob.digest]
    with pytest.raises(InvalidInput, match="not an artifact digest"):
        dest.put_verified(b"x", "not-a-digest")


def test_objects_are_read_only_and_named_by_their_blake3_digest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store", fsync=False)
    data = os.urandom(7000)

    blob = store.put_bytes(data)

    assert blob == Blob(digest=blake3.blake3(data).hexdigest(), size=7000)
    path = Path(store.path_of(blob.digest) or "")
    assert stat.S_IMODE(path.stat().st_mode) == 0o444 & ~_umask()
    assert path.read_bytes() == data


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs procfs")
def test_put_file_reads_a_file_whose_size_says_nothing_to_its_end(tmp_path: Path) -> None:
    assert os.stat("/proc/self/status").st_size == 0
    store = ArtifactStore(tmp_path / "store")

    blob = store.put_file("/proc/self/status")

    assert blob.size > 0
    assert store.read_bytes(blob.digest).startswith(b"Name:")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
