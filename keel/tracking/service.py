"""What the server's tracking routes may call: the :class:`TrackingService` protocol.

Routes are typed against this protocol, not :class:`keel.tracking.api.Client`, so that a server
with authentication can hand them a checked stand-in (:class:`keel.auth.guard.GuardedClient`)
and mypy proves the stand-in has every method a route calls, with the same signature. A route
that needs a new Client method adds it here first, and so cannot forget its permission check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from fastapi import Request

from keel.artifacts import BlobReader
from keel.errors import Unauthenticated
from keel.settings import Settings
from keel.tracking.models import (
    ArtifactEntry,
    Experiment,
    Metric,
    MetricBucket,
    Run,
    RunPage,
    RunStatus,
)
from keel.tracking.store_base import PointTuple

__all__ = ["TrackingService", "service_of"]


class TrackingService(Protocol):
    """The tracking operations a request may perform (see the module docstring)."""

    @property
    def settings(self) -> Settings: ...

    def create_experiment(
        self, name: str, *, tags: Mapping[str, str] | None = None
    ) -> Experiment: ...
    def get_experiment(self, experiment_id: int) -> Experiment: ...
    def get_experiment_by_name(self, name: str) -> Experiment | None: ...
    def get_or_create_experiment(self, name: str) -> Experiment: ...
    def list_experiments(self, *, lifecycle: str = "active") -> list[Experiment]: ...
    def rename_experiment(self, experiment_id: int, new_name: str) -> Experiment: ...
    def delete_experiment(self, experiment_id: int) -> None: ...
    def restore_experiment(self, experiment_id: int) -> None: ...

    def create_remote_run(
        self,
        experiment_id: int,
        *,
        host: str,
        user: str,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        start_time: int | None = None,
    ) -> Run: ...
    def get_run(self, run_id: str) -> Run: ...
    def resolve_run_id(self, prefix: str) -> str: ...
    def end_run(
        self,
        run_id: str,
        *,
        status: RunStatus | str = RunStatus.FINISHED,
        end_time: int | None = None,
    ) -> None: ...
    def rename_run(self, run_id: str, new_name: str) -> Run: ...
    def delete_runs(self, run_ids: Sequence[str]) -> int: ...
    def restore_runs(self, run_ids: Sequence[str]) -> int: ...
    def heartbeat(self, run_id: str) -> None: ...
    def log_param(self, run_id: str, key: str, value: Any) -> None: ...
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None: ...
    def delete_tag(self, run_id: str, key: str) -> None: ...
    def search_runs(
        self,
        filter_string: str = "",
        *,
        order_by: Sequence[str] | None = None,
        experiment_ids: Sequence[int] | None = None,
        max_results: int = 1000,
        page_token: str | None = None,
        lifecycle: Literal["active", "deleted", "all"] = "active",
    ) -> RunPage: ...

    def write_metric_points(
        self, points: Sequence[PointTuple], *, batch_id: str | None = None
    ) -> bool: ...
    def get_metric_history(self, run_id: str, key: str) -> list[Metric]: ...
    def metric_buckets(self, run_id: str, key: str, *, buckets: int) -> list[MetricBucket]: ...

    def list_artifacts(self, run_id: str, path: str = "") -> list[ArtifactEntry]: ...
    def open_artifact(self, run_id: str, path: str) -> BlobReader: ...
    def log_stream(
        self,
        run_id: str,
        stream: Any,
        artifact_file: str,
        *,
        digest: str | None = None,
        size_hint: int | None = None,
    ) -> ArtifactEntry: ...


def service_of(request: Request) -> TrackingService:
    """The tracking service for this request (a FastAPI dependency).

    On a server with authentication it is the caller's checked view, which the authentication
    dependency put on ``request.state``; it fails closed (401) if that dependency did not run.
    Without authentication it is the app's one Client.
    """
    scoped: TrackingService | None = getattr(request.state, "tracking", None)
    if scoped is not None:
        return scoped
    if request.app.state.settings.auth:
        raise Unauthenticated("this server requires a token (Authorization: Bearer <token>)")
    client: TrackingService = request.app.state.client
    return client
