"""``keel worker``: score prediction requests from a Redis Stream in a consumer group.

Each read takes up to ``batch`` new entries (``XREADGROUP ... >``); every request is parsed and
checked against the signature alone (a bad one gets an error reply and costs no one else), the
requests whose checked columns match are scored in one ``predict`` call, and each reply is
written by one Lua script that, atomically, checks the entry is still pending for this consumer,
adds the reply to its reply stream and acknowledges (and by default deletes) the request. So:

- a worker killed before the script ran leaves the entry pending: another worker claims it once
  it has been idle ``claim_idle_ms`` (``XAUTOCLAIM``, at start and periodically) and answers it;
- a reply is never written twice for one entry: a slow worker whose entries were claimed meanwhile
  finds them no longer its own and writes nothing;
- an entry delivered more than ``max_deliveries`` times (workers died holding it: a poison
  request) is answered with an error and acknowledged, never retried forever; entries delivered
  before are scored one by one, so a poison request takes only itself down.

The wire format and the client live in :mod:`keel.serving.worker_client` (re-exported here).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from keel.errors import InvalidInput, KeelError
from keel.models.loading import Predictor
from keel.models.models import ModelVersion
from keel.serving.bodies import dumps, frame_from_body, predictions_json
from keel.serving.sources import load_for_serving
from keel.serving.worker_client import (
    BrokerClient,
    Reply,
    connect,
    default_reply_stream,
    submit,
    wait_reply,
)

if TYPE_CHECKING:
    from redis import Redis

__all__ = [
    "BrokerClient",
    "Reply",
    "Worker",
    "WorkerOptions",
    "WorkerStats",
    "default_consumer",
    "run_worker",
    "submit",
    "wait_reply",
]

log = logging.getLogger("keel.worker")

_ANSWER = """
local group, consumer, maxlen, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local outcomes = {}
local i = 6
while i <= #ARGV do
  local entry, key, n = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  local outcome = 0
  if #redis.call('XPENDING', KEYS[1], group, entry, entry, 1, consumer) > 0 then
    local add = {'XADD', key}
    if maxlen > 0 then
      table.insert(add, 'MAXLEN'); table.insert(add, '~'); table.insert(add, maxlen)
    end
    table.insert(add, '*')
    for j = i + 3, i + 2 + n do table.insert(add, ARGV[j]) end
    local added = redis.pcall(unpack(add))
    if type(added) == 'table' and added.err then
      outcome = added.err
    else
      if ttl > 0 then redis.call('EXPIRE', key, ttl) end
      redis.call('XACK', KEYS[1], group, entry)
      if ARGV[5] == '1' then redis.call('XDEL', KEYS[1], entry) end
      outcome = 1
    end
  end
  table.insert(outcomes, outcome)
  i = i + 3 + n
