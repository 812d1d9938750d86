"""What every tracking store class shares: transactions, upserts, run checks, key rules.

Every write runs in its own short transaction marked as a writer (``BEGIN IMMEDIATE`` on
SQLite), so concurrent processes queue on the busy timeout instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, select

from keel.db import EngineStore, now_ms, schema
from keel.errors import InvalidInput, NotFound

__all__ = [
    "MAX_KEY_LENGTH",
    "MetricPoint",
    "PointTuple",
    "RunningRun",
    "SqlStore",
    "check_key",
    "now_ms",
]

MAX_KEY_LENGTH = 250
IN_CHUNK = 500  # ids per IN (...) when reading many runs


class MetricPoint(NamedTuple):
    """One logged metric value, as buffered before it is written."""

    run_id: str
    key: str
    value: float
    step: int
    timestamp: int


#: A metric point as the buffer holds it: (run_id, key, value, step, timestamp). MetricPoint is
#: the named form; hot paths build plain tuples.
PointTuple = tuple[str, str, float, int, int]


class RunningRun(NamedTuple):
    """What liveness checks need to know about a RUNNING run."""

    run_id: str
    host: str
    pid: int | None
    start_time: int
    heartbeat_at: int | None
    process_space: str | None = None  # the boot and PID namespace ``pid`` belongs to


def check_key(key: object, *, what: str) -> str:
    """Validate a param, metric or tag key: a non-empty string of at most 250 characters."""
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"{what} key must be a non-empty string, got {key!r}", key=repr(key))
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(
            f"{what} key {key[:40]!r}... is {len(key)} characters; the limit is {MAX_KEY_LENGTH}",
            key=key[:MAX_KEY_LENGTH],
        )
    if "\x00" in key:
        raise InvalidInput(f"{what} key {key!r} contains a NUL character", key=repr(key))
    return key


class SqlStore(EngineStore):
    """Connections, transactions and shared checks over one engine (safe across threads)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._run_key_cache: dict[str, int] = {}

    def _upsert(
        self,
        table: Any,
        *,
        key: tuple[str, ...],
        newer: Callable[[Any], Any] | None = None,
    ) -> Any:
        """INSERT ... ON CONFLICT (key) DO UPDATE every other column [WHERE newer(excluded)]."""
        statement = self._insert(table)
        new = statement.excluded
        return statement.on_conflict_do_update(
            index_elements=list(key),
            set_={c.name: new[c.name] for c in table.c if c.name not in key},
            where=newer(new) if newer is not None else None,
        )

    # -- transactions ---------------------------------------------------------------------
    def _read(self) -> Connection:
        return self.engine.connect()

    def _require_run(self, conn: Connection, run_id: str, *, active: bool = True) -> None:
        """Raise NotFound for a run that does not exist and, unless ``active`` is false,
        InvalidInput for a deleted one (it must be restored before it takes writes)."""
        stage = conn.execute(
            select(schema.runs.c.lifecycle_stage).where(schema.runs.c.run_id == run_id)
        ).scalar()
        if stage is None:
            raise NotFound(f"no run with id {run_id!r}", run_id=run_id)
        if active and stage != "active":
            raise InvalidInput(
                f"run {run_id} is deleted; restore it (keel runs restore {run_id}) to log to it",
                run_id=run_id,
            )
