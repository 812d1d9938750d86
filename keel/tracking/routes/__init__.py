"""The native tracking REST API under ``/api/v1``: experiments, runs, metrics, search, artifacts.

Each route calls the request's :class:`keel.tracking.service.TrackingService` (the app's
:class:`keel.tracking.api.Client`, or the caller's checked view of it with ``--auth``) and
speaks the wire models of :mod:`keel.tracking.models`, from which FastAPI derives validation
and the OpenAPI document (``/api/v1/openapi.json``). Errors are :class:`keel.errors.KeelError` s
that the app turns into ``{"error": code, "message": ...}`` JSON. See ``docs/server.md``.
"""

from fastapi import APIRouter

from keel.tracking.models import ErrorBody
from keel.tracking.routes.artifacts import router as artifacts_router
from keel.tracking.routes.experiments import router as experiments_router
from keel.tracking.routes.metrics import router as metrics_router
from keel.tracking.routes.runs import router as runs_router

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1",
    responses={
        400: {"model": ErrorBody, "description": "invalid input (error: invalid_input, ...)"},
        404: {"model": ErrorBody, "description": "no such experiment, run or artifact"},
    },
)
for _sub in (experiments_router, runs_router, metrics_router, artifacts_router):
    router.include_router(_sub)
