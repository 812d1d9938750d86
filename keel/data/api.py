"""Version data files and folders: ``add`` them to the store behind a pointer file, ask for
their ``status``, ``checkout`` them back exactly.

The content goes into the artifact store (a folder as its files plus a manifest, the same
objects ``ArtifactStore.put_dir`` makes); ``PATH.keel`` beside the data records the digest and
is committed to git, and ``/PATH`` goes into the ``.gitignore`` beside it. Digests of unchanged
files come from the stat cache (:mod:`keel.data.store`), so a repeated ``add`` or a ``status``
does not read content that has not changed.

There is no lock over the repository: each ``add`` writes its own objects (content-addressed,
so racing writers agree), its own pointer (atomically) and one line of a ``.gitignore`` (locked
briefly), so adds of different paths run side by side.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from keel.artifacts import ArtifactStore, hash_file, walk_files
from keel.artifacts.models import manifest_bytes
from keel.closing import Closing
from keel.data.models import (
    AddResult,
    CheckoutResult,
    PathStatus,
    Pointer,
    dump_pointer,
    parse_pointer,
)
from keel.data.store import CACHE_FILENAME, StatCache
from keel.data.workspace import (
    SKIPPED_FOLDERS,
    data_path_of,
    ignore_in_git,
    path_lock,
    pointer_path_of,
    pointers_named,
    require_exists,
    stat_or_none,
    write_text_atomically,
)
from keel.errors import Conflict, InvalidInput, NotFound, StorageError
from keel.settings import Settings

__all__ = ["LOCKS_FOLDER", "Progress", "Workspace", "add", "checkout", "status"]

HASH_THREADS = 4
"""Files hashed (and stored) at once when many are new or changed and large."""

THREADED_MIN_MEAN_SIZE = 256 * 1024
"""Below this mean size, files are hashed and stored on one thread: small files are all
system calls, and threads only contend for the GIL and the filesystem's locks (20,000 files of
1-10 KB took 13.4 s on 4 threads and 5.2 s on one on the 2-core benchmark machine)."""

LOCKS_FOLDER = "locks"
"""Under the Keel home: one lock file per data path being added or checked out."""

_T = TypeVar("_T")
_R = TypeVar("_R")
_Files = dict[str, tuple[str, os.stat_result]]
_Entries = dict[str, tuple[str, int]]
"""Files by relative path: (BLAKE3 digest, size)."""
Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while files are hashed and stored (from threads)."""


