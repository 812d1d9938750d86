"""Persistence of the model registry on the metadata database (keel.db, revision 0010).

Tables: ``registered_models`` (one row per name), ``model_versions`` (1, 2, 3... per name),
their tags, ``model_aliases`` and ``model_audit``.

**Every change writes its audit row in the same transaction**, so the trail holds exactly the
changes that happened: a change that fails leaves no row, and no change lands without one.
Triggers make ``model_audit`` refuse UPDATE and DELETE, so nothing edits the trail afterwards.

**Serialising changes to one model.** Each write transaction starts by updating the model's row
(``updated_at``, and for a new version the ``latest_version`` counter, ``RETURNING`` the new
number). On PostgreSQL that row lock makes writers of one model queue, and a queued writer sees
the committed counter once it gets the lock, so two processes registering at once get versions
1 and 2, never the same number; on SQLite the write transaction (``BEGIN IMMEDIATE``) already
holds the database's write lock. Moving an alias is then one upsert, and the audit row records
the version it pointed at before, read under the same lock.
"""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from keel.db import EngineStore, from_ms, now_ms, schema
from keel.errors import AlreadyExists, NotFound, PermissionDenied
from keel.models.models import AuditEvent, ModelVersion, RegisteredModel, Signature

__all__ = ["ModelStore", "VersionReference"]

_m = schema.registered_models
_v = schema.model_versions
_mt = schema.registered_model_tags
_vt = schema.model_version_tags
_a = schema.model_aliases
_audit = schema.model_audit
_p = schema.model_policies


class VersionReference(NamedTuple):
    """The manifest digest of one registered version's folder, for gc."""

    digest: str
    name: str
    version: int


