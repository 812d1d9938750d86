"""A blocking ``read(n)`` over a request's async body, so a worker thread can stream an upload
into the artifact store without holding it in memory (both the native and the MLflow routes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio.from_thread

__all__ = ["BodyReader"]


class BodyReader:
    """``read(n)`` (``n < 0``: to the end) over async body chunks, for a worker thread."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self._done = False

    async def _next(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buffer) < n):
            chunk = anyio.from_thread.run(self._next)
            if chunk is None:
                self._done = True
            else:
                self._buffer += chunk
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out
