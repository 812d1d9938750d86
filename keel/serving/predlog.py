"""Prediction logs: every scored row, buffered in memory and written as Parquet by a background
thread, and the ground-truth labels (``POST /feedback``) that arrive later. Monitoring reads them.

Layout under the root (``<artifact_url>/predictions-log``, :func:`log_url`)::

    predictions/deployment=<name>/hour=<YYYY-MM-DDTHH>/<YYYYmmddTHHMMSS>-<uuid12>.parquet
    feedback/deployment=<name>/hour=<YYYY-MM-DDTHH>/<YYYYmmddTHHMMSS>-<uuid12>.parquet

One file per flush per (deployment, UTC hour of the rows' time), zstd, under a unique name so
several worker processes write side by side; a local file is written under a ``.``-name and
renamed, so a reader never sees half a file. The artifact store and ``keel gc`` only look at
``objects/``, ``tmp/`` and ``quarantine/``: ``predictions-log/`` is not theirs to collect.

:meth:`PredictionLog.log` is what the request path pays: a tuple of references appended under a
lock (the DataFrame is neither copied nor converted there). Everything else runs on the
writer thread: grouping, ``pandas.concat``, Arrow conversion, the write, retries with backoff.
See ``docs/prediction-logs.md``.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, StorageError
from keel.serving.predlog_files import (
    FEEDBACK_COLUMNS,
    HOUR_MS,
    PREDICTION_COLUMNS,
    ROWS,
    Sink,
    read_rows,
    table_of,
)
from keel.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FEEDBACK_COLUMNS",
    "PREDICTION_COLUMNS",
    "PredictionLog",
    "log_url",
    "open_log",
    "read_feedback",
    "read_predictions",
]

logger = logging.getLogger(__name__)

ROLES = frozenset({"primary", "shadow"})
DEPLOYMENT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A deployment name as a folder name: a registered model's name pattern (fullmatch)."""

MAX_ROW = 2**31 - 1
"""The largest row index a label may name (rows are stored as int32)."""

_CLOSE_WAIT = 30.0  # seconds close() waits for the writer thread, then writes what is left
_MAX_BACKOFF = 30.0


