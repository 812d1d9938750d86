"""Content-addressed blob store: objects named by their BLAKE3 digest, written atomically.

Layout under the store's root (a local folder or any fsspec URL)::

    objects/<first 2 hex>/<remaining 62 hex>   one object per distinct content
    tmp/<pid>-<random>.part                     writes in progress
    quarantine/<digest>.<UTC time>              objects a read found corrupt, moved aside

A write streams into ``tmp/`` while hashing and is then moved to its final name, so an object
is either complete at its path or absent; content already stored is not written again. Every
read checks the bytes against the digest, so a corrupted object raises instead of being used,
and is moved into ``quarantine/``: the next put of the same content then writes it afresh.
Local paths use ``os`` directly; fsspec is imported only for other URLs.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from keel.artifacts.backends import FsspecBackend, LocalBackend
from keel.artifacts.files import (
    CHUNK_SIZE,
    new_hasher,
    read_chunks,
    source_error,
    walk_files,
)
from keel.artifacts.models import Blob, decode_manifest, encode_manifest
from keel.errors import Conflict, InvalidInput, KeelError, NotFound, StorageError

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["ArtifactStore", "BlobReader"]

DIR_THREADS = 4
"""Files put_dir and get_dir handle at once (4 threads made put_dir with fsync about 2x faster
on 1,000 small files; more gained nothing)."""

_T = TypeVar("_T")
_R = TypeVar("_R")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_CORRUPT_ADVICE = "the object is corrupt: re-log the artifact or restore it from a backup"
_RESTORE_ADVICE = "re-uploading the file (log the artifact again) restores it"


def _check_digest(digest: object) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise InvalidInput(
            f"not an artifact digest: {digest!r} (expected 64 lowercase hex characters)",
            digest=str(digest),
        )
    return digest


class BlobReader(io.RawIOBase):
    """A read-only binary stream over one object that checks its digest once fully read.

    The check runs on the read that delivers the last byte (or meets an early end of file);
    on a mismatch that read raises :class:`~keel.errors.StorageError`. Iterating yields chunks
    of up to :data:`CHUNK_SIZE` bytes (lines mean nothing in a blob). Not seekable.
    """

    def __init__(
        self,
        raw: Any,
        *,
        digest: str,
        size: int,
        path: str,
        on_corrupt: Callable[[str], StorageError] | None = None,
    ) -> None:
        super().__init__()
        self._raw = raw
        self.digest = digest
        self.size = size
        self.path = path
        self._on_corrupt = on_corrupt
        self._hasher = new_hasher(size)
        self._read = 0
        self._verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = self._raw.readinto(view) or 0
        if n:
            if self._verified:
                self._fail("it is longer than when it was opened")
            self._hasher.update(view[:n])
            self._read += n
        if (n == 0 and len(view) > 0) or self._read >= self.size:
            self._verify()
        return n

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(CHUNK_SIZE):
            parts.append(chunk)
        return b"".join(parts)

    def __next__(self) -> bytes:
        chunk = self.read(CHUNK_SIZE)
        if not chunk:
            raise StopIteration
        return chunk

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()

    def _verify(self) -> None:
        if self._verified:
            return
        self._verified = True
        actual = self._hasher.hexdigest()
        if actual != self.digest:
            self._fail(f"its content hashes to {actual}")

    def _fail(self, why: str) -> None:
        if self._on_corrupt is not None:
            raise self._on_corrupt(why)
        raise StorageError(
            f"artifact object {self.digest} at {self.path} does not match its digest ({why}): "
            f"{_CORRUPT_ADVICE}",
            digest=self.digest,
            path=self.path,
        )


class ArtifactStore:
    """Blobs named by their BLAKE3 digest in a local folder or any fsspec location.

    Args:
        url: a local path (``/data/keel``, ``file:///data/keel``) or any fsspec URL
            (``memory://x``, ``s3://bucket/prefix``, ``gs://...``).
        fsync: local stores only: flush each new object and its folder to disk before it
            becomes visible, so a power loss cannot leave a truncated object at its final
            name. Costs about 1-3 ms per new object (nothing for content already stored;
            put_dir overlaps them on threads); turn it off for scratch stores.

    Example:
        >>> store = ArtifactStore("/tmp/keel-artifacts")  # doctest: +SKIP
        >>> blob = store.put_bytes(b"hello")  # doctest: +SKIP
        >>> store.read_bytes(blob.digest)  # doctest: +SKIP
        b'hello'
    """

    def __init__(self, url: str | os.PathLike[str], *, fsync: bool = True) -> None:
        url = os.fspath(url)
        self.url = url
        self._backend: LocalBackend | FsspecBackend
        if "://" not in url or url.startswith("file://"):
            local = url.removeprefix("file://")
            self._backend = LocalBackend(Path(local).expanduser().absolute(), fsync=fsync)
        else:
            self._backend = FsspecBackend(url)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # -- naming -------------------------------------------------------------------------------

    def _locate(self, digest: str) -> tuple[str, int]:
        """The object's path and stored size, or NotFound."""
        path = self._object_path(digest)
        size = self._stored_size(path)
        if size is None:
            raise self._missing(digest, path)
        return path, size

    def _object_path(self, digest: str) -> str:
        digest = _check_digest(digest)
        return self._backend.join("objects", digest[:2], digest[2:])

    def _stored_size(self, path: str) -> int | None:
        try:
            return self._backend.size_or_none(path)
        except OSError as error:
            raise StorageError(
                f"cannot read the artifact store {self.url}: {error.strerror or error}",
                url=self.url,
            ) from error

    def _missing(self, digest: str, path: str) -> NotFound:
        moved = self._backend.quarantined(f"{digest}.")
        if moved:
            shown = self._backend.display(moved[-1])
            return NotFound(
                f"artifact object {digest} is not in the store {self.url}: a read found it "
                f"corrupt and moved it to {shown}; {_RESTORE_ADVICE}",
                digest=digest,
                path=self._backend.display(path),
                quarantined=shown,
            )
        return NotFound(
            f"artifact object {digest} is not in the store {self.url}",
            digest=digest,
            path=self._backend.display(path),
        )

    def _corrupt(self, digest: str, path: str, why: str, *, identity: Any) -> StorageError:
        """Move a corrupt object into quarantine/ and return the error that says so.

        Putting the same content again skips objects that exist, so a corrupt one left in
        place would stay forever; moved aside, the next put writes it afresh. ``identity``
        (local stores) is the file that was read: one a writer has since replaced is kept.
        """
        shown = self._backend.display(path)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        dest = self._backend.join("quarantine", f"{digest}.{stamp}")
        problem = f"artifact object {digest} at {shown} is corrupt: it does not match its digest"
        try:
            moved = self._backend.quarantine(path, dest, identity=identity)
        except OSError as error:
            return StorageError(
                f"{problem} ({why}), and it could not be moved aside into quarantine "
                f"({error.strerror or error}): delete {shown}, then re-upload the file (log the "
                "artifact again) or restore it from a backup",
                digest=digest,
                path=shown,
            )
        if not moved:
            return StorageError(
                f"{problem} ({why}); another process has since moved it aside or replaced "
                "it: read it again, and if it is missing, re-upload the file (log the artifact "
                "again)",
                digest=digest,
                path=shown,
            )
        quarantined = self._backend.display(dest)
        return StorageError(
            f"{problem} ({why}). It was quarantined (moved to {quarantined}); "
            f"{_RESTORE_ADVICE}, or restore it from a backup",
            digest=digest,
            path=shown,
            quarantined=quarantined,
        )

    # -- writing ------------------------------------------------------------------------------

    def _put_chunks(self, chunks: Iterable[Buffer], *, size_hint: int | None) -> Blob:
        """Stream chunks into a temp file while hashing, then move it to its content's name."""
        backend = self._backend
        try:
            tmp, out = backend.open_temp()
        except OSError as error:
            raise self._write_error(error) from error
        try:
            hasher = new_hasher(size_hint)
            size = 0
            with out:
                for chunk in chunks:
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(memoryview(chunk))
                digest = hasher.hexdigest()
                final = self._object_path(digest)
                # Already stored: drop the copy unsynced (a size mismatch means damage: replace).
                stored = backend.size_or_none(final) == size
                if not stored:
                    backend.finish_temp(out)
            if stored:
                backend.discard(tmp)
            else:
                backend.commit(tmp, final)
        except OSError as error:
            backend.discard(tmp)
            raise self._write_error(error) from error
        except BaseException:
            backend.discard(tmp)
            raise
        return Blob(digest=digest, size=size)

    def _write_error(self, error: OSError) -> StorageError:
        return StorageError(
            f"cannot write to the artifact store {self.url}: {error.strerror or error}",
            url=self.url,
        )

    def put_bytes(self, data: bytes) -> Blob:
        """Store bytes held in memory.

        Args:
            data: the content.

        Returns:
            The stored :class:`Blob`; storing the same bytes again writes nothing.

        Raises:
            StorageError: the store cannot be written.
        """
        digest = new_hasher(len(data)).update(data).hexdigest()
        if self._stored_size(self._object_path(digest)) == len(data):
            return Blob(digest=digest, size=len(data))
        return self._put_chunks([data], size_hint=len(data))

    def put_file(self, path: str | os.PathLike[str]) -> Blob:
        """Store a local file, streaming it in 1 MiB chunks (any size fits in flat memory).

        Args:
            path: the file; a symlink is followed.

        Returns:
            The stored :class:`Blob`; content already stored is not written again.

        Raises:
            NotFound: the file does not exist.
            InvalidInput: the path is a directory.
            StorageError: the file cannot be read, or the store cannot be written.
        """
        source = Path(path)
        try:
            size = source.stat().st_size
        except OSError as error:
            raise source_error(source, error) from error
        if size <= CHUNK_SIZE:
            # One read, then a cheap existence check before writing anything.
            try:
                data = source.read_bytes()
            except OSError as error:
                raise source_error(source, error) from error
            return self.put_bytes(data)
        return self._put_chunks(read_chunks(source), size_hint=size)

    def put_stream(self, stream: Any, *, size_hint: int | None = None) -> Blob:
        """Store everything read from a binary stream (``read(n)`` until it returns ``b""``).

        Args:
            stream: an open binary file, socket file, HTTP response body...
            size_hint: the expected length if known; large ones are hashed on all cores.

        Returns:
            The stored :class:`Blob`.

        Raises:
            StorageError: the store cannot be written.
        """

        def chunks() -> Iterator[bytes]:
            while chunk := stream.read(CHUNK_SIZE):
                yield chunk

        return self._put_chunks(chunks(), size_hint=size_hint)

    def put_dir(self, path: str | os.PathLike[str]) -> Blob:
        """Store every file under a folder, then a manifest listing them; return the manifest.

        Subfolders are walked recursively and symlinks followed. Nothing is skipped: a file
        that cannot be read, a broken symlink or a special file (FIFO, socket, device) stops
        the call with an error naming it. Empty folders are not recorded.

        Args:
            path: the folder.

        Returns:
            The manifest's :class:`Blob`; pass its digest to :meth:`read_manifest` or
            :meth:`get_dir`.

        Raises:
            NotFound: the folder does not exist.
            InvalidInput: the path is not a folder, a name is not UTF-8, a symlink loops or
                an entry is a special file.
            StorageError: a file cannot be read, or the store cannot be written.
        """
        root = Path(path)
        try:
            st = root.stat()
        except FileNotFoundError:
            raise NotFound(f"no such directory: {root}", path=str(root)) from None
        except OSError as error:
            raise source_error(root, error) from error
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidInput(f"{root} is not a directory: use put_file", path=str(root))
        files = walk_files(root)
        rels = list(files)  # sorted
        blobs = _map_in_threads(self.put_file, [files[rel][0] for rel in rels])
        return self.put_bytes(encode_manifest(dict(zip(rels, blobs, strict=True))))

    def remove_stale_tmp(self, *, older_than: float = 24 * 3600.0) -> int:
        """Delete temp files left by writers that died (SIGKILL, power loss).

        Args:
            older_than: only files last written more than this many seconds ago, so writes
                still in progress in other processes are left alone.

        Returns:
            How many files were deleted.
        """
        cutoff = time.time() - older_than
        removed = 0
        for tmp, mtime in self._backend.temp_files():
            if mtime < cutoff:
                self._backend.discard(tmp)
                removed += 1
        return removed

    # -- reading ------------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        """Whether an object is stored (its content is not checked).

        Raises:
            InvalidInput: ``digest`` is not 64 lowercase hex characters.
        """
        return self._stored_size(self._object_path(digest)) is not None

    def size(self, digest: str) -> int:
        """The stored object's size in bytes.

        Raises:
            InvalidInput: ``digest`` is not 64 lowercase hex characters.
            NotFound: no such object.
        """
        return self._locate(digest)[1]

    def read_bytes(self, digest: str) -> bytes:
        """An object's whole content, checked against its digest.

        Args:
            digest: the object's BLAKE3 hex digest.

        Returns:
            The content.

        Raises:
            InvalidInput: ``digest`` is not 64 lowercase hex characters.
            NotFound: no such object (the message says so if it was quarantined).
            StorageError: the object cannot be read, or is corrupt: it is then moved to
                ``quarantine/`` so that putting the same content again stores it afresh.
        """
        path = self._object_path(digest)
        try:
            data, identity = self._backend.read_all(path)
        except FileNotFoundError:
            raise self._missing(digest, path) from None
        except OSError as error:
            raise self._read_error(digest, path, error) from error
        actual = new_hasher(len(data)).update(data).hexdigest()
        if actual != digest:
            raise self._corrupt(digest, path, f"its content hashes to {actual}", identity=identity)
        return data

    def _read_error(self, digest: str, path: str, error: OSError) -> StorageError:
        shown = self._backend.display(path)
        return StorageError(
            f"cannot read artifact object {digest} at {shown}: {error.strerror or error}",
            digest=digest,
            path=shown,
        )

    def open(self, digest: str) -> BlobReader:
        """Open an object for streaming; its digest is checked once it has been read through.

        Args:
            digest: the object's BLAKE3 hex digest.

        Returns:
            A :class:`BlobReader` (use it as a context manager); the read that reaches the
            end raises :class:`~keel.errors.StorageError` if the content does not match (and
            moves the object into quarantine, as :meth:`read_bytes` does).

        Raises:
            InvalidInput: ``digest`` is not 64 lowercase hex characters.
            NotFound: no such object.
        """
        path, size = self._locate(digest)
        try:
            raw = self._backend.open_read(path)
        except FileNotFoundError:
            raise self._missing(digest, path) from None
        except OSError as error:
            raise self._read_error(digest, path, error) from error

        def corrupt(why: str) -> StorageError:
            return self._corrupt(digest, path, why, identity=self._backend.identity(raw))

        return BlobReader(
            raw, digest=digest, size=size, path=self._backend.display(path), on_corrupt=corrupt
        )

    def get_file(self, digest: str, dst: str | os.PathLike[str]) -> Path:
        """Write an object to a local file, atomically and only if its content checks out.

        The content goes to a temp file beside ``dst`` and is renamed over ``dst`` after the
        digest matched, so a corrupt object never produces (or clobbers) ``dst``. Missing
        parent folders are created.

        Args:
            digest: the object's BLAKE3 hex digest.
            dst: the file to write; replaced if it exists.

        Returns:
            ``dst`` as a Path.

        Raises:
            InvalidInput: ``digest`` is not 64 lowercase hex characters.
            NotFound: no such object.
            Conflict: ``dst`` is a folder, or one of its parents is a file.
            StorageError: the object is corrupt or unreadable, or ``dst`` cannot be written.
        """
        target = Path(dst)
        with self.open(digest) as reader:

            def copy(out: BinaryIO) -> None:
                buffer = bytearray(CHUNK_SIZE)
                view = memoryview(buffer)
                while n := reader.readinto(buffer):  # the last read checks the digest
                    out.write(view[:n])

            _write_atomically(target, copy)
        return target

    def read_manifest(self, digest: str) -> dict[str, Blob]:
        """The files a :meth:`put_dir` manifest lists, by relative POSIX path.

        Args:
            digest: the manifest's digest (what :meth:`put_dir` returned).

        Returns:
            ``{"sub/file.txt": Blob(...), ...}`` sorted by path.

        Raises:
            InvalidInput: the object is not a Keel manifest (or ``digest`` is malformed).
            NotFound: no such object.
            StorageError: the object is corrupt.
        """
        data = self.read_bytes(digest)
        return decode_manifest(data, digest)

    def get_dir(self, digest: str, dst: str | os.PathLike[str]) -> Path:
        """Materialise every file of a manifest under ``dst`` (created if missing).

        As :meth:`get_files` with the files the manifest lists.

        Args:
            digest: the manifest's digest (what :meth:`put_dir` returned).
            dst: the folder to fill.

        Returns:
            ``dst`` as a Path.

        Raises:
            InvalidInput: the object is not a manifest.
            NotFound: the manifest or one of its objects is missing.
            Conflict: a path under ``dst`` (or ``dst`` itself) is a file where the manifest
                needs a folder, or a folder where it has a file; the message names it.
            StorageError: an object is corrupt, or ``dst`` cannot be written.
        """
        files = self.read_manifest(digest)
        return self.get_files({rel: blob.digest for rel, blob in files.items()}, dst)

    def get_files(self, files: Mapping[str, str], dst: str | os.PathLike[str]) -> Path:
        """Write objects to files under ``dst`` (created if missing), by relative POSIX path.

        Each file is written atomically and checked as by :meth:`get_file`, a few at a time;
        files already in ``dst`` that are not named are left alone. Before anything is written,
        every path is checked: a folder where a file goes, or a file where a folder must be,
        stops the call with nothing written.

        Args:
            files: ``{"sub/file.txt": digest, ...}``; paths with ``..``, ``.`` or empty parts
                are refused.
            dst: the folder to fill.

        Returns:
            ``dst`` as a Path.

        Raises:
            InvalidInput: a path is not a safe relative path, or a digest is malformed.
            NotFound: an object is missing.
            Conflict: a path under ``dst`` (or ``dst`` itself) is a file where a folder must
                be, or a folder where a file goes; the message names it.
            StorageError: an object is corrupt, or ``dst`` cannot be written.

        Example:
            >>> store.get_files({"model/weights.bin": blob.digest}, "out")  # doctest: +SKIP
            PosixPath('out')
        """
        target = Path(dst)
        # Checked here too, not only in manifests: a backslash separates on Windows only.
        for rel, digest in files.items():
            _check_digest(digest)
            if any(
                p in ("", ".", "..")
                or os.sep in p
                or (os.altsep and os.altsep in p)
                or Path(p).drive
                for p in rel.split("/")
            ):
                raise InvalidInput(f"{rel!r} is not a safe path to download to", path=rel)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            conflict = _local_conflict(target, folder=True)
            if conflict is not None:
                raise conflict from None
            raise StorageError(
                f"cannot create {target}: {error.strerror or error}", path=str(target)
            ) from error
        # Each distinct object is read once; files sharing it are copied from the first one.
        copies: dict[str, list[Path]] = {}
        for rel, digest in files.items():
            path = target.joinpath(*rel.split("/"))
            conflict = _local_conflict(path)
            if conflict is not None:
                raise conflict
            copies.setdefault(digest, []).append(path)

        def fetch(digest: str) -> None:
            first, *others = copies[digest]
            self.get_file(digest, first)
            for other in others:
                _write_atomically(other, lambda out: _copy_from(first, out))

        _map_in_threads(fetch, list(copies))
        return target


def _map_in_threads(function: Callable[[_T], _R], items: list[_T]) -> list[_R]:
    """``[function(item) ...]`` on a few threads: overlaps fsyncs and remote round trips.

    The first error cancels what has not started and is raised once running calls end.
    """
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(DIR_THREADS, len(items))) as pool:
        try:
            return list(pool.map(function, items))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _write_atomically(target: Path, fill: Callable[[BinaryIO], None]) -> None:
    """Write ``target`` through a temp file beside it, renamed over it only if ``fill`` ends."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.keel-tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o666)
    except OSError as error:
        raise _write_error(target, error) from error
    try:
        with open(fd, "wb") as out:
            fill(out)
        os.replace(tmp, target)
    except BaseException as error:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise _write_error(target, error) from error
        raise


def _write_error(target: Path, error: OSError) -> KeelError:
    """What writing a local file met: a path conflict if that was it, else a StorageError."""
    conflict = _local_conflict(target)
    if conflict is not None:
        return conflict
    return StorageError(f"cannot write {target}: {error.strerror or error}", path=str(target))


def _local_conflict(target: Path, *, folder: bool = False) -> Conflict | None:
    """The Conflict if ``target`` cannot become a file (or, with ``folder``, a folder): a
    folder (or file) is already there, or one of its parents is a file. None if it can."""
    try:
        st = os.lstat(target)  # a symlink at the target itself is replaced, whatever it names
        if folder:
            st = os.stat(target)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError:
        return None
    else:
        if folder and not stat.S_ISDIR(st.st_mode):
            return _conflict(target, target, "is a file, and the artifact needs a folder there")
        if not folder and stat.S_ISDIR(st.st_mode):
            return _conflict(target, target, "is a folder, and the artifact has a file there")
        return None
    for parent in target.parents:
        try:
            st = os.stat(parent)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return None
        return _conflict(target, parent, "is a file, and the artifact needs a folder there")
    return None


def _conflict(target: Path, found: Path, what: str) -> Conflict:
    return Conflict(
        f"cannot download to {target}: {found} {what}; choose another destination, or remove "
        f"{found} and download again",
        path=str(found),
        target=str(target),
    )


def _copy_from(source: Path, out: BinaryIO) -> None:
    with open(source, "rb") as copied:
        shutil.copyfileobj(copied, out, CHUNK_SIZE)


# -- directories ----------------------------------------------------------------
