"""Who may decide a request to move a protected alias, and what a version must pass first.

The rules behind :meth:`keel.models.api.Registry.approve` and ``reject``: an approval needs a
user other than the requester who is one of the policy's approvers (a user name, or any admin
for ``admins``), and the version must pass every check: each required expression, on the
model's manifest, its evaluations and its tags (never the run's current values), and, with
``require_card``, a model card. The registry decides both under the model's lock, on what the
store reads in the approving transaction. Changing a policy needs the admin role.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from keel.auth.models import Role
from keel.errors import Conflict, PermissionDenied
from keel.models.checks import evaluate, parse_requirement
from keel.models.governance_models import ADMINS, AliasRequest, CheckResult, ModelCard, Policy
from keel.models.models import ModelManifest, ModelVersion
from keel.models.store_evaluation import DETAIL_KEY

__all__ = ["deciding_policy", "require_admin", "run_checks"]


def run_checks(
    policy: Policy,
    version: ModelVersion,
    *,
    manifest: ModelManifest | None,
    card: ModelCard | None,
    evaluations: Sequence[Mapping[str, Any]],
) -> list[CheckResult]:
    """``version`` against ``policy``: each required expression and ``card`` when the policy
    requires one.

    A metric is the manifest's (what the run had when the model was logged), else the newest of
    the version's evaluations that has it; a param is the manifest's; a tag is the version's.
    The run's metrics and params are not read: whoever may write to the run could change them
    after the request. ``manifest`` is None when the version's folder cannot be read.
    """
    results = []
    if policy.requires:
        metrics: dict[str, float] = {}
        where_metric: dict[str, str] = {}
        for record in reversed(evaluations):  # newest first; the manifest's win below
            for key, value in record["metrics"].items():
                if key != DETAIL_KEY and key not in metrics and isinstance(value, int | float):
                    metrics[key] = float(value)
                    where_metric[key] = f" (evaluation on {record['dataset']})"
        if manifest is not None:
            metrics.update(manifest.metrics)
            for key in manifest.metrics:
                where_metric.pop(key, None)
        params = manifest.params if manifest is not None else {}
        of = f"{version.name}/{version.version}"
        folder = f"the manifest of {of}" if manifest is not None else f"{of}'s unreadable manifest"
        looked = {
            "metrics": f" in {folder} nor in its {_count(len(evaluations), 'evaluation')}",
            "params": f" in {folder}",
            "tags": f" in the tags of {of}",
        }
        for text in policy.requires:
            requirement = parse_requirement(text)
            result = evaluate(
                requirement,
                metrics=metrics,
                params=params,
                tags=version.tags,
                looked=looked[requirement.kind],
            )
            if requirement.kind == "metrics" and requirement.key in where_metric:
                result = result.model_copy(
                    update={"found": result.found + where_metric[requirement.key]}
                )
            results.append(result)
    if policy.require_card:
        found = (
            f"{'generated' if card.generated else 'edited'} by {card.updated_by}"
            if card is not None
            else f"none (keel models card generate {version.name}/{version.version})"
        )
        results.append(CheckResult(check="card", passed=card is not None, found=found))
    return results


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


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
