"""The artifact store on real files: a local folder and fsspec's memory:// filesystem."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3
import fsspec
import pytest

from keel.artifacts import ArtifactStore, Blob, hash_file
from keel.errors import Conflict, InvalidInput, NotFound, StorageError

MiB = 1 << 20


def _memory_root(url: str) -> str:
    return "/" + url.removeprefix("memory://").strip("/")


def _objects(store: ArtifactStore) -> list[str]:
    """Every file under the store's objects/ folder, whatever the backend."""
    if store.url.startswith("memory://"):
        return sorted(fsspec.filesystem("memory").find(f"{_memory_root(store.url)}/objects"))
    root = Path(store.url) / "objects"
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


def _tmp_files(store: ArtifactStore) -> list[str]:
    if store.url.startswith("memory://"):
        return sorted(fsspec.filesystem("memory").find(f"{_memory_root(store.url)}/tmp"))
    return sorted(str(p) for p in (Path(store.url) / "tmp").glob("*"))


def _corrupt(store: ArtifactStore, digest: str, *, truncate: bool = False) -> None:
    """Flip one byte of a stored object (or cut its last byte), as bit rot would."""
    rel = f"objects/{digest[:2]}/{digest[2:]}"
    if store.url.startswith("memory://"):
        fs = fsspec.filesystem("memory")
        path = f"{_memory_root(store.url)}/{rel}"
        data = bytearray(fs.cat_file(path))
    else:
        path = str(Path(store.url) / rel)
        os.chmod(path, 0o644)  # objects are stored read-only
        data = bytearray(Path(path).read_bytes())
    if truncate:
        del data[-1]
    else:
        data[len(data) // 2] ^= 0x01
    if store.url.startswith("memory://"):
        fsspec.filesystem("memory").pipe_file(path, bytes(data))
    else:
        Path(path).write_bytes(bytes(data))


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "local":
        yield ArtifactStore(str(tmp_path / "store"))
        return
    url = f"memory://keel-test-{uuid.uuid4().hex}"
    yield ArtifactStore(url)
    fs = fsspec.filesystem("memory")
    if fs.exists(_memory_root(url)):
        fs.rm(_memory_root(url), recursive=True)


def test_put_bytes_is_named_by_blake3_and_reads_back(store: ArtifactStore) -> None:
    blob = store.put_bytes(b"hello keel")

    assert blob == Blob(digest=blake3.blake3(b"hello keel").hexdigest(), size=10)
    assert store.read_bytes(blob.digest) == b"hello keel"
    assert store.exists(blob.digest)
    assert store.size(blob.digest) == 10
    digest = blob.digest
    assert _objects(store)[0].endswith(f"objects/{digest[:2]}/{digest[2:]}")


def test_empty_content_is_an_object_like_any_other(store: ArtifactStore) -> None:
    blob = store.put_bytes(b"")

    assert blob.digest == blake3.blake3(b"").hexdigest()
    assert store.read_bytes(blob.digest) == b""
    with store.open(blob.digest) as reader:
        assert reader.read() == b""


def test_same_content_is_stored_once(store: ArtifactStore, tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_bytes(b"same bytes")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * MiB))

    blobs = {store.put_bytes(b"same bytes"), store.put_bytes(b"same bytes"), store.put_file(small)}
    big_blobs = {store.put_file(big), store.put_file(big), store.put_bytes(big.read_bytes())}

    assert len(blobs) == 1
    assert len(big_blobs) == 1
    assert len(_objects(store)) == 2
    assert _tmp_files(store) == []


