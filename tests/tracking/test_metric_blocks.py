"""Downsampling from the metric rollup (``metric_blocks``) is exact, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import random

from sqlalchemy import Engine

from keel.tracking.store import TrackingStore
from keel.tracking.store_blocks import BLOCK_STEPS

Point = tuple[str, str, float, int, int]


def _run(store: TrackingStore) -> str:
    experiment = store.create_experiment("blocks")
    return store.create_run(
        experiment_id=experiment, run_name=None, user="u", host="h", pid=None
    ).run_id


def _expected(points: list[Point], lo: int, hi: int) -> tuple[int, float, float, float]:
    """count, min, max (NaN skipped) and the last value (latest step, then timestamp, then
    write) of the points with lo <= step <= hi, by brute force."""
    inside = [(i, p) for i, p in enumerate(points) if lo <= p[3] <= hi]
    finite = [p[2] for _, p in inside if not math.isnan(p[2])]
    last = max(inside, key=lambda item: (item[1][3], item[1][4], item[0]))[1][2]
    return (
        len(inside),
        min(finite) if finite else math.nan,
        max(finite) if finite else math.nan,
        last,
    )


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_buckets_from_the_rollup_match_the_points(engine: Engine) -> None:
    store = TrackingStore(engine)
    run_id = _run(store)
    rng = random.Random(7)
    points: list[Point] = []
    for step in range(-300, 20_000):
        value = rng.choice([rng.uniform(-5, 5), math.nan, math.inf, -math.inf, 0.0])
        points.append((run_id, "loss", value, step, 1_000 + step))
    # duplicates of some steps, later in time or written later at the same time
    points += [(run_id, "loss", 42.0, 511, 10**9), (run_id, "loss", 43.0, 19_999, 1_000 + 19_999)]
    shuffled = points[:]
    rng.shuffle(shuffled)
    written: list[Point] = []
    for start in range(0, len(shuffled), 3_001):  # several batches, blocks spanning them
        batch = shuffled[start : start + 3_001]
        store.log_metric_points(batch)
        written += batch

    for wanted in (1, 7, 50, 158):  # 158 blocks in the range: the rollup serves all of these
        buckets = store.metric_buckets(run_id, "loss", buckets=wanted)
        assert 1 <= len(buckets) <= wanted
        assert sum(b.count for b in buckets) == len(points)
        assert buckets[0].first_step == -300 and buckets[-1].last_step == 19_999
        for bucket in buckets:
            count, low, high, last = _expected(written, bucket.first_step, bucket.last_step)
            assert bucket.count == count
            assert _same(bucket.min, low) and _same(bucket.max, high)
            assert _same(bucket.last, last), (bucket, last)
            assert bucket.first_step % BLOCK_STEPS == 0 or bucket is buckets[0]
    assert store.metric_buckets(run_id, "loss", buckets=1)[0].last == 43.0  # written last


def test_short_series_still_cut_into_equal_step_ranges(engine: Engine) -> None:
    store = TrackingStore(engine)
    run_id = _run(store)
    store.log_metric_points([(run_id, "acc", float(s), s, s) for s in range(1_000)])
    buckets = store.metric_buckets(run_id, "acc", buckets=100)  # 8 blocks < 100 buckets
    assert [b.count for b in buckets] == [10] * 100
    assert [(b.min, b.max, b.last) for b in buckets[:2]] == [(0.0, 9.0, 9.0), (10.0, 19.0, 19.0)]


def test_keys_with_awkward_characters_round_trip(engine: Engine) -> None:
    """The history is written with COPY on PostgreSQL: tabs, newlines, backslashes and quotes
    in a key, and NaN and infinities in values, must come back as logged."""
    store = TrackingStore(engine)
    run_id = _run(store)
    keys = ["a\tb", "line\nbreak", "back\\slash", "quote'\"", "ünï/cödé", "\\N"]
    values = [math.nan, math.inf, -math.inf, -0.0, 1e-308, 1.5]
    store.log_metric_points(
        [(run_id, k, v, step, 7) for step, (k, v) in enumerate(zip(keys, values, strict=True))]
    )
    for step, (key, value) in enumerate(zip(keys, values, strict=True)):
        [point] = store.metric_history(run_id, key)
        assert point.step == step and _same(point.value, value), (key, point)