end
return outcomes
"""
"""Answers a batch atomically. KEYS: the request stream, then the reply streams. ARGV: group,
consumer, reply MAXLEN (0: none), reply TTL in seconds (0: none), delete answered requests
(1/0), then per request: its entry id, its reply stream's index in KEYS, the reply's field
count, the fields. Per request, 1 (answered), 0 (no longer this consumer's: nothing written)
or the error the reply stream gave (nothing written, not acked)."""

_SCRIPT_ENTRIES = 256
"""Requests answered per script call: a larger batch is several calls (in one round trip), so
Redis never runs one script for long."""

_MAX_BACKOFF_S = 30.0
_STATS_EVERY_S = 60.0


def default_consumer() -> str:
    """A consumer name unique to this process: ``HOST-PID``."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker consumes its stream (the ``keel worker`` options).

    Attributes:
        stream: the request stream.
        group: the consumer group (created at the stream's start when missing).
        consumer: this worker's name in the group; unique per process.
        batch: entries per read, scored together where their columns match.
        block_ms: how long one read waits for new entries (also how soon a stop is noticed
            when idle).
        claim_idle_ms: entries pending this long on another consumer are claimed; keep it
            above the longest batch's scoring time.
        reply_stream: where replies go for requests naming no ``reply_to``.
        reply_maxlen: replies kept per reply stream (approximate trim; 0 keeps all).
        reply_ttl_s: a reply stream expires this long after its last reply (0: never).
        max_deliveries: an entry delivered more often gets an error reply instead.
        keep_requests: leave answered requests in the stream (acknowledged) instead of
            deleting them.
    """

    stream: str
    group: str = "keel"
    consumer: str = field(default_factory=default_consumer)
    batch: int = 64
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    reply_stream: str | None = None
    reply_maxlen: int = 100_000
    reply_ttl_s: int = 86_400
    max_deliveries: int = 3
    keep_requests: bool = False

    def __post_init__(self) -> None:
        for name in ("stream", "group", "consumer"):
            if not getattr(self, name):
                raise InvalidInput(f"the {name} name is empty", field=name)
        if self.batch < 1 or self.block_ms < 1 or self.claim_idle_ms < 1:
            raise InvalidInput("batch, block_ms and claim_idle_ms must be at least 1")
        if self.max_deliveries < 1:
            raise InvalidInput("max_deliveries must be at least 1", field="max_deliveries")

    @property
    def replies(self) -> str:
        return self.reply_stream or default_reply_stream(self.stream)


@dataclass
class WorkerStats:
    """What a worker did (``Worker.stats``; logged every minute and at exit)."""

    answered: int = 0
    errors: int = 0
    predict_calls: int = 0
    claimed: int = 0
    poison: int = 0
    lost_to_others: int = 0


@dataclass
class _Request:
    """One entry being answered: its body, then its predictions or its error."""

    entry: bytes
    request_id: str
    reply_to: str
    body: bytes | None
    content_type: str
    rows: int = 0
    predictions: list[Any] | None = None
    error: KeelError | None = None


@dataclass
class _Batch:
    """Requests scored in one ``predict`` call: ``frame`` holds their checked rows in order."""

    requests: list[_Request]
    frame: Any


class Worker:
    """Consumes one stream with one loaded model until told to stop.

    Example:
        >>> stop = threading.Event()
        >>> worker = Worker(keel.models.load(uri), connect(url), WorkerOptions(stream="scoring"))
        >>> threading.Thread(target=worker.run, args=(stop,)).start()  # doctest: +SKIP
    """

    def __init__(
        self,
        predictor: Predictor,
        redis: Redis,
        options: WorkerOptions,
        *,
        version: ModelVersion | None = None,
    ) -> None:
        self.predictor = predictor
        self.redis = redis
        self.options = options
        self.stats = WorkerStats()
        self.model = f"{version.name}/{version.version}" if version else predictor.uri
        self._answer = redis.register_script(_ANSWER)
        self.where = _where(redis)
        """The server, without credentials (for log lines)."""

    def run(self, stop: threading.Event) -> WorkerStats:
        """Consume until ``stop`` is set; the batch in hand is answered first.

        Redis unreachable: a warning, then retries with backoff (0.5 s doubling to 30 s).

        Raises:
            KeelError: the stream key holds something else than a stream, or Redis refuses
                the credentials.
        """
        from redis.exceptions import AuthenticationError, BusyLoadingError, ResponseError
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        delay, prepared, next_claim, next_stats = 0.5, False, 0.0, time.monotonic()
        reported = WorkerStats()
        while not stop.is_set():
            try:
                if not prepared:
                    self._prepare(stop)
                    if delay > 0.5:
                        log.info("connected to Redis at %s again", self.where)
                    prepared, delay = True, 0.5
                    next_claim = time.monotonic() + self._claim_every
                if time.monotonic() >= next_claim:
                    self.recover(stop)
                    next_claim = time.monotonic() + self._claim_every
                self.step()
            except AuthenticationError as exc:
                raise KeelError(f"Redis at {self.where} refused the credentials: {exc}") from None
            except (RedisConnectionError, RedisTimeoutError, BusyLoadingError) as exc:
                log.warning(
                    "cannot reach Redis at %s (%s); retrying in %.1f s", self.where, exc, delay
                )
                prepared = False
                stop.wait(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise KeelError(f"Redis refused a command on {self.where}: {exc}") from None
                log.warning("the consumer group is gone (Redis lost its data?); creating it again")
                prepared = False
            if time.monotonic() >= next_stats:
                reported = self._report(reported)
                next_stats = time.monotonic() + _STATS_EVERY_S
        return self.stats

    @property
    def _claim_every(self) -> float:
        """Seconds between claims of dead consumers' entries: half the idle time, 0.1-60 s."""
        return min(max(self.options.claim_idle_ms / 2000, 0.1), 60.0)

    def _prepare(self, stop: threading.Event) -> None:
        """Create the group when missing, answer this consumer's own pending entries (a
        restart under the same name), then claim dead consumers' ones."""
        self.ensure_group()
        options = self.options
        last = b"0-0"
        while not stop.is_set():
            read: Any = self.redis.xreadgroup(
                options.group, options.consumer, {options.stream: last}, count=options.batch
            )
            entries = read[0][1] if read else []
            if not entries:
                break
            self._handle(entries, redelivered=True)
            last = entries[-1][0]
        self.recover(stop)

    def ensure_group(self) -> None:
        """Create the consumer group at the stream's start (and the stream) when missing.

        Raises:
            InvalidInput: the stream's key holds another type.
        """
        from redis.exceptions import ResponseError

        try:
            self.redis.xgroup_create(self.options.stream, self.options.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return
            if "WRONGTYPE" in str(exc):
                raise InvalidInput(
                    f"the key {self.options.stream!r} on {self.where} is not a stream",
                    field="stream",
                ) from None
            raise

    def step(self) -> int:
        """Read up to ``batch`` new entries (waiting up to ``block_ms``) and answer them.

        Returns:
            How many entries were read.
        """
        options = self.options
        read: Any = self.redis.xreadgroup(
            options.group,
            options.consumer,
            {options.stream: ">"},
            count=options.batch,
            block=options.block_ms,
        )
        entries = read[0][1] if read else []
        if entries:
            self._handle(entries)
        return len(entries)

    def recover(self, stop: threading.Event | None = None) -> int:
        """Claim the entries pending longer than ``claim_idle_ms`` (their consumer died or
        hangs) and answer them one by one; too often delivered ones get an error reply.

        Returns:
            How many entries were claimed.
        """
        options = self.options
        start: Any = "0-0"
        total = 0
        while stop is None or not stop.is_set():
            claim: Any = self.redis.xautoclaim(
                options.stream,
                options.group,
                options.consumer,
                min_idle_time=options.claim_idle_ms,
                start_id=start,
                count=options.batch,
            )
            start, entries = claim[0], claim[1]
            if entries:
                total += len(entries)
                log.info(
                    "claimed %d requests pending over %d ms", len(entries), options.claim_idle_ms
                )
                self._handle(entries, redelivered=True)
            if start in (b"0-0", "0-0"):
                break
        self.stats.claimed += total
        return total

    def _handle(self, entries: Sequence[tuple[bytes, Any]], *, redelivered: bool = False) -> None:
        """Answer ``entries``: those delivered before one by one, the rest in batches."""
        live = [(entry, fields) for entry, fields in entries if fields]
        gone = [entry for entry, fields in entries if not fields]
        if gone:  # deleted while pending: nothing to answer
            self.redis.xack(self.options.stream, self.options.group, *gone)
        if not live:
            return
        requests = [self._request(entry, fields) for entry, fields in live]
        if redelivered:
            self._mark_poison(requests)
        todo = [r for r in requests if r.error is None]
        if redelivered:
            batches = [batch for r in todo if (batch := self._checked(r)) is not None]
        else:
            batches = self._batches(todo)
        for batch in batches:
            self._score(batch)
        self._write(requests)

    def _request(self, entry: bytes, fields: dict[bytes, bytes]) -> _Request:
        request_id = fields.get(b"id", entry).decode("utf-8", "replace")
        reply_to = fields.get(b"reply_to", b"").decode("utf-8", "replace")
        content_type = fields.get(b"content_type", b"").decode("latin-1")
        body = fields.get(b"body")
        request = _Request(entry, request_id, reply_to or self.options.replies, body, content_type)
        if body is None:
            request.error = InvalidInput(
                'the request has no "body" field: send body={"records": [...]} or '
                'body={"columns": {...}}',
                field="body",
            )
        return request

    def _batches(self, requests: list[_Request]) -> list[_Batch]:
        """``requests`` in batches of matching columns.

        Plain JSON bodies (see :func:`_plain_columns`) with the same columns are merged into
        one frame and checked once: building a DataFrame per request costs more than scoring
        it. The rest, and a merged group the check refuses, are parsed and checked one by one
        (each error is then its own request's), then grouped by their checked columns.
        """
        plain: dict[Any, list[tuple[_Request, dict[str, list[Any]]]]] = {}
        alone: list[_Request] = []
        for request in requests:
            found = _plain_columns(request)
            if found is None:
                alone.append(request)
            else:
                plain.setdefault(found[0], []).append((request, found[1]))
        batches = []
        for group in plain.values():
            merged = self._merged(group)
            if merged is None:
                alone.extend(request for request, _columns in group)
            else:
                batches.append(merged)
        batches += [batch for r in alone if (batch := self._checked(r)) is not None]
        return _by_columns(batches)

    def _merged(self, group: list[tuple[_Request, dict[str, list[Any]]]]) -> _Batch | None:
        """One checked frame of ``group``'s rows, or None when the check refuses it."""
        import pandas as pd

        if len(group) == 1:
            return None
        names = list(group[0][1])
        columns = {name: [v for _r, body in group for v in body[name]] for name in names}
        try:
            frame = self.predictor.check(pd.DataFrame(columns))
        except Exception:  # someone in the group is wrong: find out who, one by one
            return None
        for request, body in group:
            request.rows = len(body[names[0]])
        return _Batch([request for request, _columns in group], frame)

    def _checked(self, request: _Request) -> _Batch | None:
        """``request`` parsed and checked alone, or None with its error set."""
        try:
            frame = self.predictor.check(frame_from_body(request.body or b"", request.content_type))
        except KeelError as exc:
            request.error = exc
            return None
        except Exception as exc:  # a body that breaks the parser must not stop the worker
            log.exception("request %s could not be read", request.request_id)
            request.error = InvalidInput(f"the request cannot be read: {exc}", field="body")
            return None
        request.rows = len(frame)
        return _Batch([request], frame)

    def _mark_poison(self, requests: list[_Request]) -> None:
        """Error replies for entries delivered more than ``max_deliveries`` times."""
        entries = [r.entry for r in requests]
        pending: Any = self.redis.xpending_range(
            self.options.stream,
            self.options.group,
            min=min(entries, key=_entry_order),
            max=max(entries, key=_entry_order),
            count=len(entries) + 1000,
            consumername=self.options.consumer,
        )
        delivered = {row["message_id"]: row["times_delivered"] for row in pending}
        limit = self.options.max_deliveries
        for request in requests:
            times = delivered.get(request.entry, 0)
            if times > limit and request.error is None:
                self.stats.poison += 1
                log.warning(
                    "request %s was delivered %d times: answering it with an error",
                    request.request_id,
                    times,
                )
                request.error = KeelError(
                    f"the request was delivered {times} times (more than {limit}) and no worker "
                    "answered it: workers stopped while scoring it (out of memory? a crash in "
                    "the model?)",
                    deliveries=times,
                )

    def _score(self, batch: _Batch) -> None:
        """Predictions for ``batch`` in one call; if it fails, each request alone."""
        requests, frame = batch.requests, batch.frame
        try:
            self.stats.predict_calls += 1
            rows = predictions_json(self.predictor.predict_checked(frame))
            if len(rows) != len(frame):
                raise KeelError(f"the model returned {len(rows)} predictions for {len(frame)} rows")
        except Exception as exc:
            if len(requests) == 1:
                requests[0].error = _model_error(exc, requests[0].request_id)
                return
            offset = 0
            for request in requests:
                self._score(_Batch([request], _rows(frame, offset, offset + request.rows)))
                offset += request.rows
            return
        offset = 0
        for request in requests:
            request.predictions = rows[offset : offset + request.rows]
            offset += request.rows

    def _write(self, requests: list[_Request]) -> None:
        """Each reply, then the ack: atomically, by :data:`_ANSWER`, in one round trip."""
        options = self.options
        head = [options.group, options.consumer, options.reply_maxlen, options.reply_ttl_s]
        head.append("0" if options.keep_requests else "1")
        pipe = self.redis.pipeline(transaction=False)
        for first in range(0, len(requests), _SCRIPT_ENTRIES):
            keys = [options.stream]
            args: list[Any] = list(head)
            for request in requests[first : first + _SCRIPT_ENTRIES]:
                if request.reply_to not in keys[1:]:
                    keys.append(request.reply_to)
                fields = self._reply_fields(request)
                args += [request.entry, keys.index(request.reply_to) + 1, len(fields), *fields]
            self._answer(keys=keys, args=args, client=pipe)
        written = [outcome for outcomes in pipe.execute() for outcome in outcomes]
        undeliverable = []
        for request, outcome in zip(requests, written, strict=True):
            if isinstance(outcome, bytes):
                undeliverable.append(self._undeliverable(request, outcome.decode()))
            elif not outcome:
                self.stats.lost_to_others += 1
                log.warning(
                    "request %s was claimed by another worker while this one scored it "
                    "(raise --claim-idle-ms above the scoring time); its reply is theirs",
                    request.request_id,
                )
            else:
                self.stats.answered += 1
                if request.error is not None:
                    self.stats.errors += 1
        if undeliverable:
            self._write(undeliverable)

    def _undeliverable(self, request: _Request, reason: str) -> _Request:
        """A request whose reply stream refused the reply (another type of key), redirected
        with an error to the default reply stream.

        Raises:
            InvalidInput: the default reply stream refused it too.
        """
        if request.reply_to == self.options.replies:
            raise InvalidInput(
                f"the reply stream {request.reply_to!r} on {self.where} cannot take replies: "
                f"{reason}",
                field="reply_stream",
            )
        log.warning(
            "request %s: cannot write its reply to %r (%s); an error reply goes to %r",
            request.request_id,
            request.reply_to,
            reason,
            self.options.replies,
        )
        request.error = InvalidInput(
            f"the reply stream {request.reply_to!r} cannot take replies: {reason}",
            field="reply_to",
        )
        request.reply_to = self.options.replies
        return request

    def _reply_fields(self, request: _Request) -> list[Any]:
        fields: list[Any] = ["id", request.request_id, "entry", request.entry]
        if request.error is None:
            fields += ["status", "ok", "predictions", dumps(request.predictions)]
        else:
            fields += ["status", "error", "error", orjson.dumps(request.error.to_dict())]
        fields += ["model", self.model, "digest", self.predictor.digest]
        return [*fields, "worker", self.options.consumer]

    def _report(self, before: WorkerStats) -> WorkerStats:
        now = self.stats
        if now.answered != before.answered:
            log.info(
                "answered %d requests (%d errors) since the last report; %d in all",
                now.answered - before.answered,
                now.errors - before.errors,
                now.answered,
            )
        return WorkerStats(**vars(now))


_KINDS: dict[type, str] = {int: "number", float: "number", str: "str", bool: "bool"}


def _plain_columns(request: _Request) -> tuple[Any, dict[str, list[Any]]] | None:
    """A JSON body's columns when merging it with others cannot change how any of its values
    is read: well-formed ``records`` or ``columns`` whose every column holds one kind of value
    (numbers, strings or booleans; no nulls, no nested values). Returns ``(key, columns)``,
    the key naming the columns in order with their kinds; None sends the body the checked way.
    """
    if request.body is None or request.content_type not in ("", "application/json"):
        return None
    try:
        payload = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or len(payload) != 1:
        return None
    columns = payload.get("columns")
    if "records" in payload:
        columns = _records_as_columns(payload["records"])
    if not isinstance(columns, dict) or not columns:
        return None
    key = []
    lengths = set()
    for name, values in columns.items():
        if not isinstance(values, list) or not values:
            return None
        kind = _KINDS.get(type(values[0]))
        if kind is None or any(_KINDS.get(type(value)) != kind for value in values):
            return None
        key.append((name, kind))
        lengths.add(len(values))
    return (tuple(key), columns) if len(lengths) == 1 else None


def _records_as_columns(records: Any) -> dict[str, list[Any]] | None:
    if not isinstance(records, list) or not records or not isinstance(records[0], dict):
        return None
    keys = records[0].keys()
    if any(not isinstance(record, dict) or record.keys() != keys for record in records):
        return None
    return {name: [record[name] for record in records] for name in keys}


def _by_columns(batches: list[_Batch]) -> list[_Batch]:
    """``batches`` merged where their checked frames' columns and types match."""
    groups: dict[Any, list[_Batch]] = {}
    for batch in batches:
        frame = batch.frame
        if hasattr(frame, "columns"):
            key: Any = (tuple(frame.columns), tuple(map(str, frame.dtypes)))
        else:  # an array signature
            key = (str(getattr(frame, "dtype", "")), tuple(getattr(frame, "shape", ()))[1:])
        groups.setdefault(key, []).append(batch)
    return [
        group[0]
        if len(group) == 1
        else _Batch([r for b in group for r in b.requests], _concat([b.frame for b in group]))
        for group in groups.values()
    ]


def _concat(frames: list[Any]) -> Any:
    if hasattr(frames[0], "columns"):
        import pandas as pd

        return pd.concat(frames, ignore_index=True)
    import numpy as np

    return np.concatenate(frames)


def _rows(frame: Any, start: int, stop: int) -> Any:
    return frame.iloc[start:stop] if hasattr(frame, "iloc") else frame[start:stop]


def _model_error(exc: Exception, request_id: str) -> KeelError:
    if isinstance(exc, KeelError):
        return exc
    if isinstance(exc, ValueError | TypeError):  # the model refused what the signature allowed
        return InvalidInput(f"the model refused the input: {exc}")
    log.exception("the model failed on request %s", request_id)
    return KeelError(f"the model failed on this request: {type(exc).__name__}: {exc}")


def _entry_order(entry: bytes) -> tuple[int, int]:
    millis, _, sequence = entry.partition(b"-")
    return int(millis), int(sequence or 0)


def _where(redis: Redis) -> str:
    """The server a client talks to, without credentials: ``HOST:PORT/DB`` or the socket."""
    kwargs = redis.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def run_worker(
    uri: str, *, broker: str, options: WorkerOptions, stop: threading.Event | None = None
) -> WorkerStats:
    """Load ``uri`` and consume ``options.stream`` on ``broker`` until ``stop`` is set (or,
    in the main thread, until SIGTERM or SIGINT: the batch in hand is answered first).

    Args:
        uri: the model (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...``).
        broker: the Redis URL.
        options: how to consume (:class:`WorkerOptions`).
        stop: set it to stop; a new one when None.

    Returns:
        What the worker did.

    Raises:
        InvalidInput: the broker URL is not a Redis URL.
        KeelError: the model cannot be loaded.

    Example:
        >>> run_worker("models:/diabetes@champion", broker="redis://127.0.0.1:6379/0",
        ...            options=WorkerOptions(stream="scoring"))  # doctest: +SKIP
    """
    redis = connect(broker, read_timeout=options.block_ms / 1000 + 30)
    predictor, version = load_for_serving(uri)
    worker = Worker(predictor, redis, options, version=version)
    stop = stop or threading.Event()
    log.info(
        "consuming %s on %s as %s/%s with %s; replies to %s",
        options.stream,
        worker.where,
        options.group,
        options.consumer,
        worker.model,
        options.replies,
    )
    try:
        with _stopped_by_signals(stop):
            stats = worker.run(stop)
    finally:
        redis.close()
    log.info(
        "stopped: answered %d requests (%d errors, %d claimed from other consumers)",
        stats.answered,
        stats.errors,
        stats.claimed,
    )
    return stats


@contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (a second one stops at once); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("%s: finishing the batch in hand, then stopping", signal.Signals(signum).name)
        stop.set()

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