def test_large_file_round_trips_through_file_and_stream(
    store: ArtifactStore, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    block = os.urandom(MiB)
    with source.open("wb") as out:
        for i in range(50):
            out.write(i.to_bytes(8, "little") + block[8:])

    blob = store.put_file(source)
    copy = store.get_file(blob.digest, tmp_path / "out" / "copy.bin")

    assert blob == hash_file(source)
    assert blob.size == 50 * MiB
    assert copy.read_bytes() == source.read_bytes()
    with store.open(blob.digest) as reader:
        chunks = list(reader)
    assert max(len(chunk) for chunk in chunks) <= MiB
    assert b"".join(chunks) == source.read_bytes()


def test_put_stream_stores_what_the_stream_yields(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(2 * MiB + 5))

    with source.open("rb") as stream:
        blob = store.put_stream(stream)

    assert blob == hash_file(source)


def _make_tree(root: Path) -> None:
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "données").mkdir()
    (root / "top.txt").write_text("top\n")
    (root / "empty.bin").write_bytes(b"")
    (root / "a" / "b" / "c" / "deep.bin").write_bytes(os.urandom(1500 * 1024))
    (root / "a" / "dup1.txt").write_text("same")
    (root / "a" / "b" / "dup2.txt").write_text("same")
    (root / "données" / "été ☀.csv").write_text("x,y\n1,2\n")
    (root / "日本語.txt").write_text("こんにちは")
    (root / "link.txt").symlink_to(root / "top.txt")


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_put_dir_then_get_dir_reproduces_the_tree(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "src"
    _make_tree(source)

    manifest = store.put_dir(source)
    files = store.read_manifest(manifest.digest)
    out = store.get_dir(manifest.digest, tmp_path / "dst" / "nested")

    assert sorted(files) == [
        "a/b/c/deep.bin",
        "a/b/dup2.txt",
        "a/dup1.txt",
        "données/été ☀.csv",
        "empty.bin",
        "link.txt",
        "top.txt",
        "日本語.txt",
    ]
    assert files["link.txt"] == files["top.txt"]  # the symlink was followed
    assert files["empty.bin"].size == 0
    assert _tree(out) == _tree(source)
    assert not (out / "link.txt").is_symlink()


def _conflict_tree(store: ArtifactStore, tmp_path: Path) -> str:
    source = tmp_path / "src"
    (source / "model").mkdir(parents=True)
    (source / "model" / "weights.bin").write_bytes(b"weights")
    (source / "config.json").write_text("{}")
    (source / "notes.txt").write_text("notes")
    return store.put_dir(source).digest


@pytest.mark.parametrize(
    ("in_the_way", "why"),
    [
        ("model", "is a file, and the artifact needs a folder there"),
        ("config.json", "is a folder, and the artifact has a file there"),
    ],
    ids=["file-where-a-folder-goes", "folder-where-a-file-goes"],
)
def test_get_dir_into_a_conflicting_path_names_it_and_writes_nothing(
    store: ArtifactStore, tmp_path: Path, in_the_way: str, why: str
) -> None:
    manifest = _conflict_tree(store, tmp_path)
    dst = tmp_path / "dst"
    store.get_dir(manifest, dst)  # an earlier download
    (dst / "notes.txt").write_text("edited since")
    other = dst / "other"
    other.mkdir()
    (other / "kept.txt").write_text("mine")
    # the tree on disk now differs from the artifact's at one path
    for path in (dst / "model" / "weights.bin", dst / "config.json"):
        path.unlink()
    (dst / "model").rmdir()
    if in_the_way == "model":
        (dst / "model").write_text("a file named like the artifact's folder")
    else:
        (dst / "config.json").mkdir()
    before = {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()}

    with pytest.raises(Conflict) as raised:
        store.get_dir(manifest, dst)

    message = str(raised.value)
    assert f"{dst / in_the_way} {why}; choose another destination, or remove" in message
    assert raised.value.context["path"] == str(dst / in_the_way)
    after = {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert after == before  # nothing overwritten, nothing half-written, nothing removed
    assert not list(dst.rglob("*keel-tmp*"))


@pytest.mark.parametrize("nested", [False, True], ids=["dst", "under-dst"])
def test_get_dir_into_a_file_is_a_conflict(
    store: ArtifactStore, tmp_path: Path, nested: bool
) -> None:
    manifest = _conflict_tree(store, tmp_path)
    (tmp_path / "taken").write_text("a file")
    dst = tmp_path / "taken" / "sub" if nested else tmp_path / "taken"

    with pytest.raises(Conflict, match=f"{tmp_path / 'taken'} is a file, and the artifact"):
        store.get_dir(manifest, dst)

    assert (tmp_path / "taken").read_text() == "a file"


def test_get_file_onto_a_folder_or_under_a_file_is_a_conflict(
    store: ArtifactStore, tmp_path: Path
) -> None:
    blob = store.put_bytes(b"content")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "inside.txt").write_text("kept")
    (tmp_path / "file").write_text("kept too")

    with pytest.raises(Conflict, match=f"{tmp_path / 'folder'} is a folder, and the artifact"):
        store.get_file(blob.digest, tmp_path / "folder")
    for target in (tmp_path / "file" / "x.bin", tmp_path / "file" / "deeper" / "x.bin"):
        with pytest.raises(Conflict, match=f"{tmp_path / 'file'} is a file, and the artifact"):
            store.get_file(blob.digest, target)

    assert (tmp_path / "folder" / "inside.txt").read_text() == "kept"
    assert (tmp_path / "file").read_text() == "kept too"
    assert not list(tmp_path.rglob("*keel-tmp*"))


def test_get_files_writes_the_named_objects_and_refuses_unsafe_paths(
    store: ArtifactStore, tmp_path: Path
) -> None:
    a, b = store.put_bytes(b"a"), store.put_bytes(b"b")

    out = store.get_files(
        {"x/a.txt": a.digest, "b.txt": b.digest, "x/y/a2.txt": a.digest}, tmp_path / "out"
    )

    assert _tree(out) == {"b.txt": b"b", "x/a.txt": b"a", "x/y/a2.txt": b"a"}
    for rel in ("../escape.txt", "x/../../escape.txt", "/etc/passwd", "x//a.txt", "./a.txt"):
        with pytest.raises(InvalidInput, match="not a safe path to download to"):
            store.get_files({"ok.txt": a.digest, rel: b.digest}, tmp_path / "out2")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "escape.txt").exists()


