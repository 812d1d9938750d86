"""An AWS Lambda function scoring a Keel model behind API Gateway: ``handler(event, context)``.

Written as ``handler.py`` by ``keel models export --format lambda``, beside the ``model``
folder and ``keel-export.json``. The model is loaded once per container, on the first call
(its files' digest checked against the exported one), and reused by every later call.

Events: API Gateway REST API (payload 1.0: ``httpMethod``, ``body``, ``isBase64Encoded``) and
HTTP API (payload 2.0: ``requestContext.http.method``), or a direct invocation whose event is
the JSON body itself. ``POST`` bodies are what ``keel serve`` takes (``{"records": [...]}``,
``{"columns": {...}}``, CSV or Arrow IPC by ``Content-Type``, base64 when
``isBase64Encoded``), answered ``{"predictions": [...]}``; ``GET`` answers the model's
metadata. Input the signature refuses is a 422 naming the field, an unknown content type 415,
an event that is not an HTTP request or a body that is not valid base64 400: always a JSON
body ``{"error", "message", ...}``, never an exception out of the handler for bad input.

Example:
    >>> handler({"version": "2.0", "requestContext": {"http": {"method": "POST"}},
    ...          "body": '{"records": [{"age": 0.03, ...}]}'}, None)  # doctest: +SKIP
    {'statusCode': 200, 'headers': {...}, 'body': '{"predictions":[151.2]}'}
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.errors import KeelError
    from keel.models.loading import Predictor

__all__ = ["handler", "metadata", "model"]

_HERE = Path(__file__).resolve().parent
_JSON_HEADERS = {"Content-Type": "application/json"}


@functools.cache
def metadata() -> dict[str, Any]:
    """``keel-export.json``: the model's URI, version, digest, signature and requirements."""
    info: dict[str, Any] = json.loads((_HERE / "keel-export.json").read_text(encoding="utf-8"))
    return info


@functools.cache
def model() -> Predictor:
    """The model, loaded on the first call and kept for the container's life."""
    from keel.models.loading import load_folder

    info = metadata()
    return load_folder(_HERE / info["model_folder"], digest=info["digest"])


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Answer one API Gateway (v1 or v2) event or a direct invocation.

    Returns:
        ``{"statusCode", "headers", "body"}`` with a JSON body: the predictions (200), the
        metadata (200 for ``GET``), or an error (400, 405, 415, 422).
    """
    if not isinstance(event, dict):
        return _error(400, "bad_event", f"the event must be an object, not {type(event).__name__}")
    method = _method(event)
    if method == "GET":
        return _respond(200, {"status": "ok", **metadata()})
    if method != "POST":
        return _error(405, "method_not_allowed", f"{method} is not allowed: POST rows, or GET")
    try:
        body, content_type = _request(event)
    except ValueError as exc:
        return _error(400, "bad_request", str(exc))
    return _predict(body, content_type, getattr(context, "aws_request_id", None))


def _predict(body: bytes, content_type: str | None, request_id: str | None) -> dict[str, Any]:
    from keel.errors import InvalidInput
    from keel.serving.bodies import frame_from_body, predictions_json

    try:
        predictions = model().predict(frame_from_body(body, content_type))
    except InvalidInput as exc:
        return _keel_error(exc)
    except (ValueError, TypeError) as exc:  # the model refused what the signature allowed
        return _keel_error(InvalidInput(f"the model refused the input: {exc}"))
    answer: dict[str, Any] = {"predictions": predictions_json(predictions)}
    if request_id is not None:
        answer["request_id"] = request_id
    return _respond(200, answer)


def _method(event: dict[str, Any]) -> str:
    """The HTTP method: payload 1.0's ``httpMethod``, 2.0's ``requestContext.http.method``;
    POST for a direct invocation."""
    if "httpMethod" in event:
        return str(event["httpMethod"]).upper()
    http = (event.get("requestContext") or {}).get("http") or {}
    return str(http.get("method", "POST")).upper()


def _request(event: dict[str, Any]) -> tuple[bytes, str | None]:
    """The body's bytes and ``Content-Type``.

    Raises:
        ValueError: not an HTTP event nor a direct invocation, or a base64 body that does not
            decode.
    """
    if "body" not in event:
        if event.keys() & {"records", "columns"}:  # a direct invocation: the event is the body
            return json.dumps(event).encode(), "application/json"
        raise ValueError(
            "the event is not an API Gateway request (no body) nor a direct invocation "
            '({"records": [...]} or {"columns": {...}})'
        )
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    body = event["body"] or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True), headers.get("content-type")
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"isBase64Encoded is true but the body is not base64: {exc}") from None
    return body.encode() if isinstance(body, str) else bytes(body), headers.get("content-type")


def _keel_error(exc: KeelError) -> dict[str, Any]:
    status = exc.status_code if exc.status_code == 415 else 422
    return _respond(status, exc.to_dict())


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    return _respond(status, {"error": code, "message": message})


def _respond(status: int, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": dict(_JSON_HEADERS),
        "body": json.dumps(payload, default=str),
    }