class ModelStore(EngineStore):
    """Registered models, versions, tags, aliases and the audit trail over an engine.

    Args:
        engine: a Keel database engine (:func:`keel.db.make_engine`), schema ensured.
    """

    # -- models -----------------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        *,
        actor: str,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> RegisteredModel:
        """Register the name ``name`` with no versions yet.

        Raises:
            AlreadyExists: a model of that name exists.
        """
        with self._write() as conn, conn.begin():
            detail = {"description": description, "tags": dict(tags or {})}
            inserted = self._insert_model(
                conn, name, actor=actor, description=description, detail=detail
            )
            if inserted is None:
                raise AlreadyExists(f"a model named {name!r} is registered already", name=name)
            for key, value in (tags or {}).items():
                self._upsert_tag(conn, _mt, {"model_id": inserted}, key, value)
            return self._model(conn, name)

    def get_model(self, name: str) -> RegisteredModel:
        """The registered model ``name``, with its tags, aliases and latest version.

        Raises:
            NotFound: no model of that name (the message names similar ones).
        """
        with self.engine.connect() as conn:
            return self._model(conn, name)

    def list_models(self, *, name_like: str | None = None) -> list[RegisteredModel]:
        """Every registered model, by name; ``name_like`` is a SQL LIKE pattern (``%churn%``)."""
        query = select(_m).order_by(_m.c.name)
        if name_like is not None:
            query = query.where(_m.c.name.like(name_like))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            ids = [row.model_id for row in rows]
            tags = self._tags_by(conn, _mt, _mt.c.model_id, ids)
            aliases: dict[int, dict[str, int]] = defaultdict(dict)
            for row in conn.execute(
                select(_a.c.model_id, _a.c.alias, _a.c.version).order_by(_a.c.alias)
            ):
                aliases[row.model_id][row.alias] = row.version
        return [_registered(row, tags[row.model_id], aliases[row.model_id]) for row in rows]

    def set_model_description(self, name: str, description: str, *, actor: str) -> None:
        """Replace the model's description.

        Raises:
            NotFound: no such model.
        """
        with self._write() as conn, conn.begin():
            row = self._lock(conn, name)
            conn.execute(
                update(_m).where(_m.c.model_id == row.model_id).values(description=description)
            )
            detail = {"from": row.description, "to": description}
            append_audit(conn, name, "set_description", actor=actor, detail=detail)

    # -- versions ---------------------------------------------------------------------------

    def create_version(
        self,
        name: str,
        *,
        source: str,
        run_id: str | None,
        digest: str,
        flavor: str,
        signature: Signature | None,
        actor: str,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> ModelVersion:
        """Record the next version of ``name``, registering the name first if it is new.

        Two writers registering at once get consecutive numbers (see the module docstring).
        """
        with self._write() as conn, conn.begin():
            self._insert_model(conn, name, actor=actor, description="")
            now = now_ms()
            counted = conn.execute(
                update(_m)
                .where(_m.c.name == name)
                .values(latest_version=_m.c.latest_version + 1, updated_at=now)
                .returning(_m.c.model_id, _m.c.latest_version)
            ).one()
            model_id, number = counted.model_id, counted.latest_version
            conn.execute(
                _v.insert().values(
                    model_id=model_id,
                    version=number,
                    source=source,
                    run_id=run_id,
                    digest=digest,
                    flavor=flavor,
                    signature=signature.model_dump_json() if signature is not None else None,
                    description=description,
                    created_at=now,
                    created_by=actor,
                )
            )
            version_id = self._version_row(conn, name, model_id, number).version_id
            for key, value in (tags or {}).items():
                self._upsert_tag(conn, _vt, {"version_id": version_id}, key, value)
            detail = {"source": source, "run_id": run_id, "digest": digest, "flavor": flavor}
            append_audit(conn, name, "create_version", actor=actor, version=number, detail=detail)
            return self._versions(conn, name, model_id, [number])[0]

    def get_version(self, name: str, version: int) -> ModelVersion:
        """Version ``version`` of ``name``.

        Raises:
            NotFound: no such model, or no such version (the message lists those that exist).
        """
        with self.engine.connect() as conn:
            model_id = self._require_model(conn, name)
            self._version_row(conn, name, model_id, version)
            return self._versions(conn, name, model_id, [version])[0]

    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        """The version alias ``alias`` of ``name`` points at.

        Raises:
            NotFound: no such model, or no such alias (the message lists those set).
        """
        with self.engine.connect() as conn:
            model_id = self._require_model(conn, name)
            number = conn.execute(
                select(_a.c.version).where(_a.c.model_id == model_id, _a.c.alias == alias)
            ).scalar()
            if number is None:
                aliases = self._aliases(conn, model_id)
                have = ", ".join(f"{a} -> {v}" for a, v in aliases.items()) or "none"
                raise NotFound(
                    f"model {name} has no alias {alias!r}; its aliases: {have}",
                    name=name,
                    alias=alias,
                )
            return self._versions(conn, name, model_id, [number])[0]

    def get_latest_version(self, name: str) -> ModelVersion:
        """The newest version of ``name``.

        Raises:
            NotFound: no such model, or it has no versions yet.
        """
        with self.engine.connect() as conn:
            row = self._model_row(conn, name)
            if not row.latest_version:
                raise NotFound(f"model {name} has no versions yet", name=name)
            return self._versions(conn, name, row.model_id, [row.latest_version])[0]

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, newest first.

        Raises:
            NotFound: no such model.
        """
        with self.engine.connect() as conn:
            model_id = self._require_model(conn, name)
            return self._versions(conn, name, model_id, None)

    def search_versions(
        self, *, name: str | None = None, run_id: str | None = None, digest: str | None = None
    ) -> list[ModelVersion]:
        """Versions matching every filter given (none: all), by name then newest first."""
        query = select(_m.c.name, _m.c.model_id).join(_v, _v.c.model_id == _m.c.model_id)
        if name is not None:
            query = query.where(_m.c.name == name)
        if run_id is not None:
            query = query.where(_v.c.run_id == run_id)
        if digest is not None:
            query = query.where(_v.c.digest == digest)
        query = query.add_columns(_v.c.version).order_by(_m.c.name, _v.c.version.desc())
        found: list[ModelVersion] = []
        with self.engine.connect() as conn:
            numbers: dict[tuple[str, int], list[int]] = defaultdict(list)
            for row in conn.execute(query):
                numbers[(row.name, row.model_id)].append(row.version)
            for (model, model_id), versions in numbers.items():
                found.extend(self._versions(conn, model, model_id, versions))
        return found

    def set_version_description(
        self, name: str, version: int, description: str, *, actor: str
    ) -> None:
        """Replace version ``version``'s description.

        Raises:
            NotFound: no such model or version.
        """
        with self._write() as conn, conn.begin():
            model_id = self._lock(conn, name).model_id
            row = self._version_row(conn, name, model_id, version)
            conn.execute(
                update(_v).where(_v.c.version_id == row.version_id).values(description=description)
            )
            detail = {"from": row.description, "to": description}
            append_audit(conn, name, "set_description", actor=actor, version=version, detail=detail)

    def references(self) -> Iterator[VersionReference]:
        """``(digest, name, version)`` of every registered version, for gc."""
        query = (
            select(_v.c.digest, _m.c.name, _v.c.version)
            .join(_m, _m.c.model_id == _v.c.model_id)
            .order_by(_m.c.name, _v.c.version)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield VersionReference(row.digest, row.name, row.version)

    # -- tags -------------------------------------------------------------------------------

    def set_tag(
        self, name: str, key: str, value: str, *, actor: str, version: int | None = None
    ) -> None:
        """Set tag ``key`` on the model, or on version ``version`` of it.

        Raises:
            NotFound: no such model or version.
        """
        with self._write() as conn, conn.begin():
            table, owner = self._tag_owner(conn, name, version)
            previous = self._tag_value(conn, table, owner, key)
            self._upsert_tag(conn, table, owner, key, value)
            detail = {"key": key, "value": value, "previous": previous}
            append_audit(conn, name, "set_tag", actor=actor, version=version, detail=detail)

    def delete_tag(self, name: str, key: str, *, actor: str, version: int | None = None) -> None:
        """Delete tag ``key`` from the model, or from version ``version`` of it.

        Raises:
            NotFound: no such model, version or tag.
        """
        with self._write() as conn, conn.begin():
            table, owner = self._tag_owner(conn, name, version)
            previous = self._tag_value(conn, table, owner, key)
            if previous is None:
                where = f"{name}/{version}" if version is not None else name
                raise NotFound(f"{where} has no tag {key!r}", name=name, key=key)
            conn.execute(table.delete().where(*_owner_match(table, owner), table.c.key == key))
            detail = {"key": key, "previous": previous}
            append_audit(conn, name, "delete_tag", actor=actor, version=version, detail=detail)

    # -- aliases ----------------------------------------------------------------------------

    def set_alias(
        self, name: str, alias: str, version: int, *, actor: str, reason: str | None = None
    ) -> int | None:
        """Point ``alias`` at ``version`` (one upsert), with its audit row, in one transaction.

        Returns:
            The version the alias pointed at before, or None when it is new.

        Raises:
            NotFound: no such model or version.
            PermissionDenied: the model's policy protects ``alias``: it moves only through an
                approved request (:mod:`keel.models.store_governance`).
        """
        with self._write() as conn, conn.begin():
            model_id = self._lock(conn, name).model_id
            self._version_row(conn, name, model_id, version)
            self._refuse_protected(conn, name, model_id, alias, "moving")
            return self._move_alias(
                conn, name, model_id, alias, version, actor=actor, reason=reason
            )

    def delete_alias(self, name: str, alias: str, *, actor: str, reason: str | None = None) -> int:
        """Remove ``alias``, with its audit row, in one transaction.

        Returns:
            The version it pointed at.

        Raises:
            NotFound: no such model or alias.
            PermissionDenied: the model's policy protects ``alias``.
        """
        with self._write() as conn, conn.begin():
            model_id = self._lock(conn, name).model_id
            aliases = self._aliases(conn, model_id)
            if alias in aliases:
                self._refuse_protected(conn, name, model_id, alias, "deleting")
            if alias not in aliases:
                have = ", ".join(f"{a} -> {v}" for a, v in aliases.items()) or "none"
                raise NotFound(
                    f"model {name} has no alias {alias!r}; its aliases: {have}",
                    name=name,
                    alias=alias,
                )
            conn.execute(_a.delete().where(_a.c.model_id == model_id, _a.c.alias == alias))
            previous = aliases[alias]
            append_audit(
                conn,
                name,
                "delete_alias",
                actor=actor,
                version=previous,
                alias=alias,
                reason=reason,
                detail={"from": previous},
            )
            return previous

    # -- audit ------------------------------------------------------------------------------

    def history(self, name: str) -> list[AuditEvent]:
        """Every audit event of model ``name``, oldest first (also after the model is gone).

        Raises:
            NotFound: no model of that name and no event either.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_audit).where(_audit.c.model == name).order_by(_audit.c.id)
            ).all()
            if not rows:
                self._require_model(conn, name)
        return [_event(row) for row in rows]

    # -- helpers ----------------------------------------------------------------------------

    def _move_alias(
        self,
        conn: Connection,
        name: str,
        model_id: int,
        alias: str,
        version: int,
        *,
        actor: str,
        reason: str | None,
        detail: Mapping[str, Any] | None = None,
    ) -> int | None:
        """Upsert the alias and write its ``set_alias`` audit row; the model is locked."""
        previous = self._aliases(conn, model_id).get(alias)
        now = now_ms()
        upsert = self._insert(_a).values(
            model_id=model_id, alias=alias, version=version, updated_at=now, updated_by=actor
        )
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[_a.c.model_id, _a.c.alias],
                set_={"version": version, "updated_at": now, "updated_by": actor},
            )
        )
        append_audit(
            conn,
            name,
            "set_alias",
            actor=actor,
            version=version,
            alias=alias,
            reason=reason,
            detail={"from": previous, "to": version, **(detail or {})},
        )
        return previous

    def _refuse_protected(
        self, conn: Connection, name: str, model_id: int, alias: str, doing: str
    ) -> None:
        """PermissionDenied when the model's policy protects ``alias`` (read under the lock)."""
        protect = conn.execute(select(_p.c.protect).where(_p.c.model_id == model_id)).scalar()
        if protect is None or alias not in json.loads(protect):
            return
        if doing == "moving":
            hint = (
                "it moves only through an approved request "
                f"(keel models alias set, then keel models approve {name} ID)"
            )
        else:
            hint = (
                "take it out of the policy's --protect list first "
                f"(keel models policy set {name} ... or keel models policy clear {name})"
            )
        raise PermissionDenied(
            f"{doing} {name}@{alias} is refused: the model's policy protects it; {hint}",
            name=name,
            alias=alias,
        )

    def _insert_model(
        self,
        conn: Connection,
        name: str,
        *,
        actor: str,
        description: str,
        detail: Mapping[str, Any] | None = None,
    ) -> int | None:
        """Insert the model's row unless it exists; audited. Returns its id when inserted."""
        now = now_ms()
        inserted = conn.execute(
            self._insert(_m)
            .values(
                name=name,
                description=description,
                latest_version=0,
                created_at=now,
                updated_at=now,
                created_by=actor,
            )
            .on_conflict_do_nothing(index_elements=[_m.c.name])
            .returning(_m.c.model_id)
        ).scalar()
        if inserted is not None:
            append_audit(conn, name, "create_model", actor=actor, detail=detail)
        return inserted

    def _lock(self, conn: Connection, name: str) -> Any:
        """The model's row, after touching ``updated_at``: writers of one model queue here."""
        locked = conn.execute(
            update(_m)
            .where(_m.c.name == name)
            .values(updated_at=now_ms())
            .returning(_m.c.model_id, _m.c.description)
        ).first()
        if locked is None:
            self._require_model(conn, name)
        return locked

    def _model_id(self, conn: Connection, name: str) -> int | None:
        return conn.execute(select(_m.c.model_id).where(_m.c.name == name)).scalar()

    def _model_row(self, conn: Connection, name: str) -> Any:
        row = conn.execute(select(_m).where(_m.c.name == name)).first()
        if row is None:
            self._require_model(conn, name)
        return row

    def _require_model(self, conn: Connection, name: str) -> int:
        model_id = self._model_id(conn, name)
        if model_id is not None:
            return model_id
        names = conn.execute(select(_m.c.name).order_by(_m.c.name).limit(1000)).scalars().all()
        close = difflib.get_close_matches(name, names, n=3)
        if close:
            hint = f"; did you mean {', '.join(close)}?"
        elif names:
            hint = f"; there are {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}"
        else:
            hint = "; none is registered yet (keel models register runs:/RUN_ID/model NAME)"
        raise NotFound(f"no registered model named {name!r}{hint}", name=name)

    def _model(self, conn: Connection, name: str) -> RegisteredModel:
        row = self._model_row(conn, name)
        tags = self._tags_by(conn, _mt, _mt.c.model_id, [row.model_id])[row.model_id]
        return _registered(row, tags, self._aliases(conn, row.model_id))

    def _version_row(self, conn: Connection, name: str, model_id: int, version: int) -> Any:
        row = conn.execute(
            select(_v).where(_v.c.model_id == model_id, _v.c.version == version)
        ).first()
        if row is not None:
            return row
        numbers = (
            conn.execute(
                select(_v.c.version).where(_v.c.model_id == model_id).order_by(_v.c.version)
            )
            .scalars()
            .all()
        )
        raise NotFound(
            f"model {name} has no version {version}; it has {_ranges(list(numbers)) or 'none'}",
            name=name,
            version=version,
        )

    def _versions(
        self, conn: Connection, name: str, model_id: int, numbers: list[int] | None
    ) -> list[ModelVersion]:
        query = select(_v).where(_v.c.model_id == model_id).order_by(_v.c.version.desc())
        if numbers is not None:
            query = query.where(_v.c.version.in_(numbers))
        rows = conn.execute(query).all()
        tags = self._tags_by(conn, _vt, _vt.c.version_id, [row.version_id for row in rows])
        by_version: dict[int, list[str]] = defaultdict(list)
        for alias, number in self._aliases(conn, model_id).items():
            by_version[number].append(alias)
        return [
            _model_version(name, row, tags[row.version_id], by_version[row.version]) for row in rows
        ]

    def _aliases(self, conn: Connection, model_id: int) -> dict[str, int]:
        rows = conn.execute(
            select(_a.c.alias, _a.c.version).where(_a.c.model_id == model_id).order_by(_a.c.alias)
        )
        return {row.alias: row.version for row in rows}

    def _tags_by(
        self, conn: Connection, table: Any, owner: Any, ids: list[int]
    ) -> dict[int, dict[str, str]]:
        tags: dict[int, dict[str, str]] = defaultdict(dict)
        if not ids:
            return tags
        rows = conn.execute(
            select(owner, table.c.key, table.c.value).where(owner.in_(ids)).order_by(table.c.key)
        )
        for owner_id, key, value in rows:
            tags[owner_id][key] = value
        return tags

    def _tag_owner(
        self, conn: Connection, name: str, version: int | None
    ) -> tuple[Any, dict[str, int]]:
        model_id = self._lock(conn, name).model_id
        if version is None:
            return _mt, {"model_id": model_id}
        return _vt, {"version_id": self._version_row(conn, name, model_id, version).version_id}

    def _tag_value(self, conn: Connection, table: Any, owner: dict[str, int], key: str) -> Any:
        return conn.execute(
            select(table.c.value).where(*_owner_match(table, owner), table.c.key == key)
        ).scalar()

    def _upsert_tag(
        self, conn: Connection, table: Any, owner: dict[str, int], key: str, value: str
    ) -> None:
        statement = self._insert(table).values(**owner, key=key, value=value)
        try:
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[*owner, "key"], set_={"value": value}
                )
            )
        except IntegrityError as error:  # pragma: no cover - the owner was locked above
            raise NotFound(f"cannot tag: {error.orig}") from error


