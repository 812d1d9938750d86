"""Writing a small file whole in a handful of system calls: it appears complete or not at all.

On Linux the bytes go into an unnamed file (``O_TMPFILE``) in the destination's folder, which
``linkat`` then names: open, write, link, close, and a process killed before the link leaves
nothing behind, not even a temp file. Elsewhere, or on a filesystem that refuses ``O_TMPFILE``
(some network and FUSE ones), they go into a named temp file renamed over the destination.
Temp names are this process's prefix and a counter, not fresh randomness per file, and only
raw descriptors are used: no Python file object, buffer or ``isatty`` probe per file.

What :class:`~keel.artifacts.store.ArtifactStore` uses for small objects (added, pushed,
pulled) and for the files a checkout writes; large ones keep their streamed or kernel copies.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
from contextlib import suppress

__all__ = ["FileWriter", "temp_name"]

_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_REFUSED = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})
"""What opening with O_TMPFILE fails with where the filesystem (or an old kernel) lacks it."""

_counter = itertools.count()
_prefix = ""


def _new_prefix() -> None:
    global _prefix
    _prefix = f"{os.getpid()}-{secrets.token_hex(4)}-"


_new_prefix()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_prefix)  # a forked child must not reuse names


def temp_name() -> str:
    """A name no other call, thread or process (of any host sharing the folder) picks:
    ``<pid>-<8 random hex, once per process>-<counter>``. Starts with the pid, as the store's
    ``tmp/`` files always have."""
    return f"{_prefix}{next(_counter)}"  # next() on a count is atomic under the GIL


class FileWriter:
    """Writes files whole: ``O_TMPFILE`` and ``linkat`` where they work, else temp and rename.

    One writer serves many files (a store, a checkout): the first refusal of ``O_TMPFILE``
    (the filesystem lacks it, or ``/proc`` is not mounted to link it) switches it to named
    temp files for the rest of its life.

    Args:
        tmpfile: try ``O_TMPFILE`` first (Linux); False always uses a named temp file.

    Example:
        >>> FileWriter().write("/data/out", "a.txt", b"hello", mode=0o666)  # doctest: +SKIP
    """

    def __init__(self, *, tmpfile: bool = True) -> None:
        self.tmpfile = tmpfile and bool(_O_TMPFILE)

    def write(
        self,
        folder: str,
        name: str,
        data: bytes,
        *,
        mode: int,
        sync: bool = False,
        temp_dir: str | None = None,
    ) -> None:
        """Make ``folder/name`` hold exactly ``data``, replacing what was there, atomically.

        Args:
            folder: an existing folder.
            name: the file's name in it.
            data: the content.
            mode: the new file's permission bits (before the umask).
            sync: flush the content to disk before the file gets its name (the folder's
                entry is the caller's to flush).
            temp_dir: where a named temp file goes (``<temp name>.part``, created if
                missing); default beside the file as ``.<name>.<temp name>.keel-tmp``.

        Raises:
            OSError: the folder is missing, or the file cannot be written.
        """
        final = os.path.join(folder, name)
        if self.tmpfile:
            try:
                fd = os.open(folder, os.O_WRONLY | _O_TMPFILE | _CLOEXEC, mode)
            except OSError as error:
                if error.errno not in _REFUSED:
                    raise
                self.tmpfile = False
            else:
                try:
                    _write_all(fd, data)
                    if sync:
                        os.fsync(fd)
                    if self._link(fd, final, folder, name, temp_dir):
                        return
                finally:
                    os.close(fd)
        self._write_named(final, self._temp_path(folder, name, temp_dir), data, mode, sync)

    def _link(self, fd: int, final: str, folder: str, name: str, temp_dir: str | None) -> bool:
        """Name the unnamed file ``fd`` as ``final``; False where /proc cannot link it."""
        # With a dir_fd, os.link calls linkat(..., AT_SYMLINK_FOLLOW), which follows the
        # /proc magic link to the open file; without one it calls link(), which fails (EXDEV).
        # The path is absolute, so the kernel ignores which descriptor that is.
        source = f"/proc/self/fd/{fd}"
        try:
            os.link(source, final, src_dir_fd=fd)
        except FileExistsError:
            pass  # replaced below, through a temp name
        except FileNotFoundError:
            if os.path.exists(source):
                raise  # the folder went away
            self.tmpfile = False  # no /proc
            return False
        else:
            return True
        tmp = self._temp_path(folder, name, temp_dir)
        self._link_temp(source, fd, tmp, temp_dir)
        try:
            os.replace(tmp, final)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return True

    @staticmethod
    def _link_temp(source: str, fd: int, tmp: str, temp_dir: str | None) -> None:
        try:
            os.link(source, tmp, src_dir_fd=fd)
        except FileNotFoundError:
            if temp_dir is None:
                raise
            os.makedirs(temp_dir, exist_ok=True)
            os.link(source, tmp, src_dir_fd=fd)

    @staticmethod
    def _temp_path(folder: str, name: str, temp_dir: str | None) -> str:
        if temp_dir is None:
            return os.path.join(folder, f".{name}.{temp_name()}.keel-tmp")
        return os.path.join(temp_dir, f"{temp_name()}.part")

    @staticmethod
    def _write_named(final: str, tmp: str, data: bytes, mode: int, sync: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC | _BINARY
        try:
            fd = os.open(tmp, flags, mode)
        except FileNotFoundError:
            folder = os.path.dirname(tmp)
            if folder == os.path.dirname(final):
                raise
            os.makedirs(folder, exist_ok=True)  # the store's tmp/, on first use
            fd = os.open(tmp, flags, mode)
        try:
            try:
                _write_all(fd, data)
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            _unlink_quietly(tmp)
            raise


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # rare for a regular file: a signal, a nearly full disk
        view = memoryview(data)
        while written < len(data):
            written += os.write(fd, view[written:])


def _unlink_quietly(path: str) -> None:
    with suppress(OSError):
        os.unlink(path)
