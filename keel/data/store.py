"""The stat cache: the digest of each working file, keyed by its path and stat.

``keel data status`` and a repeated ``keel data add`` look a file up here by absolute path and
``(size, mtime_ns, inode)``; a match gives its BLAKE3 digest without reading the content. The
table lives in its own small SQLite file, ``<home>/data-cache.db`` (not the metadata database:
it is a cache, safe to delete, and only ever local).

A file changed within the filesystem's timestamp granularity of being hashed could keep its
size and mtime (git calls this "racily clean"). So an entry only counts when the file's mtime
is at least :data:`RACY_WINDOW_NS` older than the moment it was hashed; a file written just
before it was hashed is hashed again next time, and then cached for good.

A tracked folder also gets one *snapshot* row: the stat of every file at a moment its content
was known to match a manifest. When a folder's files all have the same stats again (compared
as one dict), ``status`` knows the folder matches that manifest without a lookup per file, and
without reading the manifest. Snapshots are stored with :mod:`marshal` (tuples of ints, read
back in milliseconds); the file is local and written only by Keel.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from keel.errors import StorageError

__all__ = ["CACHE_FILENAME", "RACY_WINDOW_NS", "StatCache"]

CACHE_FILENAME = "data-cache.db"
RACY_WINDOW_NS = 2_000_000_000
"""An mtime this close to the hashing time is not trusted (2 s covers FAT's granularity)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stat_cache (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    digest TEXT NOT NULL,
    hashed_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS folder_snapshot (
    path TEXT PRIMARY KEY,
    manifest TEXT NOT NULL,
    stats BLOB NOT NULL
)
"""

FolderStats = dict[str, tuple[int, int, int]]
"""A folder's files by relative POSIX path: ``(size, mtime_ns, inode)``."""


class StatCache:
    """Digests of local files by ``(path, size, mtime_ns, inode)``, and folder snapshots.

    Counts ``hits`` and ``misses`` of file lookups and ``folder_hits`` of snapshots.

    Args:
        path: the SQLite file (created with its folder if missing).
        busy_timeout: seconds a writer waits for another process's write to finish.
    """

    def __init__(self, path: Path, *, busy_timeout: float = 60.0) -> None:
        self.path = path
        self.hits = 0
        self.misses = 0
        self.folder_hits = 0
        self._preloaded: dict[str, tuple[int, int, int, str, int]] = {}
        self._preloaded_folders: tuple[str, ...] = ()
        """Prefixes whose every entry is in ``_preloaded``: a path under one that is not there
        has no entry, and costs no query."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
            _retry_while_locked(lambda: self._conn.execute("PRAGMA journal_mode=WAL"), busy_timeout)
            self._conn.execute("PRAGMA synchronous=NORMAL")
            _retry_while_locked(lambda: self._conn.executescript(_SCHEMA), busy_timeout)
        except (OSError, sqlite3.Error) as error:
            raise StorageError(
                f"cannot open the stat cache {path}: {error}", path=str(path)
            ) from error

    def preload(self, folder: str) -> None:
        """Read every entry under ``folder`` in one query (a folder of many files)."""
        prefix = folder.rstrip(os.sep) + os.sep
        end = prefix[:-1] + chr(ord(os.sep) + 1)
        rows = self._conn.execute(
            "SELECT path, size, mtime_ns, inode, digest, hashed_ns FROM stat_cache "
            "WHERE path >= ? AND path < ?",
            (prefix, end),
        )
        self._preloaded.update((row[0], row[1:]) for row in rows)
        self._preloaded_folders += (prefix,)

    def lookup(self, path: str, st: os.stat_result) -> str | None:
        """The cached digest of the file at ``path`` if its stat is unchanged, else None."""
        row = self._preloaded.get(path)
        if row is None and not path.startswith(self._preloaded_folders):
            row = self._conn.execute(
                "SELECT size, mtime_ns, inode, digest, hashed_ns FROM stat_cache WHERE path = ?",
                (path,),
            ).fetchone()
        if (
            row is not None
            and row[0] == st.st_size
            and row[1] == st.st_mtime_ns
            and row[2] == st.st_ino
            and st.st_mtime_ns + RACY_WINDOW_NS <= row[4]
        ):
            self.hits += 1
            return str(row[3])
        self.misses += 1
        return None

    def record(self, entries: Iterable[tuple[str, os.stat_result, str, int]]) -> None:
        """Remember digests: ``(path, stat taken before hashing, digest, time hashed in ns)``.

        One short transaction, so concurrent adds of other paths wait only milliseconds.
        """
        rows = [
            (path, st.st_size, st.st_mtime_ns, st.st_ino, digest, hashed_ns)
            for path, st, digest, hashed_ns in entries
        ]
        if not rows:
            return
        for row in rows:
            if row[0] in self._preloaded or row[0].startswith(self._preloaded_folders):
                self._preloaded[row[0]] = row[1:]
        self._write("INSERT OR REPLACE INTO stat_cache VALUES (?, ?, ?, ?, ?, ?)", rows)

    def snapshot(self, folder: str) -> tuple[str, FolderStats] | None:
        """The manifest digest a folder last matched and its files' stats then, or None."""
        try:
            row = self._conn.execute(
                "SELECT manifest, stats FROM folder_snapshot WHERE path = ?", (folder,)
            ).fetchone()
        except sqlite3.Error as error:
            raise StorageError(
                f"cannot read the stat cache {self.path}: {error}", path=str(self.path)
            ) from error
        if row is None:
            return None
        try:
            stats = marshal.loads(row[1])
        except (EOFError, ValueError, TypeError):
            return None  # damaged: as if there were none
        return (str(row[0]), stats) if isinstance(stats, dict) else None

    def matches_snapshot(self, folder: str, manifest: str, stats: FolderStats) -> bool:
        """Whether ``folder``'s files, with these stats, are known to hold ``manifest``."""
        if self.snapshot(folder) == (manifest, stats):
            self.folder_hits += 1
            return True
        return False

    def save_snapshot(
        self, folder: str, manifest: str, stats: FolderStats, *, taken_ns: int
    ) -> bool:
        """Remember that ``folder`` held exactly ``manifest``'s content with these stats.

        Nothing is saved (False) if a file's mtime is within :data:`RACY_WINDOW_NS` of
        ``taken_ns`` (when the stats were taken, before hashing): a later write could keep it.
        """
        if any(st[1] + RACY_WINDOW_NS > taken_ns for st in stats.values()):
            self.forget_snapshot(folder)
            return False
        self._write(
            "INSERT OR REPLACE INTO folder_snapshot VALUES (?, ?, ?)",
            [(folder, manifest, marshal.dumps(stats))],
        )
        return True

    def forget_snapshot(self, folder: str) -> None:
        """Drop a folder's snapshot (its content is no longer known to match it)."""
        self._write("DELETE FROM folder_snapshot WHERE path = ?", [(folder,)])

    def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(sql, rows)
        except sqlite3.Error as error:
            raise StorageError(
                f"cannot write the stat cache {self.path}: {error}", path=str(self.path)
            ) from error

    def close(self) -> None:
        """Close the SQLite connection."""
        self._conn.close()


def _retry_while_locked(statement: Callable[[], object], timeout: float) -> None:
    """Run ``statement``, retrying while another connection holds the lock.

    Switching a new file to WAL and creating the table take a lock that SQLite's busy timeout
    does not always wait for (two processes opening a fresh cache at once): retry until
    ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as error:
            text = str(error)
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