def _owner_match(table: Any, owner: dict[str, int]) -> list[Any]:
    return [table.c[column] == value for column, value in owner.items()]


def _registered(row: Any, tags: dict[str, str], aliases: dict[str, int]) -> RegisteredModel:
    return RegisteredModel(
        name=row.name,
        description=row.description,
        tags=dict(tags),
        aliases=dict(aliases),
        latest_version=row.latest_version or None,
        created_at=from_ms(row.created_at),
        updated_at=from_ms(row.updated_at),
        created_by=row.created_by,
    )


def _model_version(name: str, row: Any, tags: dict[str, str], aliases: list[str]) -> ModelVersion:
    return ModelVersion(
        name=name,
        version=row.version,
        source=row.source,
        run_id=row.run_id,
        digest=row.digest,
        flavor=row.flavor,
        signature=Signature.model_validate_json(row.signature) if row.signature else None,
        description=row.description,
        tags=dict(tags),
        aliases=sorted(aliases),
        created_at=from_ms(row.created_at),
        created_by=row.created_by,
    )


def _event(row: Any) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        model=row.model,
        action=row.action,
        version=row.version,
        alias=row.alias,
        actor=row.actor,
        reason=row.reason,
        detail=json.loads(row.detail),
        at=from_ms(row.at),
    )


def _ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    parts: list[str] = []
    for n in numbers:
        if parts and n == int(parts[-1].rsplit("-", 1)[-1]) + 1:
            start = parts[-1].split("-", 1)[0]
            parts[-1] = f"{start}-{n}"
        else:
            parts.append(str(n))
    return ", ".join(parts)


def append_audit(
    conn: Connection,
    name: str,
    action: str,
    *,
    actor: str,
    version: int | None = None,
    alias: str | None = None,
    reason: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Append one ``model_audit`` row in the caller's transaction (so a change and its audit
    row commit or roll back together); its id."""
    inserted = conn.execute(
        _audit.insert()
        .values(
            model=name,
            action=action,
            version=version,
            alias=alias,
            actor=actor,
            reason=reason,
            detail=json.dumps(dict(detail or {}), sort_keys=True),
            at=now_ms(),
        )
        .returning(_audit.c.id)
    )
    return int(inserted.scalar_one())
