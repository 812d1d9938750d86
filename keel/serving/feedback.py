"""``POST /feedback``: ground-truth labels for logged predictions, joined to them when read.

Two bodies are accepted::

    {"labels": [{"request_id": "9f2c...", "row": 0, "label": 151.0}, ...]}   # row defaults to 0
    {"request_id": "9f2c...", "labels": [151.0, 75.0, ...]}                  # rows 0, 1, ...

The answer is ``{"accepted": n}``. The body is parsed once (``orjson``, no pydantic model, as
``POST /predict``), checked whole before any label is kept, and anything malformed is a 422
naming the field (``labels[3].row``). A label may arrive before its prediction is written or
long after: :func:`keel.serving.predlog.read_feedback` returns labels, which are joined on
``request_id`` and ``row``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from keel.errors import InvalidInput, KeelError
from keel.serving.predlog import MAX_ROW, PredictionLog

__all__ = ["MAX_LABELS", "feedback_router", "parse_feedback"]

MAX_LABELS = 10_000
"""Labels accepted in one request; send more in several."""

MAX_REQUEST_ID = 256
"""Longest request id accepted (request ids are UUIDs or the caller's own short ids)."""

_JSON = "application/json"
_ITEM_KEYS = frozenset({"request_id", "row", "label"})


def feedback_router(log: PredictionLog) -> APIRouter:
    """A router with ``POST /feedback`` keeping labels in ``log``.

    Args:
        log: the service's prediction log (labels are written beside its predictions).

    Returns:
        The router; mount it with ``app.include_router(feedback_router(log))``.

    Example:
        >>> app.include_router(feedback_router(open_log(settings, "diabetes")))
        ... # doctest: +SKIP
    """
    router = APIRouter()

    @router.post("/feedback")
    async def feedback(request: Request) -> Response:
        """Labels for logged predictions: ``{"labels": [{"request_id", "row", "label"}]}`` or
        ``{"request_id": ..., "labels": [...]}``; answers ``{"accepted": n}``."""
        try:
            labels = parse_feedback(await request.body())
        except InvalidInput as exc:
            return _answer(exc.to_dict(), 422)
        if log.closed:
            unavailable = KeelError("the service is shutting down: send the labels again later")
            return _answer(unavailable.to_dict(), 503)
        now = time.time_ns() // 1_000_000
        for request_id, row, label in labels:
            log.feedback(request_id=request_id, row=row, label=label, time_ms=now)
        return _answer({"accepted": len(labels)}, 200)

    return router


def parse_feedback(body: bytes) -> list[tuple[str, int, Any]]:
    """The ``(request_id, row, label)`` triples of a ``POST /feedback`` body.

    Args:
        body: the raw request body.

    Returns:
        One triple per label, in the order sent.

    Raises:
        InvalidInput: the body is not JSON, not one of the two shapes, has more than
            :data:`MAX_LABELS` labels, or a request id, row or label is malformed; ``field``
            names where (``labels[2].row``).

    Example:
        >>> parse_feedback(b'{"request_id": "r1", "labels": [3.5, 4]}')
        [('r1', 0, 3.5), ('r1', 1, 4)]
    """
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}", field="body") from None
    if not isinstance(payload, dict) or "labels" not in payload:
        raise InvalidInput(_SHAPES, field="body")
    unknown = sorted(set(payload) - {"labels", "request_id"})
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}: {_SHAPES}", field=unknown[0])
    labels = payload["labels"]
    if not isinstance(labels, list) or not labels:
        raise InvalidInput('"labels" must be a non-empty list', field="labels")
    if len(labels) > MAX_LABELS:
        raise InvalidInput(
            f"{len(labels)} labels in one request: send at most {MAX_LABELS:,} per request",
            field="labels",
        )
    if "request_id" in payload:
        request_id = _request_id(payload["request_id"], "request_id")
        return [
            (request_id, row, _label(label, f"labels[{row}]")) for row, label in enumerate(labels)
        ]
    return [_item(item, f"labels[{at}]") for at, item in enumerate(labels)]


_SHAPES = (
    'send {"labels": [{"request_id": "...", "row": 0, "label": ...}, ...]} or '
    '{"request_id": "...", "labels": [label of row 0, label of row 1, ...]}'
)


def _item(item: Any, where: str) -> tuple[str, int, Any]:
    if not isinstance(item, dict):
        raise InvalidInput(
            f'{where} must be an object {{"request_id": ..., "row": ..., "label": ...}}, '
            f"not {type(item).__name__}",
            field=where,
        )
    unknown = sorted(set(item) - _ITEM_KEYS)
    if unknown:
        raise InvalidInput(
            f"{where} has an unknown field {unknown[0]!r} (fields: request_id, row, label)",
            field=f"{where}.{unknown[0]}",
        )
    if "request_id" not in item:
        raise InvalidInput(f"{where} lacks request_id", field=f"{where}.request_id")
    if "label" not in item:
        raise InvalidInput(f"{where} lacks label", field=f"{where}.label")
    row = item.get("row", 0)
    if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row <= MAX_ROW:
        raise InvalidInput(
            f"{where}.row must be the row's index in its request (an integer from 0), "
            f"not {_short(row)}",
            field=f"{where}.row",
        )
    request_id = _request_id(item["request_id"], f"{where}.request_id")
    return request_id, row, _label(item["label"], f"{where}.label")


def _request_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_REQUEST_ID:
        raise InvalidInput(
            f"{where} must be the request id a prediction answered with (a non-empty string of "
            f"at most {MAX_REQUEST_ID} characters), not {_short(value)}",
            field=where,
        )
    return value


def _label(value: Any, where: str) -> Any:
    if value is None:
        raise InvalidInput(f"{where} is null: send the observed value", field=where)
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _answer(payload: dict[str, Any], status: int) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=_JSON)
