"""Adaptive micro-batching: concurrent requests to one model share one ``predict`` call.

Each request's frame is checked against the signature alone, on the caller's turn (a bad
request is refused without costing anyone else), then queued. One scorer per model runs
``predict_checked`` on the concatenated queue in a thread, off the event loop, and hands each
caller its own rows back. It is adaptive: with nothing in flight a request is scored at once, so
concurrency 1 waits for no one; while a ``predict`` runs, arrivals queue and the next call takes
all of them (up to ``max_batch_rows``). Under load the batch grows by itself. ``max_wait_ms``
only matters under load: when several requests were in flight at once, a batch may wait that
long for as many to be queued (so N clients in a closed loop make one call per round, not two).

Example:
    >>> batcher = MicroBatcher(keel.models.load("models:/diabetes@champion"))  # doctest: +SKIP
    >>> await batcher.predict(frame)  # doctest: +SKIP
    array([151.2, 75.3])
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from keel.models.loading import Predictor

__all__ = ["DEFAULT_MAX_BATCH_ROWS", "DEFAULT_MAX_WAIT_MS", "BatcherClosed", "MicroBatcher"]

DEFAULT_MAX_BATCH_ROWS = 1024
"""Rows one ``predict`` call takes at most (a single larger request is still scored whole)."""
DEFAULT_MAX_WAIT_MS = 2.0
"""Under load, how long a batch may wait for the requests in flight to come back. Measured with
16 clients on a 100-tree forest (docs/serving.md, Performance): 0 ms gave 188-459 req/s and
about 8 requests per predict call, 2 ms gave 302-669 req/s and about 16; a lone request never
waits."""

log = logging.getLogger("keel.serving")

OnBatch = Callable[[int, int], None]
"""Called on the event loop after each ``predict`` call with (requests, rows) it scored."""


class BatcherClosed(RuntimeError):
    """A request reached a batcher that has been closed (its model was swapped out)."""


@dataclass(eq=False)
class _Pending:
    checked: Any
    rows: int
    kind: Any
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    """What a batcher did, for tests and ``/metadata``."""

    requests: int = 0
    calls: int = 0
    rows: int = 0
    retries: int = 0
    largest: int = 0
    history: deque[int] = field(default_factory=lambda: deque(maxlen=64))


class MicroBatcher:
    """Groups concurrent :meth:`predict` calls on one model into few ``predict`` calls.

    Args:
        predictor: the loaded model.
        max_batch_rows: rows one call takes at most; 0 scores every request alone (no
            batching, still off the event loop).
        max_wait_ms: under concurrent load, how long a batch may wait until as many requests
            are queued as were in flight at once lately (it goes as soon as they are). Only a
            batch that follows another within ``10 * max_wait_ms`` waits, and only when
            several requests were in flight: a lone request is never held. 0: never wait.
        on_batch: called after each ``predict`` call with (requests, rows), e.g. for metrics.
        name: names the scorer thread (the arm's label).
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        on_batch: OnBatch | None = None,
        name: str = "model",
    ) -> None:
        if max_batch_rows < 0 or max_wait_ms < 0:
            raise ValueError("max_batch_rows and max_wait_ms must not be negative")
        self.predictor = predictor
        self.max_batch_rows = max_batch_rows
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._scorer: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"keel-score {name}")
        self._closed = False
        self._typed = predictor.signature is not None  # check() gives the signature's types
        self._rows = 0  # queued rows
        self._running = 0  # requests in the predict call under way
        self._peak = 0  # most requests queued or running at once, lately (the concurrency)
        self._last_end = 0.0  # when the last batch was answered (loop time)
        self._want = 0  # requests a waiting batch wants; 0 when none waits
        self._filled: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<MicroBatcher {self.predictor.uri} max_batch_rows={self.max_batch_rows}>"

    async def predict(self, data: Any) -> Any:
        """Predictions for ``data`` (one request's rows), scored with whatever else is queued.

        Raises:
            SchemaMismatch: ``data`` does not match the signature (nothing is queued).
            ValueError, TypeError: the model refused these rows (others in the batch are
                scored without them).
            BatcherClosed: the batcher was closed before this call.
        """
        if self._closed:
            raise BatcherClosed(f"the scorer of {self.predictor.uri} is closed")
        checked = self.predictor.check(data)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        kind = _kind(checked, self._typed)
        self._queue.append(_Pending(checked, len(checked), kind, future))
        self._rows += len(checked)
        self._peak = max(self._peak, len(self._queue) + self._running)
        self.stats.requests += 1
        if self._scorer is None:
            self._scorer = asyncio.create_task(self._score_queue())
        elif self._want and (len(self._queue) >= self._want or self._rows >= self.max_batch_rows):
            assert self._filled is not None
            self._filled.set()
        return await future

    async def close(self) -> None:
        """Refuse new requests, let every queued one be scored, then stop the scorer thread."""
        self._closed = True
        while self._scorer is not None:
            await asyncio.shield(self._scorer)
        self._executor.shutdown(wait=False)

    @property
    def queued(self) -> int:
        """Requests waiting for a ``predict`` call."""
        return len(self._queue)

    async def _score_queue(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if self._should_wait(loop.time()):
                    await self._wait_to_fill()
                batch = self._take()
                if not batch:
                    continue
                self._running = len(batch)
                try:
                    await loop.run_in_executor(self._executor, self._score, batch)
                except BaseException as exc:  # the model raised past Exception, or a cancel
                    _fail_all(batch, exc)
                    if isinstance(exc, asyncio.CancelledError):
                        _fail_all(list(self._queue), exc)
                        self._queue.clear()
                        raise
                finally:
                    self._running = 0
                for pending in batch:
                    _settle(pending)
                self._note(batch)
                self._last_end = loop.time()
        finally:
            self._scorer = None

    def _should_wait(self, now: float) -> bool:
        """Wait only under concurrent load: several requests were in flight at once lately,
        a batch was answered just now, and fewer than that many are queued (so a lone
        request, or the first after a lull, goes at once)."""
        if now - self._last_end > 10 * self.max_wait:  # a lull: the mark starts again
            self._peak = len(self._queue)
            return False
        return (
            self.max_wait > 0
            and self._peak > 1
            and len(self._queue) < self._peak
            and self._rows < self.max_batch_rows
        )

    async def _wait_to_fill(self) -> None:
        """Up to ``max_wait``, until as many requests are queued as were in flight at the
        busiest lately. A wait that times out sets that mark to what came, so when the load
        drops one request waits once; the mark climbs back as soon as more are in flight.

        Without it, a closed loop of N clients splits into cohorts (the first to come back
        finds the scorer idle and goes alone, the rest queue behind it) that never merge: twice
        the ``predict`` calls or more. Waiting for the requests just answered to come back
        merges them into one batch.
        """
        if self._filled is None:
            self._filled = asyncio.Event()
        self._filled.clear()
        self._want = self._peak
        try:
            await asyncio.wait_for(self._filled.wait(), self.max_wait)
        except TimeoutError:
            self._peak = len(self._queue)
        finally:
            self._want = 0

    def _take(self) -> list[_Pending]:
        """The next batch: queued requests in order, while they fit ``max_batch_rows`` and have
        the same columns and types as the first (the first is taken whatever its size)."""
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():  # its caller went away
                self._rows -= self._queue.popleft().rows
                continue
            if batch and (
                rows + pending.rows > self.max_batch_rows or pending.kind != batch[0].kind
            ):
                break
            batch.append(self._queue.popleft())
            rows += pending.rows
        self._rows -= rows
        return batch

    def _score(self, batch: list[_Pending]) -> None:
        """In the scorer thread: one ``predict`` for the whole batch, each request's rows back;
        if it raises (or answers the wrong number of rows), each request alone."""
        if len(batch) == 1:
            _score_alone(self.predictor, batch[0])
            return
        try:
            predictions = self.predictor.predict_checked(_concat([p.checked for p in batch]))
            if len(predictions) != sum(p.rows for p in batch):
                raise ValueError("the model answered another number of rows than it was given")
            results, start = [], 0
            for pending in batch:  # slicing can fail too (an answer that is not a sequence)
                results.append(_rows(predictions, start, start + pending.rows))
                start += pending.rows
        except Exception:
            self.stats.retries += 1
            for pending in batch:
                _score_alone(self.predictor, pending)
            return
        for pending, result in zip(batch, results, strict=True):
            pending.result = result

    def _note(self, batch: list[_Pending]) -> None:
        rows = sum(pending.rows for pending in batch)
        stats = self.stats
        stats.calls += 1
        stats.rows += rows
        stats.largest = max(stats.largest, len(batch))
        stats.history.append(len(batch))
        if self._on_batch is not None:
            self._on_batch(len(batch), rows)


def _score_alone(predictor: Predictor, pending: _Pending) -> None:
    try:
        pending.result = predictor.predict_checked(pending.checked)
    except Exception as exc:
        pending.error = exc


def _fail_all(batch: list[_Pending], exc: BaseException) -> None:
    """Answer every caller of ``batch`` still waiting with an error (nobody waits forever)."""
    error = RuntimeError(f"the model could not score this request: {exc!r}")
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)


