"""Tracking entities as users see them (experiments, runs, metric points, artifact entries),
and the wire format of the REST API built on them."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

__all__ = [
    "ArtifactEntry",
    "ArtifactList",
    "ErrorBody",
    "Experiment",
    "ExperimentCreate",
    "ExperimentList",
    "ExperimentUpdate",
    "LifecycleStage",
    "Metric",
    "MetricBucket",
    "MetricHistory",
    "MetricOut",
    "MetricPointIn",
    "MetricsLog",
    "MetricsWritten",
    "ParamsLog",
    "Run",
    "RunCreate",
    "RunMetricPointIn",
    "RunMetricsLog",
    "RunOut",
    "RunPage",
    "RunPageOut",
    "RunRename",
    "RunSearch",
    "RunStatus",
    "RunUpdate",
    "TagsSet",
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


# -- the wire format of the REST API (/api/v1) --------------------------------------------------
# Requests carry explicit limits, so FastAPI rejects oversize input with a 400 before it reaches
# the store, and the OpenAPI document states them. Responses subclass the entities above with
# one change: NaN and infinities go out as the strings "NaN", "Infinity" and "-Infinity", since
# JSON has no literal for them (the same strings are accepted on the way in).

MAX_KEY_LENGTH = 250
MAX_NAME_LENGTH = 250
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
MAX_METRIC_BATCH = 10_000
MAX_ENTRIES = 1000
MAX_SEARCH_RESULTS = 50_000
MAX_PAGE_TOKEN_LENGTH = 512
MAX_FILTER_LENGTH = 50_000
MAX_BUCKETS = 10_000
MAX_ARTIFACT_PATH_LENGTH = 1024
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
_NO_NUL = r"^[^\x00]*$"
_BATCH_ID = r"^[0-9a-fA-F-]{1,36}$"  # PostgreSQL text cannot hold a NUL character
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _text(max_length: int, *, min_length: int = 0) -> Any:
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=_NO_NUL)


def _wire_float(value: Any) -> Any:
    if isinstance(value, str):
        if value in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[value]
        raise ValueError('a number, or one of the strings "NaN", "Infinity", "-Infinity"')
    return value


Key = Annotated[str, _text(MAX_KEY_LENGTH, min_length=1)]
Name = Annotated[str, _text(MAX_NAME_LENGTH, min_length=1)]
ParamValue = Annotated[str, _text(MAX_PARAM_LENGTH)]
TagValue = Annotated[str, _text(MAX_TAG_LENGTH)]
RunId = Annotated[str, _text(32, min_length=1)]
ExperimentId = Annotated[int, Field(ge=0, le=INT32_MAX)]
Step = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
Millis = Annotated[int, Field(ge=0, le=INT64_MAX, description="milliseconds since the epoch")]
WireFloat = Annotated[
    float,
    Field(strict=True),
    BeforeValidator(_wire_float),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number"},
                {"type": "string", "enum": list(_SPECIAL_FLOATS)},
            ]
        }
    ),
]
Lifecycle = Literal["active", "deleted", "all"]
_REQUEST = ConfigDict(extra="forbid", frozen=True)
_RESPONSE = ConfigDict(frozen=True, ser_json_inf_nan="strings", from_attributes=True)


class ExperimentCreate(BaseModel):
    model_config = _REQUEST

    name: Name
    tags: Annotated[dict[Key, TagValue], Field(max_length=MAX_ENTRIES)] = Field(
        default_factory=dict
    )


class ExperimentUpdate(BaseModel):
    model_config = _REQUEST

    name: Name


class ExperimentList(BaseModel):
    experiments: list[Experiment]


class RunCreate(BaseModel):
    """A run started by a remote caller, who captures its own source and sends it as tags."""

    model_config = _REQUEST

    experiment_id: ExperimentId
    run_name: Name | None = None
    tags: Annotated[dict[Key, TagValue], Field(max_length=MAX_ENTRIES)] = Field(
        default_factory=dict
    )
    parent_run_id: RunId | None = None
    user: Annotated[str, _text(256, min_length=1)] | None = Field(
        default=None, description="who runs it (default: 'unknown')"
    )
    host: Annotated[str, _text(256, min_length=1)] | None = Field(
        default=None, description="where it runs (default: the caller's address)"
    )
    start_time: Millis | None = None


class RunUpdate(BaseModel):
    model_config = _REQUEST

    status: Literal["FINISHED", "FAILED", "KILLED"] = Field(
        description="the final status; the run ends now"
    )
    end_time: Millis | None = Field(
        default=None, description="when the run ended (default: now, on the server's clock)"
    )


class RunRename(BaseModel):
    model_config = _REQUEST

    run_name: Name


class RunOut(Run):
    """A run on the wire (NaN metrics as "NaN")."""

    model_config = _RESPONSE

    metrics: dict[str, WireFloat] = Field(default_factory=dict)


class RunPageOut(BaseModel):
    model_config = _RESPONSE

    runs: list[RunOut]
    next_page_token: str | None = None


class RunSearch(BaseModel):
    model_config = _REQUEST

    filter: Annotated[str, _text(MAX_FILTER_LENGTH)] = Field(
        default="", description="see docs/search.md"
    )
    order_by: Annotated[list[Annotated[str, _text(1000)]], Field(max_length=20)] = Field(
        default_factory=list
    )
    experiment_ids: Annotated[list[ExperimentId], Field(max_length=MAX_ENTRIES)] | None = None
    max_results: int = Field(default=1000, ge=1, le=MAX_SEARCH_RESULTS)
    page_token: Annotated[str, _text(MAX_PAGE_TOKEN_LENGTH)] | None = None
    lifecycle: Lifecycle = "active"


class ParamsLog(BaseModel):
    model_config = _REQUEST

    params: Annotated[dict[Key, ParamValue], Field(max_length=MAX_ENTRIES)]


class TagsSet(BaseModel):
    model_config = _REQUEST

    tags: Annotated[dict[Key, TagValue], Field(max_length=MAX_ENTRIES)]


class MetricPointIn(BaseModel):
    model_config = _REQUEST

    key: Key
    value: WireFloat
    step: Step = 0
    timestamp: Millis | None = Field(default=None, description="default: when the server got it")


class RunMetricPointIn(MetricPointIn):
    run_id: RunId


BatchId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=36, pattern=_BATCH_ID),
    Field(
        description="a client-generated id (a uuid): a batch sent again with the same id is "
        "stored once and answered as a success"
    ),
]


class MetricsLog(BaseModel):
    model_config = _REQUEST

    points: Annotated[list[MetricPointIn], Field(max_length=MAX_METRIC_BATCH)]
    batch_id: BatchId | None = None


class RunMetricsLog(BaseModel):
    """Points for any number of runs, written in one transaction."""

    model_config = _REQUEST

    points: Annotated[list[RunMetricPointIn], Field(max_length=MAX_METRIC_BATCH)]
    batch_id: BatchId | None = None


class MetricsWritten(BaseModel):
    written: int = Field(description="points stored (the request returns once they are)")


class MetricOut(Metric):
    model_config = _RESPONSE

    value: WireFloat


class MetricBucket(BaseModel):
    """One step range of a downsampled metric history.

    ``min`` and ``max`` skip NaN points (they are NaN only when every point is); ``last`` is the
    value at ``last_step`` (the latest logged when several share it).
    """

    model_config = _RESPONSE

    first_step: int
    last_step: int
    count: int
    min: WireFloat
    max: WireFloat
    last: WireFloat


class MetricHistory(BaseModel):
    """A metric's history: every point, or (with ``max_points``) buckets of step ranges."""

    model_config = _RESPONSE

    run_id: str
    key: str
    count: int = Field(description="points in the whole history")
    points: list[MetricOut] | None = None
    buckets: list[MetricBucket] | None = None


class ArtifactList(BaseModel):
    artifacts: list[ArtifactEntry]


class ErrorBody(BaseModel):
    """Every error response: a stable ``error`` code, a message, and fields that explain it."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="not_found, invalid_input, invalid_query, conflict, ...")
    message: str
