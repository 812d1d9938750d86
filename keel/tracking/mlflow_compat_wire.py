"""MLflow's REST wire format: request and response models, errors, and Keel entities in it.

The official MLflow client serializes protobuf messages to JSON with snake_case names: ids are
strings, times are milliseconds, and a non-finite double travels as the string ``"NaN"``,
``"Infinity"`` or ``"-Infinity"`` (both ways). Errors are ``{"error_code": ..., "message": ...}``
with the HTTP status MLflow's server uses; the client raises ``MlflowException`` from them.

A few MLflow tags are attributes of a Keel run, kept once: ``mlflow.runName`` is the run name,
``mlflow.user`` its user, ``mlflow.parentRunId`` its parent. They are not stored as tags; runs
carry them again on the way out (:func:`run_message`), and searches that name them are
rewritten (:func:`keel.tracking.mlflow_compat_search.rewrite_run_search`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Annotated, Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keel.db import now_ms
from keel.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    KeelError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from keel.tracking.api import DEFAULT_EXPERIMENT
from keel.tracking.mlflow_compat_search import PARENT_TAG, RUN_NAME_TAG, USER_TAG
from keel.tracking.models import Experiment, LifecycleStage, Run, RunStatus
from keel.tracking.service import TrackingService, service_of

__all__ = [
    "DEFAULT_EXPERIMENT_ID",
    "CreateExperimentRequest",
    "CreateExperimentResponse",
    "CreateRunRequest",
    "Empty",
    "ExperimentIdRequest",
    "ExperimentResponse",
    "KeyValue",
    "LogBatchRequest",
    "LogMetricRequest",
    "MetricHistoryResponse",
    "MetricMessage",
    "MlflowExperiment",
    "MlflowRoute",
    "MlflowRun",
    "MlflowRunInfo",
    "RunIdRequest",
    "RunResponse",
    "SearchExperimentsRequest",
    "SearchExperimentsResponse",
    "SearchRunsRequest",
    "SearchRunsResponse",
    "TagRequest",
    "UpdateExperimentRequest",
    "UpdateRunRequest",
    "UpdateRunResponse",
    "client_of",
    "error_response",
    "experiment_message",
    "keel_experiment_id",
    "keep_alive",
    "now_ms",
    "run_info_message",
    "run_message",
    "split_tags",
]

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT_ID = "0"
"""MLflow's Default experiment; Keel's is the one named ``Default``, created on first use."""
MAX_KEY_LENGTH = 250

# -- errors ------------------------------------------------------------------------------------

_CODES: list[tuple[type[KeelError], int, str]] = [
    (NotFound, 404, "RESOURCE_DOES_NOT_EXIST"),
    (AlreadyExists, 400, "RESOURCE_ALREADY_EXISTS"),
    (InvalidInput, 400, "INVALID_PARAMETER_VALUE"),
    (Conflict, 400, "INVALID_PARAMETER_VALUE"),
    (PermissionDenied, 403, "PERMISSION_DENIED"),
    (Unauthenticated, 401, "UNAUTHENTICATED"),
]


def error_response(status_code: int, error_code: str, message: str) -> JSONResponse:
    """An error in MLflow's shape."""
    return JSONResponse({"error_code": error_code, "message": message}, status_code=status_code)


def _keel_error(exc: KeelError) -> JSONResponse:
    for cls, status, code in _CODES:
        if isinstance(exc, cls):
            return error_response(status, code, exc.message)
    log.error("keel server (mlflow api): %s", exc)
    return error_response(500, "INTERNAL_ERROR", exc.message)


def _validation_error(errors: Sequence[Any]) -> JSONResponse:
    if not errors:
        return error_response(400, "INVALID_PARAMETER_VALUE", "invalid request")
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
    message = first.get("msg", "invalid value")
    text = f"invalid value for parameter '{where}': {message}" if where else message
    return error_response(400, "INVALID_PARAMETER_VALUE", text)