class Workspace(Closing):
    """Data versioning in the current folder against the store and stat cache of ``settings``.

    Use it as a context manager (it holds the stat cache's SQLite connection), or call the
    module functions :func:`add`, :func:`status` and :func:`checkout`, which make one.

    Args:
        settings: where the store (``artifact_url``) and the stat cache (``<home>``) are;
            default ``Settings()``.

    Example:
        >>> with Workspace() as ws:  # doctest: +SKIP
        ...     ws.add(["data/train.csv"])
        ...     print(ws.status()[0].up_to_date)
        True
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.store = ArtifactStore(self.settings.artifacts_url, fsync=self.settings.data_fsync)
        self.cache = StatCache(
            self.settings.home_path / CACHE_FILENAME,
            busy_timeout=self.settings.sqlite_busy_timeout,
        )
        self.locks = self.settings.home_path / LOCKS_FOLDER

    def close(self) -> None:
        """Close the stat cache."""
        self.cache.close()

    # -- add ------------------------------------------------------------------

    def add(
        self, paths: Sequence[str | os.PathLike[str]], *, progress: Progress | None = None
    ) -> list[AddResult]:
        """Store each file or folder and write its pointer ``PATH.keel`` and ``.gitignore`` line.

        Unchanged content is not re-read (the stat cache) nor re-stored, and a pointer that
        already names it is left as it is, so adding again is a fast no-op. Each path is locked
        while it is added: an ``add`` or ``checkout`` of the same path in another process waits,
        those of other paths do not. With ``KEEL_DATA_FSYNC``, new objects are flushed to disk
        together (one ``ArtifactStore.batch``) before the pointer that names them; an add killed
        midway leaves at most a temp file in the store's ``tmp/`` (never a partial object),
        which a later add deletes once it is a day old.

        Args:
            paths: files or folders.
            progress: called as ``progress(done, total)`` as the files that must be read are
                stored (``total`` counts those of the current path), from worker threads.

        Returns:
            One :class:`AddResult` per path, in order.

        Raises:
            NotFound: a path does not exist.
            InvalidInput: a path is a pointer file, inside ``.git``, ``.keel`` or a tracked
                folder, or holds the Keel home or a git repository; or a file in it cannot be
                stored (a special file, a non-UTF-8 name).
            StorageError: a file cannot be read, or the store or pointer cannot be written.
        """
        self.store.remove_stale_tmp()  # what adds killed more than a day ago left behind
        return [self._add_one(Path(path), progress) for path in paths]

    def _add_one(self, given: Path, progress: Progress | None) -> AddResult:
        shown = str(given)
        data = Path(os.path.abspath(given))
        require_exists(data, shown)
        self._check_addable(data, shown)
        with path_lock(self.locks, data):
            st = require_exists(data, shown)  # again: another add may have run meanwhile
            with self.store.batch():  # every object durable before the pointer names it
                pointer = self._store_content(data, shown, st, progress)
            pointer_path = pointer_path_of(data)
            old = self._existing_pointer(pointer_path)
            if old is not None:
                pointer = replace(pointer, name=old.name, version=old.version)
            changed = old != pointer
            if changed:
                write_text_atomically(pointer_path, dump_pointer(pointer))
            ignored = ignore_in_git(data)
        return AddResult(
            path=_display(data),
            pointer_path=_display(pointer_path),
            pointer=pointer,
            changed=changed,
            ignored=ignored,
        )

    def _store_content(
        self, data: Path, shown: str, st: os.stat_result, progress: Progress | None
    ) -> Pointer:
        """Put a file, or a folder's files and manifest, into the store; the new pointer."""
        if stat.S_ISDIR(st.st_mode):
            self.cache.preload(str(data))
            taken = time.time_ns()
            files = walk_files(data)
            entries = self._digests(files, store=True, progress=progress)
            manifest = self.store.put_bytes(manifest_bytes(entries))
            self.cache.save_snapshot(str(data), manifest.digest, _stats(files), taken_ns=taken)
            return Pointer(
                kind="directory",
                hash=manifest.digest,
                size=sum(size for _, size in entries.values()),
                files=len(entries),
            )
        if stat.S_ISREG(st.st_mode):
            entry = self._digests({data.name: (str(data), st)}, store=True, progress=progress)
            digest, size = entry[data.name]
            return Pointer(kind="file", hash=digest, size=size, files=1)
        raise InvalidInput(
            f"{shown} is not a regular file or folder (a FIFO, socket or device)", path=shown
        )

    def _check_addable(self, data: Path, shown: str) -> None:
        if data.name.endswith(".keel"):
            raise InvalidInput(
                f"{shown} is a pointer file (or named like one); add the data it names",
                path=shown,
            )
        if data.parent == data:
            raise InvalidInput("cannot track the filesystem root", path=shown)
        home = self.settings.home_path
        if SKIPPED_FOLDERS & set(data.parts) or data.is_relative_to(home):
            raise InvalidInput(f"{shown} is inside .git or the Keel home", path=shown)
        if home.is_relative_to(data) or (data / ".git").exists():
            raise InvalidInput(
                f"{shown} holds the Keel home or a git repository; add the data folders "
                "inside it instead",
                path=shown,
            )
        for parent in data.parents:
            if parent.name and pointer_path_of(parent).is_file():
                raise InvalidInput(
                    f"{shown} is inside the tracked folder {_display(parent)}; add that folder "
                    "again instead",
                    path=shown,
                )

    def _existing_pointer(self, pointer_path: Path) -> Pointer | None:
        """The pointer already there, or None if there is none or it does not parse."""
        try:
            text = pointer_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            raise StorageError(f"cannot read {pointer_path}: {error}") from error
        try:
            return parse_pointer(text, source=_display(pointer_path))
        except InvalidInput:
            return None  # rewritten from the data

    def _digests(self, files: _Files, *, store: bool, progress: Progress | None = None) -> _Entries:
        """Each file's digest and size, from the stat cache where its stat is unchanged.

        With ``store``, files not yet in the artifact store are put there (a cached digest is
        only trusted once the object exists).
        """
        entries: _Entries = {}
        todo: list[str] = []
        lookup, exists = self.cache.lookup, self.store.exists
        for rel, (path, st) in files.items():
            digest = lookup(path, st)
            if digest is not None and (not store or exists(digest)):
                entries[rel] = (digest, st.st_size)
            else:
                todo.append(rel)
        if not todo:
            return entries
        started = time.time_ns()
        read = self.store.put_file if store else hash_file
        counter = _Counter(len(todo), progress)

        def one(rel: str) -> tuple[str, int]:
            blob = read(files[rel][0])
            counter.step()
            return blob.digest, blob.size

        mean_size = sum(files[rel][1].st_size for rel in todo) / len(todo)
        threads = HASH_THREADS if mean_size >= THREADED_MIN_MEAN_SIZE else 1
        fresh = _map_in_threads(one, todo, threads=threads)
        entries.update(zip(todo, fresh, strict=True))
        self.cache.record(
            (files[rel][0], files[rel][1], digest, started)
            for rel, (digest, size) in zip(todo, fresh, strict=True)
            if size == files[rel][1].st_size
        )
        return dict(sorted(entries.items()))

    # -- status ---------------------------------------------------------------

    def status(self, paths: Sequence[str | os.PathLike[str]] = ()) -> list[PathStatus]:
        """How each tracked path's working copy differs from its pointer.

        Args:
            paths: data paths, pointer files or folders to search for pointers; default the
                current folder.

        Returns:
            One :class:`PathStatus` per pointer found, sorted by pointer path.

        Raises:
            NotFound: a path is neither tracked nor a folder; a folder's manifest is not in
                the store.
            InvalidInput: a pointer file does not parse.
            StorageError: a file cannot be read.
        """
        return [self._status_one(pointer_path) for pointer_path in pointers_named(paths)]

    def _status_one(self, pointer_path: Path) -> PathStatus:
        pointer = self._read_pointer(pointer_path)
        data = data_path_of(pointer_path)
        shown = _display(data)
        result = PathStatus(path=shown, pointer=_display(pointer_path), kind=pointer.kind)
        expected, working = self._compare(pointer, data, pointer_path)
        if expected == working:
            return result
        for rel in sorted(expected.keys() | working.keys()):
            name = shown if pointer.kind == "file" else f"{shown}/{rel}"
            if rel not in working:
                result.deleted.append(name)
            elif rel not in expected:
                result.added.append(name)
            elif working[rel] != expected[rel]:
                result.modified.append(name)
        return result

    def _compare(
        self, pointer: Pointer, data: Path, pointer_path: Path
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The files the pointer lists and those in the working copy, as rel -> digest.

        A file pointer is the one entry ``""``. A folder where a file is tracked counts as
        that file modified; a file where a folder is tracked, as every file deleted. When a
        folder's files all have the stats they had when they last matched this pointer's
        manifest (the stat cache's snapshot), the manifest is not read: both sides are then
        the same dict, each file mapped to the manifest's digest.
        """
        st = stat_or_none(data)
        if pointer.kind == "file":
            expected = {"": pointer.hash}
            if st is None:
                return expected, {}
            if stat.S_ISDIR(st.st_mode):
                return expected, {"": "0" * 64}  # a folder: modified
            entry = self._digests({"": (str(data), st)}, store=False)[""]
            return expected, {"": entry[0]}
        if st is None or not stat.S_ISDIR(st.st_mode):
            return self._manifest(pointer, pointer_path), {}
        folder = str(data)
        taken = time.time_ns()
        files = walk_files(data)
        stats = _stats(files)
        if self.cache.matches_snapshot(folder, pointer.hash, stats):
            if not self.store.exists(pointer.hash):
                self._manifest(pointer, pointer_path)  # raises NotFound, naming the pointer
            same = dict.fromkeys(stats, pointer.hash)
            return same, same
        expected = self._manifest(pointer, pointer_path)
        self.cache.preload(folder)
        working = {rel: digest for rel, (digest, _) in self._digests(files, store=False).items()}
        if working == expected:
            self.cache.save_snapshot(folder, pointer.hash, stats, taken_ns=taken)
        return expected, working

    def _manifest(self, pointer: Pointer, pointer_path: Path) -> dict[str, str]:
        try:
            return {
                rel: blob.digest for rel, blob in self.store.read_manifest(pointer.hash).items()
            }
        except NotFound as error:
            raise NotFound(
                f"the folder listing of {_display(pointer_path)} ({pointer.hash}) is not in the "
                f"store {self.settings.artifacts_url}: {error.message}",
                digest=pointer.hash,
            ) from None

    def _read_pointer(self, pointer_path: Path) -> Pointer:
        shown = _display(pointer_path)
        try:
            text = pointer_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(f"no such pointer file: {shown}", path=shown) from None
        except UnicodeDecodeError:
            raise InvalidInput(f"{shown} is not a valid Keel pointer: not UTF-8 text") from None
        except OSError as error:
            raise StorageError(f"cannot read {shown}: {error.strerror or error}") from error
        return parse_pointer(text, source=shown)

    # -- checkout -------------------------------------------------------------

    def checkout(
        self, paths: Sequence[str | os.PathLike[str]] = (), *, force: bool = False
    ) -> list[CheckoutResult]:
        """Restore each tracked path's working copy from the store, exactly as its pointer says.

        Missing and modified files are written from the store (copies, atomically, after the
        content checked out against its digest), so editing them later never touches the store:
        each is a file of its own, a reflink (shared blocks, copied on the first write) where
        the filesystem supports them, else a kernel copy (``copy_file_range``). Hard links and
        symlinks are never used. Each path is locked while it is checked out.
        Files in a tracked folder that the pointer does not list are reported and kept.

        Args:
            paths: as for :meth:`status`; default every pointer under the current folder.
            force: also delete files the pointer does not list, and replace a folder where
                the pointer has a file (or a file where it has a folder).

        Returns:
            One :class:`CheckoutResult` per pointer.

        Raises:
            NotFound: a pointer's object is not in the store.
            Conflict: a folder is where a file must go, or a file where a folder must be
                (without ``force``); nothing of that path was written.
            StorageError: an object is corrupt (moved to the store's ``quarantine/``), or a
                file cannot be written.
        """
        results = []
        for pointer_path in pointers_named(paths):
            with path_lock(self.locks, data_path_of(pointer_path)):
                results.append(self._checkout_one(pointer_path, force=force))
        return results

    def _checkout_one(self, pointer_path: Path, *, force: bool) -> CheckoutResult:
        pointer = self._read_pointer(pointer_path)
        data = data_path_of(pointer_path)
        shown = _display(data)
        result = CheckoutResult(path=shown, pointer=_display(pointer_path))
        st = stat_or_none(data)
        wrong_kind = st is not None and (pointer.kind == "file") == stat.S_ISDIR(st.st_mode)
        if wrong_kind:
            if not force:
                what = "a folder" if pointer.kind == "file" else "a file"
                raise Conflict(
                    f"{shown} is {what}, but {result.pointer} tracks a {pointer.kind}; "
                    "move it away, or pass --force to replace it",
                    path=shown,
                )
            _remove(data)
        expected, working = self._compare(pointer, data, pointer_path)
        if pointer.kind == "file":
            if working.get("") != expected[""]:
                self.store.get_file(pointer.hash, data)
                result.restored.append(shown)
            return result
        extra = sorted(working.keys() - expected.keys())
        result.extra = [f"{shown}/{rel}" for rel in extra]
        if force:
            for rel in extra:
                _remove(data.joinpath(*rel.split("/")))
                _prune_empty(data.joinpath(*rel.split("/")).parent, data)
            result.removed = result.extra
            result.extra = []
        todo = {rel: digest for rel, digest in expected.items() if working.get(rel) != digest}
        self.store.get_files(todo, data)
        result.restored = [f"{shown}/{rel}" for rel in sorted(todo)]
        return result


# -- module functions -------------------------------------------------------------


def add(
    paths: Sequence[str | os.PathLike[str]],
    *,
    name: str | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> list[AddResult]:
    """Version files and folders: see :meth:`Workspace.add`; with ``name``, also as a dataset.

    A named pointer (``name``, or one that already carries a name) whose content is new is
    recorded as the next version of its dataset (:func:`keel.data.versions.log_pointer`), and
    the pointer gets that name and version, so it never names a version with other content.

    Args:
        paths: files or folders.
        name: record the one path given as a version of this dataset.
        settings: where the store, stat cache and database are; default ``Settings()``.
        progress: called with ``(done, total)`` as files are read.

    Returns:
        One :class:`AddResult` per path; ``dataset_version`` is set where a version was
        recorded.

    Raises:
        InvalidInput: ``name`` with several paths, or a malformed name; see
            :meth:`Workspace.add` for the rest.

    Example:
        >>> keel.data.add(["data/train.csv", "images/"])  # doctest: +SKIP
        [AddResult(path='data/train.csv', pointer_path='data/train.csv.keel', ...), ...]
        >>> keel.data.add(["data/train.csv"], name="diabetes")[0].dataset_version  # doctest: +SKIP
        'diabetes@3'
    """
    if name is not None:
        from keel.data.versions import parse_ref

        if len(paths) != 1:
            raise InvalidInput(
                f"a dataset name names one path: give one PATH, not {len(paths)} (add a folder to "
                "version several files together)"
            )
        if "@" in name:
            raise InvalidInput(f"a dataset name is given without @VERSION, not {name!r}")
        parse_ref(name)  # a bad name fails before anything is stored
    with Workspace(settings) as ws:
        results = ws.add(paths, progress=progress)
        return [
            _record_version(given, result, name, ws.settings)
            for given, result in zip(paths, results, strict=True)
        ]


def _record_version(
    given: str | os.PathLike[str], result: AddResult, name: str | None, settings: Settings
) -> AddResult:
    """Record a named pointer's new content as its dataset's next version (see :func:`add`)."""
    dataset = name or (result.pointer.name if result.changed else None)
    if dataset is None:
        return result
    from keel.data.versions import log_pointer

    version = log_pointer(given, dataset, settings=settings)
    pointer = replace(result.pointer, name=dataset, version=str(version.version))
    return replace(
        result,
        pointer=pointer,
        changed=result.changed or pointer != result.pointer,
        dataset_version=version.ref,
    )


def status(
    paths: Sequence[str | os.PathLike[str]] = (), *, settings: Settings | None = None
) -> list[PathStatus]:
    """What changed since each pointer: see :meth:`Workspace.status`.

    Example:
        >>> [s.modified for s in keel.data.status()]  # doctest: +SKIP
        [['images/cat.png']]
    """
    with Workspace(settings) as ws:
        return ws.status(paths)


def checkout(
    paths: Sequence[str | os.PathLike[str]] = (),
    *,
    force: bool = False,
    settings: Settings | None = None,
) -> list[CheckoutResult]:
    """Restore working copies from the store: see :meth:`Workspace.checkout`.

    Example:
        >>> keel.data.checkout(["images"])  # doctest: +SKIP
        [CheckoutResult(path='images', restored=['images/cat.png'], ...)]
    """
    with Workspace(settings) as ws:
        return ws.checkout(paths, force=force)


# -- helpers -----------------------------------------------------------------------


def _display(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it, else absolute."""
    cwd = Path.cwd()
    if path.is_relative_to(cwd) and path != cwd:
        return path.relative_to(cwd).as_posix()
    return str(path)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as error:
        raise StorageError(f"cannot remove {path}: {error.strerror or error}") from error


def _prune_empty(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``root`` while they are empty."""
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _stats(files: _Files) -> dict[str, tuple[int, int, int]]:
    """A folder's files as the stat cache's snapshots compare them: (size, mtime_ns, inode)."""
    return {rel: (st.st_size, st.st_mtime_ns, st.st_ino) for rel, (_, st) in files.items()}


class _Counter:
    """Counts finished files across threads and reports them to a progress callback."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self._progress = progress
        self._lock = threading.Lock()

    def step(self) -> None:
        if self._progress is None:
            return
        with self._lock:
            self.done += 1
            done = self.done
        self._progress(done, self.total)


def _map_in_threads(
    function: Callable[[_T], _R], items: Iterable[_T], *, threads: int = HASH_THREADS
) -> list[_R]:
    items = list(items)
    if len(items) <= 1 or threads <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(function, items))