def _settle(pending: _Pending) -> None:
    if pending.future.done():  # cancelled: the client disconnected
        return
    if pending.error is not None:
        pending.future.set_exception(pending.error)
    else:
        pending.future.set_result(pending.result)


def _kind(checked: Any, typed: bool) -> Any:
    """What must be equal for two checked inputs to be concatenated without changing either:
    a frame's columns (and, when no signature fixed their types, its dtypes), an array's dtype
    and row shape. Asked once per request, so kept cheap (a frame's ``dtypes`` is a Series)."""
    columns = getattr(checked, "columns", None)
    if columns is not None:
        if typed:
            return ("frame", tuple(columns))
        return ("frame", tuple(columns), tuple(str(dtype) for dtype in checked.dtypes))
    shape = getattr(checked, "shape", None)
    if shape is not None:
        return ("array", str(checked.dtype), tuple(shape[1:]))
    return ("other", id(checked))  # never batched with anything


def _concat(parts: list[Any]) -> Any:
    first = parts[0]
    if hasattr(first, "columns"):
        import pandas as pd

        return pd.concat(parts, ignore_index=True)
    import numpy as np

    return np.concatenate(parts)


def _rows(predictions: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a batch's predictions, in the type the model answered."""
    iloc = getattr(predictions, "iloc", None)
    if iloc is not None:  # a DataFrame or Series: numbered from 0 again, as alone
        return iloc[start:stop].reset_index(drop=True)
    return predictions[start:stop]
