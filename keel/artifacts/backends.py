"""Where the artifact store's bytes live: a local folder (plain os calls) or any fsspec URL.

Both backends offer the same small set of operations the store needs: paths, sizes, reads,
temporary files that become objects by an atomic move, a listing of stale temporaries and of
objects, deletion, and a move of a corrupt object aside into ``quarantine/``. A local folder
also writes a small object whole in one step (:meth:`LocalBackend.write_object`) and reads one
with raw descriptors (:func:`read_whole`).
"""

from __future__ import annotations

import io
import os
import re
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from keel.artifacts.files import open_source
from keel.artifacts.writer import FileWriter, temp_name

_FANOUT_RE = re.compile(r"[0-9a-f]{2}")
_REST_RE = re.compile(r"[0-9a-f]{62}")

__all__ = ["FsspecBackend", "LocalBackend", "read_whole"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)


def read_whole(fd: int, st: os.stat_result) -> bytes:
    """All of an open file's bytes, in one read when its size is what ``st`` (its fstat) says.

    A regular file is read with one ``read`` of ``size + 1`` bytes: getting exactly ``size``
    back is the end of the file. Anything else (a short read, a file that grew, a special
    file whose size says nothing) reads on until a read returns nothing.
    """
    size = st.st_size
    data = os.read(fd, size + 1)
    if len(data) == size and stat.S_ISREG(st.st_mode):
        return data
    parts = [data]
    while data:
        data = os.read(fd, max(size, 1 << 16))
        parts.append(data)
    return b"".join(parts)


