"""Persistence of experiments, runs, params, tags and artifact entries (SQL Core).

:class:`TrackingStore` is the one store object callers use; metric persistence lives in
:mod:`keel.tracking.store_metrics` and the shared transaction plumbing in
:mod:`keel.tracking.store_base`, whose public names are re-exported here.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, case, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from keel.db import schema
from keel.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from keel.tracking.models import (
    ArtifactEntry,
    Experiment,
    LifecycleStage,
    Run,
    RunStatus,
)
from keel.tracking.query import build_search
from keel.tracking.store_base import (
    IN_CHUNK,
    MAX_KEY_LENGTH,
    MetricPoint,
    PointTuple,
    RunningRun,
    check_key,
    now_ms,
)
from keel.tracking.store_metrics import MetricCurve, MetricsStore

__all__ = [
    "MAX_KEY_LENGTH",
    "MetricCurve",
    "MetricPoint",
    "PointTuple",
    "RunningRun",
    "TrackingStore",
    "check_key",
    "now_ms",
]

MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
_RUN_ID = re.compile(r"[0-9a-f]{32}")


class TrackingStore(MetricsStore):
    """SQL persistence for tracking; one instance per engine, safe to share between threads."""

    # -- experiments ----------------------------------------------------------------------
    # -- experiments ----------------------------------------------------------------------
    def create_experiment(self, name: str, *, tags: Mapping[str, str] | None = None) -> int:
        name = _check_name(name, what="experiment")
        now = now_ms()
        try:
            with self._write() as conn, conn.begin():
                experiment_id = conn.execute(
                    schema.experiments.insert()
                    .values(name=name, lifecycle_stage="active", created_at=now, updated_at=now)
                    .returning(schema.experiments.c.experiment_id)
                ).scalar_one()
                if tags:
                    conn.execute(
                        schema.experiment_tags.insert(),
                        [
                            {"experiment_id": experiment_id, "key": k, "value": str(v)}
                            for k, v in tags.items()
                        ],
                    )
        except IntegrityError as exc:
            raise AlreadyExists(
                f"an experiment named {name!r} already exists (it may be deleted: restore it "
                "or pick another name)",
                name=name,
            ) from exc
        return int(experiment_id)

    def get_experiment(self, experiment_id: int) -> Experiment:
        # an id beyond the 32-bit column cannot exist (PostgreSQL would refuse the query)
        in_range = -(2**31) <= experiment_id < 2**31
        found = (
            self._experiments(schema.experiments.c.experiment_id == experiment_id)
            if in_range
            else []
        )
        if not found:
            raise NotFound(f"no experiment with id {experiment_id}", experiment_id=experiment_id)
        return found[0]

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        if "\x00" in name:  # no name holds NUL (PostgreSQL cannot even compare one)
            return None
        found = self._experiments(schema.experiments.c.name == name)
        return found[0] if found else None

    def list_experiments(self, *, lifecycle: str = "active") -> list[Experiment]:
        condition = (
            None if lifecycle == "all" else schema.experiments.c.lifecycle_stage == lifecycle
        )
        return self._experiments(condition)

    def _experiments(self, condition: Any) -> list[Experiment]:
        e, t = schema.experiments, schema.experiment_tags
        query = select(e).order_by(e.c.experiment_id)
        if condition is not None:
            query = query.where(condition)
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
            ids = [row["experiment_id"] for row in rows]
            tag_rows = (
                conn.execute(select(t).where(t.c.experiment_id.in_(ids))).all() if ids else []
            )
        tags_by_id: dict[int, dict[str, str]] = {}
        for experiment_id, key, value in tag_rows:
            tags_by_id.setdefault(experiment_id, {})[key] = value
        return [Experiment(**row, tags=tags_by_id.get(row["experiment_id"], {})) for row in rows]

    def rename_experiment(self, experiment_id: int, new_name: str) -> None:
        new_name = _check_name(new_name, what="experiment")
        try:
            self._update_experiment(experiment_id, name=new_name)
        except IntegrityError as exc:
            raise AlreadyExists(
                f"an experiment named {new_name!r} already exists", name=new_name
            ) from exc

    def set_experiment_lifecycle(self, experiment_id: int, stage: LifecycleStage) -> None:
        """Delete or restore an experiment, and with it every run it holds."""
        with self._write() as conn, conn.begin():
            self._update_experiment(experiment_id, conn=conn, lifecycle_stage=stage.value)
            conn.execute(
                update(schema.runs)
                .where(schema.runs.c.experiment_id == experiment_id)
                .values(
                    lifecycle_stage=stage.value,
                    deleted_at=now_ms() if stage is LifecycleStage.DELETED else None,
                )
            )

    def _update_experiment(
        self, experiment_id: int, *, conn: Connection | None = None, **values: Any
    ) -> None:
        statement = (
            update(schema.experiments)
            .where(schema.experiments.c.experiment_id == experiment_id)
            .values(updated_at=now_ms(), **values)
        )
        if conn is None:
            with self._write() as own, own.begin():
                count = own.execute(statement).rowcount
        else:
            count = conn.execute(statement).rowcount
        if not count:
            raise NotFound(f"no experiment with id {experiment_id}", experiment_id=experiment_id)

    # -- runs -----------------------------------------------------------------------------
    def create_run(
        self,
        *,
        experiment_id: int,
        run_name: str | None,
        user: str,
        host: str,
        pid: int | None,
        process_space: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        start_time: int | None = None,
    ) -> Run:
        """Insert a RUNNING run (``pid`` and ``process_space`` name a process of this machine).

        Raises:
            NotFound: no such experiment, or no run ``parent_run_id`` (the parent may be in
                another experiment, or deleted, as in MLflow, but it must exist).
            InvalidInput: the experiment is deleted, or a name, tag or key is malformed.
        """
        run_id = uuid.uuid4().hex
        start = start_time if start_time is not None else now_ms()
        name = run_name or _generated_name(run_id)
        _check_name(name, what="run")
        tag_rows = [
            {"run_id": run_id, "key": check_key(k, what="tag"), "value": _tag_value(v)}
            for k, v in (tags or {}).items()
        ]
        with self._write() as conn, conn.begin():
            stage = conn.execute(
                select(schema.experiments.c.lifecycle_stage).where(
                    schema.experiments.c.experiment_id == experiment_id
                )
            ).scalar()
            if stage is None:
                raise NotFound(
                    f"no experiment with id {experiment_id}", experiment_id=experiment_id
                )
            if stage != "active":
                raise InvalidInput(
                    f"experiment {experiment_id} is deleted; restore it before adding runs",
                    experiment_id=experiment_id,
                )
            if parent_run_id is not None:
                self._require_parent(conn, parent_run_id)
            run_key = conn.execute(
                schema.runs.insert()
                .returning(schema.runs.c.run_key)
                .values(
                    run_id=run_id,
                    experiment_id=experiment_id,
                    run_name=name,
                    status=RunStatus.RUNNING.value,
                    user_name=user,
                    start_time=start,
                    lifecycle_stage="active",
                    parent_run_id=parent_run_id,
                    host=host,
                    pid=pid,
                    process_space=process_space,
                    # the insert time, not the caller's start_time (which may be in the past)
                    heartbeat_at=now_ms(),
                )
            ).scalar_one()
            if tag_rows:
                conn.execute(schema.tags.insert(), tag_rows)
        self._run_key_cache[run_id] = int(run_key)
        return Run(
            run_id=run_id,
            experiment_id=experiment_id,
            run_name=name,
            status=RunStatus.RUNNING,
            user=user,
            start_time=start,
            parent_run_id=parent_run_id,
            host=host,
            tags={row["key"]: row["value"] for row in tag_rows},
        )

    def _require_parent(self, conn: Connection, parent_run_id: str) -> None:
        r = schema.runs
        found = (
            _RUN_ID.fullmatch(parent_run_id) is not None
            and conn.execute(select(r.c.run_id).where(r.c.run_id == parent_run_id)).scalar()
            is not None
        )
        if not found:
            raise NotFound(
                f"no run with id {parent_run_id!r} to be the parent of the new run; pass the "
                "id of an existing run as parent_run_id (or none)",
                parent_run_id=parent_run_id,
            )

    def set_run_status(self, run_id: str, status: RunStatus, *, end_time: int | None) -> None:
        """Set a run's status and end time.

        Args:
            end_time: when the run ended (ms since the epoch); None means now, or the run's
                start if that is later (a caller's clock ahead of this one), so a time this
                store picks never makes a negative duration.

        Raises:
            NotFound: no such run.
            InvalidInput: ``end_time`` is before the run's start time.
        """
        r = schema.runs
        with self._write() as conn, conn.begin():
            start = conn.execute(select(r.c.start_time).where(r.c.run_id == run_id)).scalar()
            if start is None:
                raise NotFound(f"no run with id {run_id!r}", run_id=run_id)
            if end_time is None:
                end_time = max(now_ms(), start)
            elif end_time < start:
                raise InvalidInput(
                    f"run {run_id} cannot end at {end_time} ({_utc(end_time)}): that is before "
                    f"it started, at {start} ({_utc(start)}); send an end_time at or after the "
                    "start_time, or none to end it now",
                    run_id=run_id,
                    start_time=start,
                    end_time=end_time,
                )
            conn.execute(
                update(r).where(r.c.run_id == run_id).values(status=status.value, end_time=end_time)
            )

    def rename_run(self, run_id: str, new_name: str) -> None:
        _check_name(new_name, what="run")
        with self._write() as conn, conn.begin():
            count = conn.execute(
                update(schema.runs).where(schema.runs.c.run_id == run_id).values(run_name=new_name)
            ).rowcount
        if not count:
            raise NotFound(f"no run with id {run_id!r}", run_id=run_id)

    def set_run_lifecycle(self, run_ids: Sequence[str], stage: LifecycleStage) -> int:
        """Soft-delete or restore runs; returns how many changed."""
        with self._write() as conn, conn.begin():
            return conn.execute(
                update(schema.runs)
                .where(schema.runs.c.run_id.in_(list(run_ids)))
                .values(
                    lifecycle_stage=stage.value,
                    deleted_at=now_ms() if stage is LifecycleStage.DELETED else None,
                )
            ).rowcount

    def get_run(self, run_id: str) -> Run:
        runs = self.get_runs([run_id])
        if not runs:
            raise NotFound(
                f"no run with id {run_id!r}; list runs with: keel runs list", run_id=run_id
            )
        return runs[0]

    def get_runs(self, run_ids: Sequence[str]) -> list[Run]:
        """Runs with their params, latest metrics and tags, in the order of ``run_ids``."""
        r = schema.runs
        base: dict[str, dict[str, Any]] = {}
        params: dict[str, dict[str, str]] = {}
        metrics: dict[str, dict[str, float]] = {}
        tags: dict[str, dict[str, str]] = {}
        with self._read() as conn:
            for start in range(0, len(run_ids), IN_CHUNK):
                chunk = list(run_ids[start : start + IN_CHUNK])
                for mapping in conn.execute(select(r).where(r.c.run_id.in_(chunk))).mappings():
                    base[mapping["run_id"]] = dict(mapping)
                for table, sink in ((schema.params, params), (schema.tags, tags)):
                    query = select(table.c.run_id, table.c.key, table.c.value).where(
                        table.c.run_id.in_(chunk)
                    )
                    for run_id, key, value in conn.execute(query):
                        sink.setdefault(run_id, {})[key] = value
                lm = schema.latest_metrics
                latest = select(lm.c.run_id, lm.c.key, lm.c.value, lm.c.is_nan).where(
                    lm.c.run_id.in_(chunk)
                )
                for run_id, key, number, nan in conn.execute(latest):
                    metrics.setdefault(run_id, {})[key] = math.nan if nan else number
        out = []
        for run_id in run_ids:
            found = base.get(run_id)
            if found is None:
                continue
            row = found
            out.append(
                Run.model_construct(
                    run_id=run_id,
                    experiment_id=row["experiment_id"],
                    run_name=row["run_name"],
                    status=RunStatus(row["status"]),
                    user=row["user_name"],
                    start_time=row["start_time"],
                    end_time=row["end_time"],
                    lifecycle_stage=LifecycleStage(row["lifecycle_stage"]),
                    parent_run_id=row["parent_run_id"],
                    host=row["host"],
                    params=params.get(run_id, {}),
                    metrics=metrics.get(run_id, {}),
                    tags=tags.get(run_id, {}),
                )
            )
        return out

    def resolve_run_id(self, prefix: str, *, experiment_ids: Sequence[int] | None = None) -> str:
        """The one run id starting with ``prefix`` (ids may be abbreviated, as git's), among
        the runs of ``experiment_ids`` when given (the experiments a caller may see)."""
        text = prefix.strip().lower()
        if not text or any(c not in "0123456789abcdef" for c in text):
            raise InvalidInput(f"{prefix!r} is not a run id (32 hex characters, or a prefix)")
        r = schema.runs
        query = select(r.c.run_id).where(r.c.run_id.like(f"{text}%")).limit(2)
        if experiment_ids is not None:
            query = query.where(r.c.experiment_id.in_(list(experiment_ids)))
        with self._read() as conn:
            found = list(conn.execute(query).scalars())
        if not found:
            raise NotFound(f"no run id starts with {prefix!r}", run_id=prefix)
        if len(found) > 1:
            raise InvalidInput(f"{prefix!r} matches several runs; type more of the id")
        return str(found[0])

    def search_run_ids(
        self,
        *,
        filter_string: str,
        order_by: Sequence[str] | None,
        experiment_ids: Sequence[int] | None,
        lifecycle: str,
        limit: int,
        offset: int,
    ) -> list[str]:
        query = build_search(
            filter_string=filter_string,
            order_by=order_by,
            experiment_ids=experiment_ids,
            lifecycle=lifecycle,
            limit=limit,
            offset=offset,
            dialect=self.engine.dialect.name,
        )
        with self._read() as conn:
            if self.engine.dialect.name == "postgresql":
                # psycopg prepares a statement after 5 runs, and PostgreSQL may then switch to
                # a generic plan that cannot see the values: a search paged with the same SQL
                # went from 2 ms to 220 ms at 100k runs. A custom plan costs ~0.5 ms to make.
                conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
            return [str(run_id) for run_id in conn.execute(query).scalars()]

    def running_runs(self) -> list[RunningRun]:
        r = schema.runs
        query = select(
            r.c.run_id, r.c.host, r.c.pid, r.c.start_time, r.c.heartbeat_at, r.c.process_space
        ).where(r.c.status == RunStatus.RUNNING.value)
        with self._read() as conn:
            return [RunningRun(*row) for row in conn.execute(query)]

    def mark_lost(self, run_ids: Sequence[str]) -> int:
        """Mark RUNNING runs LOST, ending them at their last heartbeat."""
        if not run_ids:
            return 0
        r = schema.runs
        with self._write() as conn, conn.begin():
            return conn.execute(
                update(r)
                .where(r.c.run_id.in_(list(run_ids)), r.c.status == RunStatus.RUNNING.value)
                .values(
                    status=RunStatus.LOST.value,
                    end_time=func.coalesce(r.c.heartbeat_at, r.c.start_time),
                )
            ).rowcount

    def heartbeat(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        with self._write() as conn, conn.begin():
            conn.execute(
                update(schema.runs)
                .where(schema.runs.c.run_id.in_(list(run_ids)))
                .values(heartbeat_at=now_ms())
            )

    # -- params and tags ------------------------------------------------------------------
    def log_params(self, run_id: str, values: Mapping[str, Any]) -> None:
        """Record params; re-logging a key with the same value is a no-op, another is a Conflict."""
        rows = {check_key(k, what="param"): _param_value(k, v) for k, v in values.items()}
        if not rows:
            return
        p = schema.params
        with self._write() as conn, conn.begin():
            self._require_run(conn, run_id)
            existing = dict(
                conn.execute(
                    select(p.c.key, p.c.value).where(p.c.run_id == run_id, p.c.key.in_(list(rows)))
                ).all()
            )
            for key, old in existing.items():
                if old != rows[key]:
                    raise Conflict(
                        f"param {key!r} of run {run_id} is already {old!r}; params are "
                        f"immutable, so it cannot become {rows[key]!r} (log it under another "
                        "key, or start a new run)",
                        run_id=run_id,
                        key=key,
                        old_value=old,
                        new_value=rows[key],
                    )
            new = [
                {"run_id": run_id, "key": k, "value": v}
                for k, v in rows.items()
                if k not in existing
            ]
            if new:
                conn.execute(p.insert(), new)

    def set_tags(self, run_id: str, values: Mapping[str, Any]) -> None:
        rows = [
            {"run_id": run_id, "key": check_key(k, what="tag"), "value": _tag_value(v)}
            for k, v in values.items()
        ]
        if not rows:
            return
        statement = self._upsert(schema.tags, key=("run_id", "key"))
        with self._write() as conn, conn.begin():
            self._require_run(conn, run_id)
            conn.execute(statement, rows)

    def delete_tag(self, run_id: str, key: str) -> None:
        t = schema.tags
        with self._write() as conn, conn.begin():
            count = conn.execute(delete(t).where(t.c.run_id == run_id, t.c.key == key)).rowcount
        if not count:
            raise NotFound(f"run {run_id} has no tag {key!r}", run_id=run_id, key=key)

    def heartbeat_run(self, run_id: str) -> None:
        """Record that a run's process is alive (a remote caller's heartbeat).

        A run marked LOST while its caller was cut off comes back to RUNNING: the heartbeat
        proves its process lives.

        Raises:
            NotFound: no such run.
        """
        r = schema.runs
        revived = r.c.status == RunStatus.LOST.value
        with self._write() as conn, conn.begin():
            count = conn.execute(
                update(r)
                .where(r.c.run_id == run_id)
                .values(
                    heartbeat_at=now_ms(),
                    status=case((revived, RunStatus.RUNNING.value), else_=r.c.status),
                    end_time=case((revived, None), else_=r.c.end_time),
                )
            ).rowcount
        if not count:
            raise NotFound(f"no run with id {run_id!r}", run_id=run_id)

    # -- artifacts ------------------------------------------------------------------------
    def record_artifact(self, run_id: str, entry: ArtifactEntry) -> None:
        self.record_artifacts(run_id, [entry])

    def record_artifacts(self, run_id: str, entries: Sequence[ArtifactEntry]) -> None:
        """Record artifact entries in one transaction; an entry at an existing path replaces it."""
        if not entries:
            return
        statement = self._upsert(schema.artifacts, key=("run_id", "path"))
        now = now_ms()
        with self._write() as conn, conn.begin():
            self._require_run(conn, run_id)
            conn.execute(
                statement,
                [{"run_id": run_id, **e.model_dump(), "created_at": now} for e in entries],
            )

    def artifact_entries(self, run_id: str) -> list[ArtifactEntry]:
        a = schema.artifacts
        query = (
            select(a.c.path, a.c.digest, a.c.size, a.c.kind)
            .where(a.c.run_id == run_id)
            .order_by(a.c.path)
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
            if not rows:
                self._require_run(conn, run_id, active=False)
        return [ArtifactEntry(path=p, digest=d, size=s, kind=k) for p, d, s, k in rows]


# Per bucket (b.lo..b.hi): count/min/max packed in one string (one pass over the range; quote()
# prints a REAL with every digit it needs), the first step, and "step value" at the last step.
def _check_name(name: object, *, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"{what} name must be a non-empty string, got {name!r}")
    if len(name) > MAX_KEY_LENGTH:
        raise InvalidInput(f"{what} name is {len(name)} characters; the limit is 250")
    return name


def _utc(ms: int) -> str:
    """A time in ms since the epoch as ISO 8601 UTC, for messages."""
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return "out of range"


def _param_value(key: str, value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_PARAM_LENGTH:
        raise InvalidInput(
            f"param {key!r} is {len(text)} characters; the limit is {MAX_PARAM_LENGTH} "
            "(log long values as an artifact with keel.log_text)",
            key=key,
        )
    return text


def _tag_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_TAG_LENGTH:
        raise InvalidInput(f"tag value is {len(text)} characters; the limit is {MAX_TAG_LENGTH}")
    return text


_ADJECTIVES = (
    "amber",
    "bold",
    "calm",
    "deft",
    "eager",
    "fleet",
    "keen",
    "lucid",
    "noble",
    "quiet",
    "rapid",
    "sly",
    "steady",
    "swift",
    "vivid",
    "wise",
)
_NOUNS = (
    "otter",
    "heron",
    "lynx",
    "falcon",
    "badger",
    "marten",
    "ibis",
    "orca",
    "puma",
    "raven",
    "stoat",
    "tern",
    "vole",
    "wren",
    "yak",
    "zebu",
)


def _generated_name(run_id: str) -> str:
    """A readable default run name, derived from the run id (stable, no randomness)."""
    n = int(run_id[:8], 16)
    return f"{_ADJECTIVES[n % 16]}-{_NOUNS[(n // 16) % 16]}-{n % 1000:03d}"
