"""What the registry's routes share (native and MLflow-compatible): the server's registry for
one request, who the request acts as, and who may write.

The server opens one :class:`~keel.models.api.Registry` on first use (its database engine,
tracking client and artifact store) and closes it when the app shuts down. Each request gets a
view of it that records changes as the request's actor; the view shares the connections, so a
request costs no engine or schema check.

The rule on a server started with ``--auth``: the registry is not per experiment, so it is
checked by token role alone. Any valid token reads every registered model, version, alias,
history, diff, lineage, policy, requests and cards; changing anything (registering, aliases,
tags, descriptions, cards, approving and rejecting requests) needs an editor or admin token, and
the audit trail's actor is the token's user. The view also carries the token's role, which
governance checks: setting a policy needs an admin, and a policy's ``admins`` approvers entry
means any admin token (:mod:`keel.models.routes_governance`). Registering from a run
also needs read access to that run's experiment (a run the caller cannot see is a 404). A
registered version's manifest (the params, metrics and inputs recorded when it was logged) is
readable by every reader of the registry; its run is not: lineage and diff read runs through
the caller's tracking view, so a run the caller cannot read is a bare ``missing`` node there
(and a ``runs:/`` lineage of it a 404).
Without ``--auth`` the actor is what the caller claims in the ``Keel-User`` header (``unknown``
when it sends none), as a run's user is, with the local default role (admin).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote

from fastapi import Depends, FastAPI, Header, Request

from keel.auth.models import Principal, Role
from keel.errors import PermissionDenied
from keel.models.api import Registry
from keel.models.wire import ACTOR_HEADER
from keel.settings import Settings
from keel.tracking.service import TrackingService, service_of

__all__ = [
    "ReaderDep",
    "WriterDep",
    "close_opened",
    "close_registry",
    "lifespan",
    "note",
    "opened_once",
    "reader",
    "shared_registry",
    "tracking_of",
    "writer",
]

UNKNOWN_ACTOR = "unknown"
_OPENING = threading.Lock()
T = TypeVar("T")


def opened_once(app: FastAPI, name: str, open_: Callable[[Settings], T]) -> T:
    """``app.state.<name>``, made by ``open_`` on first use, once however many requests race
    to it, on the server's own database (a ``KEEL_TRACKING_URI`` in the server's own
    environment does not apply to it)."""
    found: T | None = getattr(app.state, name, None)
    if found is not None:
        return found
    with _OPENING:
        found = getattr(app.state, name, None)
        if found is None:
            settings = app.state.settings
            if settings.tracking_uri:
                settings = settings.replace(tracking_uri=None)
            found = open_(settings)
            setattr(app.state, name, found)
    return found


def close_opened(app: FastAPI, name: str) -> None:
    """Close ``app.state.<name>`` if :func:`opened_once` opened it."""
    found = getattr(app.state, name, None)
    if found is not None:
        setattr(app.state, name, None)
        found.close()


def shared_registry(app: FastAPI) -> Registry:
    """The app's one registry, opened on first use (see :func:`opened_once`)."""
    return opened_once(app, "model_registry", _open_registry)


def _open_registry(settings: Settings) -> Registry:
    registry = Registry(settings, actor=UNKNOWN_ACTOR)
    # opened here, once: every request's view shares them (see _view)
    registry.client  # noqa: B018
    registry.artifacts  # noqa: B018
    return registry


def close_registry(app: FastAPI) -> None:
    """Close the app's registry if a request opened it."""
    close_opened(app, "model_registry")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The registry router's lifespan: closes the registry when the server stops."""
    yield
    close_registry(app)


def _view(request: Request, principal: Principal | None, claimed: str | None = None) -> Registry:
    """The shared registry acting as the caller: a shallow copy sharing its engine, store,
    tracking client and artifact store (never closed itself). With ``--auth`` it acts as the
    token's user with the token's role (governance checks it); without, as the claimed user
    with the local default role."""
    view = copy.copy(shared_registry(request.app))
    if principal is None:
        view.actor = unquote(claimed) if claimed else UNKNOWN_ACTOR
    else:
        view.actor = principal.user
        view.role = principal.role
    return view


def _principal(request: Request) -> Principal | None:
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal


ClaimedUser = Annotated[
    str | None,
    Header(
        alias=ACTOR_HEADER,
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f]*$",
        description="who makes the change, percent-encoded, on a server without --auth "
        "(ignored with --auth)",
    ),
]


def reader(request: Request) -> Registry:
    """A FastAPI dependency: the registry to read from (any authenticated caller may)."""
    return _view(request, _principal(request))


def writer(request: Request, claimed: ClaimedUser = None) -> Registry:
    """A FastAPI dependency: the registry acting as the caller.

    Raises:
        PermissionDenied: with ``--auth``, the token's role is viewer.
    """
    principal = _principal(request)
    if principal is not None and principal.role < Role.EDITOR:
        raise PermissionDenied(
            f"token {principal.token_id} has role viewer, which cannot change the model "
            "registry; use an editor token (keel tokens create --role editor)",
            role=principal.role.label,
            needs="editor",
        )
    return _view(request, principal, claimed)


def tracking_of(request: Request) -> TrackingService:
    """The caller's tracking service (its checked view with ``--auth``)."""
    return service_of(request)


def note(request: Request, *targets: str) -> None:
    """Name what the request touched in the server's audit log (``--auth``)."""
    audit: dict[str, Any] | None = getattr(request.state, "audit", None)
    if audit is not None:
        audit["targets"].extend(targets)


ReaderDep = Annotated[Registry, Depends(reader)]
WriterDep = Annotated[Registry, Depends(writer)]