class PredictionLog:
    """Buffers predictions and labels of one deployment and writes them as Parquet.

    Args:
        url: root folder of prediction logs (a local path or an fsspec URL, ``s3://...``);
            usually :func:`log_url` of the settings.
        deployment: the deployment's name (a folder name: letters, digits, ``.``, ``_``, ``-``).
        flush_rows: write as soon as this many rows are buffered.
        flush_seconds: write at least this often (what a ``kill -9`` can lose).
        max_buffered_rows: while writes fail, keep at most this many rows; beyond it the
            oldest are dropped and counted (``stats()["dropped"]``, and a warning line).

    Raises:
        InvalidInput: a bad deployment name or option.
        MissingExtra: ``url`` names a filesystem whose fsspec package is not installed.

    Example:
        >>> log = PredictionLog("/srv/keel/predictions-log", "diabetes")  # doctest: +SKIP
        >>> log.log(request_id="r1", time_ms=now, arm="diabetes/3", model="diabetes",
        ...         version=3, role="primary", inputs=frame, outputs=[151.2],
        ...         latency_ms=0.8)  # doctest: +SKIP
        >>> log.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        deployment: str,
        *,
        flush_rows: int = 20_000,
        flush_seconds: float = 10.0,
        max_buffered_rows: int = 1_000_000,
    ) -> None:
        _check_deployment(deployment)
        if flush_rows < 1 or max_buffered_rows < 1 or not flush_seconds > 0:
            raise InvalidInput(
                "flush_rows and max_buffered_rows must be at least 1 and flush_seconds above 0",
                flush_rows=flush_rows,
                flush_seconds=flush_seconds,
                max_buffered_rows=max_buffered_rows,
            )
        self.url = url
        self.deployment = deployment
        self._sink = Sink(url)
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._max_rows = max_buffered_rows
        # reentrant: close() may run in a signal handler that interrupted log() or flush()
        self._lock = threading.RLock()
        self._write_lock = threading.RLock()
        self._predictions: deque[tuple[Any, ...]] = deque()
        self._labels: deque[tuple[Any, ...]] = deque()
        self._buffered = 0  # rows in the two deques
        self._in_flight = 0  # rows taken out by the write in progress
        self._counts = {"written": 0, "feedback_written": 0, "dropped": 0, "files": 0}
        self._reported_drops = 0
        self._last_error: str | None = None
        self._failures = 0
        self._closed = False
        self._warned_closed = False
        self._stopping = False
        self._woken = False
        self._wake = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"keel-predlog-{deployment}", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"PredictionLog({self.url!r}, {self.deployment!r})"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: later rows are dropped and counted."""
        return self._closed

    def log(
        self,
        *,
        request_id: str,
        time_ms: int,
        arm: str,
        model: str | None,
        version: int | None,
        role: str,
        inputs: pd.DataFrame | dict[str, Any] | None,
        outputs: Any,
        latency_ms: float,
        error: str | None = None,
    ) -> None:
        """Buffer one request's rows: O(1), no pandas or Arrow work (the writer thread does it).

        Do not modify ``inputs`` or ``outputs`` afterwards: they are kept by reference until
        written. After :meth:`close` the rows are dropped and counted, not raised about (a
        request answered while the service shuts down must not fail).

        Args:
            request_id: the id the response carried (what feedback names).
            time_ms: when the request arrived, milliseconds since the epoch (UTC).
            arm: the arm that scored it (``"diabetes/3"``).
            model: registered model name, None for a ``runs:/`` model.
            version: registered version, None for a ``runs:/`` model.
            role: ``"primary"`` or ``"shadow"``.
            inputs: the request's rows: a DataFrame, or a dict of column name to list of
                values (what a body parser has before pandas; about 10x cheaper to write);
                None when the body was not a table (one row is logged).
            outputs: one prediction per input row (a list, an array, a Series or a DataFrame),
                None when ``error`` is set.
            latency_ms: the request's scoring latency.
            error: what went wrong, if the model failed on the request.

        Raises:
            InvalidInput: ``role`` is not primary or shadow, ``request_id`` is not a string,
                ``time_ms`` not an integer, input columns differ in length, or ``outputs`` has
                not one entry per input row (a bug in the caller, raised before anything is
                kept).
        """
        rows = 1 if inputs is None else _rows(inputs)
        if role not in ROLES:
            raise InvalidInput(f"role must be 'primary' or 'shadow', not {role!r}", role=role)
        if not isinstance(request_id, str) or not isinstance(time_ms, int):
            raise InvalidInput(
                "request_id must be a string and time_ms an integer (milliseconds)",
                request_id=repr(request_id),
                time_ms=repr(time_ms),
            )
        if outputs is not None and _length(outputs) != rows:
            raise InvalidInput(
                f"{_length(outputs)} outputs for {rows} input rows: log one output per row",
                request_id=request_id,
            )
        if rows == 0:  # keep the request on record, as one row without inputs
            inputs, outputs, rows = None, None, 1
        entry = (request_id, time_ms, arm, model, version, role, inputs, outputs, latency_ms)
        with self._lock:
            if self._closed:
                self._drop_after_close(rows)
                return
            self._predictions.append((*entry, error, rows))
            self._buffered += rows
            self._after_append()

    def feedback(self, *, request_id: str, row: int, label: Any, time_ms: int) -> None:
        """Buffer one ground-truth label for row ``row`` of request ``request_id``.

        A label may come before its prediction is written or days later: they are joined
        when read. After :meth:`close` the label is dropped and counted.

        Raises:
            InvalidInput: ``row`` is not an index (0 to :data:`MAX_ROW`) or ``label`` is None.
        """
        if not isinstance(row, int) or not 0 <= row <= MAX_ROW or label is None:
            raise InvalidInput(
                f"a label needs a row index from 0 to {MAX_ROW} and a value that is not null",
                request_id=request_id,
                row=row,
            )
        with self._lock:
            if self._closed:
                self._drop_after_close(1)
                return
            self._labels.append((request_id, row, label, time_ms))
            self._buffered += 1
            self._after_append()

    def flush(self) -> None:
        """Write everything buffered now (blocking).

        Raises:
            StorageError: some rows could not be written; they stay buffered and the writer
                thread retries them.
        """
        error = self._write_pending()
        self._report_drops()
        if error is not None:
            raise StorageError(
                f"the prediction log could not write to {self.url}: {error}; the rows stay "
                "buffered and are retried",
                url=self.url,
            )

    def close(self) -> None:
        """Stop the writer thread and write everything buffered; idempotent.

        Safe to call from a signal handler or ``atexit`` (it is registered there). If the
        final write fails the rows are counted as dropped and an error is logged (nothing is
        raised during a shutdown).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=_CLOSE_WAIT)
        error = self._write_pending(wait=_CLOSE_WAIT)
        if error is not None:
            with self._lock:
                lost = self._buffered
                self._drop_oldest(lost)
                self._reported_drops = self._counts["dropped"]
            logger.error(
                "prediction log %s: %d rows could not be written at shutdown to %s: %s",
                self.deployment,
                lost,
                self.url,
                error,
            )
        self._report_drops()
        atexit.unregister(self.close)

    def stats(self) -> dict[str, int | str | None]:
        """Rows ``buffered`` (including a write in progress), ``written``,
        ``feedback_written``, ``dropped``, Parquet ``files`` written, and ``last_error`` (the
        last write failure, None once a write succeeds again)."""
        with self._lock:
            buffered = self._buffered + self._in_flight
            return {"buffered": buffered, **self._counts, "last_error": self._last_error}

    # -- the request path ---------------------------------------------------------------------

    def _after_append(self) -> None:
        if self._buffered + self._in_flight > self._max_rows:
            self._drop_oldest(self._buffered + self._in_flight - self._max_rows)
        if not self._woken and self._buffered >= self._flush_rows:
            self._woken = True
            self._wake.set()

    def _drop_oldest(self, rows: int) -> None:
        """Drop at least ``rows`` buffered rows, oldest predictions first (under the lock)."""
        while rows > 0 and (self._predictions or self._labels):
            if self._predictions:
                count = self._predictions.popleft()[ROWS]
            else:
                self._labels.popleft()
                count = 1
            rows -= count
            self._buffered -= count
            self._counts["dropped"] += count

    def _drop_after_close(self, rows: int) -> None:
        if not self._warned_closed:
            self._warned_closed = True
            logger.warning(
                "prediction log %s is closed: rows logged from now on are dropped",
                self.deployment,
            )
        self._counts["dropped"] += rows
        self._reported_drops += rows

    # -- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        due = time.monotonic() + self._flush_seconds
        while not self._stopping:
            self._wake.wait(max(0.0, due - time.monotonic()))
            if self._stopping:
                return
            if self._failures and time.monotonic() < due:
                self._wake.clear()  # a full buffer waits for the backoff while writes fail
                continue
            try:
                error = self._write_pending()
                self._report_drops()
            except Exception:  # the thread must outlive any bug in conversion or logging
                logger.exception("prediction log %s: the writer failed", self.deployment)
                error = "unexpected error"
            delay = self._flush_seconds if error is None else self._backoff()
            due = time.monotonic() + delay

    def _backoff(self) -> float:
        first = min(1.0, self._flush_seconds)
        return float(min(first * 2 ** (self._failures - 1), max(self._flush_seconds, _MAX_BACKOFF)))

    def _write_pending(self, *, wait: float = -1) -> str | None:
        """Write what is buffered; put back what failed. The error, or None. ``wait``: how
        long to wait for a write in progress on another thread (-1: as long as it takes)."""
        if not self._write_lock.acquire(timeout=wait):
            return f"a write in progress did not finish within {wait:g} s"
        try:
            return self._write_taken()
        finally:
            self._write_lock.release()

    def _write_taken(self) -> str | None:
        """Take everything buffered, write it, put back what failed (under the write lock)."""
        with self._lock:
            predictions, self._predictions = self._predictions, deque()
            labels, self._labels = self._labels, deque()
            self._in_flight, self._buffered = self._buffered, 0
            self._woken = False
            self._wake.clear()
        if not predictions and not labels:
            with self._lock:
                self._in_flight = 0
            return None
        failed_predictions, error = self._write_kind("predictions", predictions)
        failed_labels, label_error = self._write_kind("feedback", labels)
        error = error or label_error
        with self._lock:
            self._in_flight = 0
            self._predictions.extendleft(reversed(failed_predictions))
            self._labels.extendleft(reversed(failed_labels))
            self._buffered += sum(e[ROWS] for e in failed_predictions) + len(failed_labels)
            if self._buffered > self._max_rows:
                self._drop_oldest(self._buffered - self._max_rows)
        self._note(error)
        return error

    def _write_kind(
        self, kind: str, entries: Iterable[tuple[Any, ...]]
    ) -> tuple[list[tuple[Any, ...]], str | None]:
        """One file per hour of ``entries``; the entries whose file failed, and the error."""
        failed: list[tuple[Any, ...]] = []
        error = None
        time_at = 1 if kind == "predictions" else 3
        by_hour: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        for entry in entries:
            by_hour[entry[time_at] // HOUR_MS].append(entry)
        for hour, batch in sorted(by_hour.items()):
            rows = sum(e[ROWS] for e in batch) if kind == "predictions" else len(batch)
            try:
                table = table_of(kind, batch, self.deployment)
            except Exception as exc:  # conversion has fallbacks; this is a bug, said loudly
                logger.exception(
                    "prediction log %s: %d %s rows could not be converted and are dropped",
                    self.deployment,
                    rows,
                    kind,
                )
                with self._lock:
                    self._counts["dropped"] += rows
                    self._reported_drops += rows
                    self._last_error = f"conversion failed: {exc}"
                continue
            try:
                self._sink.write(kind, self.deployment, hour, table)
            except Exception as exc:  # OSError, or whatever an fsspec backend raises
                failed.extend(batch)
                error = f"{type(exc).__name__}: {exc}"
                continue
            with self._lock:
                self._counts["written" if kind == "predictions" else "feedback_written"] += rows
                self._counts["files"] += 1
        return failed, error

    def _note(self, error: str | None) -> None:
        """One warning per failure streak, one line when writes work again."""
        if error is None:
            if self._failures:
                logger.warning(
                    "prediction log %s writes to %s again after %d failed attempts",
                    self.deployment,
                    self.url,
                    self._failures,
                )
            self._failures = 0
            self._last_error = None
            return
        self._failures += 1
        self._last_error = error
        if self._failures == 1:
            logger.warning(
                "prediction log %s cannot write to %s (%s): %d rows kept in memory (at most "
                "%d), retrying with backoff",
                self.deployment,
                self.url,
                error,
                self._buffered,
                self._max_rows,
            )

    def _report_drops(self) -> None:
        with self._lock:
            dropped = self._counts["dropped"]
            new = dropped - self._reported_drops
            self._reported_drops = dropped
        if new > 0:
            logger.warning(
                "prediction log %s dropped %d rows (more than max_buffered_rows=%d waited "
                "for a write); %d dropped in all",
                self.deployment,
                new,
                self._max_rows,
                dropped,
            )


def _rows(inputs: Any) -> int:
    """Rows of a DataFrame, or of a dict of equal-length columns (checked: O(columns))."""
    if not isinstance(inputs, dict):
        if not hasattr(inputs, "columns"):
            raise InvalidInput(
                f"inputs must be a DataFrame or a dict of columns, not {type(inputs).__name__}"
            )
        return len(inputs)
    lengths = {_length(values) for values in inputs.values()}
    if len(lengths) > 1:
        raise InvalidInput(f"the input columns differ in length: {sorted(lengths)}")
    return lengths.pop() if lengths else 0


def _length(values: Any) -> int:
    try:
        return len(values)
    except TypeError:
        raise InvalidInput(
            f"expected one value per row (a list, an array, a Series or a DataFrame), not "
            f"{type(values).__name__}"
        ) from None


def log_url(settings: Settings) -> str:
    """Root of the prediction logs: ``<artifact_url>/predictions-log``.

    Example:
        >>> log_url(Settings(home="/srv/keel"))  # doctest: +SKIP
        '/srv/keel/artifacts/predictions-log'
    """
    return settings.artifacts_url.rstrip("/") + "/predictions-log"


def open_log(settings: Settings, deployment: str, **options: Any) -> PredictionLog:
    """A :class:`PredictionLog` for ``deployment`` under :func:`log_url` of ``settings``;
    ``options`` are its keyword arguments (``flush_rows``, ``flush_seconds``, ...)."""
    return PredictionLog(log_url(settings), deployment, **options)


def read_predictions(
    url: str, deployment: str, *, since_ms: int | None = None, until_ms: int | None = None
) -> pd.DataFrame:
    """The prediction rows of ``deployment`` with ``since_ms <= time <= until_ms``, by time.

    Only the hour folders overlapping the range are listed and read. Files from different model
    versions may have different ``input.*`` columns: a column a file lacks is null there, and
    a column whose type differs between files is widened (int and float to float) or, when
    nothing wider holds both, read as text.

    Args:
        url: root of the prediction logs (:func:`log_url`).
        deployment: the deployment's name.
        since_ms: earliest time, milliseconds since the epoch (inclusive); None for all.
        until_ms: latest time (inclusive); None for all.

    Returns:
        A DataFrame: :data:`PREDICTION_COLUMNS` (``time`` tz-aware UTC, ``version`` a nullable
        Int64), then ``input.*`` and the outputs; empty with the base columns if nothing is
        logged.

    Raises:
        InvalidInput: a bad deployment name.
        StorageError: a file cannot be read (its path is named).

    Example:
        >>> frame = read_predictions(log_url(Settings()), "diabetes",
        ...                          since_ms=now_ms() - 3_600_000)  # doctest: +SKIP
    """
    _check_deployment(deployment)
    return read_rows(url, "predictions", deployment, since_ms, until_ms)


def read_feedback(
    url: str, deployment: str, *, since_ms: int | None = None, until_ms: int | None = None
) -> pd.DataFrame:
    """The labels of ``deployment`` received with ``since_ms <= time <= until_ms``, by time.

    Join them to :func:`read_predictions` on ``request_id`` and ``row``; a label sent twice
    appears twice (keep the last). Arguments, errors: as :func:`read_predictions`.

    Returns:
        A DataFrame of :data:`FEEDBACK_COLUMNS` (``label`` as sent: numbers, text, booleans;
        a mix of kinds or a nested label as JSON text).
    """
    _check_deployment(deployment)
    return read_rows(url, "feedback", deployment, since_ms, until_ms)


def _check_deployment(deployment: str) -> None:
    if not isinstance(deployment, str) or not DEPLOYMENT_PATTERN.fullmatch(deployment):
        raise InvalidInput(
            f"{deployment!r} is not a deployment name: use letters, digits, '.', '_' and '-' "
            "(up to 128, starting with a letter or digit)",
            deployment=deployment,
        )