def test_manifest_is_canonical_json(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "z.txt").write_text("z")
    (source / "sub" / "a.txt").write_text("a")

    manifest = store.put_dir(source)
    raw = store.read_bytes(manifest.digest)
    document = json.loads(raw)

    assert raw == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert document["kind"] == "keel.manifest"
    assert document["version"] == 1
    assert document["files"]["sub/a.txt"] == {
        "digest": blake3.blake3(b"a").hexdigest(),
        "size": 1,
    }
    assert store.put_dir(source) == manifest  # same tree, same manifest


def test_empty_folder_gives_an_empty_manifest(store: ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    manifest = store.put_dir(tmp_path / "empty")

    assert store.read_manifest(manifest.digest) == {}


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b'{"kind": "something.else", "version": 1, "files": {}}',
        b'{"kind": "keel.manifest", "version": 99, "files": {}}',
        b'{"kind": "keel.manifest", "version": 1, "files": []}',
        b'{"kind": "keel.manifest", "version": 1, "files": {"a": {"digest": "x", "size": 1}}}',
    ],
)
def test_read_manifest_rejects_objects_that_are_not_manifests(
    store: ArtifactStore, content: bytes
) -> None:
    blob = store.put_bytes(content)

    with pytest.raises(InvalidInput, match="not a Keel manifest"):
        store.read_manifest(blob.digest)


