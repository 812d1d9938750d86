"""The scoring app: ``POST /predict`` on one loaded model, plus health, readiness and metadata.

The hot path is kept thin on purpose (see FINDINGS "Serving": a pydantic body model costs
1.3-1.45x the server CPU of the thinnest handler): the body is read as bytes, parsed once with
``orjson`` when installed (else ``json``), turned into one DataFrame, checked against the
model's signature by :meth:`Predictor.predict`, and the predictions are written back as JSON
without a response model. Every input mistake is a 422 whose body names what was wrong; the
model is never asked about a body that is not a table.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from keel.errors import InvalidInput, KeelError
from keel.models.loading import Predictor
from keel.models.models import ModelVersion
from keel.serving.bodies import frame_from_body, predictions_json

__all__ = ["create_scoring_app"]


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
            frame = frame_from_body(await request.body(), request.headers.get("content-type"))
            predictions = predictor.predict(frame)
        except InvalidInput as exc:
            return _unprocessable(exc)
        except (ValueError, TypeError) as exc:  # the model refused what the signature allowed
            return _unprocessable(InvalidInput(f"the model refused the input: {exc}"))
        return Response(
            orjson.dumps({"predictions": predictions_json(predictions)}), media_type=_JSON
        )

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
    return Response(
        orjson.dumps(exc.to_dict()),
        status_code=exc.status_code if exc.status_code == 415 else 422,
        media_type=_JSON,
    )


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
