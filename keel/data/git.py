"""Reading pointer files from git: the repository's root, one pointer as committed in a
revision (``keel data diff HEAD~1:images``), and every pointer in every commit (``keel data gc
--all-commits``).

Everything goes through the ``git`` command (no library), with content read by one long-lived
``git cat-file --batch`` process, so a history of many commits costs one process, not one per
commit.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO, NamedTuple

from keel.data.models import POINTER_SUFFIX
from keel.errors import InvalidInput, NotFound, StorageError

__all__ = [
    "CommittedPointer",
    "commit_of",
    "committed_pointers",
    "read_committed",
    "run_git",
    "toplevel",
]


_SUFFIX = POINTER_SUFFIX.encode()


class CommittedPointer(NamedTuple):
    """The content of a pointer file as some commit holds it (one commit and path that hold it,
    to name in messages)."""

    commit: str
    path: str
    content: bytes


def run_git(args: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """``git ARGS`` with its output captured; it may fail (check ``returncode``).

    Args:
        args: the arguments after ``git``.
        cwd: where to run it; default the current folder.

    Returns:
        The completed process, stdout and stderr as bytes.

    Raises:
        StorageError: git is not installed.

    Example:
        >>> run_git(["rev-parse", "HEAD"]).stdout  # doctest: +SKIP
        b'a3f09b12...\n'
    """
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError:
        raise StorageError("git is not installed (or not on PATH)") from None


def toplevel(cwd: Path | None = None) -> Path | None:
    """The root of the git working tree holding ``cwd`` (default: the current folder).

    Returns:
        The root, or None outside a git repository (or when git is not installed).

    Example:
        >>> toplevel()  # doctest: +SKIP
        PosixPath('/home/me/project')
    """
    try:
        completed = run_git(["rev-parse", "--show-toplevel"], cwd=cwd)
    except StorageError:
        return None
    if completed.returncode != 0:
        return None
    return Path(os.fsdecode(completed.stdout.rstrip(b"\n")))


def commit_of(revision: str) -> str:
    """The commit a revision (branch, tag, ``HEAD~2``, hash) names, as a full hash.

    Args:
        revision: anything ``git rev-parse`` takes that names a commit.

    Returns:
        The commit's full hash.

    Raises:
        InvalidInput: the current folder is not in a git repository.
        NotFound: no such revision.

    Example:
        >>> commit_of("HEAD~1")  # doctest: +SKIP
        'a3f09b12c0...'
    """
    if toplevel() is None:
        raise InvalidInput(
            f"{Path.cwd()} is not in a git repository: REV:PATH reads pointers committed to git "
            "(compare working pointers by their paths instead)"
        )
    completed = run_git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"]
    )
    if completed.returncode != 0:
        raise NotFound(
            f"unknown git revision {revision!r} (a branch, tag, commit or HEAD~N)",
            revision=revision,
        )
    return completed.stdout.decode().strip()


def read_committed(commit: str, path: str) -> bytes | None:
    """The content of a file as a commit holds it.

    Args:
        commit: a commit hash (or any revision).
        path: the file, relative to the repository root, POSIX separators.

    Returns:
        Its bytes, or None when the commit has no file there.

    Example:
        >>> read_committed(commit_of("HEAD"), "images.keel")  # doctest: +SKIP
        b'# Keel data pointer: ...'
    """
    completed = run_git(["cat-file", "blob", f"{commit}:{path}"])
    return completed.stdout if completed.returncode == 0 else None


def committed_pointers(repo: Path) -> Iterator[CommittedPointer]:
    """Every distinct pointer file (``*.keel``) content in every commit reachable from any
    branch, tag or other ref.

    Each commit's tree is walked through ``git cat-file --batch``, reading each distinct tree
    once: a new commit usually shares all but a few trees with its parent, so the cost grows
    with what changed, not with commits times files.

    Args:
        repo: any folder of the working tree.

    Yields:
        One :class:`CommittedPointer` per distinct pointer content.

    Raises:
        StorageError: git fails.

    Example:
        >>> [p.path for p in committed_pointers(Path("."))]  # doctest: +SKIP
        ['images.keel', 'data/train.csv.keel']
    """
    listing = run_git(["log", "--all", "--format=%H %T"], cwd=repo)
    if listing.returncode != 0:
        message = listing.stderr.decode(errors="replace").strip()
        if b"does not have any commits" in listing.stderr or not message:
            return
        raise StorageError(f"git could not list the commits of {repo}: {message}")
    roots: dict[bytes, bytes] = {}  # tree -> a commit that has it
    for line in listing.stdout.splitlines():
        commit, tree = line.split()
        roots.setdefault(tree, commit)
    format_ = run_git(["rev-parse", "--show-object-format"], cwd=repo)
    oid_size = 32 if format_.stdout.strip() == b"sha256" else 20
    with _CatFile(repo) as cat:
        # breadth first, one batch of trees per level: a few round trips to git in all
        trees_seen: set[bytes] = set()
        pointers: dict[bytes, tuple[bytes, str]] = {}  # blob -> (commit, path)
        level = [(tree, "", commit) for tree, commit in roots.items()]
        while level:
            todo = []
            for tree, prefix, commit in level:
                if tree not in trees_seen:
                    trees_seen.add(tree)
                    todo.append((tree, prefix, commit))
            level = []
            contents = cat.read_many([tree for tree, _, _ in todo])
            for (_, prefix, commit), data in zip(todo, contents, strict=True):
                for mode, name, oid in _tree_entries(data, oid_size):
                    if mode == b"40000":
                        path = f"{prefix}{os.fsdecode(name)}/"
                        level.append((oid.hex().encode(), path, commit))
                    elif mode.startswith(b"100") and name.endswith(_SUFFIX):
                        path = prefix + os.fsdecode(name)
                        pointers.setdefault(oid.hex().encode(), (commit, path))
        blobs = list(pointers.items())
        for (_, (commit, path)), content in zip(
            blobs, cat.read_many([blob for blob, _ in blobs]), strict=True
        ):
            yield CommittedPointer(commit.decode(), path, content)


def _tree_entries(data: bytes, oid_size: int) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(mode, name, binary oid) of each entry of a raw tree object."""
    at = 0
    end = len(data)
    index = data.index
    while at < end:
        space = index(b" ", at)
        nul = index(b"\0", space)
        yield data[at:space], data[space + 1 : nul], data[nul + 1 : nul + 1 + oid_size]
        at = nul + 1 + oid_size


