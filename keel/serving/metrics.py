"""``GET /metrics`` of the scoring service: Prometheus text from ``prometheus_client``.

Every series carries the ``deployment`` and, where it applies, the ``arm`` (the model version,
``NAME/VERSION``) that answered. With ``--workers N`` each worker writes its values to files in
a folder the supervisor creates (prometheus_client's multiprocess mode), and a scrape of any
worker adds up every worker's, so ``keel_requests_total`` counts the whole service.

Series:

- ``keel_requests_total{deployment, arm, code}``: ``POST /predict`` answers by status class
  (``2xx``, ``4xx``, ``5xx``).
- ``keel_request_duration_seconds{deployment, arm}``: histogram from 0.5 ms to 10 s.
- ``keel_prediction_errors_total{deployment, arm, error}``: refused or failed requests by Keel
  error code (``invalid_input``, ``schema_mismatch``, ``model_refused``, ``internal``...).
- ``keel_rows_scored_total{deployment, arm}``.
- ``keel_batch_requests{deployment, arm}`` and ``keel_batch_rows``: histograms of requests and
  rows per ``predict`` call (micro-batching at work).
- ``keel_shadow_requests_total{deployment, arm, outcome}``: ``scored``, ``failed``, or
  ``skipped`` (too many shadow calls in flight).
- ``keel_prediction_log_buffered_rows{deployment}`` and
  ``keel_prediction_log_dropped_rows_total{deployment}``.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "ScoringMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Seconds: from half a millisecond (a small model on loopback) to ten seconds."""
_BATCH_REQUESTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_BATCH_ROWS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)


class ScoringMetrics:
    """The scoring service's Prometheus series, and their exposition.

    Args:
        multiprocess_dir: the folder prometheus_client's multiprocess mode writes to (the
            supervisor's ``PROMETHEUS_MULTIPROC_DIR``, which must be set in the environment
            before ``prometheus_client`` is imported); None in a single process, where the
            series live in a registry of their own (several apps in one process do not clash).

    Example:
        >>> metrics = ScoringMetrics()
        >>> metrics.request("diabetes", "diabetes/3", 200, 0.0012, rows=5)
        >>> b"keel_requests_total" in metrics.exposition()
        True
    """

    def __init__(self, *, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        registry = None if multiprocess_dir else CollectorRegistry()
        self._registry = registry
        arm = ("deployment", "arm")
        self._requests = Counter(
            "keel_requests",
            "POST /predict answers by status class",
            [*arm, "code"],
            registry=registry,
        )
        self._latency = Histogram(
            "keel_request_duration_seconds",
            "Time from the request's arrival to its answer (parse, check, queue, predict)",
            arm,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._errors = Counter(
            "keel_prediction_errors",
            "Requests refused or failed, by error code",
            [*arm, "error"],
            registry=registry,
        )
        self._rows = Counter("keel_rows_scored", "Rows answered", arm, registry=registry)
        self._batch_requests = Histogram(
            "keel_batch_requests",
            "Requests per predict call",
            arm,
            buckets=_BATCH_REQUESTS,
            registry=registry,
        )
        self._batch_rows = Histogram(
            "keel_batch_rows", "Rows per predict call", arm, buckets=_BATCH_ROWS, registry=registry
        )
        self._shadows = Counter(
            "keel_shadow_requests",
            "Copies of traffic sent to shadow models, by outcome (scored, failed, skipped)",
            [*arm, "outcome"],
            registry=registry,
        )
        self._log_buffered = Gauge(
            "keel_prediction_log_buffered_rows",
            "Prediction-log rows waiting to be written",
            ["deployment"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._log_dropped = Counter(
            "keel_prediction_log_dropped_rows",
            "Prediction-log rows dropped (the buffer was full, or the store failed too long)",
            ["deployment"],
            registry=registry,
        )
        self._dropped_seen: dict[str, int] = {}
        self._children: dict[tuple[str, ...], Any] = {}

    def request(
        self, deployment: str, arm: str, status: int, seconds: float, *, rows: int = 0
    ) -> None:
        """One ``POST /predict`` answer: its status, its duration, the rows it answered."""
        key = ("request", deployment, arm, str(status // 100))
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._requests.labels(deployment, arm, f"{status // 100}xx"),
                self._latency.labels(deployment, arm),
                self._rows.labels(deployment, arm),
            )
        requests, latency, scored = children
        requests.inc()
        latency.observe(seconds)
        if rows:
            scored.inc(rows)

    def error(self, deployment: str, arm: str, code: str) -> None:
        """A refused or failed request, by error code."""
        self._errors.labels(deployment, arm, code).inc()

    def batch(self, deployment: str, arm: str, requests: int, rows: int) -> None:
        """One ``predict`` call of the micro-batcher."""
        key = ("batch", deployment, arm)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._batch_requests.labels(deployment, arm),
                self._batch_rows.labels(deployment, arm),
            )
        children[0].observe(requests)
        children[1].observe(rows)

    def shadow(self, deployment: str, arm: str, outcome: str) -> None:
        """A copy of traffic to a shadow arm: ``scored``, ``failed`` or ``skipped``."""
        self._shadows.labels(deployment, arm, outcome).inc()

    def prediction_log(self, deployment: str, *, buffered: int, dropped: int) -> None:
        """The prediction log's state (``dropped`` is its running total)."""
        self._log_buffered.labels(deployment).set(buffered)
        seen = self._dropped_seen.get(deployment, 0)
        if dropped > seen:
            self._log_dropped.labels(deployment).inc(dropped - seen)
            self._dropped_seen[deployment] = dropped

    def exposition(self) -> bytes:
        """The Prometheus text of every series (every worker's, in multiprocess mode)."""
        if self._registry is not None:
            return generate_latest(self._registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)

    def process_exited(self) -> None:
        """Drop this process's live gauges from the shared folder (multiprocess mode), so a
        worker that stopped no longer adds its last buffered-rows value; counters stay."""
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), path=self.multiprocess_dir)