class MlflowRoute(APIRoute):
    """A route whose errors come out in MLflow's shape, not Keel's.

    Keel's error classes map to MLflow codes: NotFound is 404 RESOURCE_DOES_NOT_EXIST,
    AlreadyExists 400 RESOURCE_ALREADY_EXISTS, InvalidInput (and InvalidQuery) and Conflict
    400 INVALID_PARAMETER_VALUE, anything else 500 INTERNAL_ERROR.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def mlflow_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except KeelError as exc:
                return _keel_error(exc)
            except RequestValidationError as exc:
                return _validation_error(exc.errors())
            except ValidationError as exc:  # a model built inside a handler
                return _validation_error(exc.errors())
            except Exception:
                log.exception("keel server (mlflow api): unexpected error")
                return error_response(
                    500, "INTERNAL_ERROR", "an unexpected error occurred; see the server log"
                )

        return mlflow_errors


def client_of(request: Request) -> TrackingService:
    """The request's tracking service (a FastAPI dependency; see :func:`service_of`)."""
    return service_of(request)


def keep_alive(request: Request, run_id: str) -> None:
    """Heartbeat a run the caller writes to, at most once per ``heartbeat_interval``.

    MLflow clients send no heartbeats of their own: their writes are the sign of life that
    keeps a long run from being marked LOST. The last beat per run lives on ``app.state``.
    """
    client = client_of(request)
    beats: dict[str, float] | None = getattr(request.app.state, "mlflow_heartbeats", None)
    if beats is None:
        beats = request.app.state.mlflow_heartbeats = {}
    now = time.monotonic()
    if now - beats.get(run_id, -math.inf) < client.settings.heartbeat_interval:
        return
    if len(beats) > 10_000:
        beats.clear()
    client.heartbeat(run_id)
    beats[run_id] = now


# -- requests ----------------------------------------------------------------------------------


Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
"""MLflow's times and steps are protobuf int64."""


class _Message(BaseModel):
    # the client sends fields Keel does not use (model_id, dataset_name ...): ignore them
    model_config = ConfigDict(extra="ignore")

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text may not contain a NUL character")
        return value


class KeyValue(_Message):
    key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    value: str = ""


class MetricMessage(_Message):
    """A metric point; ``value`` may be a number or "NaN", "Infinity", "-Infinity".

    Protobuf's JSON leaves out fields holding their default, so a value of 0.0 or a step of 0
    arrives as no field at all.
    """

    model_config = ConfigDict(ser_json_inf_nan="strings")

    key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    value: float = 0.0
    timestamp: Int64 | None = None
    step: Int64 | None = None


class _RunRef(_Message):
    run_id: str | None = None
    run_uuid: str | None = Field(default=None, description="deprecated alias of run_id")

    @property
    def id(self) -> str:
        run_id = self.run_id or self.run_uuid
        if not run_id:
            raise InvalidInput("Missing value for required parameter 'run_id'")
        return run_id


class CreateExperimentRequest(_Message):
    name: str
    artifact_location: str | None = Field(
        default=None, description="ignored: Keel keeps artifacts in its own store"
    )
    tags: list[KeyValue] = Field(default_factory=list)


class ExperimentIdRequest(_Message):
    experiment_id: str


class UpdateExperimentRequest(_Message):
    experiment_id: str
    new_name: str


class SearchExperimentsRequest(_Message):
    max_results: int | None = None
    page_token: str | None = None
    filter: str | None = None
    order_by: list[str] = Field(default_factory=list)
    view_type: str | int | None = None


class CreateRunRequest(_Message):
    experiment_id: str | None = None
    user_id: str | None = None
    start_time: Int64 | None = None
    tags: list[KeyValue] = Field(default_factory=list)
    run_name: str | None = None


class UpdateRunRequest(_RunRef):
    status: str | None = None
    end_time: Int64 | None = None
    run_name: str | None = None


class RunIdRequest(_RunRef):
    pass


class LogMetricRequest(_RunRef, MetricMessage):
    pass


class TagRequest(_RunRef):
    """set-tag, log-parameter (``value`` required) and delete-tag (``value`` unused)."""

    key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    value: str = ""


class LogBatchRequest(_RunRef):
    metrics: list[MetricMessage] = Field(default_factory=list)
    params: list[KeyValue] = Field(default_factory=list)
    tags: list[KeyValue] = Field(default_factory=list)


class SearchRunsRequest(_Message):
    experiment_ids: list[str] = Field(default_factory=list)
    filter: str | None = None
    run_view_type: str | int | None = None
    max_results: int | None = None
    order_by: list[str] = Field(default_factory=list)
    page_token: str | None = None


# -- responses ---------------------------------------------------------------------------------


class MlflowExperiment(BaseModel):
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    last_update_time: int
    creation_time: int
    tags: list[KeyValue] = Field(default_factory=list)


