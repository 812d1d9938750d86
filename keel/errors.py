"""Every error Keel raises on purpose, as one tree of typed classes.

    KeelError                      (500) base class; catch this to catch everything Keel means
    ├── NotFound                   (404) an experiment, run, artifact ... does not exist
    ├── AlreadyExists              (409) a name that must be unique is taken
    ├── InvalidInput               (400) the caller sent something malformed
    │   ├── InvalidQuery           (400) a search filter or order_by does not parse
    │   └── SchemaMismatch         (400) data does not match the schema it claims
    ├── Conflict                   (409) the request contradicts stored state (a param re-logged)
    ├── Unauthenticated            (401) no valid credentials (a server with --auth)
    ├── PermissionDenied           (403) the caller may not do this
    ├── StorageError               (500) the database or the blob store failed or is corrupt
    └── MissingExtra               (500) an optional dependency is not installed

Each error carries an HTTP ``status_code`` and a ``context`` dict of the fields that explain it;
the server turns them into JSON and the CLI into one red line and a non-zero exit.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExists",
    "Conflict",
    "InvalidInput",
    "InvalidQuery",
    "KeelError",
    "MissingExtra",
    "NotFound",
    "PermissionDenied",
    "SchemaMismatch",
    "StorageError",
    "Unauthenticated",
]


class KeelError(Exception):
    """Base of every error Keel raises on purpose."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def to_dict(self) -> dict[str, Any]:
        """The JSON body the server answers with."""
        return {"error": self.code, "message": self.message, **self.context}


class NotFound(KeelError):
    status_code = 404
    code = "not_found"


class AlreadyExists(KeelError):
    status_code = 409
    code = "already_exists"


class InvalidInput(KeelError):
    status_code = 400
    code = "invalid_input"


class InvalidQuery(InvalidInput):
    """A filter string or order_by clause that does not parse or names an unknown field.

    ``str(error)`` shows the query with a caret under the offending position.
    """

    code = "invalid_query"

    def __init__(self, message: str, *, query: str, position: int) -> None:
        self.reason = message
        caret = " " * max(position, 0) + "^"
        super().__init__(f"{message}\n  {query}\n  {caret}", query=query, position=position)


class SchemaMismatch(InvalidInput):
    code = "schema_mismatch"


class Conflict(KeelError):
    status_code = 409
    code = "conflict"


class Unauthenticated(KeelError):
    """The request carries no credentials, or ones the server does not accept."""

    status_code = 401
    code = "unauthenticated"


class PermissionDenied(KeelError):
    status_code = 403
    code = "permission_denied"


class StorageError(KeelError):
    status_code = 500
    code = "storage_error"


class MissingExtra(KeelError):
    """An optional dependency is missing; the message names the exact pip command."""

    code = "missing_extra"

    def __init__(self, package: str, *, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install 'keel[{extra}]'",
            package=package,
            extra=extra,
        )
