"""User input turned into what a client sends or stores, one definition for both clients.

The local :class:`keel.tracking.api.Client` and the remote client build metric points,
artifact bytes and paged searches the same way; each then writes them its own way (a local
buffer and store, or HTTP).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from keel.errors import InvalidInput, MissingExtra
from keel.tracking.models import Metric, Run, RunPage
from keel.tracking.store_base import MAX_KEY_LENGTH, PointTuple, check_key, now_ms

__all__ = [
    "MAX_RESULTS",
    "as_float",
    "batch_points",
    "collect_pages",
    "dict_bytes",
    "figure_bytes",
    "metric_point",
    "metric_points",
    "table_bytes",
]

#: The most runs one search page returns.
MAX_RESULTS = 50_000


def as_float(key: str, value: Any) -> float:
    """A metric value as a float; bools, strings and other non-numbers are refused."""
    if type(value) is float:
        return value
    if isinstance(value, bool) or (
        not isinstance(value, int | float) and not hasattr(value, "__float__")
    ):
        raise InvalidInput(
            f"metric {key!r} must be a number, got {type(value).__name__} {value!r}", key=key
        )
    return float(value)


_INT64 = 2**63 - 1


def _int64(what: str, value: Any) -> int:
    """``value`` as an integer the database's 64-bit columns hold (a step, a timestamp)."""
    number = int(value)
    if not -_INT64 <= number <= _INT64:
        raise InvalidInput(f"metric {what} {number} is out of range (at most 2**63 - 1 in size)")
    return number


def metric_point(
    run_id: str, key: str, value: Any, step: int | None, timestamp: int | None
) -> PointTuple:
    """One checked point (the hot path of ``log_metric``: a few type checks, no allocation
    beyond the tuple). A point that would fail to store is refused here, before it is buffered,
    so it can never hold up the points behind it."""
    if type(key) is not str or not key or len(key) > MAX_KEY_LENGTH or "\x00" in key:
        check_key(key, what="metric")
    return (
        run_id,
        key,
        value if type(value) is float else as_float(key, value),
        0 if step is None else _int64("step", step),
        now_ms() if timestamp is None else _int64("timestamp", timestamp),
    )


def metric_points(
    run_id: str, metrics: Mapping[str, Any], step: int | None, timestamp: int | None
) -> list[PointTuple]:
    """Checked points sharing one step and timestamp (``log_metrics``)."""
    ts = now_ms() if timestamp is None else _int64("timestamp", timestamp)
    st = 0 if step is None else _int64("step", step)
    # fast path: str keys of valid length and float values, checked in one comprehension
    points = [
        (run_id, key, value, st, ts)
        for key, value in metrics.items()
        if type(value) is float
        and type(key) is str
        and 0 < len(key) <= MAX_KEY_LENGTH
        and "\x00" not in key
    ]
    if len(points) != len(metrics):
        points = []
        for key, value in metrics.items():
            check_key(key, what="metric")
            points.append((run_id, key, as_float(key, value), st, ts))
    return points


def batch_points(
    run_id: str, metrics: Sequence[Metric | tuple[str, float, int, int]]
) -> list[PointTuple]:
    """Checked points at any keys and steps (``log_batch``)."""
    points: list[PointTuple] = []
    for item in metrics:
        if isinstance(item, Metric):
            key, value, step, ts = item.key, item.value, item.step, item.timestamp
        else:
            key, value, step, ts = item
        points.append(metric_point(run_id, key, value, step, ts))
    return points


def dict_bytes(data: Mapping[str, Any], artifact_file: str) -> bytes:
    """``data`` as JSON, or YAML when ``artifact_file`` ends in .yaml/.yml."""
    if artifact_file.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_dump(dict(data), sort_keys=False).encode("utf-8")
    return json.dumps(data, indent=2, default=str).encode("utf-8")


def figure_bytes(figure: Any, artifact_file: str) -> bytes:
    """A matplotlib figure, in the format the file extension names (png, svg, pdf)."""
    if not hasattr(figure, "savefig"):
        raise InvalidInput(f"log_figure needs a matplotlib Figure, got {type(figure).__name__}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(artifact_file).suffix.lstrip(".").lower() or "png")
    return buffer.getvalue()


def table_bytes(data: Any, artifact_file: str) -> bytes:
    """A pandas DataFrame (or a dict of columns) as Parquet."""
    if not artifact_file.endswith(".parquet"):
        raise InvalidInput(
            f"log_table writes Parquet; name the file *.parquet, not {artifact_file!r}"
        )
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas is a core dependency
        raise MissingExtra("pandas", extra="sklearn") from exc
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def collect_pages(fetch: Callable[[int, str | None], RunPage], max_results: int) -> list[Run]:
    """Up to ``max_results`` runs from ``fetch(page_size, token)``, following page tokens."""
    runs: list[Run] = []
    token = None
    while len(runs) < max_results:
        page = fetch(min(max_results - len(runs), MAX_RESULTS), token)
        runs.extend(page.runs)
        token = page.next_page_token
        if token is None:
            break
    return runs
