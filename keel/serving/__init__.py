"""Serving: a loaded model as an HTTP scoring service (``keel serve MODEL_URI``).

``create_scoring_app(predictor)`` builds the ASGI app (``POST /predict``, ``GET /health``,
``/ready``, ``/metadata``); ``keel serve`` loads the model once and runs it under uvicorn. See
``docs/serving.md``.
"""

from __future__ import annotations

from keel.serving.app import create_scoring_app

__all__ = ["create_scoring_app"]
