"""Authentication on every request of a server started with ``--auth``, and the admin API.

:func:`authenticate` runs before every route. It reads ``Authorization: Bearer <token>`` (Keel's
clients, ``MLFLOW_TRACKING_TOKEN``) or HTTP basic with the user name and the token as password
(``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``), and puts the caller's checked
view of the tracking service on ``request.state.tracking``. ``/health`` and ``/ready`` need no
token.

The routes below manage users and tokens (admins), grants (an experiment's owners and admins)
and read the audit log (admins). See ``docs/server.md#authentication``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from keel.auth.guard import GuardedClient
from keel.auth.models import (
    USER_NAME_PATTERN,
    AuditPage,
    Grant,
    GrantList,
    GrantSet,
    NewToken,
    Permission,
    Principal,
    Role,
    TokenCreate,
    TokenList,
    User,
    UserCreate,
    UserList,
)
from keel.auth.store import AuthStore
from keel.errors import NotFound, PermissionDenied, Unauthenticated
from keel.tracking.models import INT32_MAX, ErrorBody
from keel.tracking.routes.common import NO_NUL
from keel.tracking.service import TrackingService

__all__ = ["PUBLIC_PATHS", "authenticate", "router"]

PUBLIC_PATHS = frozenset({"/health", "/ready"})
_HOW = (
    "send Authorization: Bearer <token> (KEEL_TRACKING_TOKEN for Keel, MLFLOW_TRACKING_TOKEN "
    "for MLflow clients) or HTTP basic with your user name and the token as password; "
    "an admin makes tokens with: keel tokens create --user NAME --role editor"
)


def _credentials(header: str) -> tuple[str, str | None]:
    """``(token, user or None)`` from an Authorization header."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value, None
    if scheme.lower() == "basic" and value:
        try:
            user, sep, token = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, ValueError):  # ValueError: not ASCII; UnicodeDecodeError too
            raise Unauthenticated("the HTTP basic credentials are not valid base64") from None
        if sep and user and token:
            return token, user
        raise Unauthenticated("HTTP basic needs user:token (the token as the password)")
    raise Unauthenticated(f"unsupported Authorization scheme {scheme!r}; {_HOW}")


def authenticate(request: Request) -> None:
    """The FastAPI dependency every route of an ``--auth`` server runs first."""
    if request.url.path in PUBLIC_PATHS:
        return
    audit: dict[str, Any] = {"user": None, "token_id": None, "targets": []}
    request.state.audit = audit
    header = request.headers.get("authorization")
    if not header:
        raise Unauthenticated(f"this server requires a token: {_HOW}")
    token, user = _credentials(header)
    store: AuthStore = request.app.state.auth_store
    principal = store.authenticate(token, user=user)
    audit["user"], audit["token_id"] = principal.user, principal.token_id
    request.state.principal = principal
    tracking: TrackingService = GuardedClient(  # mypy: the guard has every route's method
        request.app.state.client, store, principal, audit["targets"]
    )
    request.state.tracking = tracking


def _principal(request: Request) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # the server runs without --auth: these routes do not apply
        raise NotFound("this server runs without authentication (start it with --auth)")
    return principal


def _admin(request: Request) -> Principal:
    principal = _principal(request)
    if not principal.is_admin:
        raise PermissionDenied(
            f"this needs an admin token; token {principal.token_id} has role "
            f"{principal.role.label}",
            role=principal.role.label,
            needs="admin",
        )
    return principal


def _store(request: Request) -> AuthStore:
    store: AuthStore = request.app.state.auth_store
    return store


def _note(request: Request, *targets: str) -> None:
    request.state.audit["targets"].extend(targets)


CallerDep = Annotated[Principal, Depends(_principal)]
AdminDep = Annotated[Principal, Depends(_admin)]
StoreDep = Annotated[AuthStore, Depends(_store)]
UserPath = Annotated[str, Path(min_length=1, max_length=64, pattern=USER_NAME_PATTERN)]
ExperimentIdPath = Annotated[int, Path(ge=0, le=INT32_MAX)]

router = APIRouter(
    prefix="/api/v1",
    tags=["auth"],
    responses={
        401: {"model": ErrorBody, "description": "no valid token (error: unauthenticated)"},
        403: {"model": ErrorBody, "description": "the token may not (error: permission_denied)"},
    },
)


@router.get("/whoami")
def whoami(caller: CallerDep) -> dict[str, str]:
    """The user and role the request's token stands for."""
    return {"user": caller.user, "role": caller.role.label, "token_id": caller.token_id}


# -- users and tokens (admins) ----------------------------------------------------------------
@router.get("/users")
def list_users(_admin: AdminDep, store: StoreDep) -> UserList:
    return UserList(users=store.list_users())


@router.post("/users", status_code=201)
def create_user(body: UserCreate, request: Request, _admin: AdminDep, store: StoreDep) -> User:
    _note(request, f"user/{body.name}")
    return store.create_user(body.name)


