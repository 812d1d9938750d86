"""Buffered metric writes: ``log_metric`` appends in memory; a background thread writes batches.

A batch is written when ``size`` points are waiting or ``interval`` seconds have passed, and
synchronously on ``flush()`` (end of a run, a read that must see the points, process exit). A
batch that fails to write is put back at the front of the queue, never dropped; the error is
kept and raised by the next ``flush()``. The same thread refreshes the heartbeat of open runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from keel.errors import KeelError, NotFound, StorageError
from keel.tracking.store import PointTuple, TrackingStore

__all__ = ["BATCH_POINTS", "MAX_PENDING", "MetricBuffer", "PointIntake"]

log = logging.getLogger(__name__)

#: Points per transaction: short transactions keep other writers' waits short and make progress
#: durable step by step (a 20,000-point batch commits in tens of milliseconds).
BATCH_POINTS = 20_000
#: Pending points at which a logging call writes synchronously instead of buffering more, which
#: bounds memory when a loop logs faster than the database takes it.
MAX_PENDING = 200_000


class PointIntake:
    """The front both metric queues share: append under a lock, wake the writer thread once
    ``_size`` points wait, and let the subclass bound memory in :meth:`_overflow`."""

    _size: int
    _points: list[PointTuple]
    _lock: threading.Lock
    _wake: threading.Event
    _thread: threading.Thread | None

    def add(self, point: PointTuple) -> None:
        with self._lock:
            self._points.append(point)
            pending = len(self._points)
        if pending >= self._size:
            self._full(pending)
        elif self._thread is None:
            self.start()

    def extend(self, points: list[PointTuple]) -> None:
        with self._lock:
            self._points.extend(points)
            pending = len(self._points)
        if pending >= self._size:
            self._full(pending)
        elif self._thread is None:
            self.start()

    def _full(self, pending: int) -> None:
        if self._thread is None:
            self.start()
        if not self._wake.is_set():  # set() takes a lock: once per wake-up, not per point
            self._wake.set()
        self._overflow(pending)

    def start(self) -> None:
        raise NotImplementedError

    def _overflow(self, pending: int) -> None:
        """Called with the number of waiting points each time the size threshold is passed."""


class MetricBuffer(PointIntake):
    def __init__(
        self,
        store: TrackingStore,
        *,
        interval: float,
        size: int,
        heartbeat_interval: float,
        open_runs: Callable[[], list[str]],
    ) -> None:
        self._store = store
        self._interval = interval
        self._size = size
        self._heartbeat_interval = heartbeat_interval
        self._open_runs = open_runs
        self._points: list[PointTuple] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _overflow(self, pending: int) -> None:
        if pending >= MAX_PENDING:
            self.flush()

    def reset_after_fork(self) -> None:
        """In a forked child: fresh locks, no writer thread (it did not survive the fork), and
        none of the parent's pending points (the parent writes those)."""
        self._points = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    @property
    def pending(self) -> int:
        return len(self._points)

    def flush(self) -> None:
        """Write every buffered point now.

        Raises:
            StorageError: the points could not be written; they stay buffered for a retry.
        """
        with self._write_lock:
            while True:
                with self._lock:
                    points = self._points[:BATCH_POINTS]
                    del self._points[:BATCH_POINTS]
                if not points:
                    break
                try:
                    self._write(points)
                except BaseException as exc:
                    with self._lock:
                        self._points[:0] = points
                    if isinstance(exc, KeelError):
                        raise
                    raise StorageError(
                        f"could not write {self.pending} metric points ({exc}); they are still "
                        "buffered and will be retried",
                        pending=self.pending,
                    ) from exc
            self._error = None

    def _write(self, points: list[PointTuple]) -> None:
        try:
            self._store.log_metric_points(points)
        except NotFound as exc:
            # a run deleted from the database for good: keep the other runs' points flowing
            gone = set(exc.context.get("run_ids", ()))
            kept = [p for p in points if p[0] not in gone]
            log.warning(
                "keel: dropped %d metric points of runs that no longer exist: %s",
                len(points) - len(kept),
                ", ".join(sorted(gone)),
            )
            if kept:
                self._store.log_metric_points(kept)

    def start_heartbeats(self) -> None:
        """Make sure the background thread runs (it also sends heartbeats)."""
        if self._thread is None:
            self.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="keel-metrics", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        last_beat = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # kept for the next synchronous flush to report
                self._error = exc
                log.warning("keel: metric write failed, will retry: %s", exc)
            if time.monotonic() - last_beat >= self._heartbeat_interval:
                last_beat = time.monotonic()
                try:
                    self._store.heartbeat(self._open_runs())
                except Exception as exc:
                    log.warning("keel: heartbeat failed: %s", exc)
