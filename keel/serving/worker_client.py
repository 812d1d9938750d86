"""The wire format between producers and ``keel worker``, and a small Python client for it.

A producer adds a **request** entry to the request stream (``XADD STREAM * body ...``) and reads
its **reply** from a reply stream. Every field is a string (Redis stream values are bytes):

Request entry fields:
    ``body`` (required): JSON ``{"records": [{column: value}, ...]}`` or
    ``{"columns": {column: [values]}}``, the same body as ``POST /predict``.
    ``id`` (optional): the request id the reply carries (default: the entry's stream id).
    ``reply_to`` (optional): the stream the reply goes to (default: ``<stream>:replies``).

Reply entry fields:
    ``id``: the request id; ``entry``: the request's entry id in the request stream;
    ``status``: ``ok`` or ``error``;
    ``predictions`` (ok): a JSON list, one prediction per row (NaN as null);
    ``error`` (error): a JSON object ``{"error": code, "message": ..., "field": ...}``, the
    body ``POST /predict`` would answer with;
    ``model``: the version that scored it (``NAME/VERSION``, or the ``runs:/`` URI);
    ``digest``: the model folder's digest; ``worker``: the consumer that answered.

Example:
    >>> rid = submit("redis://127.0.0.1:6379/0", "scoring", {"columns": {"age": [0.03]}})
    ... # doctest: +SKIP
    >>> wait_reply("redis://127.0.0.1:6379/0", "scoring:replies", rid, timeout=5).predictions
    ... # doctest: +SKIP
    [151.2]
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from keel.closing import Closing
from keel.errors import InvalidInput, KeelError, MissingExtra

if TYPE_CHECKING:
    from redis import Redis

__all__ = [
    "REPLY_SUFFIX",
    "BrokerClient",
    "Reply",
    "connect",
    "default_reply_stream",
    "encode_body",
    "submit",
    "wait_reply",
]

REPLY_SUFFIX = ":replies"
"""Replies go to ``<stream>:replies`` unless a request names its own ``reply_to``."""

_SCHEMES = ("redis://", "rediss://", "unix://")
_BLOCK_MS = 5000  # one blocking read, well under the connection's read timeout


def default_reply_stream(stream: str) -> str:
    """Where replies to requests on ``stream`` go when they name no ``reply_to``."""
    return stream + REPLY_SUFFIX


def connect(url: str, *, read_timeout: float | None = 30.0) -> Redis:
    """A Redis client for ``url`` (``redis://HOST:PORT/DB``, ``rediss://`` or ``unix://``).

    Nothing is sent yet: an unreachable server shows on the first command.

    Args:
        url: the broker's URL.
        read_timeout: seconds a command may wait for its answer (a blocking read adds its own
            block time to this).

    Raises:
        InvalidInput: ``url`` is not a Redis URL.
        MissingExtra: the ``redis`` package is not installed.
    """
    try:
        import redis
    except ImportError:
        raise MissingExtra("redis", extra="redis") from None
    if not url.startswith(_SCHEMES):
        raise InvalidInput(
            f"the broker URL {url!r} is not a Redis URL: use redis://HOST:PORT/DB, "
            "rediss://... (TLS) or unix:///path/to/redis.sock",
            field="broker",
        )
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=read_timeout)
    except ValueError as exc:
        raise InvalidInput(f"the broker URL {url!r} is not valid: {exc}", field="broker") from None


def encode_body(data: Any) -> bytes:
    """A request's ``body``: row dicts become ``records``, a dict of lists or a DataFrame
    becomes ``columns``; bytes and str are sent as they are (already JSON).

    Raises:
        InvalidInput: ``data`` is none of these.
    """
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a DataFrame
        data = {"columns": data.to_dict(orient="list")}
    elif isinstance(data, list):
        data = {"records": data}
    elif isinstance(data, Mapping) and not data.keys() & {"records", "columns"}:
        data = {"columns": dict(data)}
    if not isinstance(data, Mapping):
        raise InvalidInput(
            f"cannot send a {type(data).__name__}: give row dicts, a dict of column lists, "
            "a DataFrame or a JSON body",
            field="body",
        )
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass(frozen=True)
class Reply:
    """One reply entry, decoded.

    Attributes:
        request_id: the request's id.
        ok: True when ``predictions`` holds the predictions, False when ``error`` says why not.
        predictions: one per row (ok replies).
        error: ``{"error": code, "message": ...}`` (error replies).
        model: the version that scored it (``NAME/VERSION`` or the ``runs:/`` URI).
        digest: the model folder's digest.
        worker: the consumer that answered.
        entry: the request's entry id in the request stream.
    """

    request_id: str
    ok: bool
    predictions: list[Any] | None = None
    error: dict[str, Any] | None = None
    model: str = ""
    digest: str = ""
    worker: str = ""
    entry: str = ""

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes]) -> Reply:
        """Decode a reply entry's fields (as redis-py returns them)."""
        text = {key.decode(): value.decode() for key, value in fields.items()}
        ok = text.get("status") == "ok"
        return cls(
            request_id=text.get("id", ""),
            ok=ok,
            predictions=orjson.loads(text["predictions"]) if ok else None,
            error=None if ok else orjson.loads(text.get("error", "{}")),
            model=text.get("model", ""),
            digest=text.get("digest", ""),
            worker=text.get("worker", ""),
            entry=text.get("entry", ""),
        )

    def result(self) -> list[Any]:
        """The predictions.

        Raises:
            KeelError: the worker answered with an error (its message).
        """
        if not self.ok or self.predictions is None:
            error = dict(self.error or {})
            message = str(error.pop("message", "the worker answered with an error"))
            raise KeelError(f"request {self.request_id}: {message}", **error)
        return self.predictions


def submit(
    redis_url: str | Redis,
    stream: str,
    records_or_columns: Any,
    *,
    request_id: str | None = None,
    reply_to: str | None = None,
) -> str:
    """Add one prediction request to ``stream``.

    Args:
        redis_url: the broker's URL, or a Redis client to reuse.
        stream: the request stream a ``keel worker`` consumes.
        records_or_columns: row dicts, a dict of column lists, a DataFrame, or a JSON body.
        request_id: the id the reply will carry (default: a new uuid4 hex).
        reply_to: the stream the reply goes to (default: ``<stream>:replies``).

    Returns:
        The request id.

    Raises:
        InvalidInput: the URL or the data cannot be sent.
    """
    request_id = request_id or uuid.uuid4().hex
    fields: dict[str, bytes | str] = {"body": encode_body(records_or_columns), "id": request_id}
    if reply_to:
        fields["reply_to"] = reply_to
    client = connect(redis_url) if isinstance(redis_url, str) else redis_url
    client.xadd(stream, fields)  # type: ignore[arg-type]
    return request_id


def wait_reply(
    redis_url: str | Redis, reply_stream: str, request_id: str, *, timeout: float = 30.0
) -> Reply:
    """The reply to ``request_id``, read from ``reply_stream`` (from its start: fine for a
    private reply stream or a few requests; :class:`BrokerClient` reads a busy one once).

    Raises:
        TimeoutError: no reply arrived within ``timeout`` seconds.
    """
    client = connect(redis_url) if isinstance(redis_url, str) else redis_url
    replies = _ReplyReader(client, reply_stream)
    return replies.wait(request_id, timeout)


class BrokerClient(Closing):
    """Submit many requests and collect their replies on one connection and one private
    reply stream (deleted by :meth:`close`).

    Example:
        >>> with BrokerClient("redis://127.0.0.1:6379/0", "scoring") as broker:
        ...     ids = [broker.submit(batch) for batch in batches]
        ...     predictions = [broker.wait(rid).result() for rid in ids]  # doctest: +SKIP
    """

    def __init__(self, redis_url: str, stream: str, *, reply_to: str | None = None) -> None:
        self.redis = connect(redis_url)
        self.stream = stream
        self.reply_to = reply_to or f"{default_reply_stream(stream)}:{uuid.uuid4().hex}"
        self._replies = _ReplyReader(self.redis, self.reply_to)

    def submit(self, records_or_columns: Any, *, request_id: str | None = None) -> str:
        """Add one request whose reply comes to this client's reply stream; its id."""
        return submit(
            self.redis,
            self.stream,
            records_or_columns,
            request_id=request_id,
            reply_to=self.reply_to,
        )

    def wait(self, request_id: str, *, timeout: float = 30.0) -> Reply:
        """The reply to ``request_id`` (replies to other requests read meanwhile are kept).

        Raises:
            TimeoutError: no reply arrived within ``timeout`` seconds.
        """
        return self._replies.wait(request_id, timeout)

    def wait_all(self, request_ids: Iterable[str], *, timeout: float = 30.0) -> list[Reply]:
        """The replies to ``request_ids``, in their order, within one overall ``timeout``."""
        deadline = time.monotonic() + timeout
        return [
            self._replies.wait(rid, max(deadline - time.monotonic(), 0.0)) for rid in request_ids
        ]

    def predict(self, records_or_columns: Any, *, timeout: float = 30.0) -> list[Any]:
        """Submit, wait, and return the predictions (raises the worker's error)."""
        return self.wait(self.submit(records_or_columns), timeout=timeout).result()

    def close(self) -> None:
        """Delete this client's reply stream and close the connection."""
        self.redis.delete(self.reply_to)
        self.redis.close()


@dataclass
class _ReplyReader:
    """Reads a reply stream forward from its start, keeping replies not yet asked for."""

    redis: Redis
    stream: str
    last_id: bytes = b"0-0"
    unclaimed: dict[str, Reply] = field(default_factory=dict)

    def wait(self, request_id: str, timeout: float) -> Reply:
        deadline = time.monotonic() + timeout
        while request_id not in self.unclaimed:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                raise TimeoutError(
                    f"no reply to request {request_id} on {self.stream!r} within {timeout:g} s: "
                    "is a keel worker consuming the request stream?"
                )
            block = min(left_ms, _BLOCK_MS)
            read: Any = self.redis.xread({self.stream: self.last_id}, count=1000, block=block)
            for _stream, entries in read or ():
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    reply = Reply.from_fields(fields)
                    self.unclaimed[reply.request_id] = reply
        return self.unclaimed.pop(request_id)
