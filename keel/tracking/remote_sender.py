"""Metric points on their way to a keel server, and the outbox that holds them while it is away.

``log_metric`` appends to a list. A background thread cuts the list into batches of up to
10,000 points, each with a fresh ``batch_id``, and posts them in order over the keep-alive
connection; the server stores a batch id once, so a retried batch never duplicates a point.
While the server cannot be reached, batches wait in memory up to a bound
(``remote_max_buffered_points``). Past it the oldest are written to the outbox
(``<home>/outbox/``, one JSON file per batch, written atomically), and they are delivered first,
so points arrive in the order they were logged. The end of a run that could not be sent joins
the outbox behind its points; ``keel sync`` delivers what a finished process left there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from keel.errors import KeelError, NotFound, Unauthenticated
from keel.tracking.buffer import PointIntake
from keel.tracking.models import MAX_METRIC_BATCH
from keel.tracking.remote_http import HttpApi, is_unreachable
from keel.tracking.store import PointTuple

__all__ = [
    "Entry",
    "MetricSender",
    "SyncReport",
    "read_entry",
    "retry_later",
    "send_entry",
    "sync_outbox",
    "write_entry",
]

log = logging.getLogger(__name__)
_JSON = {"content-type": "application/json"}
WRITES = ("params", "tags")
"""Entry kinds that carry a run's params or tags, queued while the server cannot take them."""


@dataclass(eq=False)
class Entry:
    """One request waiting to be sent: a batch of points, params or tags, or the end of a run."""

    kind: str  # "metrics", "params", "tags" or "end_run"
    batch_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    points: list[PointTuple] = field(default_factory=list)
    count: int = 0
    run_id: str = ""
    status: str = ""
    end_time: int = 0
    values: dict[str, str] = field(default_factory=dict)  # params or tags
    path: Path | None = None  # its outbox file, once spilled


def _wire(value: float) -> float | str:
    if -math.inf < value < math.inf:
        return value
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def _body(entry: Entry, points: list[PointTuple]) -> bytes:
    rows = [
        {"run_id": r, "key": k, "value": _wire(v), "step": s, "timestamp": t}
        for r, k, v, s, t in points
    ]
    return json.dumps({"batch_id": entry.batch_id, "points": rows}, allow_nan=False).encode()


def send_entry(http: HttpApi, entry: Entry, *, attempts: int) -> None:
    """Send one entry (its points are read from its outbox file if they left memory).

    Raises:
        KeelError: as :meth:`HttpApi.request`.
    """
    if entry.kind == "end_run":
        http.request(
            "PATCH",
            f"/runs/{entry.run_id}",
            json={"status": entry.status, "end_time": entry.end_time},
            attempts=attempts,
        )
        return
    if entry.kind in WRITES:  # the same params or tags again are harmless: no batch id needed
        http.request(
            "POST",
            f"/runs/{entry.run_id}/{entry.kind}",
            json={entry.kind: entry.values},
            attempts=attempts,
        )
        return
    points = entry.points
    if not points and entry.path is not None:
        if not entry.path.exists():
            return  # delivered by ``keel sync`` from another process
        points = read_entry(entry.path)[1].points
    if points:
        http.request(
            "POST", "/metrics", content=_body(entry, points), headers=_JSON, attempts=attempts
        )


def write_entry(outbox: Path, entry: Entry, *, tracking_uri: str) -> Path:
    """Write ``entry`` to a new file in ``outbox`` atomically (a reader never sees half)."""
    outbox.mkdir(parents=True, exist_ok=True)
    data: dict[str, object] = {
        "kind": entry.kind,
        "tracking_uri": tracking_uri,
        "batch_id": entry.batch_id,
    }
    if entry.kind == "end_run":
        data.update(run_id=entry.run_id, status=entry.status, end_time=entry.end_time)
    elif entry.kind in WRITES:
        data.update(run_id=entry.run_id, values=entry.values)
    else:
        data["points"] = [list(p) for p in entry.points]
    path = entry.path or outbox / f"{time.time_ns():020d}-{entry.batch_id}.json"
    tmp = outbox / f".{path.name}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return path