class _CatFile:
    """One ``git cat-file --batch`` process: write an object name, read its content."""

    def __init__(self, repo: Path) -> None:
        try:
            self._process = subprocess.Popen(
                ["git", "cat-file", "--batch"],
                cwd=repo,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise StorageError("git is not installed (or not on PATH)") from None
        assert self._process.stdin is not None and self._process.stdout is not None
        self._in: IO[bytes] = self._process.stdin
        self._out: IO[bytes] = self._process.stdout

    def __enter__(self) -> _CatFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._in.close()
        self._process.wait()
        self._out.close()

    def read_many(self, oids: list[bytes]) -> list[bytes]:
        """The content of each object, in order. The names are written by a thread while
        this one reads, so neither side's pipe buffer can fill up and stall the other."""
        if not oids:
            return []

        def write() -> None:
            with suppress(BrokenPipeError):
                self._in.write(b"".join(oid + b"\n" for oid in oids))
                self._in.flush()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            return [self._read_one(oid) for oid in oids]
        finally:
            writer.join()

    def _read_one(self, oid: bytes) -> bytes:
        header = self._out.readline()
        parts = header.split()
        if len(parts) != 3:
            raise StorageError(
                f"git cat-file could not read object {oid.decode()}: {header.decode().strip()}"
            )
        size = int(parts[2])
        data = self._out.read(size)
        self._out.read(1)  # the newline after the content
        return data
