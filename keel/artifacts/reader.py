"""Streaming one stored object: :class:`BlobReader` checks the BLAKE3 digest once read through."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keel.artifacts.files import CHUNK_SIZE, new_hasher
from keel.errors import StorageError

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["BlobReader"]

_CORRUPT_ADVICE = "the object is corrupt: re-log the artifact or restore it from a backup"


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
