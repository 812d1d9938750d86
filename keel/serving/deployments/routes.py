"""Deployments' REST API under ``/api/v1/deployments``.

Each route calls one :class:`keel.serving.deployments.api.Deployments` method and answers with
its entity, which :class:`~keel.serving.deployments.remote.RemoteDeployments` reads back. A
change carries what the caller asked (weights, the arm to promote, the revision to roll back
to), and the server builds it on its current revision. References are checked against the
server's own registry.

Who may do what follows the model registry's rule (:mod:`keel.models.routing`): on a server
started with ``--auth`` any valid token reads; changing a deployment needs an editor or admin
token, and the revision's actor is the token's user. ``promote`` with ``move_alias`` moves the
alias as that user, under the model's governance (a protected alias makes an approval request,
returned in the answer). Without ``--auth`` the actor is the ``Keel-User`` header's claim.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Request

from keel.auth.models import Principal, Role
from keel.errors import PermissionDenied
from keel.models import routing
from keel.models.wire import ACTOR_HEADER
from keel.serving.deployments.api import Deployments
from keel.serving.deployments.models import (
    CreateRequest,
    Deployment,
    DeploymentDeleted,
    DeploymentList,
    PromoteRequest,
    Promotion,
    Revision,
    RevisionList,
    RollbackRequest,
    ShadowChange,
    TrafficSet,
)
from keel.tracking.models import ErrorBody

__all__ = ["router"]


def _shared(app: FastAPI) -> Deployments:
    """The app's one :class:`Deployments`, opened on first use on the server's own database."""
    return routing.opened_once(
        app, "deployments", lambda settings: Deployments(settings, actor=routing.UNKNOWN_ACTOR)
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Closes the deployments' connections when the server stops."""
    yield
    routing.close_opened(app, "deployments")


ClaimedUser = Annotated[
    str | None,
    Header(
        alias=ACTOR_HEADER,
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f]*$",
        description="who makes the change, percent-encoded, on a server without --auth",
    ),
]


def reader(request: Request) -> Deployments:
    """A FastAPI dependency: deployments to read (any authenticated caller may)."""
    registry = routing.reader(request)
    return _shared(request.app).acting_as(registry.actor, registry=registry)


def writer(request: Request, claimed: ClaimedUser = None) -> Deployments:
    """A FastAPI dependency: deployments changed as the caller.

    Raises:
        PermissionDenied: with ``--auth``, the token's role is viewer.
    """
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is not None and principal.role < Role.EDITOR:
        raise PermissionDenied(
            f"token {principal.token_id} has role viewer, which cannot change deployments; "
            "use an editor token (keel tokens create --role editor)",
            role=principal.role.label,
            needs="editor",
        )
    registry = routing.writer(request, claimed)
    return _shared(request.app).acting_as(registry.actor, registry=registry)


ReaderDep = Annotated[Deployments, Depends(reader)]
WriterDep = Annotated[Deployments, Depends(writer)]
NamePath = Annotated[str, Path(min_length=1, max_length=128, description="the deployment")]
RevisionPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="a revision number")]

router = APIRouter(
    prefix="/api/v1",
    tags=["deployments"],
    lifespan=lifespan,
    responses={
        400: {"model": ErrorBody, "description": "invalid input (error: invalid_input)"},
        403: {"model": ErrorBody, "description": "--auth: a viewer's write (permission_denied)"},
        404: {"model": ErrorBody, "description": "no such deployment, revision or version"},
    },
)


@router.get("/deployments")
def list_deployments(deployments: ReaderDep) -> DeploymentList:
    """Every deployment at its current revision, by name."""
    return DeploymentList(deployments=deployments.list_deployments())


@router.post("/deployments", status_code=201)
def create(body: CreateRequest, request: Request, deployments: WriterDep) -> Deployment:
    """Create a deployment (revision 1); every reference must resolve in the registry."""
    routing.note(request, f"deployment/{body.name}")
    return deployments.create(body.name, body.config, note=body.note)


@router.get("/deployments/{name}")
def get(name: NamePath, deployments: ReaderDep) -> Deployment:
    """A deployment at its current revision."""
    return deployments.get(name)


@router.delete("/deployments/{name}")
def delete(name: NamePath, request: Request, deployments: WriterDep) -> DeploymentDeleted:
    """Delete a deployment and its history; answers the revision it was at."""
    routing.note(request, f"deployment/{name}")
    return DeploymentDeleted(name=name, revision=deployments.delete(name))


@router.get("/deployments/{name}/revisions")
def history(name: NamePath, deployments: ReaderDep) -> RevisionList:
    """Every revision, oldest first: the whole configuration, who, when, why."""
    return RevisionList(revisions=deployments.history(name))


@router.get("/deployments/{name}/revisions/{number}")
def get_revision(name: NamePath, number: RevisionPath, deployments: ReaderDep) -> Revision:
    """One revision."""
    return deployments.get_revision(name, number)


@router.put("/deployments/{name}/traffic")
def set_traffic(
    name: NamePath, body: TrafficSet, request: Request, deployments: WriterDep
) -> Deployment:
    """Give the arms named their percent of traffic; the other primaries share the rest."""
    routing.note(request, f"deployment/{name}")
    return deployments.set_traffic(name, body.weights, note=body.note)


@router.post("/deployments/{name}/shadows")
def add_shadow(
    name: NamePath, body: ShadowChange, request: Request, deployments: WriterDep
) -> Deployment:
    """Send a copy of every request to another version too (logged, never returned)."""
    routing.note(request, f"deployment/{name}")
    return deployments.add_shadow(name, body.ref, note=body.note)


@router.post("/deployments/{name}/shadows/remove")
def remove_shadow(
    name: NamePath, body: ShadowChange, request: Request, deployments: WriterDep
) -> Deployment:
    """Stop shadowing a version."""
    routing.note(request, f"deployment/{name}")
    return deployments.remove_shadow(name, body.ref, note=body.note)


@router.post("/deployments/{name}/promote")
def promote(
    name: NamePath, body: PromoteRequest, request: Request, deployments: WriterDep
) -> Promotion:
    """The canary (or ``arm``) takes 100%; with ``move_alias`` the main alias moves to it
    first (or, protected, an approval request is made and returned)."""
    routing.note(request, f"deployment/{name}")
    return deployments.promote(name, body.arm, move_alias=body.move_alias, note=body.note)


@router.post("/deployments/{name}/rollback")
def rollback(
    name: NamePath, body: RollbackRequest, request: Request, deployments: WriterDep
) -> Deployment:
    """A new revision with the previous revision's configuration (or revision ``to``'s)."""
    routing.note(request, f"deployment/{name}")
    return deployments.rollback(name, to=body.to, note=body.note)
