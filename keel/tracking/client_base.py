"""What the local and the remote client share above their storage: logging metric points into
a point intake, and encoding artifacts before they are stored.

:class:`keel.tracking.api.Client` buffers points for its database and
:class:`keel.tracking.remote.RemoteClient` for a server; both take them the same way. Each
subclass supplies the intake, ``log_params``, ``set_tags`` and ``log_bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keel.tracking.buffer import PointIntake
from keel.tracking.inputs import (
    batch_points,
    dict_bytes,
    figure_bytes,
    metric_point,
    metric_points,
    table_bytes,
)
from keel.tracking.models import ArtifactEntry, Metric

__all__ = ["EncodedArtifacts", "MetricLogging"]


class MetricLogging:
    """``log_metric``, ``log_metrics`` and ``log_batch`` over :attr:`_intake`."""

    @property
    def _intake(self) -> PointIntake:
        raise NotImplementedError

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def log_metric(
        self,
        run_id: str,
        key: str,
        value: float,
        *,
        step: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Buffer one metric point (no round trip; a background thread writes batches)."""
        self._intake.add(metric_point(run_id, key, value, step, timestamp))

    def log_metrics(
        self,
        run_id: str,
        metrics: Mapping[str, float],
        *,
        step: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Buffer several metric points sharing one step and timestamp."""
        self._intake.extend(metric_points(run_id, metrics, step, timestamp))

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[Metric | tuple[str, float, int, int]] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """Log many metric points (any keys, any steps), params and tags in one call.

        Metrics are buffered like :meth:`log_metric`; params and tags are written at once.
        Each metric is a :class:`Metric` or a ``(key, value, step, timestamp)`` tuple.
        """
        if params:
            self.log_params(run_id, params)
        if tags:
            self.set_tags(run_id, tags)
        self._intake.extend(batch_points(run_id, metrics))


class EncodedArtifacts:
    """Text, dicts, figures and tables stored as one artifact file through ``log_bytes``."""

    def log_bytes(self, run_id: str, data: bytes, artifact_file: str) -> ArtifactEntry:
        raise NotImplementedError

    def log_text(self, run_id: str, text: str, artifact_file: str) -> ArtifactEntry:
        return self.log_bytes(run_id, text.encode("utf-8"), artifact_file)

    def log_dict(self, run_id: str, data: Mapping[str, Any], artifact_file: str) -> ArtifactEntry:
        """Store ``data`` as JSON, or YAML when ``artifact_file`` ends in .yaml/.yml."""
        return self.log_bytes(run_id, dict_bytes(data, artifact_file), artifact_file)

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> ArtifactEntry:
        """Store a matplotlib figure, in the format its file extension names (png, svg, pdf)."""
        return self.log_bytes(run_id, figure_bytes(figure, artifact_file), artifact_file)

    def log_table(self, run_id: str, data: Any, artifact_file: str) -> ArtifactEntry:
        """Store a pandas DataFrame (or a dict of columns) as Parquet."""
        return self.log_bytes(run_id, table_bytes(data, artifact_file), artifact_file)
