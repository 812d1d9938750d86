"""Metric persistence: batched history writes, the latest value per key, curves and buckets.

Points arrive in batches: one ``executemany`` into the history and one upsert of the latest
value per (run, key), where a point replaces the latest only if its (step, timestamp) is not
older. Reads of long histories are aggregated in SQL (curves, downsampled buckets). The ids of
remote clients' batches are kept for :data:`WRITE_BATCH_RETENTION`, so a retried batch is
stored once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, and_, delete, func, or_, select
from sqlalchemy.exc import SQLAlchemyError

from keel.db import schema
from keel.errors import NotFound
from keel.tracking.models import Metric, MetricBucket
from keel.tracking.store_base import IN_CHUNK, PointTuple, SqlStore, now_ms
from keel.tracking.store_blocks import (
    block_of,
    block_rows,
    bucket_blocks,
    merge_blocks,
)

__all__ = ["WRITE_BATCH_RETENTION", "MetricCurve", "MetricsStore"]

log = logging.getLogger(__name__)

WRITE_BATCH_RETENTION = 7 * 24 * 3600.0
"""Seconds a batch id is remembered. A client retries within seconds; a batch resent later than
this (an outbox ``keel sync`` delivers a week late) is stored again if it had been applied."""

PRUNE_INTERVAL = 3600.0
"""Seconds between two prunes of expired batch ids by one store. Each prune scans the table
(``created_at`` has no index), so it runs at most this often, not on every batch."""

_PRUNE_CHUNK = 10_000  # batch ids deleted per transaction: a writer never waits long on them


@dataclass
class MetricCurve:
    """The shape of one metric's history, for a sparkline."""

    count: int
    low: float | None
    high: float | None
    first_step: int
    last_step: int
    means: list[float] = field(default_factory=list)


