"""Persistence of deployments on the metadata database (keel.db, revision 0012).

Tables: ``deployments`` (one row per name, with the number of its current revision) and
``deployment_revisions`` (the append-only history: each row a whole configuration).

**No lost update.** A change reads the current revision N, builds the new configuration from
it, then appends revision N+1 with one compare-and-set: ``UPDATE deployments SET revision =
N + 1 WHERE name = ? AND revision = N``, and the revision row, in one transaction. When another
writer got there first the update matches no row (on PostgreSQL the second writer waits for
the first's row lock, then re-checks the condition; on SQLite ``BEGIN IMMEDIATE`` serialises
writers) and :class:`StaleRevision` is raised, so the caller builds again on what is there now
(:mod:`keel.serving.deployments.api` does, a few times). Revisions are only ever inserted.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from sqlalchemy import (
    Connection,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from keel.db import EngineStore, from_ms, now_ms, schema
from keel.errors import AlreadyExists, Conflict, NotFound
from keel.serving.deployments.models import Deployment, DeploymentConfig, Revision

__all__ = ["DeploymentStore", "StaleRevision", "deployment_revisions", "deployments"]

deployments = schema.deployments
deployment_revisions = schema.deployment_revisions

_d = deployments
_r = deployment_revisions


class StaleRevision(Conflict):
    """The deployment moved past the revision a change was built on."""


class DeploymentStore(EngineStore):
    """Deployments and their revisions over an engine.

    Args:
        engine: a Keel database engine (:func:`keel.db.make_engine`), schema ensured.
    """

    def create(
        self,
        name: str,
        config: DeploymentConfig,
        *,
        resolved: dict[str, int],
        actor: str,
        note: str | None = None,
    ) -> Deployment:
        """Record deployment ``name`` with ``config`` as revision 1.

        Raises:
            AlreadyExists: a deployment of that name exists.
        """
        now = now_ms()
        try:
            with self._write() as conn, conn.begin():
                deployment_id = conn.execute(
                    _d.insert()
                    .values(
                        name=name,
                        revision=1,
                        created_at=now,
                        created_by=actor,
                        updated_at=now,
                        updated_by=actor,
                    )
                    .returning(_d.c.deployment_id)
                ).scalar_one()
                self._insert_revision(
                    conn, deployment_id, 1, config, resolved, "create", actor, note, now
                )
                return self._current(conn, name)
        except IntegrityError:
            raise AlreadyExists(
                f"a deployment named {name!r} exists already (keel deploy show {name}; "
                "set-traffic, promote and rollback change it)",
                name=name,
            ) from None

    def append(
        self,
        name: str,
        config: DeploymentConfig,
        *,
        expected: int,
        resolved: dict[str, int],
        action: str,
        actor: str,
        note: str | None = None,
    ) -> Deployment:
        """Append revision ``expected + 1`` holding ``config`` and make it the current one.

        Raises:
            NotFound: no such deployment.
            StaleRevision: the current revision is no longer ``expected``.
        """
        now = now_ms()
        with self._write() as conn, conn.begin():
            moved = conn.execute(
                update(_d)
                .where(_d.c.name == name, _d.c.revision == expected)
                .values(revision=expected + 1, updated_at=now, updated_by=actor)
                .returning(_d.c.deployment_id)
            ).first()
            if moved is None:
                current = self._require(conn, name).revision
                raise StaleRevision(
                    f"deployment {name!r} changed meanwhile (revision {current}, the change "
                    f"was built on {expected}); try again",
                    name=name,
                    revision=current,
                )
            self._insert_revision(
                conn, moved.deployment_id, expected + 1, config, resolved, action, actor, note, now
            )
            return self._current(conn, name)

    def get(self, name: str) -> Deployment:
        """Deployment ``name`` at its current revision.

        Raises:
            NotFound: no such deployment (the message names similar ones).
        """
        with self.engine.connect() as conn:
            return self._current(conn, name)

    def list_deployments(self) -> list[Deployment]:
        """Every deployment at its current revision, by name."""
        query = (
            select(_d, _r.c.config, _r.c.resolved)
            .join(_r, (_r.c.deployment_id == _d.c.deployment_id) & (_r.c.revision == _d.c.revision))
            .order_by(_d.c.name)
        )
        with self.engine.connect() as conn:
            return [_deployment(row) for row in conn.execute(query)]

    def history(self, name: str) -> list[Revision]:
        """Every revision of ``name``, oldest first.

        Raises:
            NotFound: no such deployment.
        """
        with self.engine.connect() as conn:
            row = self._require(conn, name)
            found = conn.execute(
                select(_r).where(_r.c.deployment_id == row.deployment_id).order_by(_r.c.revision)
            )
            return [_revision(name, r) for r in found]

    def revision(self, name: str, number: int) -> Revision:
        """Revision ``number`` of ``name``.

        Raises:
            NotFound: no such deployment or revision (the message says which exist).
        """
        with self.engine.connect() as conn:
            row = self._require(conn, name)
            found = conn.execute(
                select(_r).where(_r.c.deployment_id == row.deployment_id, _r.c.revision == number)
            ).first()
            if found is None:
                raise NotFound(
                    f"deployment {name!r} has no revision {number}; it has 1 to {row.revision}",
                    name=name,
                    revision=number,
                )
            return _revision(name, found)

    def delete(self, name: str) -> int:
        """Delete deployment ``name`` and its history; returns the revision it was at.

        Raises:
            NotFound: no such deployment.
        """
        with self._write() as conn, conn.begin():
            row = self._require(conn, name)
            conn.execute(delete(_r).where(_r.c.deployment_id == row.deployment_id))
            conn.execute(delete(_d).where(_d.c.deployment_id == row.deployment_id))
            return int(row.revision)

    # -- helpers ----------------------------------------------------------------------------

    def _insert_revision(
        self,
        conn: Connection,
        deployment_id: int,
        number: int,
        config: DeploymentConfig,
        resolved: dict[str, int],
        action: str,
        actor: str,
        note: str | None,
        at: int,
    ) -> None:
        conn.execute(
            _r.insert().values(
                deployment_id=deployment_id,
                revision=number,
                config=config.model_dump_json(),
                resolved=json.dumps(resolved, sort_keys=True),
                action=action,
                actor=actor,
                note=note,
                created_at=at,
            )
        )

    def _require(self, conn: Connection, name: str) -> Any:
        row = conn.execute(select(_d).where(_d.c.name == name)).first()
        if row is not None:
            return row
        names = conn.execute(select(_d.c.name).order_by(_d.c.name).limit(1000)).scalars().all()
        close = difflib.get_close_matches(name, names, n=3)
        if close:
            hint = f"; did you mean {', '.join(close)}?"
        elif names:
            hint = f"; there are {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}"
        else:
            hint = "; none exists yet (keel deploy create NAME --model MODEL@ALIAS)"
        raise NotFound(f"no deployment named {name!r}{hint}", name=name)

    def _current(self, conn: Connection, name: str) -> Deployment:
        row = self._require(conn, name)
        found = conn.execute(
            select(_r.c.config, _r.c.resolved).where(
                _r.c.deployment_id == row.deployment_id, _r.c.revision == row.revision
            )
        ).one()
        return _deployment(row, found)


def _deployment(row: Any, revision: Any = None) -> Deployment:
    source = revision if revision is not None else row
    return Deployment(
        name=row.name,
        revision=row.revision,
        config=DeploymentConfig.model_validate_json(source.config),
        resolved=json.loads(source.resolved),
        created_at=from_ms(row.created_at),
        created_by=row.created_by,
        updated_at=from_ms(row.updated_at),
        updated_by=row.updated_by,
    )


def _revision(name: str, row: Any) -> Revision:
    return Revision(
        deployment=name,
        revision=row.revision,
        config=DeploymentConfig.model_validate_json(row.config),
        resolved=json.loads(row.resolved),
        action=row.action,
        actor=row.actor,
        note=row.note,
        created_at=from_ms(row.created_at),
    )
