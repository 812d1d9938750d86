"""Governance on the :class:`~keel.models.api.Registry`: policies, alias requests and their
approval, and model cards (the module functions are in :mod:`keel.models.governance`).

A mixin of :class:`~keel.models.api.Registry`, kept apart so the registry's own module stays a
readable size; its methods need only what :class:`_Host` names.
"""

from __future__ import annotations

from typing import Literal, Protocol

from keel.auth.models import Role
from keel.errors import Conflict, InvalidInput, NotFound
from keel.models import approvals, tracing
from keel.models.cards import edit_summary, render_card
from keel.models.checks import parse_approvers, parse_requirement
from keel.models.governance_models import AliasRequest, CheckResult, ModelCard, Policy
from keel.models.models import ModelVersion
from keel.models.store_governance import Deciding, GovernanceStore
from keel.models.tracing import Reader
from keel.models.uris import check_alias, check_model_name

__all__ = ["RegistryGovernance"]


class _Host(Reader, Protocol):
    """What the governance methods use of the registry they are mixed into."""

    store: GovernanceStore
    actor: str
    role: Role

    def _require_admin(self, doing: str) -> None: ...

    def _deciding(
        self,
        request: AliasRequest,
        policy: Policy | None,
        doing: Literal["approving", "rejecting"],
    ) -> Policy: ...


class RegistryGovernance:
    """Policies, approvals and cards, for :class:`~keel.models.api.Registry`."""

    def get_policy(self: _Host, name: str) -> Policy | None:
        """See :func:`keel.models.governance.get_policy`."""
        return self.store.get_policy(check_model_name(name))

    def set_policy(
        self: _Host,
        name: str,
        *,
        protect: list[str],
        approvers: list[str],
        requires: list[str] | None = None,
        require_card: bool = False,
    ) -> Policy:
        """See :func:`keel.models.governance.set_policy`."""
        check_model_name(name)
        self._require_admin("changing a model's policy")
        if not protect:
            raise InvalidInput("a policy protects at least one alias (--protect production)")
        aliases = list(dict.fromkeys(check_alias(alias) for alias in protect))
        checks = [str(parse_requirement(text)) for text in requires or []]
        return self.store.set_policy(
            name,
            protect=aliases,
            approvers=parse_approvers(approvers),
            requires=list(dict.fromkeys(checks)),
            require_card=require_card,
            actor=self.actor,
        )

    def clear_policy(self: _Host, name: str) -> Policy:
        """See :func:`keel.models.governance.clear_policy`."""
        check_model_name(name)
        self._require_admin("changing a model's policy")
        return self.store.clear_policy(name, actor=self.actor)

    def requests(self: _Host, name: str, *, pending_only: bool = True) -> list[AliasRequest]:
        """See :func:`keel.models.governance.list_requests`."""
        return self.store.list_requests(check_model_name(name), pending_only=pending_only)

    def approve(
        self: _Host, name: str, request_id: int, *, reason: str | None = None
    ) -> AliasRequest:
        """See :func:`keel.models.governance.approve`.

        Who may approve and the checks are decided inside the approving transaction, under the
        model's lock, on the policy, card, tags and evaluations read there; only the version's
        manifest (immutable: its digest is registered) is read before.
        """
        request = self.store.get_request(check_model_name(name), request_id)
        manifest = tracing.manifest_or_none(self, self.store.get_version(name, request.version))

        def decide(now: Deciding) -> list[CheckResult]:
            policy = self._deciding(now.request, now.policy, "approving")
            checks = approvals.run_checks(
                policy, now.version, manifest=manifest, card=now.card, evaluations=now.evaluations
            )
            failed = [check for check in checks if not check.passed]
            if failed:
                raise Conflict(
                    f"request #{request_id} is not approved: {name}/{now.version.version} fails "
                    + "; ".join(str(check) for check in failed)
                    + ". It stays pending",
                    name=name,
                    request=request_id,
                    failed=[check.check for check in failed],
                )
            return checks

        return self.store.approve(name, request_id, actor=self.actor, reason=reason, decide=decide)

    def reject(self: _Host, name: str, request_id: int, *, reason: str) -> AliasRequest:
        """See :func:`keel.models.governance.reject`."""
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("a rejection needs a reason (--reason)")

        def decide(now: Deciding) -> Policy:
            return self._deciding(now.request, now.policy, "rejecting")

        return self.store.reject(
            check_model_name(name), request_id, actor=self.actor, reason=reason, decide=decide
        )

    def checks(self: _Host, policy: Policy, version: ModelVersion) -> list[CheckResult]:
        """``version`` against ``policy``'s checks now, on its manifest, card and evaluations;
        see :func:`keel.models.approvals.run_checks`."""
        return approvals.run_checks(
            policy,
            version,
            manifest=tracing.manifest_or_none(self, version),
            card=self.store.get_card(version.name, version.version),
            evaluations=self.store.evaluations(version.name, version.version),
        )

    def card(self: _Host, ref: str | ModelVersion) -> ModelCard:
        """See :func:`keel.models.governance.get_card`."""
        version = self.resolve(ref)
        card = self.store.get_card(version.name, version.version)
        if card is None:
            raise NotFound(
                f"{version.name}/{version.version} has no model card yet (keel models card "
                f"generate {version.name}/{version.version})",
                name=version.name,
                version=version.version,
            )
        return card

    def generate_card(self: _Host, ref: str | ModelVersion, *, replace: bool = False) -> ModelCard:
        """See :func:`keel.models.governance.generate_card`."""
        version = self.resolve(ref)
        before = self.store.get_card(version.name, version.version)
        if before is not None and not before.generated and not replace:
            raise Conflict(
                f"the card of {version.name}/{version.version} was edited by "
                f"{before.updated_by}; generating would replace their text (--replace does)",
                name=version.name,
                version=version.version,
            )
        markdown = render_card(
            version,
            manifest=tracing.manifest_or_none(self, version),
            lineage=tracing.lineage(self, version),
            evaluations=self.store.evaluations(version.name, version.version),
        )
        detail = edit_summary(before.markdown if before else None, markdown)
        return self.store.put_card(
            version.name, version.version, markdown, generated=True, actor=self.actor, detail=detail
        )

    def edit_card(self: _Host, ref: str | ModelVersion, markdown: str) -> ModelCard:
        """See :func:`keel.models.governance.edit_card`."""
        if not isinstance(markdown, str) or not markdown.strip():
            raise InvalidInput("a model card is non-empty Markdown")
        version = self.resolve(ref)
        before = self.store.get_card(version.name, version.version)
        detail = edit_summary(before.markdown if before else None, markdown)
        return self.store.put_card(
            version.name,
            version.version,
            markdown,
            generated=False,
            actor=self.actor,
            detail=detail,
        )

    def _require_admin(self: _Host, doing: str) -> None:
        approvals.require_admin(self.actor, self.role, doing)

    def _deciding(
        self: _Host,
        request: AliasRequest,
        policy: Policy | None,
        doing: Literal["approving", "rejecting"],
    ) -> Policy:
        return approvals.deciding_policy(
            request,
            policy,
            actor=self.actor,
            role=self.role,
            doing=doing,
        )
