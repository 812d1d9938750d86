"""Metric points in (written before the answer, never buffered) and histories out.

JSON has no NaN or infinity: values may be sent as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"``, and come back the same way.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from keel.tracking.models import (
    MAX_BUCKETS,
    Key,
    MetricHistory,
    MetricOut,
    MetricsLog,
    MetricsWritten,
    RunMetricsLog,
)
from keel.tracking.routes.common import ClientDep, RunIdPath, now_ms

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


@router.post("/runs/{run_id}/metrics")
def log_metrics(run_id: RunIdPath, body: MetricsLog, client: ClientDep) -> MetricsWritten:
    """Store up to 10,000 points of one run in one transaction (stored when this returns).

    A point without a timestamp gets the server's clock. A ``batch_id`` seen before makes the
    request a no-op that still succeeds, so retries never duplicate.
    """
    now = now_ms()
    points = [
        (run_id, p.key, p.value, p.step, now if p.timestamp is None else p.timestamp)
        for p in body.points
    ]
    if points:
        client.write_metric_points(points, batch_id=body.batch_id)
    else:
        client.get_run(run_id)  # an empty batch still names a run that must exist
    return MetricsWritten(written=len(points))


@router.post("/metrics")
def log_metrics_of_runs(body: RunMetricsLog, client: ClientDep) -> MetricsWritten:
    """Store up to 10,000 points addressed to any runs, all or none (404 naming every unknown
    run id). A ``batch_id`` seen before makes the request a no-op that still succeeds."""
    now = now_ms()
    points = [
        (p.run_id, p.key, p.value, p.step, now if p.timestamp is None else p.timestamp)
        for p in body.points
    ]
    client.write_metric_points(points, batch_id=body.batch_id)
    return MetricsWritten(written=len(points))


@router.get("/runs/{run_id}/metrics/history")
def metric_history(
    run_id: RunIdPath,
    client: ClientDep,
    key: Annotated[Key, Query(description="the metric key (it may contain slashes)")],
    max_points: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_BUCKETS,
            description="summarise the history in at most this many step ranges (buckets), "
            "computed in the database; without it every point is returned",
        ),
    ] = None,
) -> MetricHistory:
    """A metric's history: every point in step order, or ``max_points`` buckets, each with its
    first and last step, point count, min, max and last value."""
    if max_points is None:
        history = client.get_metric_history(run_id, key)
        points = [MetricOut.model_construct(**dict(p)) for p in history]
        return MetricHistory(run_id=run_id, key=key, count=len(points), points=points)
    buckets = client.metric_buckets(run_id, key, buckets=max_points)
    return MetricHistory(
        run_id=run_id, key=key, count=sum(b.count for b in buckets), buckets=buckets
    )