class MetricsStore(SqlStore):
    """Metric history and latest values (the high-volume half of the tracking store)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        placeholder = "%s" if engine.dialect.paramstyle in ("format", "pyformat") else "?"
        columns = "run_key, key, value, is_nan, step, timestamp"
        self._metrics_sql = (
            f"INSERT INTO metrics ({columns}) VALUES ({', '.join([placeholder] * 6)})"
        )
        lm = schema.latest_metrics
        self._latest_upsert = self._upsert(
            lm,
            key=("run_id", "key"),
            newer=lambda new: or_(
                new.step > lm.c.step,
                and_(new.step == lm.c.step, new.timestamp >= lm.c.timestamp),
            ),
        )
        self._blocks_upsert = merge_blocks(self._insert)
        self._next_prune = 0.0  # time.monotonic() of the next prune of expired batch ids

    def _insert_history(self, conn: Any, history: list[tuple[Any, ...]]) -> None:
        """Append rows to the history: one COPY on PostgreSQL, an executemany on SQLite.

        psycopg's executemany sends one INSERT per row: 5,000 points took about 140-200 ms of
        server time that way, against about 45 ms as a COPY, in the same transaction.
        """
        if self.engine.dialect.name != "postgresql":
            conn.exec_driver_sql(self._metrics_sql, history)
            return
        raw = conn.connection.driver_connection  # the psycopg connection, in this transaction
        with raw.cursor() as cursor, cursor.copy(_COPY_METRICS) as copy:
            for row in history:
                copy.write_row(row)

    def _run_keys(self, run_ids: Iterable[str]) -> dict[str, int]:
        """Integer keys of runs (cached); raises NotFound naming every id that does not exist."""
        wanted = set(run_ids)
        missing = [r for r in wanted if r not in self._run_key_cache]
        if missing:
            r = schema.runs
            with self._read() as conn:
                for start in range(0, len(missing), IN_CHUNK):
                    chunk = missing[start : start + IN_CHUNK]
                    query = select(r.c.run_id, r.c.run_key).where(r.c.run_id.in_(chunk))
                    self._run_key_cache.update((rid, key) for rid, key in conn.execute(query))
            absent = sorted(r for r in missing if r not in self._run_key_cache)
            if absent:
                raise NotFound(
                    f"cannot log metrics to runs that do not exist: {', '.join(absent)}",
                    run_ids=absent,
                )
        if len(self._run_key_cache) > 100_000:
            keep = {r: self._run_key_cache[r] for r in wanted}
            self._run_key_cache.clear()
            self._run_key_cache.update(keep)
        return {r: self._run_key_cache[r] for r in wanted}

    def log_metric_points(
        self, points: Sequence[PointTuple], *, batch_id: str | None = None
    ) -> bool:
        """Write a batch of points to the history and advance the latest value per key.

        The batch is written whole or not at all. With a ``batch_id``, the id is recorded in
        the same transaction, and a batch whose id is already recorded is skipped, so a client
        that retries a batch after a lost answer stores its points once. Ids older than
        :data:`WRITE_BATCH_RETENTION` are deleted after a recorded batch, at most every
        :data:`PRUNE_INTERVAL` seconds.

        Returns:
            False when the batch was skipped as already applied, else True.

        Raises:
            NotFound: a point names a run that does not exist (its ids are in ``run_ids``).
        """
        if not points:
            return True
        keys = self._run_keys(p[0] for p in points)
        history = [
            (keys[run_id], key, None if value != value else value, value != value, step, ts)
            for run_id, key, value, step, ts in points
        ]
        latest: dict[tuple[str, str], PointTuple] = {}
        for point in points:
            slot = (point[0], point[1])
            best = latest.get(slot)
            if best is None or (point[3], point[4]) >= (best[3], best[4]):
                latest[slot] = point
        latest_rows = [
            {
                "run_id": run_id,
                "key": key,
                "value": None if value != value else value,
                "is_nan": value != value,
                "step": step,
                "timestamp": ts,
            }
            for run_id, key, value, step, ts in latest.values()
        ]
        with self._write() as conn, conn.begin():
            if batch_id is not None:
                wb = schema.write_batches
                # RETURNING, not rowcount: SQLAlchemy reports -1 as an INSERT's rowcount on
                # PostgreSQL, which let every retried batch through
                claim = self._insert(wb).on_conflict_do_nothing().returning(wb.c.batch_id)
                row = {"batch_id": batch_id, "created_at": now_ms()}
                if conn.execute(claim, row).first() is None:
                    return False
            self._insert_history(conn, history)
            conn.execute(self._latest_upsert, latest_rows)
            conn.execute(
                self._blocks_upsert, block_rows((h[0], h[1], h[2], h[4], h[5]) for h in history)
            )
        if batch_id is not None:
            self._prune_now_and_then()
        return True

    def _prune_now_and_then(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_INTERVAL
        try:
            self.prune_write_batches()
        except SQLAlchemyError:
            # the batch is stored; the ids wait for the next prune
            log.warning("keel: could not delete expired metric batch ids", exc_info=True)

    def prune_write_batches(self, *, older_than: float = WRITE_BATCH_RETENTION) -> int:
        """Forget the ids of metric batches recorded more than ``older_than`` seconds ago.

        Deleted a chunk per transaction, so writers are never held up for long. A batch
        resent after its id is gone is stored again.

        Returns:
            How many ids were deleted.
        """
        wb = schema.write_batches
        cutoff = now_ms() - int(older_than * 1000)
        expired = select(wb.c.batch_id).where(wb.c.created_at < cutoff).limit(_PRUNE_CHUNK)
        statement = delete(wb).where(wb.c.batch_id.in_(expired))
        deleted = 0
        while True:
            with self._write() as conn, conn.begin():
                count = conn.execute(statement).rowcount
            deleted += count
            if count < _PRUNE_CHUNK:
                return deleted

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        m, r = schema.metrics, schema.runs
        run_key = select(r.c.run_key).where(r.c.run_id == run_id).scalar_subquery()
        query = (
            select(m.c.key, m.c.value, m.c.is_nan, m.c.step, m.c.timestamp)
            .where(m.c.run_key == run_key, m.c.key == key)
            .order_by(m.c.step, m.c.timestamp, m.c.id)
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
            if not rows:
                self._require_run(conn, run_id, active=False)
        return [
            Metric.model_construct(key=k, value=math.nan if nan else v, step=step, timestamp=ts)
            for k, v, nan, step, ts in rows
        ]

    def metric_curves(self, run_id: str, *, buckets: int = 40) -> dict[str, MetricCurve]:
        """Per metric key: point count, min, max and the mean of each of ``buckets`` step ranges.

        Computed in SQL (two grouped queries), so a key with a million points costs no more
        than its index scan.
        """
        m, r = schema.metrics, schema.runs
        run_key = select(r.c.run_key).where(r.c.run_id == run_id).scalar_subquery()
        summary = (
            select(
                m.c.key,
                func.count().label("n"),
                func.min(m.c.value).label("lo"),
                func.max(m.c.value).label("hi"),
                func.min(m.c.step).label("first"),
                func.max(m.c.step).label("last"),
            )
            .where(m.c.run_key == run_key)
            .group_by(m.c.key)
            .subquery()
        )
        span = summary.c.last - summary.c.first + 1
        # divide by the bucket width: multiplying by the bucket count first overflowed a
        # PostgreSQL bigint for steps near 2**62
        width = (span + (buckets - 1)) // buckets
        bucket = ((m.c.step - summary.c.first) // width).label("bucket")
        means = (
            select(m.c.key, bucket, func.avg(m.c.value))
            .join(summary, summary.c.key == m.c.key)
            .where(m.c.run_key == run_key)
            .group_by(m.c.key, bucket)
            .order_by(m.c.key, bucket)
        )
        with self._read() as conn:
            curves = {
                key: MetricCurve(count=n, low=lo, high=hi, first_step=first, last_step=last)
                for key, n, lo, hi, first, last in conn.execute(select(summary))
            }
            for key, _bucket, mean in conn.execute(means):
                if mean is not None:
                    curves[key].means.append(float(mean))
        return curves

    def metric_buckets(self, run_id: str, key: str, *, buckets: int) -> list[MetricBucket]:
        """A metric's history cut into at most ``buckets`` step ranges, summarised in SQL.

        Each non-empty bucket has its first and last step, point count, min and max (NaN
        skipped) and the value at its last step. A series long enough for every bucket to
        hold whole blocks of :data:`BLOCK_STEPS` steps is read from the rollup
        (``metric_blocks``, see :mod:`keel.tracking.store_blocks`): about 7,800 rows for a
        million points, its buckets aligned to block edges. A shorter one is cut into equal
        step ranges and read from the points: one aggregate per bucket over its index range
        plus index seeks, so nothing is sorted (a GROUP BY on the bucket sorts every point:
        SQLite has no hash aggregation, and PostgreSQL cannot estimate the bucket count).

        Raises:
            NotFound: no such run.
        """
        m, r = schema.metrics, schema.runs
        with self._read() as conn:
            run_key = conn.execute(select(r.c.run_key).where(r.c.run_id == run_id)).scalar()
            if run_key is None:
                raise NotFound(f"no run with id {run_id!r}", run_id=run_id)
            in_key = and_(m.c.run_key == run_key, m.c.key == key)
            first = conn.execute(select(func.min(m.c.step)).where(in_key)).scalar()
            last = conn.execute(select(func.max(m.c.step)).where(in_key)).scalar()
            if first is None or last is None:
                return []
            blocks = (block_of(first), block_of(last))
            if blocks[1] - blocks[0] + 1 >= buckets:
                # every bucket holds whole blocks: read the rollup, not the points
                return bucket_blocks(conn, run_key, key, blocks=blocks, buckets=buckets)
            width = -(-(last - first + 1) // max(buckets, 1))
            bounds = [(lo, min(lo + width - 1, last)) for lo in range(first, last + 1, width)]
            sqlite = self.engine.dialect.name == "sqlite"
            sql = _BUCKETS_SQLITE if sqlite else _BUCKETS_POSTGRESQL
            mark = "(?, ?)" if sqlite else "(%s::bigint, %s::bigint)"
            values = ", ".join([mark] * len(bounds))
            params = (run_key, key, *(n for pair in bounds for n in pair))
            found = conn.exec_driver_sql(sql.format(values=values), params).all()
        rows: list[Any] = (
            [_parse_sqlite_bucket(*row) for row in found if row[2] is not None]
            if sqlite
            else list(found)
        )
        return [
            MetricBucket.model_construct(
                first_step=first_step,
                last_step=last_step,
                count=count,
                min=math.nan if low is None else low,
                max=math.nan if high is None else high,
                last=math.nan if final is None else final,
            )
            for count, low, high, first_step, last_step, final in rows
        ]


_COPY_METRICS = "COPY metrics (run_key, key, value, is_nan, step, timestamp) FROM STDIN"

_BUCKETS_SQLITE = """
WITH p(rk, k) AS (SELECT ?, ?), b(lo, hi) AS (VALUES {values})
SELECT
  (SELECT count(*) || ' ' || quote(min(m.value)) || ' ' || quote(max(m.value)) FROM metrics m
   WHERE m.run_key = p.rk AND m.key = p.k AND m.step BETWEEN b.lo AND b.hi),
  (SELECT m.step FROM metrics m
   WHERE m.run_key = p.rk AND m.key = p.k AND m.step BETWEEN b.lo AND b.hi
   ORDER BY m.step LIMIT 1),
  (SELECT m.step || ' ' || quote(m.value) FROM metrics m
   WHERE m.run_key = p.rk AND m.key = p.k AND m.step BETWEEN b.lo AND b.hi
   ORDER BY m.step DESC, m.timestamp DESC, m.id DESC LIMIT 1)