def read_entry(path: Path) -> tuple[str, Entry]:
    """``(tracking_uri, entry)`` from an outbox file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    points: list[PointTuple] = [
        (r, k, float(v), int(s), int(t)) for r, k, v, s, t in data.get("points", [])
    ]
    entry = Entry(
        kind=data["kind"],
        batch_id=data["batch_id"],
        points=points,
        count=len(points),
        run_id=data.get("run_id", ""),
        status=data.get("status", ""),
        end_time=int(data.get("end_time", 0)),
        values={str(k): str(v) for k, v in data.get("values", {}).items()},
        path=path,
    )
    return str(data["tracking_uri"]), entry


class MetricSender(PointIntake):
    """Buffers points, sends them in batches from a thread, spills to the outbox when offline."""

    def __init__(
        self,
        http: HttpApi,
        *,
        outbox: Path,
        interval: float,
        size: int,
        max_points: int,
        heartbeat_interval: float,
        open_runs: Callable[[], list[str]],
    ) -> None:
        self._http = http
        self.outbox = outbox
        self._interval = interval
        self._size = size
        self._max_points = max_points
        self._heartbeat_interval = heartbeat_interval
        self._open_runs = open_runs
        self._points: list[PointTuple] = []
        self._queue: deque[Entry] = deque()  # in memory, oldest first
        self._spilled: deque[Entry] = deque()  # in the outbox, oldest first, older than _queue
        self._in_memory = 0
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_try = 0.0
        self.failures = 0  # consecutive failed deliveries; 0 while the server answers
        self.last_error: KeelError | None = None
        self.requests = 0  # metric requests the server accepted
        self.delivered = 0
        self.rejected = 0  # points the server refused with a 4xx (reported, then dropped)

    # -- buffering ------------------------------------------------------------------------
    def _overflow(self, pending: int) -> None:
        if pending + self._in_memory > self._max_points:
            self._cut()

    @property
    def pending(self) -> int:
        """Points not yet delivered (in memory and in this process's outbox files)."""
        with self._lock:
            spilled = sum(e.count for e in self._spilled)
            return len(self._points) + self._in_memory + spilled

    @property
    def spilled_files(self) -> list[Path]:
        with self._lock:
            return [e.path for e in self._spilled if e.path is not None]

    def _cut(self) -> None:
        """Cut buffered points into batches; spill the oldest past the memory bound."""
        with self._lock:
            points, self._points = self._points, []
            for start in range(0, len(points), MAX_METRIC_BATCH):
                chunk = points[start : start + MAX_METRIC_BATCH]
                self._queue.append(Entry("metrics", points=chunk, count=len(chunk)))
                self._in_memory += len(chunk)
        if self._in_memory > self._max_points:
            self._spill(keep=self._max_points // 2)

    def _spill(self, *, keep: int) -> None:
        with self._lock:
            while self._queue and (self._in_memory > keep or keep == 0):
                entry = self._queue.popleft()
                self._in_memory -= entry.count
                entry.path = write_entry(self.outbox, entry, tracking_uri=self._http.base_url)
                entry.points = []
                self._spilled.append(entry)

    def spill_all(self) -> list[Path]:
        """Write everything not yet delivered to the outbox; returns this process's files."""
        self._cut()
        self._spill(keep=0)
        return self.spilled_files

    @property
    def writes_pending(self) -> int:
        """Params and tags writes (and run ends) waiting behind an unreachable server."""
        with self._lock:
            return sum(e.kind != "metrics" for e in (*self._spilled, *self._queue))

    def queue_write(self, kind: str, run_id: str, values: dict[str, str]) -> None:
        """Queue params or tags behind the points logged before them (the server is away)."""
        assert kind in WRITES
        self._cut()
        with self._lock:
            self._queue.append(Entry(kind, run_id=run_id, values=dict(values)))

    def queue_end_run(self, run_id: str, status: str, end_time: int) -> None:
        """Queue the end of a run behind its points (for when the server cannot take it now)."""
        self._cut()
        with self._lock:
            self._queue.append(Entry("end_run", run_id=run_id, status=status, end_time=end_time))

    # -- delivery -------------------------------------------------------------------------
    def flush(self, timeout: float) -> int:
        """Deliver everything pending, retrying for up to ``timeout`` seconds.

        Returns:
            The number of points still undelivered (0 when all arrived).
        """
        deadline = time.monotonic() + timeout
        self._cut()
        while not self._deliver(attempts=2):
            left = deadline - time.monotonic()
            if left <= 0:
                return self.pending
            time.sleep(min(left, _delay(self.failures)))
        return 0

    def _deliver(self, *, attempts: int) -> bool:
        """Send pending entries oldest first; False at the first one the server cannot take."""
        with self._send_lock:
            while True:
                with self._lock:
                    entry = self._spilled[0] if self._spilled else None
                    if entry is None and self._queue:
                        entry = self._queue[0]
                if entry is None:
                    return True
                try:
                    send_entry(self._http, entry, attempts=attempts)
                except KeelError as exc:
                    if retry_later(exc):
                        self.failures += 1
                        self.last_error = exc
                        return False
                    self._reject(entry, exc)
                    continue
                if self.failures:
                    log.warning("keel: the server at %s is back", self._http.base_url)
                self.failures = 0
                self._done(entry)

    def _done(self, entry: Entry) -> None:
        with self._lock:
            if self._queue and self._queue[0] is entry:
                self._queue.popleft()
                self._in_memory -= entry.count
            elif entry in self._spilled:
                self._spilled.remove(entry)
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)
        if entry.kind == "metrics":
            self.requests += 1
            self.delivered += entry.count

    def _reject(self, entry: Entry, exc: KeelError) -> None:
        gone = set(exc.context.get("run_ids", ())) if isinstance(exc, NotFound) else set()
        if entry.kind == "metrics" and gone:
            points = entry.points or (read_entry(entry.path)[1].points if entry.path else [])
            kept = [p for p in points if p[0] not in gone]
            log.warning(
                "keel: dropped %d metric points of runs that do not exist on the server: %s",
                len(points) - len(kept),
                ", ".join(sorted(gone)),
            )
            self.rejected += len(points) - len(kept)
            if kept:
                with self._lock:
                    if entry.path is not None and entry in self._spilled:
                        entry.points = kept
                        write_entry(self.outbox, entry, tracking_uri=self._http.base_url)
                        entry.points = []
                    else:
                        self._in_memory -= entry.count - len(kept)
                        entry.points = kept
                    entry.count = len(kept)
                return
            entry.count = 0
        else:
            self.rejected += entry.count
            what = {
                "metrics": f"{entry.count} metric points",
                "end_run": f"the end of run {entry.run_id}",
            }.get(entry.kind, f"the {entry.kind} of run {entry.run_id} ({entry.values})")
            log.error("keel: the server refused %s (%s); dropped it", what, exc)
        self._done(entry)

    # -- the background thread ------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="keel-remote", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the background thread (what is pending stays pending)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        last_beat = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._cut()
                due = time.monotonic() >= self._next_try
                if due and not self._deliver(attempts=1 if self.failures else 3):
                    if self.failures == 1:
                        log.warning(
                            "keel: cannot reach %s; buffering metric points (%s)",
                            self._http.base_url,
                            self.last_error,
                        )
                    self._next_try = time.monotonic() + _delay(self.failures)
                if self.failures == 0 and time.monotonic() - last_beat >= self._heartbeat_interval:
                    last_beat = time.monotonic()
                    for run_id in self._open_runs():
                        self._http.request("POST", f"/runs/{run_id}/heartbeat", attempts=1)
            except Exception as exc:  # the thread must survive anything; the next flush reports
                log.warning("keel: background delivery failed: %s", exc)


def retry_later(exc: KeelError) -> bool:
    """Keep the points for later: the server is unreachable, or refused the token (an expired
    or missing KEEL_TRACKING_TOKEN is fixed and ``keel sync`` delivers them)."""
    return is_unreachable(exc) or isinstance(exc, Unauthenticated)


def _delay(failures: int) -> float:
    """Seconds before the next try after ``failures`` failed ones (exponential, jittered)."""
    return min(10.0, 0.25 * 2 ** min(failures, 10)) * random.uniform(0.5, 1.0)


@dataclass
class SyncReport:
    """What :func:`sync_outbox` did."""

    delivered_points: int = 0
    delivered_files: int = 0
    ended_runs: list[str] = field(default_factory=list)
    rejected: list[tuple[Path, str]] = field(default_factory=list)  # moved to outbox/rejected
    waiting: dict[str, str] = field(default_factory=dict)  # server -> why it was not reached
    left: list[Path] = field(default_factory=list)


def sync_outbox(
    outbox: Path,
    *,
    tracking_uri: str | None = None,
    token: str | None = None,
    token_uri: str | None = None,
) -> SyncReport:
    """Deliver the outbox's files, oldest first, each to the server it was meant for.

    A file the server takes is deleted; one it refuses (a 4xx) moves to ``outbox/rejected/``;
    once a server cannot be reached, its remaining files stay for the next sync. Batch ids make
    a file that was delivered before (a crash between delivery and deletion) harmless, and a
    sync may run while the logging process still delivers its own outbox: a file that vanishes
    under it was delivered by that process.

    Args:
        tracking_uri: send every file to this server instead of the one it names.
        token: the API token to send (``KEEL_TRACKING_TOKEN``), but only to ``token_uri``:
            a file naming another server must not receive this one's credentials. With no
            ``token_uri``, it goes to the server the files name if they all name one.
    """
    report = SyncReport()
    files = sorted(outbox.glob("*.json")) if outbox.is_dir() else []
    if token and token_uri is None and tracking_uri is None:
        named = set()
        for path in files:
            with contextlib.suppress(OSError, ValueError, KeyError):
                named.add(read_entry(path)[0].rstrip("/"))
        token_uri = named.pop() if len(named) == 1 else None
    apis: dict[str, HttpApi] = {}
    try:
        for path in files:
            try:
                uri, entry = read_entry(path)
            except FileNotFoundError:
                # the logging process is still running and delivered this file itself
                # between our listing and our read: nothing left to do for it
                continue
            uri = (tracking_uri or uri).rstrip("/")
            if uri in report.waiting:
                report.left.append(path)
                continue
            if uri not in apis:  # the token only goes to the server it belongs to
                mine = token_uri is not None and uri == token_uri.rstrip("/")
                apis[uri] = HttpApi(uri, token=token if mine else None)
            api = apis[uri]
            try:
                try:
                    send_entry(api, entry, attempts=3)
                except NotFound as exc:
                    gone = set(exc.context.get("run_ids", ()))
                    kept = [p for p in entry.points if p[0] not in gone]
                    if not gone or not kept:
                        raise
                    entry.points, entry.count = kept, len(kept)
                    send_entry(api, entry, attempts=3)
            except KeelError as exc:
                if retry_later(exc):
                    report.waiting[uri] = str(exc)
                    report.left.append(path)
                    continue
                rejected = outbox / "rejected"
                rejected.mkdir(exist_ok=True)
                try:
                    path.replace(rejected / path.name)
                except FileNotFoundError:
                    continue  # taken care of by the logging process meanwhile
                report.rejected.append((rejected / path.name, str(exc)))
                continue
            path.unlink(missing_ok=True)
            report.delivered_files += 1
            report.delivered_points += entry.count
            if entry.kind == "end_run":
                report.ended_runs.append(entry.run_id)
    finally:
        for api in apis.values():
            api.close()
    return report
