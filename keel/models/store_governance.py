"""Persistence of governance (revision 0011): policies, alias requests, model cards.

Tables: ``model_policies`` (one per model), ``alias_requests`` (a protected alias's pending and
decided moves), ``model_cards`` (one per version); ``model_evaluations`` is read for cards.

The same rules as :mod:`keel.models.store` hold: each change locks the model's row first, and
writes its ``model_audit`` row(s) in its own transaction. Approving a request is one
transaction: the request's state changes only while it is still pending (so of two approvers
at once exactly one succeeds, the other gets :class:`~keel.errors.Conflict`), the alias moves,
and both the ``approve`` and the ``set_alias`` audit rows are written, or none of it happens.
Who may approve and whether the checks pass are decided by the caller
(:class:`keel.models.api.Registry`) in a ``decide`` callback that the store runs inside that
transaction, on the policy, request, version, card and evaluations it reads under the lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, select, update

from keel.db import from_ms, now_ms, schema
from keel.errors import Conflict, NotFound
from keel.models.governance_models import AliasRequest, CheckResult, ModelCard, Policy
from keel.models.models import ModelVersion
from keel.models.store import ModelStore, append_audit

__all__ = ["Deciding", "GovernanceStore"]

_m = schema.registered_models
_p = schema.model_policies
_r = schema.alias_requests
_c = schema.model_cards
_e = schema.model_evaluations


class Deciding(NamedTuple):
    """What a request is decided on, read in the deciding transaction under the model's lock."""

    request: AliasRequest
    policy: Policy | None
    version: ModelVersion
    card: ModelCard | None
    evaluations: list[dict[str, Any]]


