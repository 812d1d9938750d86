"""HTTP to a keel server: one keep-alive connection pool, retries with backoff, typed errors.

A request that fails to connect, loses its connection or gets a 5xx is retried with exponential
backoff and full jitter, a bounded number of times; a 4xx is never retried. An error answer
(``{"error": code, "message": ...}``) becomes the :class:`keel.errors.KeelError` subclass its
code names, so a caller catches the same errors over HTTP as over a local store.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx

from keel.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    InvalidQuery,
    KeelError,
    MissingExtra,
    NotFound,
    PermissionDenied,
    SchemaMismatch,
    StorageError,
    Unauthenticated,
)
from keel.settings import Settings

__all__ = ["API_PREFIX", "HttpApi", "backoff_delay", "error_from", "is_unreachable", "token_of"]

API_PREFIX = "/api/v1"
_ERRORS: dict[str, type[KeelError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        InvalidInput,
        InvalidQuery,
        SchemaMismatch,
        Conflict,
        PermissionDenied,
        StorageError,
        MissingExtra,
        Unauthenticated,
    )
}
#: Context key marking a StorageError raised because the server could not be reached.
UNREACHABLE = "unreachable"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keel")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "dev"


def token_of(settings: Settings) -> str | None:
    """The API token to send (``KEEL_TRACKING_TOKEN``), or None."""
    token = settings.tracking_token
    return token.get_secret_value() if token is not None else None


def backoff_delay(attempt: int, *, base: float = 0.1, cap: float = 5.0) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): full jitter over ``base * 2**n``."""
    return random.uniform(0, min(cap, base * 2**attempt))


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means "try again later" (no connection, or a server error)."""
    return isinstance(exc, StorageError) and bool(exc.context.get(UNREACHABLE))


def error_from(response: httpx.Response) -> KeelError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "message" not in body:
        text = response.text[:500]
        cls: type[KeelError] = StorageError if response.status_code >= 500 else InvalidInput
        return cls(f"the keel server answered {response.status_code}: {text}")
    context = {k: v for k, v in body.items() if k not in ("error", "message")}
    cls = _ERRORS.get(str(body.get("error")), KeelError)
    error = cls.__new__(cls)
    KeelError.__init__(error, str(body["message"]), **context)
    if isinstance(error, InvalidQuery):
        error.reason = str(body["message"]).split("\n", 1)[0]
    return error


class HttpApi:
    """Requests to one keel server's ``/api/v1`` over a keep-alive ``httpx.Client``."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        attempts: int = 4,
    ) -> None:
        """``token``: sent as ``Authorization: Bearer`` to a server started with ``--auth``."""
        self.base_url = base_url.rstrip("/")
        self.attempts = attempts
        headers = {"User-Agent": f"keel/{_version()}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url + API_PREFIX,
            timeout=httpx.Timeout(timeout, connect=5.0),
            headers=headers,
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | Callable[[], Iterable[bytes]] | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        attempts: int | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """Send a request, retrying connection errors and 5xx answers; return a 2xx response.

        Args:
            content: bytes, or a function giving a fresh iterable of chunks for each attempt.
            idempotent: False for a request that must not be repeated once sent (creating a
                run): it is retried only when the connection was never made.

        Raises:
            KeelError: the error the server answered with (a 4xx at once, a 5xx after retries).
            StorageError: the server could not be reached (``context["unreachable"]``).
        """
        tries = self.attempts if attempts is None else attempts
        last: BaseException | None = None
        for attempt in range(tries):
            if attempt:
                time.sleep(backoff_delay(attempt - 1))
            body = content() if callable(content) else content
            try:
                response = self._http.request(
                    method, path, json=json, content=body, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                last = exc
                if not idempotent and not isinstance(exc, httpx.ConnectError):
                    break
                continue
            if response.status_code < 400:
                return response
            if response.status_code < 500:
                raise error_from(response)
            last = error_from(response)
            if not idempotent:
                break
        if isinstance(last, KeelError):
            last.context[UNREACHABLE] = True
            raise last
        raise StorageError(
            f"cannot reach the keel server at {self.base_url} ({type(last).__name__}: {last})",
            tracking_uri=self.base_url,
            **{UNREACHABLE: True},
        ) from last

    def get_json(self, url: str, /, **params: Any) -> Any:
        return self.request("GET", url, params=params or None).json()

    def stream(self, path: str) -> Any:
        """A streaming GET (``with api.stream(path) as response``), not retried."""
        return self._http.stream("GET", path)
