"""The audit log's writer: an ASGI middleware around a server started with ``--auth``.

Every request that may change something is recorded: any method but GET, HEAD and OPTIONS,
except the read-only search endpoints (told apart by the route that served them, not the path),
and any request at all during which the caller's :class:`~keel.auth.guard.GuardedClient` let a
write through (MLflow's ``experiments/get`` of experiment "0" creates ``Default``). A row holds
when, who (the token's user, or none when the credentials were refused), the method and path,
the operation (the route's name), the status answered, and the experiments and runs the request
touched. It is written before the response starts, so a caller that saw its write succeed can
find it in the log; a request that ends in an unexpected error is recorded with status 500.
Requests to no route at all are not recorded (they change nothing).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from keel.auth.store import AuditRecord, AuthStore
from keel.tracking.store_base import now_ms

__all__ = ["READ_ONLY_POSTS", "AuditMiddleware"]

log = logging.getLogger(__name__)
READS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY_POSTS = frozenset({"search_runs", "search_experiments", "search_logged_models"})
"""Routes (by endpoint name, native and MLflow alike) that take a POST body but only read."""
Scope = dict[str, Any]


def _text(value: object, limit: int) -> str:
    return str(value).replace("\x00", "")[:limit]


class AuditMiddleware:
    """Record each write request in ``audit_log`` (see the module docstring)."""

    def __init__(self, app: Any, *, store: AuthStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        started = False

        async def send_audited(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                await self._record(scope, state, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_audited)
        except Exception:
            if not started:  # the error handler answers outside this middleware
                await self._record(scope, state, 500)
            raise

    def _is_write(self, scope: Scope, state: dict[str, Any]) -> bool:
        if getattr(state.get("tracking"), "wrote", False):  # the GuardedClient saw a write
            return True
        name = getattr(scope.get("endpoint"), "__name__", None)
        return scope["method"] not in READS and name is not None and name not in READ_ONLY_POSTS

    async def _record(self, scope: Scope, state: dict[str, Any], status: int) -> None:
        if not self._is_write(scope, state):
            return
        audit: dict[str, Any] = state.get("audit") or {}
        client = scope.get("client")
        entry: AuditRecord = {
            "at": now_ms(),
            "user_name": audit.get("user"),
            "token_id": audit.get("token_id"),
            "method": _text(scope["method"], 8),
            "path": _text(scope["path"], 2048),
            "action": _text(scope["endpoint"].__name__, 64),
            "status": status,
            "targets": [_text(t, 200) for t in dict.fromkeys(audit.get("targets", ()))][:100],
            "client": _text(client[0] if client else "", 64),
        }
        try:
            await anyio.to_thread.run_sync(self.store.record, entry)
        except Exception:  # the write itself is done; say loudly that its record is missing
            log.exception("keel server: could not write the audit log entry %s", entry)
