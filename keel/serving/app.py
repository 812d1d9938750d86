"""The scoring app: ``POST /predict`` on one loaded model, plus health, readiness and metadata.

The hot path is kept thin on purpose (see FINDINGS "Serving": a pydantic body model costs
1.3-1.45x the server CPU of the thinnest handler): the body is read as bytes, parsed once with
``orjson`` when installed (else ``json``), turned into one DataFrame, checked against the
model's signature by :meth:`Predictor.predict`, and the predictions are written back as JSON
without a response model. Every input mistake is a 422 whose body names what was wrong; the
model is never asked about a body that is not a table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from keel.errors import InvalidInput, KeelError
from keel.models.loading import Predictor
from keel.models.models import ModelVersion

__all__ = ["create_scoring_app"]

_loads: Callable[[bytes], Any]
_dumps: Callable[[Any], bytes]
try:  # orjson parses and writes 2-4x faster; optional
    import orjson

    _loads = orjson.loads
    _dumps = orjson.dumps  # NaN becomes null
except ImportError:  # pragma: no cover - depends on the environment

    def _loads(body: bytes) -> Any:
        return json.loads(body)

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()


def create_scoring_app(predictor: Predictor, *, version: ModelVersion | None = None) -> FastAPI:
    """An ASGI app scoring with ``predictor``.

    Args:
        predictor: the loaded model (from :func:`keel.models.load`).
        version: the registered version it was loaded as, when it came from ``models:/``
            (``/metadata`` then names it).

    Returns:
        A FastAPI app with ``POST /predict``, ``GET /health``, ``GET /ready`` and
        ``GET /metadata``.

    Example:
        >>> app = create_scoring_app(keel.models.load("models:/diabetes@champion"))
        ... # doctest: +SKIP
    """
    app = FastAPI(title="Keel model service", docs_url="/docs", redoc_url=None)
    metadata = _metadata(predictor, version)

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        """Predictions for ``{"records": [{column: value}, ...]}`` or
        ``{"columns": {column: [values]}}``: ``{"predictions": [...]}``, one per row."""
        try:
            frame = _frame(await request.body())
            predictions = predictor.predict(frame)
        except InvalidInput as exc:
            return _unprocessable(exc)
        except (ValueError, TypeError) as exc:  # the model refused what the signature allowed
            return _unprocessable(InvalidInput(f"the model refused the input: {exc}"))
        return Response(_dumps({"predictions": _as_list(predictions)}), media_type=_JSON)

    @app.get("/health")
    async def health() -> JSONResponse:
        """The process answers."""
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """The model is loaded and takes requests (it is loaded before the app exists)."""
        return JSONResponse({"status": "ready", "uri": predictor.uri})

    @app.get("/metadata")
    async def describe() -> JSONResponse:
        """The model served: URI, registered name and version, flavor, signature."""
        return JSONResponse(metadata)

    @app.exception_handler(KeelError)
    async def keel_error(_request: Request, exc: KeelError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)

    return app


_JSON = "application/json"


def _unprocessable(exc: KeelError) -> Response:
    return Response(_dumps(exc.to_dict()), status_code=422, media_type=_JSON)


def _frame(body: bytes) -> Any:
    """The request body as one DataFrame.

    Raises:
        InvalidInput: the body is empty, not JSON, or neither ``records`` (a non-empty list of
            objects with the same keys) nor ``columns`` (an object of equal-length lists).
    """
    if not body.strip():
        raise InvalidInput(
            'the request body is empty: send {"records": [{...}, ...]} or '
            '{"columns": {"name": [...]}}',
            field="body",
        )
    try:
        payload = _loads(body)
    except ValueError as exc:  # json.JSONDecodeError and orjson.JSONDecodeError both are
        raise InvalidInput(f"the request body is not valid JSON: {exc}", field="body") from None
    if not isinstance(payload, dict) or len(payload) != 1 or not payload.keys() & _SHAPES:
        given = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise InvalidInput(
            f'the body must be an object with one key, "records" or "columns"; got {given}',
            field="body",
        )
    import pandas as pd

    if "records" in payload:
        return pd.DataFrame(_records_columns(payload["records"]))
    columns = payload["columns"]
    if not isinstance(columns, dict) or not columns:
        raise InvalidInput(
            '"columns" must be a non-empty object of column name to list of values',
            field="columns",
        )
    lengths = set()
    for name, values in columns.items():
        if not isinstance(values, list):
            raise InvalidInput(
                f"column {name!r} must be a list of values, got {type(values).__name__}",
                field=f"columns.{name}",
                column=name,
            )
        lengths.add(len(values))
    if len(lengths) != 1:
        raise InvalidInput(
            f'the lists in "columns" differ in length: {sorted(lengths)}', field="columns"
        )
    return pd.DataFrame(columns)


_SHAPES = {"records", "columns"}


def _records_columns(records: Any) -> dict[str, list[Any]]:
    """``records`` as columns, refusing a record whose keys differ from the first's (a key left
    out of one row would otherwise become a silent NaN)."""
    if not isinstance(records, list) or not records:
        raise InvalidInput('"records" must be a non-empty list of objects', field="records")
    first = records[0]
    if not isinstance(first, dict):
        raise InvalidInput(
            f'"records" must hold objects; record 0 is a {type(first).__name__}',
            field="records[0]",
        )
    keys = first.keys()
    for index, record in enumerate(records):
        if not isinstance(record, dict) or record.keys() != keys:
            raise InvalidInput(_record_mismatch(index, record, keys), field=f"records[{index}]")
    return {name: [record[name] for record in records] for name in keys}


def _record_mismatch(index: int, record: Any, keys: Any) -> str:
    if not isinstance(record, dict):
        return f'"records" must hold objects; record {index} is a {type(record).__name__}'
    missing = sorted(set(keys) - set(record))
    extra = sorted(set(record) - set(keys))
    parts = [f"lacks {', '.join(map(repr, missing))}"] if missing else []
    parts += [f"has {', '.join(map(repr, extra))} that record 0 has not"] if extra else []
    return f"record {index} {' and '.join(parts)}: every record needs the same fields"


def _as_list(predictions: Any) -> Any:
    """Predictions as JSON-ready values: one per row (a list for multi-output models)."""
    if hasattr(predictions, "to_dict") and hasattr(predictions, "columns"):  # a DataFrame
        return predictions.to_dict(orient="records")
    if hasattr(predictions, "tolist"):  # an ndarray or a Series
        return predictions.tolist()
    return list(predictions)


def _metadata(predictor: Predictor, version: ModelVersion | None) -> dict[str, Any]:
    manifest = predictor.manifest
    signature = manifest.signature
    return {
        "uri": predictor.uri,
        "name": version.name if version is not None else None,
        "version": version.version if version is not None else None,
        "aliases": list(version.aliases) if version is not None else [],
        "flavor": manifest.flavor,
        "model_class": manifest.model_class,
        "digest": predictor.digest,
        "run_id": manifest.run_id,
        "signature": signature.model_dump(mode="json") if signature is not None else None,
    }
