"""Load a model for serving and run the scoring app under uvicorn, in one or several processes.

Worker processes are started by uvicorn's supervisor and cannot receive a loaded model, so each
loads it again from the URI the supervisor exports as ``KEEL_SERVE_MODEL_URI`` (from the cache
folder the first load filled: no model bytes are downloaded twice).
"""

from __future__ import annotations

import logging
import os
import sys

from fastapi import FastAPI

from keel.errors import KeelError
from keel.models.api import get_version
from keel.models.loading import Predictor, load, load_version
from keel.models.models import ModelVersion
from keel.models.uris import ModelsUri, parse_model_uri
from keel.serving.app import create_scoring_app

__all__ = ["MODEL_URI_ENV", "load_for_serving", "serve", "worker_app"]

MODEL_URI_ENV = "KEEL_SERVE_MODEL_URI"
"""How the supervisor tells worker processes which model to load."""

_WORKER_FACTORY = "keel.serving.launch:worker_app"
_STARTUP_FAILURE = 3  # uvicorn's supervisor stops instead of respawning on this exit code
log = logging.getLogger("uvicorn.error")


def load_for_serving(uri: str) -> tuple[Predictor, ModelVersion | None]:
    """The model at ``uri`` and, for ``models:/`` URIs, the registered version it resolved to
    (resolved once, so an alias moved meanwhile cannot make the two disagree).

    Raises:
        KeelError: the URI is malformed, or names nothing loadable (see :func:`keel.models.load`).
    """
    parsed = parse_model_uri(uri)
    if isinstance(parsed, ModelsUri):
        version = get_version(parsed.name, parsed.selector)
        return load_version(version, uri=uri), version
    return load(uri), None


def worker_app() -> FastAPI:
    """The app of one worker process, for the model the supervisor named."""
    uri = os.environ[MODEL_URI_ENV]
    try:
        predictor, version = load_for_serving(uri)
    except KeelError as exc:
        log.error("keel serve: a worker cannot load %s: %s", uri, exc)
        sys.exit(_STARTUP_FAILURE)
    return create_scoring_app(predictor, version=version)


def serve(
    uri: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Load ``uri`` once, then serve it until interrupted.

    Raises:
        KeelError: the model cannot be loaded (before anything listens).
    """
    import uvicorn

    predictor, version = load_for_serving(uri)
    if workers <= 1:
        app = create_scoring_app(predictor, version=version)
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return
    # workers load the version the supervisor resolved, even if the alias moves meanwhile
    os.environ[MODEL_URI_ENV] = version.uri if version is not None else uri
    uvicorn.run(
        _WORKER_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )
