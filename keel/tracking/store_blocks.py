"""Metric rollups: a summary per (run, key, block of :data:`BLOCK_STEPS` steps).

A downsampled history of a long series (``max_points``) is read from these summaries instead of
every point. A million points are about 7,800 block rows, where per-bucket scans of the points
cost about 0.4 ms a bucket on PostgreSQL. Each row holds the block's point count, min and max
(NaN skipped, as SQL aggregates skip the NULL a NaN is stored as), first and last step, and the
value at its last step (the latest timestamp on a tie, else the latest write). The rows are kept
up to date in the same transaction as each batch of points: the batch is summarised here, then
merged into the stored rows.

A bucket is a run of whole blocks, so its summary is exact. Buckets from blocks are aligned to
block edges rather than cut at equal step ranges; series too short to fill every bucket with a
block are summarised from the points (:meth:`MetricsStore.metric_buckets`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, case, or_

from keel.db import schema
from keel.tracking.models import MetricBucket

__all__ = ["BLOCK_STEPS", "block_of", "block_rows", "bucket_blocks", "merge_blocks"]

BLOCK_STEPS = 128
"""Steps per block: small enough that 1,000 buckets of a 128k-step series are whole blocks,
large enough that the rollup is under 1% of the history's rows."""

_NAN = math.nan


def block_of(step: int) -> int:
    """The block a step falls in (floor division, so negative steps work too)."""
    return step // BLOCK_STEPS


def block_rows(points: Iterable[tuple[int, str, float | None, int, int]]) -> list[dict[str, Any]]:
    """Summaries of ``(run_key, key, value or None for NaN, step, timestamp)`` points, one per
    (run_key, key, block), in the stored rows' shape. Later points win ties for "last"."""
    blocks: dict[tuple[int, str, int], dict[str, Any]] = {}
    for run_key, key, value, step, ts in points:
        slot = (run_key, key, step // BLOCK_STEPS)
        row = blocks.get(slot)
        if row is None:
            blocks[slot] = {
                "run_key": run_key,
                "key": key,
                "block": slot[2],
                "count": 1,
                "min_value": value,
                "max_value": value,
                "first_step": step,
                "last_step": step,
                "last_timestamp": ts,
                "last_value": value,
            }
            continue
        row["count"] += 1
        if value is not None:
            if row["min_value"] is None or value < row["min_value"]:
                row["min_value"] = value
            if row["max_value"] is None or value > row["max_value"]:
                row["max_value"] = value
        row["first_step"] = min(row["first_step"], step)
        if (step, ts) >= (row["last_step"], row["last_timestamp"]):
            row["last_step"], row["last_timestamp"], row["last_value"] = step, ts, value
    return list(blocks.values())


def merge_blocks(insert: Any) -> Any:
    """The upsert that merges :func:`block_rows` into the stored rows (``insert`` is the
    dialect's INSERT: SQLite and PostgreSQL both take ON CONFLICT ... DO UPDATE)."""
    table = schema.metric_blocks
    statement = insert(table)
    new, old = statement.excluded, table.c
    newer = or_(
        new.last_step > old.last_step,
        and_(new.last_step == old.last_step, new.last_timestamp >= old.last_timestamp),
    )

    def lower(a: Any, b: Any) -> Any:  # min that skips NULL (a NaN), on both dialects
        return case((a.is_(None), b), (b.is_(None), a), (a <= b, a), else_=b)

    def higher(a: Any, b: Any) -> Any:
        return case((a.is_(None), b), (b.is_(None), a), (a >= b, a), else_=b)

    return statement.on_conflict_do_update(
        index_elements=["run_key", "key", "block"],
        set_={
            "count": old.count + new.count,
            "min_value": lower(old.min_value, new.min_value),
            "max_value": higher(old.max_value, new.max_value),
            "first_step": case(
                (new.first_step < old.first_step, new.first_step), else_=old.first_step
            ),
            "last_step": case((newer, new.last_step), else_=old.last_step),
            "last_timestamp": case((newer, new.last_timestamp), else_=old.last_timestamp),
            "last_value": case((newer, new.last_value), else_=old.last_value),
        },
    )


def bucket_blocks(
    conn: Any, run_key: int, key: str, *, blocks: tuple[int, int], buckets: int
) -> list[MetricBucket]:
    """At most ``buckets`` buckets of whole blocks, aggregated in SQL from the stored rows.

    ``blocks`` is the first and last block of the series (those of its first and last step,
    which the caller has read). The block range is shared out evenly: with B blocks and
    N <= B buckets, bucket i holds blocks [i*B/N, (i+1)*B/N), so a long series gets exactly N
    buckets (fewer only where a bucket's blocks hold no points). About 7,800 rows for a
    million points are grouped in the database; a bucket's last value is its last block's.
    """
    first, span, wanted = blocks[0], blocks[1] - blocks[0] + 1, max(buckets, 1)
    if span * wanted < 2**62:  # integers computed here, not input: safe to inline
        bucket = f"(block - {first}) * {wanted} / {span}"
    else:  # the product would overflow a bigint: equal widths, maybe fewer buckets
        bucket = f"(block - {first}) / {-(-span // wanted)}"
    sqlite = conn.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    # one pass: the window gives every row its bucket's last value (from its last block)
    sql = f"""
        WITH g AS (
          SELECT {bucket} AS b, count, min_value, max_value, first_step, last_step,
                 first_value(last_value) OVER (PARTITION BY {bucket} ORDER BY block DESC) AS final
          FROM metric_blocks WHERE run_key = {mark} AND key = {mark}
        )
        SELECT sum(count), min(min_value), max(max_value), min(first_step), max(last_step),
               max(final)
        FROM g GROUP BY b ORDER BY b
    """
    rows = conn.exec_driver_sql(sql, (run_key, key)).all()
    return [
        MetricBucket.model_construct(
            first_step=first_step,
            last_step=last_step,
            count=int(n),
            min=_NAN if low is None else low,
            max=_NAN if high is None else high,
            last=_NAN if final is None else final,
        )
        for n, low, high, first_step, last_step, final in rows
    ]
