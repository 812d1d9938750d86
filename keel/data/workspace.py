"""The working tree side of data versioning: walking data folders, finding pointer files,
writing them atomically, keeping tracked data out of git through ``.gitignore``, and the lock
that serializes work on one data path.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from keel.data.models import POINTER_SUFFIX
from keel.errors import NotFound, StorageError

__all__ = [
    "SKIPPED_FOLDERS",
    "data_path_of",
    "find_pointers",
    "gitignore_entry",
    "ignore_in_git",
    "path_lock",
    "pointer_path_of",
    "pointers_named",
    "require_exists",
    "stat_or_none",
    "write_text_atomically",
]

SKIPPED_FOLDERS = frozenset({".git", ".keel"})
"""Folders never searched for pointer files."""


def pointer_path_of(data: Path) -> Path:
    """``data.csv`` -> ``data.csv.keel``; ``images/`` -> ``images.keel`` (beside the data)."""
    return data.with_name(data.name + POINTER_SUFFIX)


def data_path_of(pointer: Path) -> Path:
    """The data path a pointer file names: its own path without ``.keel``."""
    return pointer.with_name(pointer.name[: -len(POINTER_SUFFIX)])


def find_pointers(root: Path) -> list[Path]:
    """Every ``*.keel`` pointer file under ``root``, sorted.

    ``.git`` and ``.keel`` folders are skipped, and so are tracked data folders (a folder with a
    pointer beside it), so a large dataset costs nothing to skip. Symlinked folders are not
    followed.
    """
    pointers: list[Path] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        names = {name for name in files if _is_pointer_name(name)}
        pointers.extend(here / name for name in names if (here / name).is_file())
        dirs[:] = sorted(
            d for d in dirs if d not in SKIPPED_FOLDERS and d + POINTER_SUFFIX not in names
        )
    return sorted(pointers)


def pointers_named(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The pointer files ``paths`` name, without duplicates, in the order given.

    A path may be the data (``images``), its pointer (``images.keel``) or a folder to search
    with :func:`find_pointers`; no paths means every pointer under the current folder.

    Raises:
        NotFound: a path is neither tracked nor a folder, or does not exist.
    """
    if not paths:
        return find_pointers(Path.cwd())
    found: dict[Path, None] = {}
    for given in paths:
        shown = str(given)
        path = Path(os.path.abspath(given))
        if path.name.endswith(POINTER_SUFFIX) and path.is_file():
            found[path] = None
        elif pointer_path_of(path).is_file():
            found[pointer_path_of(path)] = None
        elif path.is_dir():
            found.update(dict.fromkeys(find_pointers(path)))
        elif path.exists():
            raise NotFound(
                f"{shown} is not tracked: there is no {pointer_path_of(Path(shown))}", path=shown
            )
        else:
            raise NotFound(f"no such file, folder or pointer: {shown}", path=shown)
    return list(found)


def _is_pointer_name(name: str) -> bool:
    return name.endswith(POINTER_SUFFIX) and len(name) > len(POINTER_SUFFIX)


def write_text_atomically(target: Path, text: str) -> None:
    """Write ``target`` through a temp file beside it, then rename it over ``target``.

    A reader (or a killed writer) sees the old file or the new one, never half of one.

    Raises:
        StorageError: the file cannot be written.
    """
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.keel-tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as error:
        with suppress(OSError):
            os.unlink(tmp)
        raise StorageError(
            f"cannot write {target}: {error.strerror or error}", path=str(target)
        ) from error


def gitignore_entry(name: str) -> str:
    """The ``.gitignore`` line that ignores exactly ``name`` in the same folder: ``/name``.

    Characters special to gitignore patterns are escaped with a backslash.
    """
    escaped = "".join("\\" + c if c in "*?[\\" else c for c in name)
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return "/" + escaped


def ignore_in_git(data: Path) -> bool:
    """Add ``/NAME`` for ``data`` to the ``.gitignore`` in its folder unless it is there.

    The file is locked while it is read and appended (on POSIX), so concurrent adds in one
    folder do not lose each other's lines; adds in other folders do not wait.

    Returns:
        True if the line was added, False if it was already there.

    Raises:
        StorageError: the ``.gitignore`` cannot be read or written.
    """
    entry = gitignore_entry(data.name)
    path = data.parent / ".gitignore"
    try:
        with open(path, "a+b") as handle:
            _lock(handle.fileno())
            handle.seek(0)
            content = handle.read()
            lines = content.decode("utf-8", errors="replace").splitlines()
            if entry in (line.rstrip("\r") for line in lines):
                return False
            prefix = b"" if not content or content.endswith(b"\n") else b"\n"
            handle.write(prefix + entry.encode("utf-8") + b"\n")
            return True
    except OSError as error:
        raise StorageError(
            f"cannot update {path}: {error.strerror or error}", path=str(path)
        ) from error


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: appends are not locked
        return
    fcntl.flock(fd, fcntl.LOCK_EX)  # released when the file is closed


@contextmanager
def path_lock(locks: Path, data: Path) -> Iterator[None]:
    """Hold the lock of one data path (an absolute path) while the block runs.

    Two ``add`` or ``checkout`` of the same path, in any processes, take turns; work on other
    paths never waits. The lock is ``flock`` on ``<locks>/<sha256 of the path>.lock``, released
    by the kernel even if the process is killed. Lock files are left in place (deleting one
    another process may hold would break the exclusion); each is empty. Not locked on Windows.

    Args:
        locks: the folder of lock files (``<home>/locks``).
        data: the data path, absolute.

    Raises:
        StorageError: the lock file cannot be created.

    Example:
        >>> with path_lock(home / "locks", Path("/repo/images")):  # doctest: +SKIP
        ...     write_pointer()
    """
    name = hashlib.sha256(os.fsencode(data)).hexdigest()[:32] + ".lock"
    try:
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise StorageError(
            f"cannot create the lock for {data} in {locks}: {error.strerror or error}",
            path=str(locks / name),
        ) from error
    try:
        _lock(fd)
        yield
    finally:
        os.close(fd)


def stat_or_none(path: Path) -> os.stat_result | None:
    """``os.stat(path)`` (following symlinks), or None if nothing is there."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def require_exists(path: Path, shown: str) -> os.stat_result:
    """``os.stat(path)``, or NotFound naming ``shown`` (what the user typed)."""
    st = stat_or_none(path)
    if st is None:
        raise NotFound(f"no such file or directory: {shown}", path=shown)
    return st
