"""Tracking entities as users see them: experiments, runs, metric points, artifact entries."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ArtifactEntry",
    "Experiment",
    "LifecycleStage",
    "Metric",
    "Run",
    "RunPage",
    "RunStatus",
]


class RunStatus(StrEnum):
    """Where a run is in its life. LOST: its process died without ending it (SIGKILL, crash)."""

    RUNNING = "RUNNING"
    SCHEDULED = "SCHEDULED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    LOST = "LOST"

    @property
    def is_terminal(self) -> bool:
        return self not in (RunStatus.RUNNING, RunStatus.SCHEDULED)


class LifecycleStage(StrEnum):
    ACTIVE = "active"
    DELETED = "deleted"


class Experiment(BaseModel):
    model_config = ConfigDict(frozen=True)

    experiment_id: int
    name: str
    lifecycle_stage: LifecycleStage = LifecycleStage.ACTIVE
    created_at: int = Field(description="milliseconds since the epoch")
    updated_at: int
    tags: dict[str, str] = Field(default_factory=dict)


class Metric(BaseModel):
    """One point of a metric's history."""

    model_config = ConfigDict(frozen=True)

    key: str
    value: float
    step: int = 0
    timestamp: int = Field(description="milliseconds since the epoch")


class Run(BaseModel):
    """A run with its params, latest metric values and tags."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    experiment_id: int
    run_name: str
    status: RunStatus
    user: str
    start_time: int = Field(description="milliseconds since the epoch")
    end_time: int | None = None
    lifecycle_stage: LifecycleStage = LifecycleStage.ACTIVE
    parent_run_id: str | None = None
    host: str = ""
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def duration(self) -> int | None:
        """Milliseconds from start to end, or None while running."""
        return None if self.end_time is None else self.end_time - self.start_time


class ArtifactEntry(BaseModel):
    """A logged artifact: a file, or a directory stored as a manifest of its files."""

    model_config = ConfigDict(frozen=True)

    path: str
    digest: str
    size: int
    kind: str = Field(description="'file' or 'dir'")


class RunPage(BaseModel):
    """One page of search results; pass ``next_page_token`` back for the next page."""

    runs: list[Run]
    next_page_token: str | None = None