FROM b, p
ORDER BY b.lo
"""

# The same per-bucket shape with LATERAL. On PostgreSQL too it beat one GROUP BY pass (333 ms
# against 532 ms at a million points): the planner cannot tell that the bucket expression has
# few values, so it sorts every point rather than hashing.
_BUCKETS_POSTGRESQL = """
WITH p(rk, k) AS (SELECT %s::bigint, %s::text), b(lo, hi) AS (VALUES {values})
SELECT a.n, a.low, a.high, a.first_step, l.step, l.value
FROM b CROSS JOIN p
CROSS JOIN LATERAL (
  SELECT count(*) AS n, min(m.value) AS low, max(m.value) AS high, min(m.step) AS first_step
  FROM metrics m WHERE m.run_key = p.rk AND m.key = p.k AND m.step BETWEEN b.lo AND b.hi
) a
CROSS JOIN LATERAL (
  SELECT m.step, m.value FROM metrics m
  WHERE m.run_key = p.rk AND m.key = p.k AND m.step BETWEEN b.lo AND b.hi
  ORDER BY m.step DESC, m.timestamp DESC, m.id DESC LIMIT 1
) l
ORDER BY b.lo
"""


def _sql_real(text: str) -> float | None:
    """A REAL as SQLite's quote() prints it ('NULL' for a NaN point, 9.0e+999 for infinity)."""
    return None if text == "NULL" else float(text)


def _parse_sqlite_bucket(
    packed: str, first_step: int, last: str
) -> tuple[int, float | None, float | None, int, int, float | None]:
    count, low, high = packed.split(" ")
    last_step, final = last.split(" ")
    return (
        int(count),
        _sql_real(low),
        _sql_real(high),
        first_step,
        int(last_step),
        _sql_real(final),
    )
