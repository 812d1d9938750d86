"""``create_app(settings) -> FastAPI``: the one place routers, error handling and health live.

Every :class:`keel.errors.KeelError` becomes a JSON body ``{"error": code, "message": ...,
**context}`` with the error's status code; a request that fails validation becomes a 400 with
``"error": "invalid_input"`` and the offending fields, never a 422 or a 500. The app holds one
:class:`keel.tracking.api.Client` on ``app.state.client``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from keel import __version__
from keel.errors import KeelError
from keel.settings import Settings
from keel.tracking.api import Client

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"
log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the server app over the store ``settings`` name (``Settings()`` by default).

    Example:
        >>> import uvicorn
        >>> uvicorn.run(create_app(Settings(home="/srv/keel")), port=5000)
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher = asyncio.create_task(_watch_lost_runs(app.state.client, settings))
        yield
        watcher.cancel()
        app.state.client.close()

    app = FastAPI(
        title="Keel",
        version=__version__,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Depends(_authenticate())] if settings.auth else None,
    )
    app.state.settings = settings
    app.state.client = Client(settings)  # applies migrations under the migration lock
    if settings.auth:
        _install_auth(app)
    _install_error_handlers(app)

    @app.get("/health", tags=["server"])
    def health() -> dict[str, str]:
        """The process is up (no dependency checked)."""
        return {"status": "ok", "version": __version__}

    @app.get("/ready", tags=["server"], responses={503: {"description": "database unreachable"}})
    def ready() -> JSONResponse:
        """The database answers; load balancers route traffic here only when it does."""
        try:
            with app.state.client.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            return JSONResponse(
                {"status": "unavailable", "error": "storage_error", "message": str(exc)},
                status_code=503,
            )
        return JSONResponse({"status": "ready"})

    for router in _routers():
        app.include_router(router)
    _answer_400_not_422(app)
    return app


def _answer_400_not_422(app: FastAPI) -> None:
    """Make the OpenAPI document say what the app does: invalid input is a 400, never a 422."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, routes=app.routes, description=app.description
        )
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None and "400" not in responses:
                    responses["400"] = {"description": "invalid input (error: invalid_input)"}
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _watch_lost_runs(client: Client, settings: Settings) -> None:
    """Mark runs LOST while the server runs, not only when a store opens.

    Remote callers send heartbeats; a run whose heartbeats stop for ``lost_run_timeout`` is
    lost. Checked every half timeout (at most every minute), off the event loop.
    """
    period = min(settings.lost_run_timeout / 2, 60.0)
    while True:
        await asyncio.sleep(period)
        try:
            await asyncio.to_thread(client.mark_lost_runs)
        except Exception:  # a database blip must not end the watcher
            log.warning("keel server: lost-run check failed", exc_info=True)


def _authenticate() -> Any:
    from keel.auth.routes import authenticate

    return authenticate


def _install_auth(app: FastAPI) -> None:
    """Tokens on every request, the admin routes and the audit log (``--auth``)."""
    from keel.auth.audit import AuditMiddleware
    from keel.auth.routes import router
    from keel.auth.store import AuthStore

    store = AuthStore(app.state.client.engine)
    app.state.auth_store = store
    app.include_router(router)
    app.add_middleware(AuditMiddleware, store=store)
    if not store.count_admin_tokens():
        log.warning(
            "keel server: authentication is on but no admin token exists; make one with: "
            "keel users create admin && keel tokens create --user admin --role admin"
        )


def _routers() -> list[Any]:
    """Every capability's routers, in mount order.

    The MLflow-compatible registry routes come before the tracking ones, whose last route
    answers every other ``/api/2.0/mlflow/`` path with ENDPOINT_NOT_FOUND.
    """
    from keel.models.mlflow_compat import router as models_mlflow_router
    from keel.models.routes import router as models_router
    from keel.serving.deployments.routes import router as deployments_router
    from keel.tracking.mlflow_compat import router as mlflow_router
    from keel.tracking.routes import router as tracking_router

    return [tracking_router, models_router, deployments_router, models_mlflow_router, mlflow_router]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KeelError)
    async def keel_error(_request: Request, exc: KeelError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="keel"'} if exc.status_code == 401 else None
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"location": list(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"location": [], "message": "invalid request"}
        where = ".".join(str(p) for p in first["location"])
        return JSONResponse(
            {
                "error": "invalid_input",
                "message": f"{where}: {first['message']}" if where else first["message"],
                "details": details,
            },
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            401: "unauthenticated",
            403: "permission_denied",
        }
        return JSONResponse(
            {"error": codes.get(exc.status_code, "http_error"), "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("keel server: unexpected error")
        return JSONResponse(
            {"error": "internal", "message": "an unexpected error occurred; see the server log"},
            status_code=500,
        )
