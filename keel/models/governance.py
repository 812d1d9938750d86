"""Governance: per-model policies, approvals of protected alias moves, model cards.

A policy protects aliases (``production``...). Moving one with :func:`keel.models.api.set_alias`
records a pending request; an approver who is not the requester :func:`approve`\\ s it, and if
the version passes the policy's checks the alias moves, in the same transaction as the
request's state and the ``approve`` and ``set_alias`` audit rows. :func:`reject` declines it
with a reason. Every change here lands in the model's append-only audit trail
(:func:`keel.models.api.history`).

Who acts is the :class:`~keel.models.api.Registry`'s ``actor`` and ``role``: locally the OS user,
who owns the store (admin). With a tracking server (``KEEL_TRACKING_URI``) these functions go
to it over HTTP (:func:`keel.models.api.registry_for`); on a server with ``--auth`` the actor
and role are the token's (``KEEL_TRACKING_TOKEN``), which is how governance between people is
enforced: alice's token requests a move, bob's approves it.

Example:
    >>> set_policy("churn", protect=["production"], approvers=["admins"],
    ...            requires=["metrics.rmse < 60"], require_card=True)  # doctest: +SKIP
    >>> api.set_alias("churn", "production", 7).summary  # doctest: +SKIP
    'request #1: moving production to 7 needs approval by admins; checks: ...'
"""

from __future__ import annotations

from keel.models.api import registry_for
from keel.models.governance_models import AliasRequest, ModelCard, Policy
from keel.models.models import ModelVersion
from keel.settings import Settings

__all__ = [
    "approve",
    "clear_policy",
    "edit_card",
    "generate_card",
    "get_card",
    "get_policy",
    "list_requests",
    "reject",
    "set_policy",
]


def get_policy(name: str, *, settings: Settings | None = None) -> Policy | None:
    """Model ``name``'s policy, or None when it has none.

    Raises:
        NotFound: no such model.

    Example:
        >>> get_policy("churn").protect  # doctest: +SKIP
        ['production']
    """
    with registry_for(settings) as registry:
        return registry.get_policy(name)


def set_policy(
    name: str,
    *,
    protect: list[str],
    approvers: list[str],
    requires: list[str] | None = None,
    require_card: bool = False,
    settings: Settings | None = None,
) -> Policy:
    """Set (replace) model ``name``'s policy; audited ``set_policy`` with the policy.

    Args:
        name: the registered model.
        protect: aliases that move only through an approved request.
        approvers: ``admins`` (or ``@admin``: any admin) and/or user names; entries may be
            comma-separated.
        requires: checks a version must pass, each ``metrics.NAME <op> NUMBER``,
            ``params.NAME = 'value'`` or ``tags.NAME = 'value'`` (``<op>``: < <= > >= = !=).
        require_card: the version must have a model card.
        settings: where the database is; default ``Settings()``.

    Returns:
        The stored :class:`~keel.models.governance_models.Policy` (checks in canonical form).

    Raises:
        InvalidInput: a malformed alias, approver or check (the message names it).
        PermissionDenied: the actor is not an admin.
        NotFound: no such model.

    Example:
        >>> set_policy("churn", protect=["production"], approvers=["admins"],
        ...            requires=["metrics.rmse < 60"])  # doctest: +SKIP
    """
    with registry_for(settings) as registry:
        return registry.set_policy(
            name,
            protect=protect,
            approvers=approvers,
            requires=requires,
            require_card=require_card,
        )


def clear_policy(name: str, *, settings: Settings | None = None) -> Policy:
    """Remove model ``name``'s policy, cancelling its pending requests; audited.

    Returns:
        The policy removed.

    Raises:
        NotFound: no such model, or it has no policy.
        PermissionDenied: the actor is not an admin.

    Example:
        >>> clear_policy("churn").protect  # doctest: +SKIP
        ['production']
    """
    with registry_for(settings) as registry:
        return registry.clear_policy(name)


def list_requests(
    name: str, *, pending_only: bool = True, settings: Settings | None = None
) -> list[AliasRequest]:
    """Model ``name``'s requests to move protected aliases, newest first.

    Example:
        >>> [r.summary for r in list_requests("churn")]  # doctest: +SKIP
        ['request #1: moving production to 7 needs approval by admins; checks: ...']
    """
    with registry_for(settings) as registry:
        return registry.requests(name, pending_only=pending_only)


def approve(
    name: str, request_id: int, *, reason: str | None = None, settings: Settings | None = None
) -> AliasRequest:
    """Approve request ``request_id``: if the version passes the checks, the alias moves.

    Raises:
        NotFound: no such model or request.
        PermissionDenied: the actor requested it, or is not one of the policy's approvers.
        Conflict: a check fails (named; the request stays pending), or the request was
            decided already (of two approvers at once, exactly one succeeds).

    Example:
        >>> approve("churn", 1, reason="reviewed the card").state  # doctest: +SKIP
        'approved'
    """
    with registry_for(settings) as registry:
        return registry.approve(name, request_id, reason=reason)


def reject(
    name: str, request_id: int, *, reason: str, settings: Settings | None = None
) -> AliasRequest:
    """Reject request ``request_id`` with a reason (an approver, or its requester withdrawing).

    Raises:
        InvalidInput: no reason.
        NotFound: no such model or request.
        PermissionDenied: the actor is neither an approver nor the requester.
        Conflict: the request was decided already.

    Example:
        >>> reject("churn", 1, reason="drift on the March data").state  # doctest: +SKIP
        'rejected'
    """
    with registry_for(settings) as registry:
        return registry.reject(name, request_id, reason=reason)


def get_card(ref: str | ModelVersion, *, settings: Settings | None = None) -> ModelCard:
    """The model card of ``ref`` (``NAME/3``, ``NAME@champion``).

    Raises:
        NotFound: no such version, or it has no card yet.

    Example:
        >>> print(get_card("churn/3").markdown)  # doctest: +SKIP
    """
    with registry_for(settings) as registry:
        return registry.card(ref)


def generate_card(
    ref: str | ModelVersion, *, replace: bool = False, settings: Settings | None = None
) -> ModelCard:
    """Generate and store the model card of ``ref`` from its lineage and metrics; audited.

    The card has the version's overview, signature, training data versions with digests, run
    (commit, params, metrics), evaluations, requirements and aliases, and *Intended use* and
    *Limitations* sections for people to fill in (:func:`edit_card`).

    Raises:
        NotFound: no such version.
        Conflict: the card was edited by a person; ``replace=True`` overwrites it.

    Example:
        >>> generate_card("churn/3").generated  # doctest: +SKIP
        True
    """
    with registry_for(settings) as registry:
        return registry.generate_card(ref, replace=replace)


def edit_card(
    ref: str | ModelVersion, markdown: str, *, settings: Settings | None = None
) -> ModelCard:
    """Replace the card of ``ref`` with ``markdown``; audited with lines added and removed.

    Raises:
        InvalidInput: empty Markdown.
        NotFound: no such version.

    Example:
        >>> edit_card("churn/3", Path("card.md").read_text()).generated  # doctest: +SKIP
        False
    """
    with registry_for(settings) as registry:
        return registry.edit_card(ref, markdown)
