"""Persistence of evaluations and gate verdicts (tables ``model_evaluations`` and
``gate_verdicts``, schema revision 0011), on SQLAlchemy Core for SQLite and PostgreSQL.

Both tables key their rows to a model version (``model_id``, ``version``), so a version's
evaluations and verdicts go when the version goes. ``model_evaluations.metrics`` holds one JSON
object: metric name -> number, plus the reserved key ``_detail`` with what is not a number (the
confusion matrix, how the task was chosen, metrics left out and why).

Each record's audit event (action ``evaluate`` or ``gate``) is written in the same transaction
as its row (:func:`keel.models.store.append_audit`).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select

from keel.db import EngineStore, from_ms, now_ms, schema
from keel.errors import NotFound
from keel.models.evaluation_models import Evaluation, GateVerdict, Task
from keel.models.store import append_audit

__all__ = ["DETAIL_KEY", "EvaluationStore"]

DETAIL_KEY = "_detail"
"""The key of ``model_evaluations.metrics`` that holds the evaluation's non-numeric detail."""

_m = schema.registered_models
_e = schema.model_evaluations
_g = schema.gate_verdicts


class EvaluationStore(EngineStore):
    """Evaluations and gate verdicts of registered model versions over an engine.

    Args:
        engine: a Keel database engine (:func:`keel.db.make_engine`), schema ensured.
    """

    # -- evaluations ---------------------------------------------------------------------------

    def add_evaluation(
        self,
        name: str,
        version: int,
        *,
        dataset: str,
        dataset_digest: str,
        target: str,
        task: Task,
        rows: int,
        metrics: dict[str, float],
        detail: dict[str, Any],
        actor: str,
    ) -> Evaluation:
        """Record version ``version`` of ``name``'s metrics on ``dataset`` (``NAME@VERSION``),
        with its ``evaluate`` audit row in the same transaction.

        Raises:
            NotFound: no such model.
        """
        document = {**metrics, DETAIL_KEY: detail}
        with self._write() as conn, conn.begin():
            model_id = self._model_id(conn, name)
            inserted = conn.execute(
                _e.insert()
                .values(
                    model_id=model_id,
                    version=version,
                    dataset=dataset,
                    dataset_digest=dataset_digest,
                    target=target,
                    task=task,
                    rows=rows,
                    metrics=json.dumps(document, sort_keys=True),
                    created_at=now_ms(),
                    created_by=actor,
                )
                .returning(*_e.c)
            ).one()
            append_audit(
                conn,
                name,
                "evaluate",
                actor=actor,
                version=version,
                detail={
                    "evaluation": inserted.evaluation_id,
                    "dataset": dataset,
                    "target": target,
                    "task": task,
                    "rows": rows,
                    "metrics": metrics,
                },
            )
        return _evaluation(name, inserted)

    def list_evaluations(self, name: str, version: int | None = None) -> list[Evaluation]:
        """The evaluations of model ``name`` (of one version when given), newest first.

        Raises:
            NotFound: no such model.
        """
        with self.engine.connect() as conn:
            query = select(_e).where(_e.c.model_id == self._model_id(conn, name))
            if version is not None:
                query = query.where(_e.c.version == version)
            rows = conn.execute(query.order_by(_e.c.evaluation_id.desc())).all()
        return [_evaluation(name, row) for row in rows]

    # -- gate verdicts -------------------------------------------------------------------------

    def add_verdict(
        self,
        name: str,
        version: int,
        *,
        against: str,
        against_version: int | None,
        metric: str,
        passed: bool,
        detail: dict[str, Any],
        actor: str,
    ) -> GateVerdict:
        """Record a gate's verdict on version ``version`` of ``name``, with its ``gate`` audit
        row (``detail["reason"]`` is its reason) in the same transaction.

        Raises:
            NotFound: no such model.
        """
        with self._write() as conn, conn.begin():
            model_id = self._model_id(conn, name)
            inserted = conn.execute(
                _g.insert()
                .values(
                    model_id=model_id,
                    version=version,
                    against=against,
                    against_version=against_version,
                    metric=metric,
                    passed=passed,
                    detail=json.dumps(detail, sort_keys=True),
                    created_at=now_ms(),
                    created_by=actor,
                )
                .returning(*_g.c)
            ).one()
            append_audit(
                conn,
                name,
                "gate",
                actor=actor,
                version=version,
                reason=str(detail["reason"]),
                detail={
                    "verdict": inserted.verdict_id,
                    "against": against,
                    "against_version": against_version,
                    "metric": metric,
                    "passed": passed,
                },
            )
        return _verdict(name, inserted)

    def list_verdicts(self, name: str, version: int | None = None) -> list[GateVerdict]:
        """The gate verdicts on model ``name`` (on one version when given), newest first.

        Raises:
            NotFound: no such model.
        """
        with self.engine.connect() as conn:
            query = select(_g).where(_g.c.model_id == self._model_id(conn, name))
            if version is not None:
                query = query.where(_g.c.version == version)
            rows = conn.execute(query.order_by(_g.c.verdict_id.desc())).all()
        return [_verdict(name, row) for row in rows]

    # -- helpers -------------------------------------------------------------------------------

    def _model_id(self, conn: Connection, name: str) -> int:
        model_id = conn.execute(select(_m.c.model_id).where(_m.c.name == name)).scalar()
        if model_id is None:
            raise NotFound(f"no registered model named {name!r}", name=name)
        return int(model_id)


def _evaluation(name: str, row: Any) -> Evaluation:
    document = json.loads(row.metrics)
    detail = document.pop(DETAIL_KEY, {})
    return Evaluation(
        id=row.evaluation_id,
        name=name,
        version=row.version,
        dataset=row.dataset,
        dataset_digest=row.dataset_digest,
        target=row.target,
        task=row.task,
        rows=row.rows,
        metrics=document,
        detail=detail,
        created_at=from_ms(row.created_at),
        created_by=row.created_by,
    )


def _verdict(name: str, row: Any) -> GateVerdict:
    return GateVerdict(
        id=row.verdict_id,
        name=name,
        version=row.version,
        against=row.against,
        against_version=row.against_version,
        metric=row.metric,
        passed=bool(row.passed),
        detail=json.loads(row.detail),
        created_at=from_ms(row.created_at),
        created_by=row.created_by,
    )