class MlflowRunInfo(BaseModel):
    run_id: str
    run_uuid: str
    run_name: str
    experiment_id: str
    user_id: str
    status: str
    start_time: int
    end_time: int | None = None
    artifact_uri: str
    lifecycle_stage: str


class MlflowLatestMetric(BaseModel):
    """A run's latest value of a metric (Keel's run view keeps no step or time for it)."""

    model_config = ConfigDict(ser_json_inf_nan="strings")

    key: str
    value: float


class MlflowRunData(BaseModel):
    metrics: list[MlflowLatestMetric] = Field(default_factory=list)
    params: list[KeyValue] = Field(default_factory=list)
    tags: list[KeyValue] = Field(default_factory=list)


class MlflowRun(BaseModel):
    info: MlflowRunInfo
    data: MlflowRunData


class _Response(BaseModel):
    # every response carries non-finite metric values as protobuf's JSON strings
    model_config = ConfigDict(ser_json_inf_nan="strings")


class Empty(_Response):
    pass


class CreateExperimentResponse(_Response):
    experiment_id: str


class ExperimentResponse(_Response):
    experiment: MlflowExperiment


class SearchExperimentsResponse(_Response):
    experiments: list[MlflowExperiment] = Field(default_factory=list)
    next_page_token: str | None = None


class RunResponse(_Response):
    run: MlflowRun


class UpdateRunResponse(_Response):
    run_info: MlflowRunInfo


class SearchRunsResponse(_Response):
    runs: list[MlflowRun] = Field(default_factory=list)
    next_page_token: str | None = None


class MetricHistoryResponse(_Response):
    metrics: list[MetricMessage] = Field(default_factory=list)
    next_page_token: str | None = None


# -- conversions -------------------------------------------------------------------------------


def keel_experiment_id(
    client: TrackingService, experiment_id: str, *, create: bool = False
) -> int | None:
    """Keel's id for an MLflow experiment id; "0" is the ``Default`` experiment.

    Returns None for "0" when ``Default`` does not exist and ``create`` is false.
    """
    text = str(experiment_id).strip()
    if not text.isdigit():
        raise InvalidInput(f"experiment id must be a string of digits, got {experiment_id!r}")
    if text != DEFAULT_EXPERIMENT_ID:
        return int(text)
    if create:
        return client.get_or_create_experiment(DEFAULT_EXPERIMENT).experiment_id
    found = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    return None if found is None else found.experiment_id


def experiment_message(experiment: Experiment) -> MlflowExperiment:
    return MlflowExperiment(
        experiment_id=str(experiment.experiment_id),
        name=experiment.name,
        artifact_location=f"mlflow-artifacts:/{experiment.experiment_id}",
        lifecycle_stage=experiment.lifecycle_stage.value,
        last_update_time=experiment.updated_at,
        creation_time=experiment.created_at,
        tags=_pairs(experiment.tags),
    )


def _status(status: RunStatus) -> str:
    # MLflow has no LOST: a run whose process died is a failed run to its clients
    return RunStatus.FAILED.value if status is RunStatus.LOST else status.value


def run_info_message(run: Run) -> MlflowRunInfo:
    return MlflowRunInfo(
        run_id=run.run_id,
        run_uuid=run.run_id,
        run_name=run.run_name,
        experiment_id=str(run.experiment_id),
        user_id=run.user,
        status=_status(run.status),
        start_time=run.start_time,
        end_time=run.end_time,
        artifact_uri=f"mlflow-artifacts:/{run.experiment_id}/{run.run_id}/artifacts",
        lifecycle_stage=LifecycleStage(run.lifecycle_stage).value,
    )


def run_message(run: Run) -> MlflowRun:
    # the run's own name, user and parent win over stored tags of the same keys
    tags = {**run.tags, RUN_NAME_TAG: run.run_name, USER_TAG: run.user}
    if run.parent_run_id:
        tags[PARENT_TAG] = run.parent_run_id
    return MlflowRun(
        info=run_info_message(run),
        data=MlflowRunData(
            metrics=[MlflowLatestMetric(key=k, value=v) for k, v in run.metrics.items()],
            params=_pairs(run.params),
            tags=_pairs(tags),
        ),
    )


def _pairs(mapping: dict[str, str]) -> list[KeyValue]:
    return [KeyValue.model_construct(key=k, value=v) for k, v in mapping.items()]


def split_tags(tags: Iterable[KeyValue]) -> dict[str, str]:
    """Tags as a dict (a key repeated keeps its last value)."""
    return {tag.key: tag.value for tag in tags}
