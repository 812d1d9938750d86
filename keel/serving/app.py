"""The scoring app: ``POST /predict`` on a :class:`~keel.serving.plan.ServingPlan` (one model, or
a deployment's weighted and shadow arms), plus health, readiness, metadata and metrics.

The hot path is kept thin on purpose (see FINDINGS "Serving": a pydantic body model costs
1.3-1.45x the server CPU of the thinnest handler): the body is read as bytes, parsed once
(:mod:`keel.serving.bodies`), checked against the chosen arm's signature, queued on that arm's
:class:`~keel.serving.batching.MicroBatcher` (concurrent requests share one ``predict`` call in
a thread), and written back with ``orjson``. After the answer, the prediction log gets the rows
(O(1): a background thread writes Parquet) and each shadow arm scores a copy as a background
task that never delays or fails the answer.

The plan is held as one object and replaced whole (:meth:`ScoringService.swap`) when the source
says it changed, so a request in flight finishes on the arm it started on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.routing import Route

from keel.errors import InvalidInput, KeelError
from keel.models.loading import Predictor
from keel.models.models import ModelVersion
from keel.serving.batching import (
    DEFAULT_MAX_BATCH_ROWS,
    DEFAULT_MAX_WAIT_MS,
    BatcherClosed,
    MicroBatcher,
)
from keel.serving.bodies import (
    ARROW_FILE,
    ARROW_STREAM,
    CSV,
    JSON,
    dumps,
    frame_from_body,
    predictions_arrow,
    predictions_csv,
    predictions_json,
    response_type,
)
from keel.serving.metrics import CONTENT_TYPE, ScoringMetrics
from keel.serving.plan import Arm, PlanSource, ServingPlan
from keel.serving.sources import PredictorSource

if TYPE_CHECKING:
    from keel.serving.predlog import PredictionLog

__all__ = ["DEFAULT_MAX_SHADOW_TASKS", "ScoringService", "create_scoring_app"]

DEFAULT_MAX_SHADOW_TASKS = 64
"""Shadow calls in flight at most per process; beyond it a copy is skipped (and counted)."""

log = logging.getLogger("uvicorn.error")
_MAX_REQUEST_ID = 128


def create_scoring_app(
    source: PlanSource | Predictor,
    *,
    version: ModelVersion | None = None,
    plan: ServingPlan | None = None,
    prediction_log: PredictionLog | None = None,
    metrics: ScoringMetrics | None = None,
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    max_shadow_tasks: int = DEFAULT_MAX_SHADOW_TASKS,
) -> FastAPI:
    """An ASGI app scoring with what ``source`` serves.

    Args:
        source: a :class:`~keel.serving.plan.PlanSource` (``ModelSource``,
            ``DeploymentSource``), or a loaded :class:`~keel.models.loading.Predictor` to serve
            alone (in-process use and tests).
        version: with a bare predictor, the registered version it was loaded as.
        plan: the plan to start with, when the caller already loaded it (else
            ``source.load()`` runs now, blocking).
        prediction_log: where every prediction (and shadow output) is logged; also mounts
            ``POST /feedback``.
        metrics: the Prometheus series (a new single-process set by default).
        max_batch_rows: rows one ``predict`` call takes at most (0: no micro-batching).
        max_wait_ms: under load, how long a batch may wait to be as large as the last one.
        max_shadow_tasks: shadow calls in flight at most; more are skipped and counted.

    Returns:
        A FastAPI app with ``POST /predict``, ``GET /health``, ``/ready``, ``/metadata`` and
        ``/metrics`` (and ``POST /feedback`` with a prediction log). Its lifespan polls the
        source for changes and, at shutdown, lets queued requests finish before closing the
        prediction log.

    Raises:
        KeelError: ``source.load()`` failed (nothing is served).

    Example:
        >>> source = ModelSource("models:/diabetes@champion", follow_alias=True)
        >>> app = create_scoring_app(source)  # doctest: +SKIP
    """
    if isinstance(source, Predictor):
        source = PredictorSource(source, version)
    service = ScoringService(
        source,
        plan if plan is not None else source.load(),
        prediction_log=prediction_log,
        metrics=metrics or ScoringMetrics(),
        max_batch_rows=max_batch_rows,
        max_wait_ms=max_wait_ms,
        max_shadow_tasks=max_shadow_tasks,
    )
    app = FastAPI(
        title="Keel model service", docs_url="/docs", redoc_url=None, lifespan=service.lifespan
    )
    app.state.service = service
    _routes(app, service)
    if prediction_log is not None:
        from keel.serving.feedback import feedback_router

        app.include_router(feedback_router(prediction_log))
    return app


_PREDICT_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {"example": {"records": [{"age": 0.03, "bmi": 0.06}]}},
            CSV: {"example": "age,bmi\n0.03,0.06\n"},
            ARROW_STREAM: {},
            ARROW_FILE: {},
        },
    },
    "responses": {"422": {"description": "The body is malformed or does not fit the model"}},
}


def _routes(app: FastAPI, service: ScoringService) -> None:
    # POST /predict is a plain Starlette route, matched before anything else: FastAPI's
    # dependency solving and telemetry cost 2.23 against 1.85 ms of CPU per 1-row request (in
    # process, on the loaded 2-core test machine); the FastAPI route below only documents it
    app.router.routes.insert(0, Route("/predict", service.predict, methods=["POST"]))

    @app.post("/predict", openapi_extra=_PREDICT_DOC)
    async def predict(request: Request) -> Response:  # pragma: no cover - never matched
        """Predictions for a JSON (``{"records": [...]}`` or ``{"columns": {...}}``), CSV or
        Arrow IPC body: ``{"request_id": ..., "predictions": [...]}``, one per row."""
        return await service.predict(request)

    @app.get("/health")
    async def health() -> JSONResponse:
        """The process answers."""
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """The plan is loaded and takes requests (503 while shutting down)."""
        plan = service.live.plan
        body = {
            "status": "draining" if service.draining else "ready",
            "uri": plan.primaries[0].predictor.uri,
            "deployment": plan.deployment,
            "revision": plan.revision,
        }
        return JSONResponse(body, status_code=503 if service.draining else 200)

    @app.get("/metadata")
    async def describe() -> JSONResponse:
        """What is served: the deployment, its revision, and each arm's model and signature."""
        return JSONResponse(service.live.metadata)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text: requests, latency, errors, rows, batch sizes, shadows, the log."""
        service.note_log_stats()
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE)

    @app.exception_handler(KeelError)
    async def keel_error(_request: Request, exc: KeelError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)


@dataclass(frozen=True, eq=False)
class _Live:
    """What requests read: the plan, a batcher per loaded model, the plan's metadata. Replaced
    whole, never changed."""

    plan: ServingPlan
    batchers: dict[Predictor, MicroBatcher]
    metadata: dict[str, Any]


class ScoringService:
    """The state behind the scoring app: the live plan, its batchers, shadows in flight, the
    prediction log and the metrics. Built by :func:`create_scoring_app`."""

    def __init__(
        self,
        source: PlanSource,
        plan: ServingPlan,
        *,
        prediction_log: PredictionLog | None,
        metrics: ScoringMetrics,
        max_batch_rows: int,
        max_wait_ms: float,
        max_shadow_tasks: int,
    ) -> None:
        self.source = source
        self.prediction_log = prediction_log
        self.metrics = metrics
        self.max_batch_rows = max_batch_rows
        self.max_wait_ms = max_wait_ms
        self.max_shadow_tasks = max_shadow_tasks
        self.draining = False
        self._shadows: set[asyncio.Task[None]] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self.live = self._live(plan, {})

    # -- requests ---------------------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        """Answer one ``POST /predict`` (see the module docstring for the path it takes)."""
        started = time.perf_counter()
        time_ms = time.time_ns() // 1_000_000
        headers = request.headers
        body = await request.body()
        live = self.live  # read once: a swap meanwhile does not move this request
        arm = live.plan.choose(headers.get("x-keel-key"))
        given = headers.get("x-request-id")
        request_id = given if given and _valid_request_id(given) else uuid.uuid4().hex
        frame = None
        try:
            if given and request_id is not given:
                raise InvalidInput(
                    f"X-Request-Id must be at most {_MAX_REQUEST_ID} printable characters",
                    field="X-Request-Id",
                )
            frame = frame_from_body(body, headers.get("content-type"))
            predictions = await live.batchers[arm.predictor].predict(frame)
            accept = response_type(headers.get("accept"))
            content, media = _encode(request_id, predictions, accept)
        except Exception as exc:  # answered below, never re-raised: the log gets it too
            return self._failed(exc, live, arm, request_id, frame, started, time_ms)
        seconds = time.perf_counter() - started
        rows = len(frame)
        self.metrics.request(live.plan.deployment, arm.label, 200, seconds, rows=rows)
        if self.prediction_log is not None:
            self._log(arm, "primary", request_id, time_ms, frame, predictions, seconds)
        if live.plan.shadows:
            self._shadow(live, frame, request_id, time_ms)
        return Response(content, media_type=media, headers=_headers(request_id, arm))

    def _failed(
        self,
        exc: Exception,
        live: _Live,
        arm: Arm,
        request_id: str,
        frame: Any,
        started: float,
        time_ms: int,
    ) -> Response:
        error = _as_keel_error(exc)
        code = (
            error.code
            if error is exc
            else "model_refused"
            if error.status_code < 500
            else "internal"
        )
        status = error.status_code
        if status == 500:
            log.error("keel serve: request %s failed on %s", request_id, arm.label, exc_info=exc)
        elif isinstance(error, InvalidInput) and status == 400:
            status = 422
        seconds = time.perf_counter() - started
        deployment = live.plan.deployment
        self.metrics.request(deployment, arm.label, status, seconds)
        self.metrics.error(deployment, arm.label, code)
        if self.prediction_log is not None and error.context.get("field") != "X-Request-Id":
            inputs = frame if frame is not None and len(frame) else None
            message = f"{error.code}: {error.message}"
            self._log(arm, "primary", request_id, time_ms, inputs, None, seconds, message)
        payload = {**error.to_dict(), "request_id": request_id}
        return Response(
            orjson.dumps(payload),
            status_code=status,
            media_type=JSON,
            headers=_headers(request_id, arm),
        )

    def _log(
        self,
        arm: Arm,
        role: str,
        request_id: str,
        time_ms: int,
        inputs: Any,
        outputs: Any,
        seconds: float,
        error: str | None = None,
    ) -> None:
        assert self.prediction_log is not None
        try:
            self.prediction_log.log(
                request_id=request_id,
                time_ms=time_ms,
                arm=arm.label,
                model=arm.model_name,
                version=arm.model_version,
                role=role,
                inputs=inputs,
                outputs=outputs,
                latency_ms=seconds * 1000.0,
                error=error,
            )
        except KeelError as exc:  # e.g. a model answering another number of rows
            log.warning("keel serve: request %s not logged: %s", request_id, exc)

    # -- shadows ----------------------------------------------------------------------------

    def _shadow(self, live: _Live, frame: Any, request_id: str, time_ms: int) -> None:
        """A copy of the request to each shadow arm, as background tasks (skipped, and counted,
        when ``max_shadow_tasks`` are in flight)."""
        for arm in live.plan.shadows:
            if len(self._shadows) >= self.max_shadow_tasks:
                self.metrics.shadow(live.plan.deployment, arm.label, "skipped")
                continue
            batcher = live.batchers[arm.predictor]
            task = asyncio.create_task(
                self._score_shadow(live.plan.deployment, arm, batcher, frame, request_id, time_ms)
            )
            self._shadows.add(task)
            task.add_done_callback(self._shadows.discard)

    async def _score_shadow(
        self,
        deployment: str,
        arm: Arm,
        batcher: MicroBatcher,
        frame: Any,
        request_id: str,
        time_ms: int,
    ) -> None:
        started = time.perf_counter()
        try:
            outputs, error = await batcher.predict(frame), None
        except BatcherClosed:  # retired by a plan swap after its request read the old plan
            self.metrics.shadow(deployment, arm.label, "skipped")
            return
        except Exception as exc:  # a shadow never fails anything but its own log row
            outputs, error = None, f"{type(exc).__name__}: {exc}"
        self.metrics.shadow(deployment, arm.label, "scored" if error is None else "failed")
        if self.prediction_log is not None:
            seconds = time.perf_counter() - started
            self._log(arm, "shadow", request_id, time_ms, frame, outputs, seconds, error)

    # -- plan changes and shutdown -----------------------------------------------------------

    def swap(self, plan: ServingPlan) -> None:
        """Serve ``plan`` from now on: models it shares with the current plan keep their
        batchers; the others' batchers finish what they queued, then stop."""
        old = self.live
        self.live = self._live(plan, old.batchers)
        kept = set(self.live.batchers.values())
        for batcher in old.batchers.values():
            if batcher not in kept:
                task = asyncio.create_task(self._retire(batcher))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        arms = ", ".join(f"{arm.label} {arm.weight:g}%" for arm in plan.primaries)
        log.info("keel serve: %s now serves %s (revision %d)", plan.deployment, arms, plan.revision)

    async def _retire(self, batcher: MicroBatcher) -> None:
        if self._shadows:  # shadows started before the swap may still queue on it
            await asyncio.gather(*list(self._shadows), return_exceptions=True)
        await batcher.close()

    async def follow(self, interval: float) -> None:
        """Ask the source for a new plan every ``interval`` seconds, forever; a failed look
        logs a warning and the current plan keeps serving."""
        while True:
            await asyncio.sleep(interval)
            current = self.live.plan
            try:
                plan = await asyncio.to_thread(self.source.poll, current)
            except Exception as exc:
                log.warning(
                    "keel serve: cannot refresh %s (%s); still serving revision %d",
                    current.deployment,
                    exc,
                    current.revision,
                )
                continue
            if plan is not None and self.live.plan is current:
                self.swap(plan)

    async def drain(self) -> None:
        """Let shadows in flight and every queued request finish, then close the prediction
        log (which writes what it holds)."""
        self.draining = True
        while pending := [task for task in (*self._shadows, *self._retiring) if not task.done()]:
            await asyncio.gather(*pending, return_exceptions=True)
        for batcher in set(self.live.batchers.values()):
            await batcher.close()
        if self.prediction_log is not None:
            self.note_log_stats()
            await asyncio.to_thread(self.prediction_log.close)

    @asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        """Follow the source while serving; drain at shutdown."""
        tasks = []
        interval = self.source.interval
        if interval:
            tasks.append(asyncio.create_task(self.follow(interval)))
        if self.prediction_log is not None and self.metrics.multiprocess_dir:
            tasks.append(asyncio.create_task(self._note_log_stats_every(1.0)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.drain()
            self.metrics.process_exited()
            close = getattr(self.source, "close", None)  # a source holding connections
            if callable(close):
                close()

    def note_log_stats(self) -> None:
        """Copy the prediction log's buffered and dropped counts into the metrics."""
        if self.prediction_log is None:
            return
        stats = self.prediction_log.stats()
        self.metrics.prediction_log(
            self.live.plan.deployment,
            buffered=int(stats["buffered"] or 0),
            dropped=int(stats["dropped"] or 0),
        )

    async def _note_log_stats_every(self, seconds: float) -> None:
        while True:
            self.note_log_stats()
            await asyncio.sleep(seconds)

    def _live(self, plan: ServingPlan, batchers: dict[Predictor, MicroBatcher]) -> _Live:
        mine: dict[Predictor, MicroBatcher] = {}
        for arm in plan.arms:
            if arm.predictor not in mine:
                mine[arm.predictor] = batchers.get(arm.predictor) or self._batcher(plan, arm)
        return _Live(plan, mine, _metadata(plan, self.max_batch_rows, self.max_wait_ms))

    def _batcher(self, plan: ServingPlan, arm: Arm) -> MicroBatcher:
        deployment, label, metrics = plan.deployment, arm.label, self.metrics

        def on_batch(requests: int, rows: int) -> None:
            metrics.batch(deployment, label, requests, rows)

        return MicroBatcher(
            arm.predictor,
            max_batch_rows=self.max_batch_rows,
            max_wait_ms=self.max_wait_ms,
            on_batch=on_batch,
            name=label,
        )


def _valid_request_id(request_id: str) -> bool:
    return len(request_id) <= _MAX_REQUEST_ID and request_id.isprintable()


def _as_keel_error(exc: Exception) -> KeelError:
    if isinstance(exc, KeelError):
        return exc
    if isinstance(exc, (ValueError, TypeError)):  # the model refused what the signature allowed
        return InvalidInput(f"the model refused the input: {exc}")
    return KeelError(f"the model failed: {type(exc).__name__}: {exc}")


def _encode(request_id: str, predictions: Any, accept: str) -> tuple[bytes, str]:
    """The answer's body; an answer that cannot be written is the model's fault, not the
    caller's (a 500 naming it, never a 422)."""
    try:
        if accept == CSV:
            return predictions_csv(predictions), CSV
        if accept in (ARROW_STREAM, ARROW_FILE):
            return predictions_arrow(predictions, file_format=accept == ARROW_FILE), accept
        body = {"request_id": request_id, "predictions": predictions_json(predictions)}
        return dumps(body), JSON
    except KeelError:
        raise
    except Exception as exc:
        raise KeelError(
            f"the model's answer cannot be written as {accept}: {type(exc).__name__}: {exc}"
        ) from exc


def _headers(request_id: str, arm: Arm) -> dict[str, str]:
    return {"X-Request-Id": request_id, "X-Keel-Model": arm.label}


def _metadata(plan: ServingPlan, max_batch_rows: int, max_wait_ms: float) -> dict[str, Any]:
    """``/metadata``: the plan, each arm, and (for compatibility with one-model clients) the
    first primary's fields at the top level."""
    arms = [_arm_metadata(arm) for arm in plan.arms]
    primary = next(item for item in arms if not item["shadow"])
    return {
        **{key: value for key, value in primary.items() if key not in ("weight", "shadow")},
        "deployment": plan.deployment,
        "revision": plan.revision,
        "details": dict(plan.details),
        "batching": {"max_batch_rows": max_batch_rows, "max_wait_ms": max_wait_ms},
        "arms": arms,
    }


def _arm_metadata(arm: Arm) -> dict[str, Any]:
    manifest = arm.predictor.manifest
    signature = manifest.signature
    version = arm.version
    return {
        "label": arm.label,
        "ref": arm.ref,
        "weight": arm.weight,
        "shadow": arm.shadow,
        "uri": arm.predictor.uri,
        "name": version.name if version is not None else None,
        "version": version.version if version is not None else None,
        "aliases": list(version.aliases) if version is not None else [],
        "flavor": manifest.flavor,
        "model_class": manifest.model_class,
        "digest": arm.predictor.digest,
        "run_id": manifest.run_id,
        "signature": signature.model_dump(mode="json") if signature is not None else None,
    }