class GovernanceStore(ModelStore):
    """A :class:`~keel.models.store.ModelStore` that also keeps policies, requests and cards."""

    # -- policies ---------------------------------------------------------------------------

    def get_policy(self, name: str) -> Policy | None:
        """Model ``name``'s policy, or None when it has none.

        Raises:
            NotFound: no such model.
        """
        with self.engine.connect() as conn:
            return self._policy(conn, name, self._require_model(conn, name))

    def set_policy(
        self,
        name: str,
        *,
        protect: Sequence[str],
        approvers: Sequence[str],
        requires: Sequence[str],
        require_card: bool,
        actor: str,
    ) -> Policy:
        """Replace model ``name``'s policy (audited ``set_policy``, detail the policy).

        Pending requests for aliases it no longer protects are cancelled with it.

        Raises:
            NotFound: no such model.
        """
        with self._write() as conn, conn.begin():
            model_id = self._lock(conn, name).model_id
            now = now_ms()
            values = {
                "protect": json.dumps(list(protect)),
                "approvers": json.dumps(list(approvers)),
                "requires": json.dumps(list(requires)),
                "require_card": require_card,
                "updated_at": now,
                "updated_by": actor,
            }
            conn.execute(
                self._insert(_p)
                .values(model_id=model_id, **values)
                .on_conflict_do_update(index_elements=[_p.c.model_id], set_=values)
            )
            cancelled = self._cancel_pending(conn, model_id, keep=set(protect), actor=actor)
            detail: dict[str, Any] = {
                "protect": list(protect),
                "approvers": list(approvers),
                "requires": list(requires),
                "require_card": require_card,
            }
            if cancelled:
                detail["cancelled_requests"] = cancelled
            append_audit(conn, name, "set_policy", actor=actor, detail=detail)
            policy = self._policy(conn, name, model_id)
            assert policy is not None
            return policy

    def clear_policy(self, name: str, *, actor: str) -> Policy:
        """Remove model ``name``'s policy, cancelling its pending requests (audited).

        Returns:
            The policy removed.

        Raises:
            NotFound: no such model, or it has no policy.
        """
        with self._write() as conn, conn.begin():
            model_id = self._lock(conn, name).model_id
            policy = self._policy(conn, name, model_id)
            if policy is None:
                raise NotFound(f"model {name} has no policy", name=name)
            conn.execute(_p.delete().where(_p.c.model_id == model_id))
            cancelled = self._cancel_pending(conn, model_id, keep=set(), actor=actor)
            detail: dict[str, Any] = policy.model_dump(
                include={"protect", "approvers", "requires", "require_card"}
            )
            if cancelled:
                detail["cancelled_requests"] = cancelled
            append_audit(conn, name, "clear_policy", actor=actor, detail=detail)
            return policy

    # -- requests ---------------------------------------------------------------------------

    def create_request(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        actor: str,
        reason: str | None,
        checks: Sequence[CheckResult],
    ) -> AliasRequest:
        """Record a pending request to point ``alias`` at ``version`` (audited ``request``).

        Raises:
            NotFound: no such model or version.
        """
        with self._write() as conn, conn.begin():
            model_id = self._lock(conn, name).model_id
            self._version_row(conn, name, model_id, version)
            request_id = conn.execute(
                _r.insert()
                .values(
                    model_id=model_id,
                    alias=alias,
                    version=version,
                    state="pending",
                    requested_by=actor,
                    reason=reason,
                    created_at=now_ms(),
                    checks=_checks_json(checks),
                )
                .returning(_r.c.request_id)
            ).scalar_one()
            previous = self._aliases(conn, model_id).get(alias)
            append_audit(
                conn,
                name,
                "request",
                actor=actor,
                version=version,
                alias=alias,
                reason=reason,
                detail={"request": request_id, "from": previous, "checks": _checks_list(checks)},
            )
            return self._request(conn, name, model_id, request_id)

    def get_request(self, name: str, request_id: int) -> AliasRequest:
        """Request ``request_id`` of model ``name``.

        Raises:
            NotFound: no such model or request.
        """
        with self.engine.connect() as conn:
            return self._request(conn, name, self._require_model(conn, name), request_id)

    def list_requests(self, name: str, *, pending_only: bool = True) -> list[AliasRequest]:
        """Model ``name``'s requests, newest first; only the pending ones unless told.

        Raises:
            NotFound: no such model.
        """
        with self.engine.connect() as conn:
            model_id = self._require_model(conn, name)
            query = select(_r).where(_r.c.model_id == model_id).order_by(_r.c.request_id.desc())
            if pending_only:
                query = query.where(_r.c.state == "pending")
            approvers = self._approvers(conn, model_id)
            return [_alias_request(name, row, approvers) for row in conn.execute(query)]

    def approve(
        self,
        name: str,
        request_id: int,
        *,
        actor: str,
        reason: str | None,
        decide: Callable[[Deciding], Sequence[CheckResult]],
    ) -> AliasRequest:
        """Approve a pending request and move its alias: one transaction, two audit rows.

        ``decide`` runs inside the transaction, under the model's lock, on the request, policy,
        version, card and evaluations read there; it returns the check results to record, or
        raises to refuse (nothing is written then). So an approver removed from the policy, or
        a check that stopped passing, before the lock is taken cannot approve.

        Raises:
            NotFound: no such model or request.
            Conflict: the request is no longer pending (someone decided it first).
            KeelError: what ``decide`` raises.
        """
        with self._write() as conn, conn.begin():
            model_id = self._lock(conn, name).model_id
            checks = list(decide(self._deciding(conn, name, model_id, request_id)))
            row = self._decide(conn, name, model_id, request_id, "approved", actor, reason, checks)
            append_audit(
                conn,
                name,
                "approve",
                actor=actor,
                version=row.version,
                alias=row.alias,
                reason=reason,
                detail={
                    "request": request_id,
                    "requested_by": row.requested_by,
                    "checks": _checks_list(checks),
                },
            )
            self._move_alias(
                conn,
                name,
                model_id,
                row.alias,
                row.version,
                actor=actor,
                reason=row.reason,
                detail={"request": request_id, "requested_by": row.requested_by},
            )
            return self._request(conn, name, model_id, request_id)

    def reject(
        self,
        name: str,
        request_id: int,
        *,
        actor: str,
        reason: str,
        decide: Callable[[Deciding], object],
    ) -> AliasRequest:
        """Reject a pending request (audited ``reject`` with the reason); ``decide`` runs
        under the model's lock as for :meth:`approve`, and raises to refuse.

        Raises:
            NotFound: no such model or request.
            Conflict: the request is no longer pending.
            KeelError: what ``decide`` raises.
        """
        with self._write() as conn, conn.begin():
            model_id = self._lock(conn, name).model_id
            decide(self._deciding(conn, name, model_id, request_id))
            row = self._decide(conn, name, model_id, request_id, "rejected", actor, reason, None)
            append_audit(
                conn,
                name,
                "reject",
                actor=actor,
                version=row.version,
                alias=row.alias,
                reason=reason,
                detail={"request": request_id, "requested_by": row.requested_by},
            )
            return self._request(conn, name, model_id, request_id)

    # -- cards ------------------------------------------------------------------------------

    def get_card(self, name: str, version: int) -> ModelCard | None:
        """Version ``version``'s card, or None when it has none.

        Raises:
            NotFound: no such model or version.
        """
        with self.engine.connect() as conn:
            model_id = self._require_model(conn, name)
            self._version_row(conn, name, model_id, version)
            row = conn.execute(
                select(_c).where(_c.c.model_id == model_id, _c.c.version == version)
            ).first()
        return _card(name, row) if row is not None else None

    def put_card(
        self,
        name: str,
        version: int,
        markdown: str,
        *,
        generated: bool,
        actor: str,
        detail: dict[str, Any],
    ) -> ModelCard:
        """Store version ``version``'s card (audited ``generate_card`` or ``edit_card``).

        Raises:
            NotFound: no such model or version.
        """
        with self._write() as conn, conn.begin():
            model_id = self._lock(conn, name).model_id
            self._version_row(conn, name, model_id, version)
            values = {
                "markdown": markdown,
                "generated": generated,
                "updated_at": now_ms(),
                "updated_by": actor,
            }
            conn.execute(
                self._insert(_c)
                .values(model_id=model_id, version=version, **values)
                .on_conflict_do_update(index_elements=[_c.c.model_id, _c.c.version], set_=values)
            )
            action = "generate_card" if generated else "edit_card"
            append_audit(conn, name, action, actor=actor, version=version, detail=detail)
            row = conn.execute(
                select(_c).where(_c.c.model_id == model_id, _c.c.version == version)
            ).one()
            return _card(name, row)

    def evaluations(self, name: str, version: int) -> list[dict[str, Any]]:
        """Version ``version``'s evaluation records (``model_evaluations``), oldest first, as
        plain dicts: dataset, target, task, rows, metrics, created_at, created_by."""
        with self.engine.connect() as conn:
            return self._evaluations(conn, self._require_model(conn, name), version)

    # -- helpers ----------------------------------------------------------------------------

    def _deciding(self, conn: Connection, name: str, model_id: int, request_id: int) -> Deciding:
        request = self._request(conn, name, model_id, request_id)
        card = conn.execute(
            select(_c).where(_c.c.model_id == model_id, _c.c.version == request.version)
        ).first()
        return Deciding(
            request=request,
            policy=self._policy(conn, name, model_id),
            version=self._versions(conn, name, model_id, [request.version])[0],
            card=_card(name, card) if card is not None else None,
            evaluations=self._evaluations(conn, model_id, request.version),
        )

    def _evaluations(self, conn: Connection, model_id: int, version: int) -> list[dict[str, Any]]:
        rows = conn.execute(
            select(_e)
            .where(_e.c.model_id == model_id, _e.c.version == version)
            .order_by(_e.c.evaluation_id)
        ).all()
        return [
            {
                "dataset": row.dataset,
                "target": row.target,
                "task": row.task,
                "rows": row.rows,
                "metrics": json.loads(row.metrics),
                "created_at": from_ms(row.created_at),
                "created_by": row.created_by,
            }
            for row in rows
        ]

    def _policy(self, conn: Connection, name: str, model_id: int) -> Policy | None:
        row = conn.execute(select(_p).where(_p.c.model_id == model_id)).first()
        if row is None:
            return None
        return Policy(
            name=name,
            protect=json.loads(row.protect),
            approvers=json.loads(row.approvers),
            requires=json.loads(row.requires),
            require_card=bool(row.require_card),
            updated_at=from_ms(row.updated_at),
            updated_by=row.updated_by,
        )

    def _approvers(self, conn: Connection, model_id: int) -> list[str]:
        found = conn.execute(select(_p.c.approvers).where(_p.c.model_id == model_id)).scalar()
        return json.loads(found) if found else []

    def _request(self, conn: Connection, name: str, model_id: int, request_id: int) -> AliasRequest:
        row = conn.execute(
            select(_r).where(_r.c.request_id == request_id, _r.c.model_id == model_id)
        ).first()
        if row is None:
            raise NotFound(f"model {name} has no request #{request_id}", name=name)
        return _alias_request(name, row, self._approvers(conn, model_id))

    def _decide(
        self,
        conn: Connection,
        name: str,
        model_id: int,
        request_id: int,
        state: str,
        actor: str,
        reason: str | None,
        checks: Sequence[CheckResult] | None,
    ) -> Any:
        """Move a pending request to ``state``; Conflict if it was decided already."""
        row = conn.execute(
            select(_r).where(_r.c.request_id == request_id, _r.c.model_id == model_id)
        ).first()
        if row is None:
            raise NotFound(f"model {name} has no request #{request_id}", name=name)
        values: dict[str, Any] = {
            "state": state,
            "decided_by": actor,
            "decided_at": now_ms(),
            "decision_reason": reason,
        }
        if checks is not None:
            values["checks"] = _checks_json(checks)
        changed = conn.execute(
            update(_r)
            .where(_r.c.request_id == request_id, _r.c.state == "pending")
            .values(**values)
        ).rowcount
        if changed != 1:
            raise Conflict(
                f"request #{request_id} of {name} is {row.state} already"
                + (f" (by {row.decided_by})" if row.decided_by else ""),
                name=name,
                request=request_id,
                state=row.state,
            )
        return row

    def _cancel_pending(
        self, conn: Connection, model_id: int, *, keep: set[str], actor: str
    ) -> list[int]:
        """Cancel pending requests for aliases not in ``keep``; returns their ids."""
        pending = conn.execute(
            select(_r.c.request_id, _r.c.alias).where(
                _r.c.model_id == model_id, _r.c.state == "pending"
            )
        ).all()
        ids = [row.request_id for row in pending if row.alias not in keep]
        if ids:
            conn.execute(
                update(_r)
                .where(_r.c.request_id.in_(ids))
                .values(
                    state="cancelled",
                    decided_by=actor,
                    decided_at=now_ms(),
                    decision_reason="the policy no longer protects the alias",
                )
            )
        return ids


def _checks_list(checks: Sequence[CheckResult]) -> list[dict[str, Any]]:
    return [c.model_dump() for c in checks]


def _checks_json(checks: Sequence[CheckResult]) -> str:
    return json.dumps(_checks_list(checks))


def _alias_request(name: str, row: Any, approvers: list[str]) -> AliasRequest:
    return AliasRequest(
        id=row.request_id,
        name=name,
        alias=row.alias,
        version=row.version,
        state=row.state,
        requested_by=row.requested_by,
        reason=row.reason,
        created_at=from_ms(row.created_at),
        decided_by=row.decided_by,
        decided_at=from_ms(row.decided_at) if row.decided_at is not None else None,
        decision_reason=row.decision_reason,
        checks=[CheckResult.model_validate(c) for c in json.loads(row.checks or "[]")],
        approvers=approvers,
    )


def _card(name: str, row: Any) -> ModelCard:
    return ModelCard(
        name=name,
        version=row.version,
        markdown=row.markdown,
        generated=bool(row.generated),
        updated_at=from_ms(row.updated_at),
        updated_by=row.updated_by,
    )
