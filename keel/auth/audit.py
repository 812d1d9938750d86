"""The audit log's writer: an ASGI middleware around a server started with ``--auth``.

Every request that may change something (any method but GET, HEAD and OPTIONS, except the
read-only ``.../search`` endpoints) is recorded: when, who (the token's user, or none when the
credentials were refused), the method and path, the operation (the route's name), the status
answered, and the experiments and runs the request touched. The row is written before the
response starts, so a caller that saw its write succeed can find it in the log.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from keel.auth.store import AuditRecord, AuthStore
from keel.tracking.store_base import now_ms

__all__ = ["AuditMiddleware"]

log = logging.getLogger(__name__)
READS = frozenset({"GET", "HEAD", "OPTIONS"})
Scope = dict[str, Any]


def is_write(method: str, path: str) -> bool:
    return method not in READS and not path.endswith("/search")


class AuditMiddleware:
    """Record each write request in ``audit_log`` (see the module docstring)."""

    def __init__(self, app: Any, *, store: AuthStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not is_write(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})

        async def send_audited(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                await self._record(scope, state, int(message["status"]))
            await send(message)

        await self.app(scope, receive, send_audited)

    async def _record(self, scope: Scope, state: dict[str, Any], status: int) -> None:
        audit: dict[str, Any] = state.get("audit") or {}
        endpoint = scope.get("endpoint")
        client = scope.get("client")
        entry: AuditRecord = {
            "at": now_ms(),
            "user_name": audit.get("user"),
            "token_id": audit.get("token_id"),
            "method": scope["method"],
            "path": scope["path"],
            "action": getattr(endpoint, "__name__", "unrouted")[:64],
            "status": status,
            "targets": list(dict.fromkeys(audit.get("targets", ())))[:100],
            "client": (client[0] if client else "")[:64],
        }
        try:
            await anyio.to_thread.run_sync(self.store.record, entry)
        except Exception:  # the write itself is done; say loudly that its record is missing
            log.exception("keel server: could not write the audit log entry %s", entry)