class LocalBackend:
    """A store in a local folder, driven with os calls (no fsspec overhead)."""

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.root = root
        self.fsync = fsync
        self.tmp_dir = str(root / "tmp")
        self._objects = os.path.join(root, "objects", "")  # object paths are built per object
        self._made_dirs: set[str] = set()
        self._writer = FileWriter()
        self._batches = 0  # open batch() blocks: while > 0, writes skip their fsyncs
        self._batch_lock = threading.Lock()
        self._unsynced = 0  # objects whose data a batch has not flushed yet
        self._unsynced_dirs: set[str] = set()  # folders whose new entries it has not flushed

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into another process (a pool worker): it starts outside any batch.
        state = self.__dict__.copy()
        del state["_batch_lock"]
        state["_batches"] = 0
        state["_unsynced"] = 0
        state["_unsynced_dirs"] = set()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._batch_lock = threading.Lock()

    @property
    def _sync_each(self) -> bool:
        return self.fsync and self._batches == 0

    def begin_batch(self) -> None:
        with self._batch_lock:
            self._batches += 1

    def end_batch(self, *, durable: bool) -> None:
        """Close one batch; with ``durable``, flush what batches left unflushed first.

        Small objects written in a batch are flushed all at once by :meth:`sync_all`. Large
        ones were flushed as they were written (one fsync is nothing beside megabytes), so a
        batch of only those fsyncs just the folders that got new entries, and does not make
        the whole filesystem flush what other programs wrote.
        """
        try:
            if durable and self.fsync:
                with self._batch_lock:
                    unsynced, self._unsynced = self._unsynced, 0
                    folders, self._unsynced_dirs = self._unsynced_dirs, set()
                if unsynced:
                    self.sync_all()
                else:
                    for folder in sorted(folders):
                        _fsync_dir(folder)
        finally:
            with self._batch_lock:
                self._batches -= 1

    def sync_all(self) -> None:
        """Make every write to the store's filesystem durable: syncfs(2) on Linux (only this
        filesystem, a few ms when little is dirty), sync(2) elsewhere."""
        if sys.platform.startswith("linux"):
            try:
                fd = os.open(self.root, os.O_RDONLY)
            except FileNotFoundError:
                return  # nothing was ever written
            try:
                if _syncfs(fd) == 0:
                    return
            finally:
                os.close(fd)
        if hasattr(os, "sync"):
            os.sync()

    def join(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def object_path(self, digest: str) -> str:
        """``objects/<first 2 hex>/<other 62>`` under the root."""
        return f"{self._objects}{digest[:2]}{os.sep}{digest[2:]}"

    def display(self, path: str) -> str:
        return path

    def size_or_none(self, path: str) -> int | None:
        try:
            return os.stat(path).st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def open_read(self, path: str) -> Any:
        return open(path, "rb", buffering=0)

    def read_all(self, path: str, *, below: int | None = None) -> tuple[bytes, Any] | None:
        """The file's bytes and the identity of the file they came from (for quarantine):
        open, fstat, one read, close. With ``below``, None (nothing read) for a file that is
        not smaller."""
        fd = open_source(path)  # no access-time update: the inode of a fresh object stays clean
        try:
            st = os.fstat(fd)
            if below is not None and st.st_size >= below:
                return None
            return read_whole(fd, st), (st.st_dev, st.st_ino)
        finally:
            os.close(fd)

    def identity(self, opened: Any) -> Any:
        """Which file an open handle reads: a writer may have replaced the path since."""
        st = os.fstat(opened.fileno())
        return (st.st_dev, st.st_ino)

    def _makedirs(self, path: str) -> None:
        if path not in self._made_dirs:
            os.makedirs(path, exist_ok=True)
            self._made_dirs.add(path)

    def write_object(self, data: bytes, final: str) -> None:
        """Write a small object whole at ``final`` (see :mod:`keel.artifacts.writer`): an
        unnamed file linked in where Linux allows, else a temp file in ``tmp/`` renamed; flushed
        as :meth:`finish_temp` and :meth:`commit` would."""
        parent, _, name = final.rpartition(os.sep)
        self._makedirs(parent)
        sync = self._sync_each
        # Objects are immutable: created read-only (the open descriptor may still write).
        self._writer.write(parent, name, data, mode=0o444, sync=sync, temp_dir=self.tmp_dir)
        if sync:
            _fsync_dir(parent)
        elif self.fsync:
            with self._batch_lock:
                self._unsynced += 1
                self._unsynced_dirs.add(parent)

    def open_temp(self) -> tuple[str, Any]:
        self._makedirs(self.tmp_dir)
        tmp = os.path.join(self.tmp_dir, f"{temp_name()}.part")
        # Objects are immutable: created read-only (the open descriptor may still write).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC | _BINARY, 0o444)
        return tmp, open(fd, "wb")

    def open_temp_fd(self) -> tuple[str, int]:
        """A new temp file as a raw descriptor open for reading and writing (kernel copies)."""
        self._makedirs(self.tmp_dir)
        tmp = os.path.join(self.tmp_dir, f"{temp_name()}.part")
        return tmp, os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _CLOEXEC | _BINARY, 0o444)

    def finish_temp_fd(self, fd: int) -> None:
        """Flush a large object's data now, even in a batch (see :meth:`end_batch`)."""
        if self.fsync:
            os.fsync(fd)

    def finish_temp(self, out: Any) -> None:
        if self._sync_each:
            out.flush()
            os.fsync(out.fileno())
        elif self.fsync:
            with self._batch_lock:
                self._unsynced += 1

    def commit(self, tmp: str, final: str) -> None:
        parent = os.path.dirname(final)
        self._makedirs(parent)
        os.replace(tmp, final)
        if self._sync_each:
            _fsync_dir(parent)
        elif self.fsync:
            with self._batch_lock:
                self._unsynced_dirs.add(parent)

    def discard(self, tmp: str) -> None:
        with suppress(OSError):
            os.unlink(tmp)

    def temp_files(self) -> list[tuple[str, float]]:
        try:
            with os.scandir(self.tmp_dir) as listing:
                entries = list(listing)
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            with suppress(OSError):
                found.append((entry.path, entry.stat().st_mtime))
        return found

    def objects(self) -> Iterator[tuple[str, int]]:
        """(digest, size) of every object: one scandir per fan-out folder, one stat per file.

        Names that are not an object's (a stray file, another program's) are skipped.
        """
        objects = os.path.join(self.root, "objects")
        try:
            with os.scandir(objects) as listing:
                fanouts = sorted(e.name for e in listing if _FANOUT_RE.fullmatch(e.name))
        except FileNotFoundError:
            return
        for fanout in fanouts:
            try:
                with os.scandir(os.path.join(objects, fanout)) as listing:
                    entries = [e for e in listing if _REST_RE.fullmatch(e.name)]
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in sorted(entries, key=lambda e: e.name):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted since the listing
                yield fanout + entry.name, st.st_size

    def delete(self, path: str) -> int:
        """Remove the file at ``path``; the bytes it held, 0 if it was not there."""
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return 0
        return size

    def quarantine(self, path: str, dest: str, *, identity: Any) -> bool:
        """Move the object at ``path`` to ``dest``; False if it is gone, or if ``identity`` is
        given and the path now holds another file (a writer replaced the bad one meanwhile)."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if identity is not None and (st.st_dev, st.st_ino) != identity:
            return False
        self._makedirs(os.path.dirname(dest))
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return False
        return True

    def quarantined(self, prefix: str) -> list[str]:
        """Paths under quarantine/ whose name starts with ``prefix``, sorted."""
        folder = os.path.join(self.root, "quarantine")
        try:
            with os.scandir(folder) as listing:
                return sorted(e.path for e in listing if e.name.startswith(prefix))
        except OSError:
            return []


class FsspecBackend:
    """A store on any fsspec filesystem (object stores, memory://, ssh, ...)."""

    def __init__(self, url: str) -> None:
        from fsspec.core import url_to_fs

        self.fs, root = url_to_fs(url)
        self.root = root.rstrip("/")
        self.tmp_dir = f"{self.root}/tmp"

    def join(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def object_path(self, digest: str) -> str:
        return f"{self.root}/objects/{digest[:2]}/{digest[2:]}"

    def display(self, path: str) -> str:
        return str(self.fs.unstrip_protocol(path))

    def size_or_none(self, path: str) -> int | None:
        try:
            return int(self.fs.info(path)["size"])
        except FileNotFoundError:
            return None

    def open_read(self, path: str) -> Any:
        if self.fs.protocol in ("memory", ("memory",)):
            # memory:// hands every reader the same file object (one shared position).
            return io.BytesIO(self.fs.cat_file(path))
        return self.fs.open(path, "rb")

    def read_all(self, path: str, *, below: int | None = None) -> tuple[bytes, Any] | None:
        return bytes(self.fs.cat_file(path)), None  # whatever its size: only local stores limit

    def identity(self, opened: Any) -> Any:
        return None  # object stores have no inodes: quarantine moves whatever is at the path

    def open_temp(self) -> tuple[str, Any]:
        self.fs.makedirs(self.tmp_dir, exist_ok=True)
        tmp = f"{self.tmp_dir}/{temp_name()}.part"
        return tmp, self.fs.open(tmp, "wb")

    def finish_temp(self, out: Any) -> None:
        pass

    def begin_batch(self) -> None:
        pass  # each write is durable when the filesystem acknowledges it

    def end_batch(self, *, durable: bool) -> None:
        pass

    def commit(self, tmp: str, final: str) -> None:
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        self.fs.mv(tmp, final)

    def discard(self, tmp: str) -> None:
        with suppress(Exception):
            self.fs.rm_file(tmp)

    def temp_files(self) -> list[tuple[str, float]]:
        try:
            paths = self.fs.ls(self.tmp_dir, detail=False)
        except FileNotFoundError:
            return []
        found = []
        for path in paths:
            with suppress(Exception):
                found.append((path, self.fs.modified(path).timestamp()))
        return found

    def objects(self) -> Iterator[tuple[str, int]]:
        prefix = f"{self.root}/objects/"
        try:
            found = self.fs.find(prefix.rstrip("/"), detail=True)
        except FileNotFoundError:
            return
        for path, info in sorted(found.items()):
            rel = path.removeprefix(prefix).lstrip("/")
            fanout, _, rest = rel.partition("/")
            if _FANOUT_RE.fullmatch(fanout) and _REST_RE.fullmatch(rest):
                yield fanout + rest, int(info["size"])

    def delete(self, path: str) -> int:
        size = self.size_or_none(path)
        if size is None:
            return 0
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            return 0
        return size

    def quarantine(self, path: str, dest: str, *, identity: Any) -> bool:
        if not self.fs.exists(path):
            return False
        self.fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
        try:
            self.fs.mv(path, dest)
        except FileNotFoundError:
            return False
        return True

    def quarantined(self, prefix: str) -> list[str]:
        try:
            return sorted(self.fs.glob(f"{self.root}/quarantine/{prefix}*"))
        except Exception:
            return []


def _fsync_dir(path: str) -> None:
    """Flush a folder's entries (a new name in it) to disk, where folders can be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs(fd: int) -> int:
    """syncfs(2) on the filesystem holding ``fd``: 0 on success, -1 where it is missing."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return -1
    return int(function(fd))
