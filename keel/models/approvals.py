"""Who may decide a request to move a protected alias, and what a version must pass first.

The rules behind :meth:`keel.models.api.Registry.approve` and ``reject``: an approval needs a
user other than the requester who is one of the policy's approvers (a user name, or any admin
for ``admins``), and the version must pass every check: each required expression and, with
``require_card``, a model card. Changing a policy needs the admin role.
"""

from __future__ import annotations

from typing import Literal, Protocol

from keel.auth.models import Role
from keel.errors import Conflict, PermissionDenied
from keel.models import tracing
from keel.models.checks import evaluate, parse_requirement
from keel.models.governance_models import ADMINS, AliasRequest, CheckResult, ModelCard, Policy
from keel.models.models import ModelVersion

__all__ = ["Checker", "deciding_policy", "require_admin", "run_checks"]


class _Cards(Protocol):
    def get_card(self, name: str, version: int) -> ModelCard | None: ...


class Checker(tracing.Reader, Protocol):
    """A :class:`~keel.models.tracing.Reader` whose store also has the versions' cards."""

    @property
    def store(self) -> _Cards: ...


def run_checks(checker: Checker, policy: Policy, version: ModelVersion) -> list[CheckResult]:
    """``version`` against ``policy``: each required expression, on the manifest's metrics and
    params (then its run's, for keys the manifest lacks) and the version's tags; and ``card``
    when the policy requires one."""
    results = []
    if policy.requires:
        manifest = tracing.manifest_or_none(checker, version)
        run = tracing.run_or_none(checker, version.run_id)
        metrics = {**(run.metrics if run else {}), **(manifest.metrics if manifest else {})}
        params = {**(run.params if run else {}), **(manifest.params if manifest else {})}
        for text in policy.requires:
            results.append(
                evaluate(parse_requirement(text), metrics=metrics, params=params, tags=version.tags)
            )
    if policy.require_card:
        card = checker.store.get_card(version.name, version.version)
        found = (
            f"{'generated' if card.generated else 'edited'} by {card.updated_by}"
            if card is not None
            else f"none (keel models card generate {version.name}/{version.version})"
        )
        results.append(CheckResult(check="card", passed=card is not None, found=found))
    return results


def require_admin(actor: str, role: Role, doing: str) -> None:
    """PermissionDenied unless ``role`` is admin."""
    if role < Role.ADMIN:
        raise PermissionDenied(
            f"{doing} needs the admin role; {actor} is {role.label}", actor=actor
        )


def deciding_policy(
    request: AliasRequest,
    policy: Policy | None,
    *,
    actor: str,
    role: Role,
    doing: Literal["approving", "rejecting"],
) -> Policy:
    """The policy deciding ``request``, once ``actor`` may decide it.

    Raises:
        Conflict: the request is decided already.
        PermissionDenied: approving one's own request, or ``actor`` is not an approver (a
            requester may still reject, that is withdraw, their own request).
    """
    head = f"request #{request.id}: moving {request.alias} to {request.version}"
    if request.state != "pending":
        by = f" (by {request.decided_by})" if request.decided_by else ""
        raise Conflict(
            f"{head} is {request.state} already{by}", request=request.id, state=request.state
        )
    if policy is None:  # pragma: no cover - clearing a policy cancels its requests
        raise Conflict(f"{head}: the model has no policy any more", request=request.id)
    if doing == "approving" and request.requested_by == actor:
        raise PermissionDenied(
            f"{head} needs an approval by a user other than the requester, {request.requested_by}",
            request=request.id,
        )
    if doing == "rejecting" and request.requested_by == actor:
        return policy
    if actor in policy.approvers or (ADMINS in policy.approvers and role >= Role.ADMIN):
        return policy
    decision = "approval" if doing == "approving" else "a decision"
    raise PermissionDenied(
        f"{head} needs {decision} by {policy.approvers_text}; {actor} is not one of them",
        request=request.id,
        actor=actor,
    )