@pytest.mark.parametrize("rel", ["../escape.txt", "a/../../escape.txt", "/etc/passwd", "a//b"])
def test_a_manifest_cannot_write_outside_its_folder(
    store: ArtifactStore, tmp_path: Path, rel: str
) -> None:
    target = store.put_bytes(b"evil")
    document = {
        "kind": "keel.manifest",
        "version": 1,
        "files": {rel: {"digest": target.digest, "size": 4}},
    }
    manifest = store.put_bytes(json.dumps(document).encode())

    with pytest.raises(InvalidInput, match="unsafe path"):
        store.get_dir(manifest.digest, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_corrupt_object_is_refused_by_read_bytes(store: ArtifactStore) -> None:
    blob = store.put_bytes(b"precious model weights" * 1000)
    _corrupt(store, blob.digest)

    with pytest.raises(StorageError) as raised:
        store.read_bytes(blob.digest)

    message = str(raised.value)
    assert blob.digest in message
    assert f"objects/{blob.digest[:2]}/{blob.digest[2:]}" in message
    assert "re-uploading the file (log the artifact again) restores it" in message


def test_corrupt_object_never_produces_a_get_file_destination(
    store: ArtifactStore, tmp_path: Path
) -> None:
    blob = store.put_bytes(os.urandom(3 * MiB))
    _corrupt(store, blob.digest)
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.bin").write_bytes(b"previous version")

    with pytest.raises(StorageError, match="corrupt"):
        store.get_file(blob.digest, out / "new.bin")
    with pytest.raises(NotFound, match="corrupt"):  # it was moved into quarantine
        store.get_file(blob.digest, out / "kept.bin")

    assert sorted(p.name for p in out.iterdir()) == ["kept.bin"]  # no dst, no temp left
    assert (out / "kept.bin").read_bytes() == b"previous version"


@pytest.mark.parametrize("truncate", [False, True], ids=["flipped", "truncated"])
def test_corrupt_object_raises_at_the_end_of_open(store: ArtifactStore, truncate: bool) -> None:
    blob = store.put_bytes(os.urandom(3 * MiB))
    _corrupt(store, blob.digest, truncate=truncate)

    with store.open(blob.digest) as reader:
        assert len(reader.read(MiB)) == MiB  # the check runs once everything is read
        with pytest.raises(StorageError, match=blob.digest):
            reader.read()


def test_open_checks_the_digest_on_the_read_that_reaches_the_end(store: ArtifactStore) -> None:
    blob = store.put_bytes(b"0123456789")
    _corrupt(store, blob.digest)

    with store.open(blob.digest) as reader:
        assert reader.read(5) == b"01234"
        with pytest.raises(StorageError, match="log the artifact again"):
            reader.read(5)


def test_putting_the_content_again_repairs_a_truncated_object(store: ArtifactStore) -> None:
    data = os.urandom(10_000)
    blob = store.put_bytes(data)
    _corrupt(store, blob.digest, truncate=True)

    assert store.put_bytes(data) == blob
    assert store.read_bytes(blob.digest) == data


def _quarantine(store: ArtifactStore) -> dict[str, bytes]:
    """What the store moved aside into quarantine/, by file name."""
    if store.url.startswith("memory://"):
        fs = fsspec.filesystem("memory")
        folder = f"{_memory_root(store.url)}/quarantine"
        found = fs.find(folder) if fs.exists(folder) else []
        return {path.rsplit("/", 1)[1]: fs.cat_file(path) for path in found}
    folder = Path(store.url) / "quarantine"
    return {p.name: p.read_bytes() for p in folder.glob("*")} if folder.exists() else {}


def _read_with_get_file(store: ArtifactStore, digest: str) -> bytes:
    return store.get_file(digest, Path.cwd() / "restored.bin").read_bytes()


def _read_with_open(store: ArtifactStore, digest: str) -> bytes:
    with store.open(digest) as reader:
        return reader.read()


@pytest.mark.parametrize(
    "read",
    [ArtifactStore.read_bytes, _read_with_open, _read_with_get_file],
    ids=["read_bytes", "open", "get_file"],
)
@pytest.mark.parametrize("size", [10_000, 3 * MiB], ids=["small", "large"])
def test_a_corrupt_object_is_quarantined_so_putting_it_again_repairs_it(
    store: ArtifactStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    read: Callable[[ArtifactStore, str], bytes],
    size: int,
) -> None:
    monkeypatch.chdir(tmp_path)
    data = os.urandom(size)
    source = tmp_path / "model.bin"
    source.write_bytes(data)
    blob = store.put_file(source)
    _corrupt(store, blob.digest)  # same size: a put alone would see it stored and skip it

    with pytest.raises(StorageError) as raised:
        read(store, blob.digest)

    message = str(raised.value)
    assert "corrupt" in message and "quarantined" in message
    assert "re-uploading the file (log the artifact again) restores it" in message
    [(name, bad)] = _quarantine(store).items()
    assert name.startswith(f"{blob.digest}.") and name in message
    assert len(bad) == size and bad != data
    assert raised.value.context["quarantined"].endswith(name)
    assert not store.exists(blob.digest)

    assert store.put_file(source) == blob
    assert read(store, blob.digest) == data
    assert len(_quarantine(store)) == 1  # the repaired object reads clean


def test_reading_a_quarantined_object_says_where_it_went(store: ArtifactStore) -> None:
    blob = store.put_bytes(b"weights" * 100)
    _corrupt(store, blob.digest)
    with pytest.raises(StorageError):
        store.read_bytes(blob.digest)

    with pytest.raises(NotFound) as raised:
        store.read_bytes(blob.digest)

    [name] = _quarantine(store)
    assert "found it corrupt and moved it to" in str(raised.value)
    assert name in str(raised.value) and "re-uploading the file" in str(raised.value)


def test_a_corrupt_object_replaced_while_read_is_not_quarantined(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    data = os.urandom(3 * MiB)
    blob = store.put_bytes(data)
    _corrupt(store, blob.digest, truncate=True)  # a size change: a put replaces it
    final = tmp_path / "store" / "objects" / blob.digest[:2] / blob.digest[2:]

    with store.open(blob.digest) as reader:
        reader.read(MiB)
        assert store.put_bytes(data) == blob  # a writer repairs it under the reader
        with pytest.raises(StorageError, match="another process has since moved it aside"):
            reader.read()

    assert _quarantine(store) == {}
    assert final.read_bytes() == data
    assert store.read_bytes(blob.digest) == data


def test_missing_object_is_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    digest = blake3.blake3(b"never stored").hexdigest()

    assert not store.exists(digest)
    for call in (
        lambda: store.read_bytes(digest),
        lambda: store.size(digest),
        lambda: store.open(digest),
        lambda: store.get_file(digest, tmp_path / "x"),
        lambda: store.read_manifest(digest),
    ):
        with pytest.raises(NotFound, match=digest):
            call()
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "digest",
    ["../../../../etc/passwd", "abc", "A" * 64, "g" * 64, "0" * 63, "0" * 65, "0" * 62 + "/x"],
)
def test_malformed_digest_is_invalid_input(
    store: ArtifactStore, tmp_path: Path, digest: str
) -> None:
    for call in (
        lambda: store.exists(digest),
        lambda: store.read_bytes(digest),
        lambda: store.open(digest),
        lambda: store.get_file(digest, tmp_path / "x"),
        lambda: store.get_dir(digest, tmp_path / "d"),
    ):
        with pytest.raises(InvalidInput, match="64 lowercase hex"):
            call()


def test_put_dir_on_a_missing_path_names_it(store: ArtifactStore, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"

    with pytest.raises(NotFound, match=f"no such directory: {missing}"):
        store.put_dir(missing)
    with pytest.raises(NotFound, match="no such file"):
        store.put_file(missing)


def test_put_dir_and_put_file_refuse_the_wrong_kind_of_path(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    (tmp_path / "file.txt").write_text("x")

    with pytest.raises(InvalidInput, match="use put_file"):
        store.put_dir(tmp_path / "file.txt")
    with pytest.raises(InvalidInput, match="use put_dir"):
        store.put_file(tmp_path)


def test_put_dir_skips_nothing_silently(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    source = tmp_path / "src"
    source.mkdir()
    (source / "ok.txt").write_text("ok")
    (source / "dangling").symlink_to(tmp_path / "gone")

    with pytest.raises(StorageError, match=r"dangling.*broken symlink"):
        store.put_dir(source)

    (source / "dangling").unlink()
    os.mkfifo(source / "pipe")
    with pytest.raises(InvalidInput, match=r"pipe.*not a regular file"):
        store.put_dir(source)

    (source / "pipe").unlink()
    (source / "sub").mkdir()
    (source / "sub" / "loop").symlink_to(source)
    with pytest.raises(InvalidInput, match="symlink loop"):
        store.put_dir(source)


def test_unwritable_store_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("a file where the store should be")
    store = ArtifactStore(tmp_path / "not-a-folder")

    with pytest.raises(StorageError, match="cannot write to the artifact store"):
        store.put_bytes(b"x")


def test_file_url_is_the_local_folder(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}/store")

    blob = store.put_bytes(b"via file://")

    assert (tmp_path / "store" / "objects" / blob.digest[:2] / blob.digest[2:]).is_file()


def test_hash_file_stores_nothing(tmp_path: Path) -> None:
    source = tmp_path / "f.bin"
    source.write_bytes(os.urandom(9 * MiB))  # above the multithreaded-hash threshold

    blob = hash_file(source)

    assert blob == Blob(digest=blake3.blake3(source.read_bytes()).hexdigest(), size=9 * MiB)
    assert not (tmp_path / "objects").exists()
    with pytest.raises(NotFound):
        hash_file(tmp_path / "missing")


def test_remove_stale_tmp_leaves_recent_writes_alone(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    store.put_bytes(b"an object")
    (tmp_path / "store" / "tmp").mkdir()  # what a large write creates
    old = tmp_path / "store" / "tmp" / "1-dead.part"
    old.write_bytes(b"partial")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    recent = tmp_path / "store" / "tmp" / "2-busy.part"
    recent.write_bytes(b"in progress")

    assert store.remove_stale_tmp() == 1
    assert sorted(p.name for p in (tmp_path / "store" / "tmp").iterdir()) == ["2-busy.part"]


def test_eight_processes_putting_at_once_all_succeed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    shared = [tmp_path / f"shared{i}.bin" for i in range(2)]
    unique = [tmp_path / f"unique{i}.bin" for i in range(8)]
    for path in shared + unique:
        path.write_bytes(os.urandom(3 * MiB))
    jobs = []
    for worker in range(8):
        jobs += [(store, shared[0]), (store, shared[1]), (store, unique[worker])]

    with multiprocessing.get_context("spawn").Pool(8) as pool:
        blobs = pool.starmap(ArtifactStore.put_file, jobs, chunksize=1)

    assert blobs == [hash_file(path) for _, path in jobs]
    assert len(_objects(store)) == 10
    assert _tmp_files(store) == []
    for path in shared + unique:
        assert store.read_bytes(hash_file(path).digest) == path.read_bytes()


# The child writes 500 MiB slowly so that the test can kill it mid-write.
_SLOW_STREAM = """
class Stream:
    def __init__(self, delay):
        self.delay, self.i = delay, 0

    def read(self, n):
        if self.i == 500:
            return b""
        time.sleep(self.delay)
        self.i += 1
        return self.i.to_bytes(8, "little") * (n // 8)
"""


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_no_object(tmp_path: Path) -> None:
    root = tmp_path / "store"
    script = (
        "import time\nfrom keel.artifacts import ArtifactStore\n"
        + _SLOW_STREAM
        + f"ArtifactStore({str(root)!r}, fsync=False).put_stream(Stream(0.02))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = list((root / "tmp").glob("*.part")) if (root / "tmp").exists() else []
            if parts and parts[0].stat().st_size >= 16 * MiB:
                break
            assert child.poll() is None, "the writer ended before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("the writer never got going")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    store = ArtifactStore(root, fsync=False)
    assert _objects(store) == []
    assert len(_tmp_files(store)) == 1  # the orphan, until cleaned
    assert store.remove_stale_tmp(older_than=0) == 1

    namespace: dict[str, object] = {"time": time}
    exec(_SLOW_STREAM, namespace)
    blob = store.put_stream(namespace["Stream"](0))  # type: ignore[operator]

    assert blob.size == 500 * MiB
    assert len(_objects(store)) == 1
    assert _tmp_files(store) == []
    with store.open(blob.digest) as reader:
        assert sum(len(chunk) for chunk in reader) == 500 * MiB


# -- listing, deleting, verifying, batches ------------------------------------------------------


def test_iter_objects_lists_every_object_and_nothing_else(store: ArtifactStore) -> None:
    blobs = {store.put_bytes(f"object {i}".encode() * (i + 1)) for i in range(40)}
    corrupt = store.put_bytes(b"soon corrupt")
    _corrupt(store, corrupt.digest)
    with pytest.raises(StorageError):
        store.read_bytes(corrupt.digest)  # moved into quarantine/
    if store.url.startswith("memory://"):
        fs = fsspec.filesystem("memory")
        root = _memory_root(store.url)
        fs.pipe_file(f"{root}/tmp/1-busy.part", b"in progress")
        fs.pipe_file(f"{root}/objects/ab/not-a-digest", b"stray")
    else:
        (Path(store.url) / "tmp").mkdir(exist_ok=True)  # small objects never need it
        (Path(store.url) / "tmp" / "1-busy.part").write_bytes(b"in progress")
        (Path(store.url) / "objects" / "ab").mkdir(exist_ok=True)
        (Path(store.url) / "objects" / "ab" / "not-a-digest").write_bytes(b"stray")

    listed = list(store.iter_objects())

    assert sorted(listed, key=lambda b: b.digest) == sorted(blobs, key=lambda b: b.digest)
    assert all(isinstance(blob, Blob) for blob in listed)


def test_iter_objects_of_an_empty_store_is_empty(store: ArtifactStore) -> None:
    assert list(store.iter_objects()) == []


def test_delete_frees_the_object_and_reports_its_size(store: ArtifactStore) -> None:
    kept = store.put_bytes(b"kept")
    gone = store.put_bytes(b"x" * 5000)

    assert store.delete(gone.digest) == 5000
    assert store.delete(gone.digest) == 0  # already gone
    assert not store.exists(gone.digest)
    assert [b.digest for b in store.iter_objects()] == [kept.digest]
    with pytest.raises(NotFound):
        store.read_bytes(gone.digest)
    assert store.put_bytes(b"x" * 5000) == gone  # putting it again restores it
    with pytest.raises(InvalidInput):
        store.delete("../../etc/passwd")


@pytest.mark.parametrize("size", [10_000, 3 * MiB], ids=["small", "large"])
def test_verify_checks_content_and_quarantines_a_corrupt_object(
    store: ArtifactStore, size: int
) -> None:
    blob = store.put_bytes(os.urandom(size))
    assert store.verify(blob.digest) == blob

    _corrupt(store, blob.digest)
    with pytest.raises(StorageError, match="quarantined"):
        store.verify(blob.digest)
    assert not store.exists(blob.digest)
    with pytest.raises(NotFound, match="corrupt"):
        store.verify(blob.digest)


def test_path_of_is_the_local_object_file(store: ArtifactStore) -> None:
    blob = store.put_bytes(b"content at a path")
    missing = blake3.blake3(b"never stored").hexdigest()

    path = store.path_of(blob.digest)

    assert store.path_of(missing) is None
    if store.url.startswith("memory://"):
        assert path is None
    else:
        assert path is not None
        assert Path(path).read_bytes() == b"content at a path"
        assert os.path.isabs(path)


class _FsyncSpy:
    """Counts real os.fsync calls (they still happen) and syncfs calls at batch ends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import keel.artifacts.backends as backends

        self.fsyncs = 0
        self.syncs = 0
        real_fsync, real_syncfs = os.fsync, backends._syncfs

        def fsync(fd: int) -> None:
            self.fsyncs += 1
            real_fsync(fd)

        def syncfs(fd: int) -> int:
            self.syncs += 1
            return real_syncfs(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(backends, "_syncfs", syncfs)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs is Linux-only")
def test_batch_defers_fsyncs_to_one_flush_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(tmp_path / "store")
    spy = _FsyncSpy(monkeypatch)
    store.put_bytes(b"outside a batch")
    assert spy.fsyncs == 2  # the object and its folder

    with store.batch():
        blobs = [store.put_bytes(f"inside {i}".encode()) for i in range(50)]
        assert (spy.fsyncs, spy.syncs) == (2, 0)
    assert spy.syncs == 1  # once, when the block ended

    store.put_bytes(b"after the batch")
    assert spy.fsyncs == 4  # per-object durability is back
    expected = [f"inside {i}".encode() for i in range(50)]
    assert [store.read_bytes(b.digest) for b in blobs] == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs is Linux-only")
def test_batch_from_threads_and_nested_flushes_at_each_normal_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = ArtifactStore(tmp_path / "store")
    files = []
    for i in range(200):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(os.urandom(100 + i))
        files.append(path)
    spy = _FsyncSpy(monkeypatch)

    def worker(chunk: list[Path]) -> list[Blob]:
        with store.batch():  # each thread its own (nested) batch
            return [store.put_file(p) for p in chunk]

    with store.batch(), ThreadPoolExecutor(4) as pool:
        results = list(pool.map(worker, [files[i::4] for i in range(4)]))

    assert spy.syncs >= 1  # whichever batch ended first flushed what was written so far
    assert spy.fsyncs < len(files)  # never one per object (at most a folder each)
    backend = store._backend
    assert backend._unsynced == 0 and not backend._unsynced_dirs  # type: ignore[union-attr]
    stored = {b.digest for chunk in results for b in chunk}
    assert stored == {b.digest for b in store.iter_objects()}
    assert {hash_file(p).digest for p in files} == stored


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs is Linux-only")
def test_a_batch_of_large_objects_flushes_them_and_their_folders_not_the_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.artifacts.store import KERNEL_COPY_MIN_SIZE

    store = ArtifactStore(tmp_path / "store")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(KERNEL_COPY_MIN_SIZE))
    spy = _FsyncSpy(monkeypatch)

    with store.batch():
        blob = store.put_file(source)
        assert spy.fsyncs == 1  # its data, at once: one fsync is nothing beside megabytes

    assert (spy.fsyncs, spy.syncs) == (2, 0)  # then its folder; no syncfs of everything
    assert store.verify(blob.digest) == blob


def test_a_batch_that_raises_flushes_nothing_but_keeps_its_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(tmp_path / "store")
    spy = _FsyncSpy(monkeypatch)

    with pytest.raises(RuntimeError, match="caller failed"), store.batch():
        blob = store.put_bytes(b"written before the failure")
        raise RuntimeError("caller failed")

    assert spy.syncs == 0
    assert store.read_bytes(blob.digest) == b"written before the failure"
    store.put_bytes(b"next write")
    assert spy.fsyncs == 2  # the batch is over despite the error


def test_batch_on_an_fsspec_store_just_writes(tmp_path: Path) -> None:
    url = f"memory://keel-test-{uuid.uuid4().hex}"
    store = ArtifactStore(url)
    try:
        with store.batch() as same:
            blob = same.put_bytes(b"memory")
        assert store.read_bytes(blob.digest) == b"memory"
    finally:
        fsspec.filesystem("memory").rm(_memory_root(url), recursive=True)


# -- kernel copies (local stores, files of KERNEL_COPY_MIN_SIZE and more) ------------------------


def test_a_large_file_is_copied_by_the_kernel_and_named_by_its_copy(tmp_path: Path) -> None:
    from keel.artifacts.store import KERNEL_COPY_MIN_SIZE

    source = tmp_path / "big.bin"
    content = os.urandom(KERNEL_COPY_MIN_SIZE + 3 * MiB + 17)  # not a multiple of any step
    source.write_bytes(content)
    store = ArtifactStore(tmp_path / "store")

    blob = store.put_file(source)

    assert blob == Blob(digest=blake3.blake3(content).hexdigest(), size=len(content))
    assert store.read_bytes(blob.digest) == content
    assert _tmp_files(store) == []
    assert store.put_file(source) == blob  # again: the copy is dropped
    assert _tmp_files(store) == [] and len(_objects(store)) == 1
    mode = os.stat(store.path_of(blob.digest) or "").st_mode
    assert mode & 0o222 == 0  # objects are read-only


def test_copy_and_hash_steps_through_a_file_larger_than_one_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keel.artifacts.copying as copying

    monkeypatch.setattr(copying, "KERNEL_COPY_STEP", 1 << 16)  # many steps, same code path
    content = os.urandom(3 * MiB + 5)
    (tmp_path / "src").write_bytes(content)
    hasher = blake3.blake3()
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "w+b") as dst:
        copied = copying.copy_and_hash(src.fileno(), dst.fileno(), hasher)

    assert copied == len(content)
    assert (tmp_path / "dst").read_bytes() == content
    assert hasher.hexdigest() == blake3.blake3(content).hexdigest()


def test_editing_a_large_downloaded_file_never_changes_the_object(tmp_path: Path) -> None:
    from keel.artifacts.store import KERNEL_COPY_MIN_SIZE

    content = os.urandom(KERNEL_COPY_MIN_SIZE + 1)
    store = ArtifactStore(tmp_path / "store")
    blob = store.put_bytes(content)
    out = store.get_file(blob.digest, tmp_path / "out.bin")
    assert out.read_bytes() == content
    assert os.stat(out).st_ino != os.stat(store.path_of(blob.digest) or "").st_ino

    with open(out, "r+b") as edited:  # in place, as an editor or numpy.memmap would
        edited.write(b"EDITED")

    assert store.verify(blob.digest) == blob
    assert store.read_bytes(blob.digest) == content


def test_a_corrupt_large_object_never_produces_a_download(tmp_path: Path) -> None:
    from keel.artifacts.store import KERNEL_COPY_MIN_SIZE

    store = ArtifactStore(tmp_path / "store")
    blob = store.put_bytes(os.urandom(KERNEL_COPY_MIN_SIZE + 1))
    _corrupt(store, blob.digest)
    (tmp_path / "kept.bin").write_bytes(b"the user's file")

    with pytest.raises(StorageError, match="quarantined"):
        store.get_file(blob.digest, tmp_path / "kept.bin")

    assert (tmp_path / "kept.bin").read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.bin", "store"]
    assert not store.exists(blob.digest)
