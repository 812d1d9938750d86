"""Persistence of named dataset versions and run inputs on the metadata database (keel.db).

Three tables (revision 0009): ``datasets`` (one row per name), ``dataset_versions`` (numbered
1, 2, 3... per name) and ``run_inputs`` (which run read which version, in what context).

A new version takes the next number inside one write transaction. On SQLite that transaction
holds the write lock (``BEGIN IMMEDIATE``), so writers queue; on PostgreSQL writers of one name
queue on its ``datasets`` row (``SELECT ... FOR UPDATE``). Should two still read the same latest
number, the unique constraint on (dataset, version) turns the loser's insert into an
IntegrityError: :meth:`VersionStore.add_version` then starts over, re-reads the latest version
(which may now be equal content, returned as it is) and takes the next number.

This module reads the ``runs`` and ``experiments`` tables for lineage directly: keel.data may not
import keel.tracking (an import-linter contract), and the database is the contract between them.
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import IntegrityError

from keel.data.profile_models import TableProfile
from keel.data.version_models import DatasetVersion
from keel.db import EngineStore, from_ms, now_ms, schema
from keel.errors import NotFound, StorageError

__all__ = ["DatasetRun", "DatasetSummary", "Lineage", "RunInput", "VersionStore"]

ADD_ATTEMPTS = 50
"""Times :meth:`VersionStore.add_version` starts over after losing a race for a number."""

_dv = schema.dataset_versions
_ds = schema.datasets
_ri = schema.run_inputs


class DatasetRun(BaseModel):
    """A run that produced or read a dataset version."""

    run_id: str
    experiment_id: int
    experiment: str = Field(description="the experiment's name")
    run_name: str
    status: str = Field(description="RUNNING, FINISHED, FAILED, KILLED or LOST")
    context: str | None = Field(
        default=None, description='how the run used it ("train", "eval"); None for the producer'
    )
    at: datetime = Field(description="when the run read it (its start, for the producer)")


class Lineage(BaseModel):
    """Where a dataset version came from and which runs used it."""

    version: DatasetVersion
    produced_by: DatasetRun | None = Field(description="the run that logged it, if any")
    used_by: list[DatasetRun] = Field(description="runs that read it, oldest first")


class RunInput(BaseModel):
    """A dataset version a run read, and how it used it."""

    version: DatasetVersion
    context: str = Field(description='"train", "eval", ...')


class DatasetSummary(BaseModel):
    """One named dataset: how many versions, and its latest."""

    name: str
    versions: int
    latest: DatasetVersion


class VersionStore(EngineStore):
    """Dataset versions and run inputs over an engine at the head schema.

    Args:
        engine: a Keel database engine (:func:`keel.db.make_engine`), schema ensured.
    """

    # -- versions ---------------------------------------------------------------------------

    def add_version(
        self,
        name: str,
        *,
        digest: str,
        kind: str,
        format: str | None,
        size: int,
        files: int,
        profile: TableProfile | None,
        source: str | None,
        run_id: str | None,
    ) -> tuple[DatasetVersion, bool]:
        """Record a new version of ``name`` (created if new), unless its latest is this content.

        Returns:
            The version, and True when it is new (False: the latest version had this digest
            and kind already, and is returned as it is).

        Raises:
            StorageError: the database failed, or the race for a number was lost too often.
        """
        profile_json = profile.model_dump_json() if profile is not None else None
        for attempt in range(ADD_ATTEMPTS):
            try:
                with self._write() as conn, conn.begin():
                    dataset_id = self._dataset_id(conn, name, create=True)
                    assert dataset_id is not None
                    # PostgreSQL: writers of one name queue on its row (SQLite: the write
                    # lock is already held); the retry below covers what slips through
                    conn.execute(
                        select(_ds.c.dataset_id)
                        .where(_ds.c.dataset_id == dataset_id)
                        .with_for_update()
                    )
                    latest = conn.execute(
                        select(_dv)
                        .where(_dv.c.dataset_id == dataset_id)
                        .order_by(_dv.c.version.desc())
                        .limit(1)
                    ).first()
                    if latest is not None and (latest.digest, latest.kind) == (digest, kind):
                        return _version(name, latest), False
                    number = 1 if latest is None else latest.version + 1
                    now = now_ms()
                    conn.execute(
                        _dv.insert().values(
                            dataset_id=dataset_id,
                            version=number,
                            digest=digest,
                            kind=kind,
                            format=format,
                            size=size,
                            files=files,
                            profile=profile_json,
                            source=source,
                            run_id=run_id,
                            created_at=now,
                        )
                    )
                    row = conn.execute(
                        select(_dv).where(_dv.c.dataset_id == dataset_id, _dv.c.version == number)
                    ).one()
                    return _version(name, row), True
            except IntegrityError as error:
                if run_id is not None and not self._run_exists(run_id):
                    raise NotFound(
                        f"run {run_id} is not in this database, so it cannot be recorded as "
                        f"the producer of {name}",
                        run_id=run_id,
                    ) from None
                if attempt == ADD_ATTEMPTS - 1:
                    raise StorageError(
                        f"could not number a new version of {name}: {ADD_ATTEMPTS} writers won "
                        f"the race first ({error.orig})",
                        name=name,
                    ) from error
                time.sleep(random.uniform(0.001, 0.01) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def latest_with(self, name: str, digest: str, kind: str) -> DatasetVersion | None:
        """The latest version of ``name`` when it has this content, else None (no dataset too)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_dv)
                .join(_ds, _ds.c.dataset_id == _dv.c.dataset_id)
                .where(_ds.c.name == name)
                .order_by(_dv.c.version.desc())
                .limit(1)
            ).first()
        if row is None or (row.digest, row.kind) != (digest, kind):
            return None
        return _version(name, row)

    def get_version(self, name: str, version: int | None = None) -> DatasetVersion:
        """Version ``version`` of ``name``; its latest when ``version`` is None.

        Raises:
            NotFound: no dataset of that name (the message lists similar ones), or no such
                version (the message says which versions exist).
        """
        with self.engine.connect() as conn:
            dataset_id = self._require_dataset(conn, name)
            query = select(_dv).where(_dv.c.dataset_id == dataset_id)
            if version is None:
                row = conn.execute(query.order_by(_dv.c.version.desc()).limit(1)).first()
            else:
                row = conn.execute(query.where(_dv.c.version == version)).first()
            if row is None:
                numbers = conn.execute(
                    select(_dv.c.version)
                    .where(_dv.c.dataset_id == dataset_id)
                    .order_by(_dv.c.version)
                ).scalars()
                raise NotFound(
                    f"dataset {name} has no version {version}; it has "
                    f"{_ranges(list(numbers)) or 'none'}",
                    name=name,
                    version=version,
                )
            return _version(name, row)

    def list_versions(self, name: str) -> list[DatasetVersion]:
        """Every version of ``name``, newest first.

        Raises:
            NotFound: no dataset of that name.
        """
        with self.engine.connect() as conn:
            dataset_id = self._require_dataset(conn, name)
            rows = conn.execute(
                select(_dv).where(_dv.c.dataset_id == dataset_id).order_by(_dv.c.version.desc())
            ).all()
        return [_version(name, row) for row in rows]

    def list_datasets(self) -> list[DatasetSummary]:
        """Every named dataset with its version count and latest version, by name."""
        counts = (
            select(
                _dv.c.dataset_id,
                func.count().label("n"),
                func.max(_dv.c.version).label("latest"),
            )
            .group_by(_dv.c.dataset_id)
            .subquery()
        )
        query = (
            select(_ds.c.name, counts.c.n, _dv)
            .join(counts, counts.c.dataset_id == _ds.c.dataset_id)
            .join(
                _dv,
                (_dv.c.dataset_id == counts.c.dataset_id) & (_dv.c.version == counts.c.latest),
            )
            .order_by(_ds.c.name)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            DatasetSummary(name=row.name, versions=row.n, latest=_version(row.name, row))
            for row in rows
        ]

    # -- inputs and lineage -----------------------------------------------------------------

    def record_input(self, run_id: str, version: DatasetVersion, context: str) -> bool:
        """Record that run ``run_id`` read ``version`` in ``context``; once per triple.

        Returns:
            True when recorded now, False when it was recorded already.

        Raises:
            NotFound: the run, or the version, is not in this database.
        """
        with self._write() as conn, conn.begin():
            version_id = self._version_id(conn, version.name, version.version)
            if not self._run_exists(run_id, conn=conn):
                raise NotFound(
                    f"run {run_id} is not in this database ({_safe_url(self.engine)}), so "
                    f"its input {version.ref} cannot be recorded",
                    run_id=run_id,
                )
            inserted = conn.execute(
                self._insert(_ri)
                .values(run_id=run_id, version_id=version_id, context=context, created_at=now_ms())
                .on_conflict_do_nothing()
            )
            return bool(inserted.rowcount)

    def lineage(self, name: str, version: int | None = None) -> Lineage:
        """The run that produced version ``version`` of ``name`` and the runs that read it.

        Raises:
            NotFound: no such dataset or version.
        """
        found = self.get_version(name, version)
        runs, experiments = schema.runs, schema.experiments
        columns = (
            runs.c.run_id,
            runs.c.experiment_id,
            experiments.c.name.label("experiment"),
            runs.c.run_name,
            runs.c.status,
            runs.c.start_time,
        )
        with self.engine.connect() as conn:
            version_id = self._version_id(conn, name, found.version)
            used = conn.execute(
                select(*columns, _ri.c.context, _ri.c.created_at)
                .join(runs, runs.c.run_id == _ri.c.run_id)
                .join(experiments, experiments.c.experiment_id == runs.c.experiment_id)
                .where(_ri.c.version_id == version_id)
                .order_by(_ri.c.created_at, _ri.c.run_id, _ri.c.context)
            ).all()
            producer = None
            if found.run_id is not None:
                producer = conn.execute(
                    select(*columns)
                    .join(experiments, experiments.c.experiment_id == runs.c.experiment_id)
                    .where(runs.c.run_id == found.run_id)
                ).first()
        return Lineage(
            version=found,
            produced_by=_run(producer, None, producer.start_time) if producer else None,
            used_by=[_run(row, row.context, row.created_at) for row in used],
        )

    def run_inputs(self, run_id: str) -> list[RunInput]:
        """The dataset versions run ``run_id`` read, in the order it read them (empty if none)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_dv, _ds.c.name, _ri.c.context)
                .select_from(_ri)
                .join(_dv, _dv.c.version_id == _ri.c.version_id)
                .join(_ds, _ds.c.dataset_id == _dv.c.dataset_id)
                .where(_ri.c.run_id == run_id)
                .order_by(_ri.c.created_at, _ds.c.name, _dv.c.version, _ri.c.context)
            ).all()
        return [RunInput(version=_version(row.name, row), context=row.context) for row in rows]

    # -- helpers ----------------------------------------------------------------------------

    def _dataset_id(self, conn: Connection, name: str, *, create: bool = False) -> int | None:
        found = conn.execute(select(_ds.c.dataset_id).where(_ds.c.name == name)).scalar()
        if found is not None or not create:
            return found
        conn.execute(
            self._insert(_ds).values(name=name, created_at=now_ms()).on_conflict_do_nothing()
        )
        return conn.execute(select(_ds.c.dataset_id).where(_ds.c.name == name)).scalar_one()

    def _require_dataset(self, conn: Connection, name: str) -> int:
        dataset_id = self._dataset_id(conn, name)
        if dataset_id is not None:
            return dataset_id
        names = conn.execute(select(_ds.c.name).order_by(_ds.c.name).limit(1000)).scalars().all()
        import difflib

        close = difflib.get_close_matches(name, names, n=3)
        if close:
            hint = f"; did you mean {', '.join(close)}?"
        else:
            hint = f"; there are {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}"
        if not names:
            hint = "; none is logged yet (keel.data.log_dataset or keel data add --name)"
        raise NotFound(f"no dataset named {name!r}{hint}", name=name)

    def _version_id(self, conn: Connection, name: str, version: int) -> int:
        version_id = conn.execute(
            select(_dv.c.version_id)
            .join(_ds, _ds.c.dataset_id == _dv.c.dataset_id)
            .where(_ds.c.name == name, _dv.c.version == version)
        ).scalar()
        if version_id is None:
            raise NotFound(
                f"dataset version {name}@{version} is not in this database",
                name=name,
                version=version,
            )
        return int(version_id)

    def _run_exists(self, run_id: str, *, conn: Connection | None = None) -> bool:
        query = select(schema.runs.c.run_id).where(schema.runs.c.run_id == run_id)
        if conn is not None:
            return conn.execute(query).first() is not None
        with self.engine.connect() as fresh:
            return fresh.execute(query).first() is not None


def _version(name: str, row: Any) -> DatasetVersion:
    profile = TableProfile.model_validate_json(row.profile) if row.profile else None
    return DatasetVersion(
        name=name,
        version=row.version,
        digest=row.digest,
        kind=row.kind,
        format=row.format,
        size=row.size,
        files=row.files,
        profile=profile,
        source=row.source,
        run_id=row.run_id,
        created_at=from_ms(row.created_at),
    )


def _run(row: Any, context: str | None, at_ms: int) -> DatasetRun:
    return DatasetRun(
        run_id=row.run_id,
        experiment_id=row.experiment_id,
        experiment=row.experiment,
        run_name=row.run_name,
        status=row.status,
        context=context,
        at=from_ms(at_ms),
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


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
