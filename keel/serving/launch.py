"""Load what ``keel serve`` serves and run the scoring app under uvicorn, in one or several
processes.

Worker processes are started by uvicorn's supervisor and cannot receive a loaded model, so each
rebuilds the plan source from the JSON the supervisor exports as ``KEEL_SERVE_CONFIG`` (the
source's :meth:`~keel.serving.plan.PlanSource.spec` and the serving options) and loads the
models again from the local cache (no model bytes are downloaded twice). A model URI's alias is
resolved once, by the supervisor, and workers load that version, unless they follow the alias.
With several workers, the supervisor also creates the folder prometheus_client's multiprocess
mode shares between them (``PROMETHEUS_MULTIPROC_DIR``), so ``/metrics`` adds up every
worker's counts, and removes it at the end.

The listening socket is bound as ``keel server`` binds it (:func:`keel.server.launch.bind_socket`),
so keep-alive requests to several workers do not wait 40 ms on a delayed ACK (uvicorn #3149).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from fastapi import FastAPI

from keel.errors import InvalidInput, KeelError
from keel.server.launch import STARTUP_FAILURE, bind_socket
from keel.serving.app import create_scoring_app
from keel.serving.batching import DEFAULT_MAX_BATCH_ROWS, DEFAULT_MAX_WAIT_MS
from keel.serving.metrics import ScoringMetrics
from keel.serving.plan import PlanSource, ServingPlan
from keel.serving.sources import ModelSource, load_for_serving, source_from_spec

__all__ = [
    "CONFIG_ENV",
    "MULTIPROC_ENV",
    "ServeOptions",
    "load_for_serving",
    "serve",
    "worker_app",
]

CONFIG_ENV = "KEEL_SERVE_CONFIG"
"""How the supervisor tells worker processes what to serve and how (JSON)."""
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's multiprocess folder (read by prometheus_client itself at import)."""

_WORKER_FACTORY = "keel.serving.launch:worker_app"
log = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class ServeOptions:
    """How requests are scored, the same in every worker.

    Attributes:
        max_batch_rows: rows one ``predict`` call takes at most (0: no micro-batching).
        max_wait_ms: under load, how long a batch may wait to be as large as the last one.
        log_predictions: append every prediction to the prediction log of the plan's
            deployment, in the artifact store.
    """

    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    log_predictions: bool = True


def app_for(
    source: PlanSource,
    plan: ServingPlan,
    options: ServeOptions,
    *,
    multiprocess_dir: str | None = None,
) -> FastAPI:
    """The scoring app for a loaded ``plan``, with its prediction log opened when asked."""
    prediction_log = None
    if options.log_predictions:
        from keel.serving.predlog import open_log
        from keel.settings import Settings

        prediction_log = open_log(Settings(), plan.deployment)
    return create_scoring_app(
        source,
        plan=plan,
        prediction_log=prediction_log,
        metrics=ScoringMetrics(multiprocess_dir=multiprocess_dir),
        max_batch_rows=options.max_batch_rows,
        max_wait_ms=options.max_wait_ms,
    )


def worker_app() -> FastAPI:
    """The app of one worker process, for what the supervisor named in ``KEEL_SERVE_CONFIG``."""
    config = orjson.loads(os.environ[CONFIG_ENV])
    try:
        source = source_from_spec(config["source"])
        plan = source.load()
        return app_for(
            source,
            plan,
            ServeOptions(**config["options"]),
            multiprocess_dir=os.environ.get(MULTIPROC_ENV),
        )
    except KeelError as exc:
        log.error("keel serve: a worker cannot load %s: %s", config["source"], exc)
        sys.exit(STARTUP_FAILURE)  # the supervisor stops, not respawns


def serve(
    source: PlanSource,
    *,
    options: ServeOptions | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Load what ``source`` names once, then serve it until interrupted.

    Raises:
        KeelError: something named cannot be loaded (before anything listens), or the port
            cannot be bound.
    """
    import uvicorn

    options = options or ServeOptions()
    if options.max_batch_rows < 0 or options.max_wait_ms < 0:
        raise InvalidInput("--max-batch-rows and --max-wait-ms must not be negative")
    plan = source.load()
    if workers <= 1:
        app = app_for(source, plan, options)
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return
    if isinstance(source, ModelSource):  # workers load the version the supervisor resolved
        source = source.pin(plan)
    _serve_workers(source, options, host=host, port=port, workers=workers, log_level=log_level)


def _serve_workers(
    source: PlanSource,
    options: ServeOptions,
    *,
    host: str,
    port: int,
    workers: int,
    log_level: str,
) -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = {"source": source.spec(), "options": asdict(options)}
    try:  # bound by Keel with IPPROTO_TCP, else every keep-alive request waits ~40 ms
        sock = bind_socket(host, port)
    except OSError as exc:
        raise KeelError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    metrics_dir = tempfile.mkdtemp(prefix="keel-serve-metrics-")
    saved = {name: os.environ.get(name) for name in (CONFIG_ENV, MULTIPROC_ENV)}
    os.environ[CONFIG_ENV] = orjson.dumps(config).decode()
    os.environ[MULTIPROC_ENV] = metrics_dir
    supervisor = Multiprocess(
        uvicorn.Config(
            _WORKER_FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
        ),
        sockets=[sock],
    )
    try:
        supervisor.run()
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        _restore(saved)
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        raise KeelError(f"the workers could not load {_describe(source)}; see the log above")


def _describe(source: PlanSource) -> str:
    spec = source.spec()
    if spec.get("uri"):
        return str(spec["uri"])
    return f"deployment {spec.get('name')!r}"


def _restore(saved: dict[str, Any]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
