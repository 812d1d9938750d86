"""Load a model for serving and run the scoring app under uvicorn, in one or several processes.

Worker processes are started by uvicorn's supervisor and cannot receive a loaded model, so each
loads it again from the URI the supervisor exports as ``KEEL_SERVE_MODEL_URI`` (from the cache
folder the first load filled: no model bytes are downloaded twice). The listening socket is
bound as ``keel server`` binds it (:func:`keel.server.launch.bind_socket`), so keep-alive
requests to several workers do not wait 40 ms on a delayed ACK (uvicorn issue #3149).
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
from keel.server.launch import STARTUP_FAILURE, bind_socket
from keel.serving.app import create_scoring_app

__all__ = ["MODEL_URI_ENV", "load_for_serving", "serve", "worker_app"]

MODEL_URI_ENV = "KEEL_SERVE_MODEL_URI"
"""How the supervisor tells worker processes which model to load."""

_WORKER_FACTORY = "keel.serving.launch:worker_app"
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
        sys.exit(STARTUP_FAILURE)  # the supervisor stops, not respawns
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
    from uvicorn.supervisors import Multiprocess

    # workers load the version the supervisor resolved, even if the alias moves meanwhile
    os.environ[MODEL_URI_ENV] = version.uri if version is not None else uri
    config = uvicorn.Config(
        _WORKER_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )
    try:  # bound by Keel with IPPROTO_TCP, else every keep-alive request waits ~40 ms
        sock = bind_socket(host, port)
    except OSError as exc:
        raise KeelError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    supervisor = Multiprocess(config, sockets=[sock])
    try:
        supervisor.run()
    finally:
        sock.close()
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        raise KeelError(f"the workers could not load {uri}; see the log above")
