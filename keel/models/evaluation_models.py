"""Evaluation and gate entities: what ``keel models evaluate`` and ``keel models gate`` record.

Kept beside :mod:`keel.models.models` (the registry's contract) rather than in it, so the
evaluation feature adds its records without editing the entities other parts share.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Evaluation", "GateVerdict", "Task"]

Task = Literal["regression", "classification"]
"""What kind of prediction an evaluation scored."""


class Evaluation(BaseModel):
    """One version's metrics on one dataset version, for one target column."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str = Field(description="the registered model")
    version: int = Field(ge=1)
    dataset: str = Field(description="the dataset version, NAME@VERSION")
    dataset_digest: str
    target: str = Field(description="the column holding the true values")
    task: Task
    rows: int = Field(ge=0, description="rows scored")
    metrics: dict[str, float] = Field(description="metric name -> value, e.g. rmse, accuracy")
    detail: dict[str, Any] = Field(
        default_factory=dict,
        description="how the task was chosen, metrics left out and why, and for "
        "classification the labels and confusion matrix",
    )
    created_at: datetime
    created_by: str

    @property
    def ref(self) -> str:
        """``NAME/VERSION`` of the evaluated model version."""
        return f"{self.name}/{self.version}"


class GateVerdict(BaseModel):
    """A release gate's decision on a candidate version against another (the champion)."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str = Field(description="the candidate's registered model")
    version: int = Field(ge=1, description="the candidate version")
    against: str = Field(description="what it was compared with, as given: NAME@champion")
    against_version: int | None = Field(
        default=None, description="the version that resolved to; None when the alias was unset"
    )
    metric: str
    passed: bool
    detail: dict[str, Any] = Field(
        default_factory=dict,
        description="the values, the change, each threshold and its result, the dataset, why",
    )
    created_at: datetime
    created_by: str