@router.post("/users/{name}/disable")
def disable_user(name: UserPath, request: Request, _admin: AdminDep, store: StoreDep) -> User:
    """Disable a user: every token of theirs stops working at once."""
    _note(request, f"user/{name}")
    return store.set_user_disabled(name, True)


@router.post("/users/{name}/enable")
def enable_user(name: UserPath, request: Request, _admin: AdminDep, store: StoreDep) -> User:
    _note(request, f"user/{name}")
    return store.set_user_disabled(name, False)


@router.get("/tokens")
def list_tokens(
    caller: CallerDep,
    store: StoreDep,
    user: Annotated[str | None, Query(max_length=64, pattern=USER_NAME_PATTERN)] = None,
) -> TokenList:
    """Tokens (never their secrets): an admin's of anyone, anyone else's of their own."""
    if not caller.is_admin:
        if user not in (None, caller.user):
            raise PermissionDenied("only admins list other users' tokens", needs="admin")
        user = caller.user
    return TokenList(tokens=store.list_tokens(user=user))


@router.post("/tokens", status_code=201)
def create_token(
    body: TokenCreate, request: Request, _admin: AdminDep, store: StoreDep
) -> NewToken:
    """Make a token; the answer is the only place its secret ever appears."""
    token = store.create_token(
        body.user,
        role=Role.parse(body.role),
        label=body.label,
        expires_in_days=body.expires_in_days,
    )
    _note(request, f"user/{body.user}", f"token/{token.token_id}")
    return token


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response)
def revoke_token(
    token_id: Annotated[str, Path(pattern="^[0-9a-f]{12}$")],
    request: Request,
    caller: CallerDep,
    store: StoreDep,
) -> None:
    """Revoke a token (admins any, others their own)."""
    _note(request, f"token/{token_id}")
    if not caller.is_admin and token_id not in {
        t.token_id for t in store.list_tokens(user=caller.user)
    }:
        raise NotFound(f"no token {token_id!r}", token_id=token_id)
    store.revoke_token(token_id)


# -- grants (owners and admins) ---------------------------------------------------------------
def _owner(request: Request, experiment_id: int, *, write: bool = True) -> Principal:
    caller = _principal(request)
    tracking: GuardedClient = request.state.tracking
    tracking.check_experiment(experiment_id, Permission.OWNER, write=write)
    return caller


@router.get("/experiments/{experiment_id}/grants")
def list_grants(experiment_id: ExperimentIdPath, request: Request, store: StoreDep) -> GrantList:
    """Who may do what on an experiment (its owners and admins may look)."""
    _owner(request, experiment_id, write=False)
    return GrantList(grants=store.list_grants(experiment_id))


@router.put("/experiments/{experiment_id}/grants/{user}")
def set_grant(
    experiment_id: ExperimentIdPath,
    user: UserPath,
    body: GrantSet,
    request: Request,
    store: StoreDep,
) -> Grant:
    """Give ``user`` read or write on an experiment (owner too, for admins)."""
    caller = _owner(request, experiment_id)
    _note(request, f"user/{user}")
    permission = Permission.parse(body.permission)
    if permission is Permission.OWNER and not caller.is_admin:
        raise PermissionDenied("only admins make other users owners", needs="admin")
    _protect_owner(store, experiment_id, user, caller)
    return store.grant(experiment_id, user, permission, granted_by=caller.user)


@router.delete(
    "/experiments/{experiment_id}/grants/{user}", status_code=204, response_class=Response
)
def revoke_grant(
    experiment_id: ExperimentIdPath, user: UserPath, request: Request, store: StoreDep
) -> None:
    """Take a user's grant away: the experiment becomes invisible to them."""
    caller = _owner(request, experiment_id)
    _note(request, f"user/{user}")
    _protect_owner(store, experiment_id, user, caller)
    store.revoke_grant(experiment_id, user)


def _protect_owner(store: AuthStore, experiment_id: int, user: str, caller: Principal) -> None:
    """An owner may change other users' read and write grants, not another owner's."""
    if caller.is_admin or user == caller.user:
        return
    current = {g.user: g.permission for g in store.list_grants(experiment_id)}
    if current.get(user) == Permission.OWNER.label:
        raise PermissionDenied(
            f"{user!r} is an owner of experiment {experiment_id}; only admins change an "
            "owner's grant",
            needs="admin",
        )


# -- the audit log (admins) -------------------------------------------------------------------
@router.get("/audit")
def audit(
    _admin: AdminDep,
    store: StoreDep,
    user: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    target: Annotated[
        str | None,
        Query(max_length=300, pattern=NO_NUL, description='"experiment/3", "run/<id>", "user/bob"'),
    ] = None,
    since: Annotated[int | None, Query(ge=0, le=2**62, description="ms since the epoch")] = None,
    until: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    before_id: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> AuditPage:
    """Write requests, newest first: who, when, what, and the answer's status."""
    entries, next_before = store.audit(
        user=user,
        action=action,
        target=target,
        since=since,
        until=until,
        before_id=before_id,
        limit=limit,
    )
    return AuditPage(entries=entries, next_before_id=next_before)
