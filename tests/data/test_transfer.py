"""``keel data push`` and ``pull`` against a local-folder remote and a ``memory://`` one: only
missing objects move, interrupted transfers (``kill -9`` of a real process) resume, corrupt
and missing objects are reported by name while everything else still moves, and a second
working folder with the same pointers and config pulls the data."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from keel.artifacts import ArtifactStore
from keel.data import add, status
from keel.data.remotes import add_remote, get_remote, open_store
from keel.data.transfer import IncompleteTransfer, pull, push
from keel.errors import InvalidInput, NotFound, StorageError
from keel.settings import Settings
from tests.conftest import run_main


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    past = time.time_ns() - 60_000_000_000  # outside the stat cache's racy window
    os.utime(path, ns=(past, past))


def _make_data(root: Path, files: int = 12) -> dict[str, bytes]:
    """``images/`` (files, two sharing content) and ``table.csv``; returns path -> bytes."""
    content = {f"images/{i % 3}/img{i}.bin": os.urandom(100 + i) for i in range(files)}
    content["images/copy.bin"] = content["images/0/img0.bin"]
    content["table.csv"] = b"a,b\n1,2\n"
    for rel, data in content.items():
        _write(root / rel, data)
    return content


def _tree(root: Path, under: str) -> dict[str, bytes]:
    base = root / under
    if base.is_file():
        return {under: base.read_bytes()}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def _forget_local(root: Path, home: Path) -> None:
    """Delete the working copies and the local store: only pointers and config remain."""
    shutil.rmtree(root / "images")
    (root / "table.csv").unlink()
    shutil.rmtree(home / "artifacts")


def _remote_dir(tmp_path: Path) -> tuple[str, Path]:
    """A folder remote beside the project (tmp_path), as a relative URL and its path."""
    name = f"{tmp_path.name}-remote"
    return f"../{name}", tmp_path.parent / name


@pytest.fixture(params=["folder", "memory"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "folder":
        yield _remote_dir(tmp_path)[0]  # relative to the project folder (tmp_path)
        return
    name = f"keel-test-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    from fsspec.implementations.memory import MemoryFileSystem

    MemoryFileSystem().rm(f"/{name}", recursive=True)


def test_push_then_pull_moves_only_missing_objects(
    home: Path, tmp_path: Path, remote_url: str
) -> None:
    content = _make_data(tmp_path)
    add(["images", "table.csv"])
    add_remote("origin", remote_url)
    remote = open_store(get_remote("origin"))
    # 12 distinct image objects + their manifest + the table
    expected = 14  # 12 distinct images (copy.bin repeats one), their manifest, the table

    result = push()
    assert (result.transferred, result.present, result.problems) == (expected, 0, [])
    assert result.transferred_bytes == sum(b.size for b in remote.iter_objects())
    assert result.pointers == 2

    again = push()
    assert (again.transferred, again.present) == (0, expected)
    assert again.present_bytes == result.transferred_bytes

    # Only what the remote lost is sent again.
    lost = sorted(b.digest for b in remote.iter_objects())[:3]
    for digest in lost:
        remote.delete(digest)
    third = push(jobs=2)
    assert (third.transferred, third.present) == (3, expected - 3)
    assert {b.digest for b in remote.iter_objects()} >= set(lost)

    _forget_local(tmp_path, home)
    pulled = pull()
    assert (pulled.transferred, pulled.present, pulled.problems) == (expected, 0, [])
    assert _tree(tmp_path, "images") == {k: v for k, v in content.items() if k != "table.csv"}
    assert (tmp_path / "table.csv").read_bytes() == content["table.csv"]
    assert all(s.up_to_date for s in status())

    # A pull with everything there fetches nothing and writes nothing.
    noop = pull()
    assert (noop.transferred, noop.present) == (0, expected)
    assert sum(len(c.restored) for c in noop.checkout) == 0


def test_push_and_pull_named_paths_only(home: Path, tmp_path: Path) -> None:
    _make_data(tmp_path)
    add(["images", "table.csv"])
    add_remote("origin", _remote_dir(tmp_path)[0])
    result = push(["table.csv"])
    assert (result.pointers, result.transferred) == (1, 1)
    result = push(["table.csv.keel", "images"])
    assert result.pointers == 2 and result.present == 1
    (tmp_path / "table.csv").unlink()
    result = pull(["table.csv"], jobs=1)
    assert (result.pointers, result.transferred, result.present) == (1, 0, 1)
    assert (tmp_path / "table.csv").exists()
    with pytest.raises(NotFound, match="no such file, folder or pointer: nothing"):
        push(["nothing"])
    with pytest.raises(InvalidInput, match="--jobs must be at least 1"):
        push(jobs=0)


def test_pull_without_checkout_only_fills_the_store(home: Path, tmp_path: Path) -> None:
    _make_data(tmp_path)
    add(["images", "table.csv"])
    add_remote("origin", _remote_dir(tmp_path)[0])
    push()
    _forget_local(tmp_path, home)
    result = pull(checkout=False)
    assert result.transferred > 0 and result.checkout == []
    assert not (tmp_path / "images").exists()


def test_missing_local_objects_are_named_and_the_rest_is_pushed(home: Path, tmp_path: Path) -> None:
    content = _make_data(tmp_path)
    add(["images", "table.csv"])
    add_remote("origin", _remote_dir(tmp_path)[0])
    local = ArtifactStore(Settings().artifacts_url)
    lost = [p for p in sorted(content) if p.startswith("images/1/")][:1]
    digest = local.read_manifest(_pointer_hash(tmp_path / "images.keel"))[lost[0][7:]].digest
    local.delete(digest)
    with pytest.raises(IncompleteTransfer) as raised:
        push()
    result = raised.value.result
    [problem] = result.problems
    assert (problem.digest, problem.pointer, problem.path) == (digest, "images.keel", lost[0])
    assert problem.reason == "missing"
    message = str(raised.value)
    assert "1 object could not be sent" in message and lost[0] in message
    assert "keel data add PATH" in message and "keel data pull" in message
    remote = ArtifactStore(_remote_dir(tmp_path)[1])
    assert result.transferred == sum(1 for _ in remote.iter_objects()) > 10
    assert not remote.exists(digest)


def test_corrupt_remote_object_is_refused_and_the_rest_is_pulled(
    home: Path, tmp_path: Path
) -> None:
    content = _make_data(tmp_path)
    add(["images", "table.csv"])
    add_remote("origin", _remote_dir(tmp_path)[0])
    push()
    remote = ArtifactStore(_remote_dir(tmp_path)[1])
    table_digest = _pointer_hash(tmp_path / "table.csv.keel")
    bad = Path(remote.path_of(table_digest) or "")
    bad.chmod(0o644)
    bad.write_bytes(b"a,b\n6,6\n")  # same size, other content
    _forget_local(tmp_path, home)

    with pytest.raises(IncompleteTransfer) as raised:
        pull()
    [problem] = raised.value.result.problems
    assert (problem.digest, problem.pointer, problem.reason) == (
        table_digest,
        "table.csv.keel",
        "corrupt",
    )
    assert table_digest in str(raised.value) and "origin" in str(raised.value)
    local = ArtifactStore(Settings().artifacts_url)
    assert not local.exists(table_digest)  # nothing corrupt entered the local store
    assert not (tmp_path / "table.csv").exists()
    # Everything else arrived and was checked out.
    assert _tree(tmp_path, "images") == {k: v for k, v in content.items() if k != "table.csv"}
    # The remote moved the bad copy aside, so pushing the good one from elsewhere repairs it.
    assert not remote.exists(table_digest)


def test_objects_missing_on_the_remote_are_listed(home: Path, tmp_path: Path) -> None:
    _make_data(tmp_path)
    add(["images", "table.csv"])
    add_remote("origin", _remote_dir(tmp_path)[0])
    push()
    remote = ArtifactStore(_remote_dir(tmp_path)[1])
    manifest = _pointer_hash(tmp_path / "images.keel")
    remote.delete(manifest)
    _forget_local(tmp_path, home)
    with pytest.raises(IncompleteTransfer) as raised:
        pull()
    [problem] = raised.value.result.problems
    assert (problem.digest, problem.path, problem.reason) == (manifest, "images/", "missing")
    assert "the listing of images/" in str(raised.value)
    assert "keel data push" in str(raised.value)
    assert (tmp_path / "table.csv").exists() and not (tmp_path / "images").exists()


def test_pull_from_a_folder_that_does_not_exist(home: Path, tmp_path: Path) -> None:
    _make_data(tmp_path)
    add(["table.csv"])
    add_remote("origin", "../never-pushed")
    with pytest.raises(NotFound, match="does not exist"):
        pull()


def test_a_clone_pulls_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Alice adds and pushes; Bob gets only what git would give him (pointers, .gitignore
    files, .keel/config.yaml and .keel/.gitignore) and pulls."""
    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEEL_CAPTURE_SOURCE", "false")
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    alice.mkdir()
    (alice / ".keel").mkdir()
    monkeypatch.chdir(alice)
    content = _make_data(alice)
    add(["images", "table.csv"])
    add_remote("origin", _remote_dir(tmp_path)[0])
    push()

    subprocess.run(["git", "init", "-q", str(alice)], check=True)
    subprocess.run(["git", "-C", str(alice), "add", "-A"], check=True)
    committed = subprocess.run(
        ["git", "-C", str(alice), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(committed) == [
        ".gitignore",
        ".keel/.gitignore",
        ".keel/config.yaml",
        "images.keel",
        "table.csv.keel",
    ]
    identity = ["-c", "user.name=A", "-c", "user.email=a@example.com"]
    subprocess.run(["git", "-C", str(alice), *identity, "commit", "-qm", "data"], check=True)
    subprocess.run(["git", "clone", "-q", str(alice), str(bob)], check=True)
    monkeypatch.chdir(bob)
    result = run_main(CliRunner(), ["data", "pull"])
    assert result.exit_code == 0, result.output
    assert _tree(bob, "images") == {k: v for k, v in content.items() if k != "table.csv"}
    assert (bob / "table.csv").read_bytes() == content["table.csv"]


# -- interrupted transfers ---------------------------------------------------------------------


def _start_and_kill(args: list[str], cwd: Path, store: Path, *, after: int) -> None:
    """Run ``keel ARGS`` and SIGKILL it once ``store`` holds ``after`` objects (or fail if it
    ends first: the test would prove nothing)."""
    objects = store / "objects"
    process = subprocess.Popen(
        [sys.executable, "-m", "keel", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"keel {' '.join(args)} ended before it was killed")
            if objects.is_dir() and sum(len(os.listdir(d)) for d in objects.iterdir()) >= after:
                break
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL


def _check_every_object(store: ArtifactStore) -> int:
    """Every object visible in the store matches its digest; how many there are."""
    objects = list(store.iter_objects())
    for blob in objects:
        assert store.verify(blob.digest) == blob
    return len(objects)


@pytest.mark.slow
def test_killed_push_and_pull_resume(home: Path, tmp_path: Path) -> None:
    total = 1500
    for i in range(total):
        _write(tmp_path / "many" / f"{i % 20}" / f"{i}.bin", os.urandom(2000))
    add(["many"])
    add_remote("origin", _remote_dir(tmp_path)[0])
    remote_root = _remote_dir(tmp_path)[1]
    remote = ArtifactStore(remote_root)

    _start_and_kill(["data", "push", "--jobs", "1"], tmp_path, remote_root, after=200)
    sent = _check_every_object(remote)
    assert 200 <= sent < total + 1
    result = push()
    assert result.present == sent and result.transferred == total + 1 - sent
    assert _check_every_object(remote) == total + 1

    shutil.rmtree(tmp_path / "many")
    local_root = home / "artifacts"
    shutil.rmtree(local_root)
    _start_and_kill(["data", "pull", "--jobs", "1"], tmp_path, local_root, after=200)
    local = ArtifactStore(local_root)
    fetched = _check_every_object(local)
    assert 200 <= fetched < total + 1
    result = pull()
    assert result.present == fetched and result.transferred == total + 1 - fetched
    assert _check_every_object(local) == total + 1
    assert len(list((tmp_path / "many").rglob("*.bin"))) == total
    assert all(s.up_to_date for s in status())


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_push_and_pull(cli: CliRunner, home: Path, tmp_path: Path) -> None:
    _make_data(tmp_path)
    assert run_main(cli, ["data", "add", "images", "table.csv"]).exit_code == 0
    result = run_main(cli, ["data", "push"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: no remote is configured; add one with")

    assert run_main(cli, ["remote", "add", "origin", _remote_dir(tmp_path)[0]]).exit_code == 0
    result = run_main(cli, ["data", "push", "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Sent 14 objects (")
    assert "to origin; 0 objects (0 B) already on the remote" in result.output
    result = run_main(cli, ["data", "push", "-r", "origin"])
    assert result.output.startswith("Sent 0 objects (0 B) to origin; 14 objects (")

    _forget_local(tmp_path, home)
    result = run_main(cli, ["data", "pull"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("Fetched 14 objects (")
    assert "Checked out 2 paths: 14 files written" in result.output

    result = run_main(cli, ["data", "pull", "--remote", "nah"])
    assert result.exit_code == 1 and "no remote named 'nah'" in result.output
    result = run_main(cli, ["data", "push", "--jobs", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_cli_reports_counts_before_the_error(cli: CliRunner, home: Path, tmp_path: Path) -> None:
    _make_data(tmp_path)
    assert run_main(cli, ["data", "add", "images", "table.csv"]).exit_code == 0
    assert run_main(cli, ["remote", "add", "origin", _remote_dir(tmp_path)[0]]).exit_code == 0
    ArtifactStore(home / "artifacts").delete(_pointer_hash(tmp_path / "table.csv.keel"))
    result = run_main(cli, ["data", "push"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Sent 13 objects")
    assert lines[1].startswith("Error: 1 object could not be sent (13 others were)")
    assert lines[2].startswith("  table.csv.keel: table.csv: object ")


def _pointer_hash(pointer: Path) -> str:
    import yaml

    return str(yaml.safe_load(pointer.read_text())["hash"])


def test_large_objects_stream_and_are_checked(home: Path, tmp_path: Path) -> None:
    big = os.urandom(9 << 20)  # above STREAM_MIN: streamed, not read whole
    _write(tmp_path / "big.bin", big)
    add(["big.bin"])
    url, remote_root = _remote_dir(tmp_path)
    add_remote("origin", url)
    assert push().transferred_bytes == len(big)
    (tmp_path / "big.bin").unlink()
    shutil.rmtree(home / "artifacts")
    assert pull().transferred_bytes == len(big)
    assert (tmp_path / "big.bin").read_bytes() == big

    digest = _pointer_hash(tmp_path / "big.bin.keel")
    bad = Path(ArtifactStore(remote_root).path_of(digest) or "")
    bad.chmod(0o644)
    with open(bad, "r+b") as out:
        out.seek(5 << 20)
        out.write(b"X")
    (tmp_path / "big.bin").unlink()
    shutil.rmtree(home / "artifacts")
    with pytest.raises(IncompleteTransfer) as raised:
        pull()
    assert raised.value.result.problems[0].reason == "corrupt"
    assert not ArtifactStore(home / "artifacts").exists(digest)
    assert not list((home / "artifacts").rglob("*.part"))  # the partial copy was discarded


def test_a_remote_that_cannot_be_written_stops_the_push(home: Path, tmp_path: Path) -> None:
    _make_data(tmp_path)
    add(["images", "table.csv"])
    url, remote_root = _remote_dir(tmp_path)
    remote_root.mkdir()
    (remote_root / "objects").write_text("not a folder")
    add_remote("origin", url)
    with pytest.raises(StorageError, match="cannot write to the artifact store") as raised:
        push()
    assert not isinstance(raised.value, IncompleteTransfer)


def test_an_object_two_pointers_share_fails_both(home: Path, tmp_path: Path) -> None:
    for name, data in (("a.csv", b"same\n"), ("b.csv", b"same\n"), ("c.csv", b"other\n")):
        _write(tmp_path / name, data)
    add(["a.csv", "b.csv", "c.csv"])
    url, remote_root = _remote_dir(tmp_path)
    add_remote("origin", url)
    assert push().transferred == 2
    ArtifactStore(remote_root).delete(_pointer_hash(tmp_path / "a.csv.keel"))
    for name in ("a.csv", "b.csv", "c.csv"):
        (tmp_path / name).unlink()
    shutil.rmtree(home / "artifacts")
    with pytest.raises(IncompleteTransfer) as raised:
        pull()
    [problem] = raised.value.result.problems
    assert (problem.pointer, problem.reason) == ("a.csv.keel", "missing")
    assert [c.path for c in raised.value.result.checkout] == ["c.csv"]
    assert (tmp_path / "c.csv").exists()
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "b.csv").exists()


def test_an_object_store_is_listed_once_not_asked_per_object(home: Path, tmp_path: Path) -> None:
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    calls = {"info": 0, "find": 0}

    class CountingMemory(MemoryFileSystem):
        """fsspec's memory filesystem, counting the requests an object store would get."""

        protocol = ("countmem",)

        def info(self, path, **kwargs):  # type: ignore[no-untyped-def]
            calls["info"] += 1
            return super().info(path, **kwargs)

        def find(self, path, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls["find"] += 1
            return super().find(path, *args, **kwargs)

    fsspec.register_implementation("countmem", CountingMemory, clobber=True)
    name = f"keel-test-{uuid.uuid4().hex[:8]}"
    try:
        for i in range(100):
            _write(tmp_path / "many" / f"{i}.bin", os.urandom(50))
        add(["many"])
        add_remote("origin", f"countmem://{name}")
        assert push().transferred == 101
        calls.update(info=0, find=0)
        again = push()
        assert (again.transferred, again.present) == (0, 101)
        assert calls["find"] == 1 and calls["info"] < 5  # not one request per object
    finally:
        CountingMemory().rm(f"countmem://{name}", recursive=True)


def test_temp_files_of_long_dead_transfers_are_removed(home: Path, tmp_path: Path) -> None:
    _make_data(tmp_path)
    add(["table.csv"])
    url, remote_root = _remote_dir(tmp_path)
    add_remote("origin", url)
    stores = (remote_root, home / "artifacts")
    for root in stores:
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        old, fresh = root / "tmp" / "1-old.part", root / "tmp" / "2-fresh.part"
        old.write_bytes(b"half")
        fresh.write_bytes(b"half")
        two_days_ago = time.time() - 2 * 24 * 3600
        os.utime(old, (two_days_ago, two_days_ago))
    push()  # cleans the remote's tmp/
    assert sorted(p.name for p in (remote_root / "tmp").iterdir()) == ["2-fresh.part"]
    assert len(list((home / "artifacts" / "tmp").iterdir())) == 2
    pull()  # cleans the local store's
    assert sorted(p.name for p in (home / "artifacts" / "tmp").iterdir()) == ["2-fresh.part"]
