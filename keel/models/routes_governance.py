"""Governance over HTTP under ``/api/v1/models/{name}``: the policy, requests to move protected
aliases (list, approve, reject) and model cards.

Each route calls one :class:`keel.models.api.Registry` method on the request's view, which acts
as the caller: with ``--auth`` the token's user and role (:mod:`keel.models.routing`), so the
two-person rule holds between people. Setting or clearing a policy needs an admin token;
approving and rejecting need an editor or admin token whose user the policy names as an
approver (``admins``: any admin token), and approving one's own request is refused. Errors:
a viewer, a non-approver or one's own approval is a 403, a failed check a 409 naming it (the
request stays pending), a request decided already a 409, no such model, version, request or
card a 404, a malformed body a 400.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from keel.models.governance_models import AliasRequest, ModelCard, Policy
from keel.models.routing import ReaderDep, WriterDep, note
from keel.models.wire import CardEdit, CardGenerate, Decision, PolicySet, RequestList
from keel.tracking.models import ErrorBody

__all__ = ["router"]

router = APIRouter(
    tags=["models"],
    responses={
        409: {
            "model": ErrorBody,
            "description": "a failed check (named), or a request decided already",
        },
    },
)

NamePath = Annotated[str, Path(min_length=1, max_length=128, description="the model's name")]
VersionPath = Annotated[
    str, Path(min_length=1, max_length=64, description="a number, an alias, or latest")
]
RequestPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="the request's number")]


# -- policy --------------------------------------------------------------------------------


@router.get("/models/{name}/policy")
def get_policy(name: NamePath, registry: ReaderDep) -> Policy | None:
    """The model's policy, or ``null`` when it has none (its aliases move directly)."""
    return registry.get_policy(name)


@router.put("/models/{name}/policy")
def set_policy(name: NamePath, body: PolicySet, request: Request, registry: WriterDep) -> Policy:
    """Set (replace) the model's policy; needs the admin role. Answers the stored policy,
    checks in canonical form."""
    note(request, f"model/{name}")
    return registry.set_policy(
        name,
        protect=body.protect,
        approvers=body.approvers,
        requires=body.requires,
        require_card=body.require_card,
    )


@router.delete("/models/{name}/policy")
def clear_policy(name: NamePath, request: Request, registry: WriterDep) -> Policy:
    """Remove the model's policy, cancelling its pending requests; needs the admin role.
    Answers the policy removed."""
    note(request, f"model/{name}")
    return registry.clear_policy(name)


# -- requests ------------------------------------------------------------------------------


@router.get("/models/{name}/requests")
def list_requests(
    name: NamePath,
    registry: ReaderDep,
    show_all: Annotated[
        bool, Query(alias="all", description="also decided and cancelled requests")
    ] = False,
) -> RequestList:
    """Requests to move the model's protected aliases, newest first (pending ones unless
    ``all=true``)."""
    return RequestList(requests=registry.requests(name, pending_only=not show_all))


@router.post("/models/{name}/requests/{request_id}/approve")
def approve(
    name: NamePath,
    request_id: RequestPath,
    request: Request,
    registry: WriterDep,
    body: Decision | None = None,
) -> AliasRequest:
    """Approve the request: if the version passes the policy's checks, the alias moves in the
    same transaction. An approver other than the requester only."""
    note(request, f"model/{name}", f"request/{request_id}")
    return registry.approve(name, request_id, reason=body.reason if body else None)


@router.post("/models/{name}/requests/{request_id}/reject")
def reject(
    name: NamePath, request_id: RequestPath, body: Decision, request: Request, registry: WriterDep
) -> AliasRequest:
    """Reject the request with a ``reason`` (an approver, or its requester withdrawing it)."""
    note(request, f"model/{name}", f"request/{request_id}")
    return registry.reject(name, request_id, reason=body.reason or "")


# -- cards ---------------------------------------------------------------------------------


@router.get("/models/{name}/versions/{version}/card")
def get_card(name: NamePath, version: VersionPath, registry: ReaderDep) -> ModelCard:
    """The version's model card (a version by number, alias or ``latest``)."""
    return registry.card(registry.get_version(name, version))


@router.put("/models/{name}/versions/{version}/card")
def edit_card(
    name: NamePath, version: VersionPath, body: CardEdit, request: Request, registry: WriterDep
) -> ModelCard:
    """Replace the version's card with ``markdown`` (audited with what changed)."""
    found = registry.get_version(name, version)
    note(request, f"model/{name}/{found.version}")
    return registry.edit_card(found, body.markdown)


@router.post("/models/{name}/versions/{version}/card/generate")
def generate_card(
    name: NamePath,
    version: VersionPath,
    request: Request,
    registry: WriterDep,
    body: CardGenerate | None = None,
) -> ModelCard:
    """Generate and store the version's card from its lineage, metrics and evaluations; a card
    a person edited is a 409 unless ``replace`` is true."""
    found = registry.get_version(name, version)
    note(request, f"model/{name}/{found.version}")
    return registry.generate_card(found, replace=body.replace if body else False)
