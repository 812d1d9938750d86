"""Content-addressed blob store: objects named by their BLAKE3 digest, written atomically.

Layout under the store's root (a local folder or any fsspec URL)::

    objects/<first 2 hex>/<remaining 62 hex>   one object per distinct content
    tmp/<pid>-<random>-<n>.part                 writes in progress (large objects)
    quarantine/<digest>.<UTC time>              objects a read found corrupt, moved aside

A write streams into ``tmp/`` while hashing and is then moved to its final name, so an object
is either complete at its path or absent; content already stored is not written again. A small
object is written whole in one step (:mod:`keel.artifacts.writer`: an unnamed file linked in
where Linux allows, so a killed write leaves nothing). Each new
object is flushed to disk before it is renamed (``fsync``), or, inside :meth:`ArtifactStore.batch`,
all at once when the batch ends. Every
read checks the bytes against the digest, so a corrupted object raises instead of being used,
and is moved into ``quarantine/``: the next put of the same content then writes it afresh.
Local paths use ``os`` directly; fsspec is imported only for other URLs.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from keel.artifacts.backends import FsspecBackend, LocalBackend, read_whole
from keel.artifacts.copying import (
    copy_and_hash,
    copy_from,
    map_in_threads,
    prepare_folders,
    write_atomically,
    write_error,
)
from keel.artifacts.files import (
    CHUNK_SIZE,
    new_hasher,
    open_source,
    read_chunks,
    source_error,
    walk_files,
)
from keel.artifacts.models import Blob, decode_manifest, encode_manifest
from keel.artifacts.problems import Problems, check_digest
from keel.artifacts.reader import BlobReader
from keel.artifacts.writer import FileWriter
from keel.errors import InvalidInput, NotFound, StorageError

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["KERNEL_COPY_MIN_SIZE", "ArtifactStore", "BlobReader"]

KERNEL_COPY_MIN_SIZE = 8 << 20
"""From this size on, put_file into a local store copies in the kernel while hashing the copy
(1 GiB here: 1.0 s instead of 1.6 s through Python buffers); smaller files gain nothing."""


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
        self._problems = Problems(self._backend, url)
        self._writer = FileWriter()  # the caller's files that get_file and get_files write

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # -- naming -------------------------------------------------------------------------------

    def _locate(self, digest: str) -> tuple[str, int]:
        """The object's path and stored size, or NotFound."""
        path = self._object_path(digest)
        size = self._stored_size(path)
        if size is None:
            raise self._problems.missing(digest, path)
        return path, size

    def _object_path(self, digest: str) -> str:
        digest = check_digest(digest)
        return self._backend.object_path(digest)

    def _stored_size(self, path: str) -> int | None:
        try:
            return self._backend.size_or_none(path)
        except OSError as error:
            raise StorageError(
                f"cannot read the artifact store {self.url}: {error.strerror or error}",
                url=self.url,
            ) from error

    # -- writing ------------------------------------------------------------------------------

    def _put_chunks(self, chunks: Iterable[Buffer], *, size_hint: int | None) -> Blob:
        """Stream chunks into a temp file while hashing, then move it to its content's name."""
        backend = self._backend
        try:
            tmp, out = backend.open_temp()
        except OSError as error:
            raise self._problems.unwritable(error) from error
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
            raise self._problems.unwritable(error) from error
        except BaseException:
            backend.discard(tmp)
            raise
        return Blob(digest=digest, size=size)

    def put_bytes(self, data: bytes) -> Blob:
        """Store bytes held in memory.

        Args:
            data: the content.

        Returns:
            The stored :class:`Blob`; storing the same bytes again writes nothing.

        Raises:
            StorageError: the store cannot be written.
        """
        return self._put_named(data, new_hasher(len(data)).update(data).hexdigest())

    def put_verified(self, data: bytes, digest: str) -> Blob:
        """Store bytes just read and checked against ``digest``, without hashing them again.

        For copies between stores (``keel data push`` and ``pull``): ``data`` must be what
        :meth:`read_bytes` of ``digest`` returned, which checked it. Bytes of any other origin
        go through :meth:`put_bytes`: a digest that does not name them would store them under
        the wrong name.

        Args:
            data: the content, as a verified read returned it.
            digest: the digest that read checked it against.

        Returns:
            The stored :class:`Blob`; content already stored is not written again.

        Raises:
            InvalidInput: ``digest`` is not 64 lowercase hex characters.
            StorageError: the store cannot be written.
        """
        return self._put_named(data, check_digest(digest))

    def _put_named(self, data: bytes, digest: str) -> Blob:
        final = self._backend.object_path(digest)
        if self._stored_size(final) != len(data):
            self._write_new(data, final)
        return Blob(digest=digest, size=len(data))

    def _write_new(self, data: bytes, final: str) -> None:
        """Write bytes already hashed to ``final``: whole in one step locally, else through a
        temp file."""
        backend = self._backend
        if isinstance(backend, LocalBackend):
            try:
                backend.write_object(data, final)
            except OSError as error:
                raise self._problems.unwritable(error) from error
            return
        try:
            tmp, out = backend.open_temp()
        except OSError as error:
            raise self._problems.unwritable(error) from error
        try:
            with out:
                out.write(data)
                backend.finish_temp(out)
            backend.commit(tmp, final)
        except BaseException as error:
            backend.discard(tmp)
            if isinstance(error, OSError):
                raise self._problems.unwritable(error) from error
            raise

    def put_file(self, path: str | os.PathLike[str]) -> Blob:
        """Store a local file without holding it in memory.

        A small file is read once and hashed before anything is written. A large one going
        into a local store is copied by the kernel (a reflink where the filesystem shares
        blocks, ``copy_file_range`` otherwise) while the copy is hashed, so its bytes never
        pass through Python; elsewhere it streams in 1 MiB chunks.

        Args:
            path: the file; a symlink is followed.

        Returns:
            The stored :class:`Blob`; content already stored is not written again.

        Raises:
            NotFound: the file does not exist.
            InvalidInput: the path is a directory.
            StorageError: the file cannot be read, or the store cannot be written.
        """
        try:
            fd = open_source(path)
        except OSError as error:
            raise source_error(Path(path), error) from error
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            # A small file: one read, then a cheap existence check before writing anything.
            data = read_whole(fd, st) if st.st_size <= CHUNK_SIZE else None
        except OSError as error:
            raise source_error(Path(path), error) from error
        finally:
            os.close(fd)
        if data is not None:
            return self.put_bytes(data)
        source, size = Path(path), st.st_size
        if isinstance(self._backend, LocalBackend) and size >= KERNEL_COPY_MIN_SIZE:
            blob = self._put_kernel_copy(source, size)
            if blob is not None:
                return blob
        return self._put_chunks(read_chunks(source), size_hint=size)

    def _put_kernel_copy(self, source: Path, size: int) -> Blob | None:
        """put_file through a kernel copy into a local store; None where the kernel cannot."""
        backend = self._backend
        assert isinstance(backend, LocalBackend)
        try:
            src = open_source(source)
        except OSError as error:
            raise source_error(source, error) from error
        try:
            try:
                tmp, fd = backend.open_temp_fd()
            except OSError as error:
                raise self._problems.unwritable(error) from error
            try:
                hasher = new_hasher(size)
                try:
                    copied = copy_and_hash(src, fd, hasher)
                except OSError as error:
                    raise source_error(source, error) from error
                if copied is None:
                    os.close(fd)
                    backend.discard(tmp)
                    return None
                digest = hasher.hexdigest()
                final = self._object_path(digest)
                if backend.size_or_none(final) == copied:
                    os.close(fd)
                    backend.discard(tmp)
                else:
                    backend.finish_temp_fd(fd)
                    os.close(fd)
                    backend.commit(tmp, final)
            except BaseException as error:
                with suppress(OSError):
                    os.close(fd)
                backend.discard(tmp)
                if isinstance(error, OSError):
                    raise self._problems.unwritable(error) from error
                raise
        finally:
            os.close(src)
        return Blob(digest=digest, size=copied)

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
        blobs = map_in_threads(self.put_file, [files[rel][0] for rel in rels])
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

    @contextmanager
    def batch(self) -> Iterator[ArtifactStore]:
        """Defer durability: objects written inside skip their own fsyncs; all are flushed at once.

        A local store normally flushes each new object and its folder to disk (1-3 ms each).
        Inside a batch those are skipped, and when the block ends normally everything on the
        store's filesystem is flushed with one ``syncfs`` (``sync`` off Linux) before this
        returns, so write what points at the objects (a pointer file, a database row) after
        the block. If the block raises, nothing is flushed: the objects exist but a power loss
        may truncate them (a read then finds the mismatch and quarantines them). Batches may
        nest and may be used from several threads at once; while any is open, writes from
        every thread of this store object skip their fsyncs. Stores other than a local folder
        are unaffected.

        Yields:
            The store itself.

        Raises:
            StorageError: the final flush failed.

        Example:
            >>> with store.batch():  # doctest: +SKIP
            ...     blobs = [store.put_file(p) for p in paths]
            >>> write_pointer(blobs)  # doctest: +SKIP
        """
        self._backend.begin_batch()
        durable = False
        try:
            yield self
            durable = True
        finally:
            try:
                self._backend.end_batch(durable=durable)
            except OSError as error:
                raise self._problems.unwritable(error) from error

    def delete(self, digest: str) -> int:
        """Remove one object (what garbage collection does); whatever points at it breaks.

        Args:
            digest: the object's BLAKE3 hex digest.

        Returns:
            The bytes freed: the object's size, or 0 if it was not stored.

        Raises:
            InvalidInput: ``digest`` is not 64 lowercase hex characters.
            StorageError: the object cannot be removed.

        Example:
            >>> store.delete(blob.digest)  # doctest: +SKIP
            10
        """
        path = self._object_path(digest)
        try:
            return self._backend.delete(path)
        except OSError as error:
            raise StorageError(
                f"cannot delete artifact object {digest} at {self._backend.display(path)}: "
                f"{error.strerror or error}",
                digest=digest,
                path=self._backend.display(path),
            ) from error

    # -- reading ------------------------------------------------------------------------------

    def iter_objects(self) -> Iterator[Blob]:
        """Every object in the store with its stored size, by digest order within each fan-out.

        Temp files of writes in progress and quarantined objects are not objects and are not
        listed; neither is a stray file whose name is not a digest. Content is not read (see
        :meth:`verify`). A local store lists about a million objects a second.

        Yields:
            One :class:`Blob` per object.

        Raises:
            StorageError: the store cannot be listed.

        Example:
            >>> sum(blob.size for blob in store.iter_objects())  # doctest: +SKIP
            1073741824
        """
        try:
            for digest, size in self._backend.objects():
                yield Blob(digest=digest, size=size)
        except OSError as error:
            raise StorageError(
                f"cannot list the artifact store {self.url}: {error.strerror or error}",
                url=self.url,
            ) from error

    def verify(self, digest: str) -> Blob:
        """Read an object through and check it against its digest.

        Args:
            digest: the object's BLAKE3 hex digest.

        Returns:
            The object's :class:`Blob` when its content matches.

        Raises:
            InvalidInput: ``digest`` is not 64 lowercase hex characters.
            NotFound: no such object.
            StorageError: the object is corrupt (it is then moved into ``quarantine/``, as a
                read does) or cannot be read.

        Example:
            >>> store.verify(blob.digest) == blob  # doctest: +SKIP
            True
        """
        buffer = bytearray(CHUNK_SIZE)
        with self.open(digest) as reader:
            size = reader.size
            while reader.readinto(buffer):  # the read that reaches the end checks the digest
                pass
        return Blob(digest=digest, size=size)

    def path_of(self, digest: str) -> str | None:
        """The local file holding an object, for fast copies; None if not local or not stored.

        The file is the object itself: never write to it (objects are created read-only).

        Args:
            digest: the object's BLAKE3 hex digest.

        Returns:
            An absolute path for a local store that holds the object, else None.

        Raises:
            InvalidInput: ``digest`` is not 64 lowercase hex characters.

        Example:
            >>> store.path_of(blob.digest)  # doctest: +SKIP
            '/home/me/.keel/artifacts/objects/af/1349b9...'
        """
        path = self._object_path(digest)
        if not isinstance(self._backend, LocalBackend):
            return None
        return path if self._stored_size(path) is not None else None

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
        data = self._read_checked(self._object_path(digest), digest)
        assert data is not None  # no size limit
        return data

    def _read_checked(self, path: str, digest: str, *, below: int | None = None) -> bytes | None:
        """The object's bytes, checked (a corrupt object is quarantined); with ``below``, None
        for an object that is not smaller (nothing read)."""
        try:
            found = self._backend.read_all(path, below=below)
        except (FileNotFoundError, NotADirectoryError):
            raise self._problems.missing(digest, path) from None
        except OSError as error:
            raise self._problems.unreadable(digest, path, error) from error
        if found is None:
            return None
        data, identity = found
        actual = new_hasher(len(data)).update(data).hexdigest()
        if actual != digest:
            raise self._problems.corrupt(
                digest, path, f"its content hashes to {actual}", identity=identity
            )
        return data

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
            raise self._problems.missing(digest, path) from None
        except OSError as error:
            raise self._problems.unreadable(digest, path, error) from error

        def corrupt(why: str) -> StorageError:
            return self._problems.corrupt(digest, path, why, identity=self._backend.identity(raw))

        return BlobReader(
            raw, digest=digest, size=size, path=self._backend.display(path), on_corrupt=corrupt
        )

    def get_file(self, digest: str, dst: str | os.PathLike[str]) -> Path:
        """Write an object to a local file, atomically and only if its content checks out.

        ``dst`` gets its name only after the digest matched, so a corrupt object never
        produces (or clobbers) it: a small object of a local store is read and checked, then
        written whole (an unnamed file linked in as ``dst`` where Linux allows, else a temp
        file beside it renamed over it); others go through a temp file beside ``dst``. Missing
        parent folders are created. ``dst`` is always a file of its own, never a link to the
        object, so writing to it later cannot change the store. A large object of a local
        store is copied by the kernel: a reflink (shared blocks, copied on write: instant)
        where the filesystem supports it, ``copy_file_range`` otherwise; the copy is hashed.

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
        place = [(str(target.parent), target.name)]
        if not self._fetch_small(check_digest(digest), place, make_folders=True):
            self._fetch_streamed(digest, place)
        return target

    def _fetch_small(
        self, digest: str, places: list[tuple[str, str]], *, make_folders: bool = False
    ) -> bool:
        """Write a small object of a local store to each ``(folder, name)``: one read, checked,
        then each file whole in one step. False (nothing done) if the object is large or the
        store is not local: see :meth:`_fetch_streamed`."""
        if not isinstance(self._backend, LocalBackend):
            return False
        path = self._backend.object_path(digest)
        data = self._read_checked(path, digest, below=KERNEL_COPY_MIN_SIZE)
        if data is None:
            return False
        write = self._writer.write
        for folder, name in places:
            try:
                if make_folders:
                    os.makedirs(folder, exist_ok=True)
                write(folder, name, data, mode=0o666)
            except OSError as error:
                raise write_error(Path(folder, name), error) from error
        return True

    def _fetch_streamed(self, digest: str, places: list[tuple[str, str]]) -> None:
        """Stream an object to the first ``(folder, name)`` (a kernel copy for a large local
        one), then copy that file to the others; each through a temp file."""
        (folder, name), *others = places
        first = Path(folder, name)
        with self.open(digest) as reader:

            def copy(out: BinaryIO) -> None:
                buffer = bytearray(CHUNK_SIZE)
                view = memoryview(buffer)
                while n := reader.readinto(buffer):  # the last read checks the digest
                    out.write(view[:n])

            local = self.path_of(digest) if reader.size >= KERNEL_COPY_MIN_SIZE else None
            write_atomically(first, copy if local is None else self._kernel_copier(digest, local))
        for folder, name in others:
            write_atomically(Path(folder, name), lambda out: copy_from(first, out))

    def _kernel_copier(self, digest: str, path: str) -> Callable[[BinaryIO], None]:
        """A ``write_atomically`` fill copying a local object in the kernel, checking the copy."""

        def fill(out: BinaryIO) -> None:
            with open(path, "rb", buffering=0) as source:
                hasher = new_hasher(os.fstat(source.fileno()).st_size)
                copied = copy_and_hash(source.fileno(), out.fileno(), hasher)
                if copied is None:  # the kernel cannot: through Python buffers
                    for chunk in read_chunks(Path(path)):
                        hasher.update(chunk)
                        out.write(chunk)
                actual = hasher.hexdigest()
                if actual != digest:
                    identity = self._backend.identity(source)
                    raise self._problems.corrupt(
                        digest, path, f"its content hashes to {actual}", identity=identity
                    )

        return fill

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

        Each file is written atomically and checked as by :meth:`get_file`; files already in
        ``dst`` that are not named are left alone. Before anything is written, every path is
        checked and every folder created, each folder once: a folder where a file goes, or a
        file where a folder must be, stops the call with nothing written. Each distinct object
        is read once. Small objects of a local store are written on the calling thread, large
        ones and those of other stores a few at a time.

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
        for digest in set(files.values()):
            check_digest(digest)
        places = prepare_folders(target, files)
        # Each distinct object is read once and written to every file that holds it.
        copies: dict[str, list[tuple[str, str]]] = {}
        for rel, digest in files.items():
            copies.setdefault(digest, []).append(places[rel])
        # Small objects of a local store on this thread: they are all system calls, which
        # threads only contend over (keel data checkout of 20,000 files of 1-10 KB on 2 cores:
        # 7.3 s and 8.3 s of CPU on 4 threads, 4.5 s and 4.6 s of CPU on one).
        pending = [item for item in copies.items() if not self._fetch_small(*item)]
        map_in_threads(lambda item: self._fetch_streamed(*item), pending)
        return target
