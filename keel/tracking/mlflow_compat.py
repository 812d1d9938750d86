"""MLflow-compatible REST endpoints, so the official MLflow client works against keel server.

Point a client at the server (``MLFLOW_TRACKING_URI=http://host:port``) and its experiment,
run, param, metric, tag and search calls land here under ``/api/2.0/mlflow/...``; artifact
calls go through the ``mlflow-artifacts`` proxy (:mod:`keel.tracking.mlflow_compat_artifacts`).
Each endpoint translates MLflow's JSON (:mod:`keel.tracking.mlflow_compat_wire`) into
:class:`keel.tracking.api.Client` calls and back, so what an MLflow client logs is an ordinary
Keel run. The model registry's endpoints are :mod:`keel.models.mlflow_compat`, mounted before
this router (tracking does not import models). Endpoints Keel does not implement (registry
stages, traces, datasets...) answer 404 ``ENDPOINT_NOT_FOUND``. See ``docs/mlflow.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response

from keel.errors import InvalidInput, NotFound
from keel.tracking.api import MAX_RESULTS
from keel.tracking.mlflow_compat_artifacts import router as artifacts_router
from keel.tracking.mlflow_compat_search import (
    PARENT_TAG,
    RUN_NAME_TAG,
    USER_TAG,
    experiment_filter,
    rewrite_run_search,
    sort_experiments,
)
from keel.tracking.mlflow_compat_wire import (
    CreateExperimentRequest,
    CreateExperimentResponse,
    CreateRunRequest,
    Empty,
    ExperimentIdRequest,
    ExperimentResponse,
    LogBatchRequest,
    LogMetricRequest,
    MetricHistoryResponse,
    MetricMessage,
    MlflowRoute,
    RunIdRequest,
    RunResponse,
    SearchExperimentsRequest,
    SearchExperimentsResponse,
    SearchRunsRequest,
    SearchRunsResponse,
    TagRequest,
    UpdateExperimentRequest,
    UpdateRunRequest,
    UpdateRunResponse,
    client_of,
    error_response,
    experiment_message,
    keel_experiment_id,
    keep_alive,
    now_ms,
    run_info_message,
    run_message,
    split_tags,
)
from keel.tracking.models import LifecycleStage, RunStatus
from keel.tracking.service import TrackingService

__all__ = ["PREFIX", "router"]

PREFIX = "/api/2.0/mlflow"
DEFAULT_MAX_RESULTS = 1000
"""What MLflow's server returns when a search names no max_results."""

router = APIRouter(tags=["mlflow"], route_class=MlflowRoute)
ClientDep = Annotated[TrackingService, Depends(client_of)]
Lifecycle = Literal["active", "deleted", "all"]


# -- experiments ---------------------------------------------------------------------------------


@router.post(f"{PREFIX}/experiments/create")
def create_experiment(body: CreateExperimentRequest, client: ClientDep) -> CreateExperimentResponse:
    """Create an experiment (``artifact_location`` is ignored: artifacts live in Keel's store)."""
    experiment = client.create_experiment(body.name, tags=split_tags(body.tags))
    return CreateExperimentResponse(experiment_id=str(experiment.experiment_id))


@router.get(f"{PREFIX}/experiments/get", response_model_exclude_none=True)
def get_experiment(experiment_id: str, client: ClientDep) -> ExperimentResponse:
    """An experiment by id; "0" is the Default experiment, created on first use."""
    keel_id = keel_experiment_id(client, experiment_id, create=True)
    assert keel_id is not None
    return ExperimentResponse(experiment=experiment_message(client.get_experiment(keel_id)))


@router.get(f"{PREFIX}/experiments/get-by-name", response_model_exclude_none=True)
def get_experiment_by_name(experiment_name: str, client: ClientDep) -> ExperimentResponse:
    found = client.get_experiment_by_name(experiment_name)
    if found is None:
        raise NotFound(f"Could not find experiment with name '{experiment_name}'")
    return ExperimentResponse(experiment=experiment_message(found))


@router.post(f"{PREFIX}/experiments/search", response_model_exclude_none=True)
def search_experiments(
    body: SearchExperimentsRequest, client: ClientDep
) -> SearchExperimentsResponse:
    """Experiments matching MLflow's experiment filter, in order, one page at a time."""
    max_results = _max_results(body.max_results)
    experiments = client.list_experiments(lifecycle=_lifecycle(body.view_type))
    if body.filter and body.filter.strip():
        matches = experiment_filter(body.filter)
        experiments = [e for e in experiments if matches(e)]
    experiments = sort_experiments(experiments, body.order_by)
    offset = _offset(body.page_token)
    page = experiments[offset : offset + max_results]
    more = offset + max_results < len(experiments)
    return SearchExperimentsResponse(
        experiments=[experiment_message(e) for e in page],
        next_page_token=str(offset + max_results) if more else None,
    )


@router.post(f"{PREFIX}/experiments/delete")
def delete_experiment(body: ExperimentIdRequest, client: ClientDep) -> Empty:
    client.delete_experiment(_existing_experiment(client, body.experiment_id))
    return Empty()


@router.post(f"{PREFIX}/experiments/restore")
def restore_experiment(body: ExperimentIdRequest, client: ClientDep) -> Empty:
    client.restore_experiment(_existing_experiment(client, body.experiment_id))
    return Empty()


@router.post(f"{PREFIX}/experiments/update")
def update_experiment(body: UpdateExperimentRequest, client: ClientDep) -> Empty:
    client.rename_experiment(_existing_experiment(client, body.experiment_id), body.new_name)
    return Empty()


def _existing_experiment(client: TrackingService, experiment_id: str) -> int:
    keel_id = keel_experiment_id(client, experiment_id)
    if keel_id is None:
        raise NotFound(f"No Experiment with id={experiment_id} exists")
    return keel_id


# -- runs ----------------------------------------------------------------------------------------


@router.post(f"{PREFIX}/runs/create", response_model_exclude_none=True)
def create_run(body: CreateRunRequest, request: Request, client: ClientDep) -> RunResponse:
    """Start a run as the caller: its user, start time and tags, never the server's source.

    The run's host is the caller's address. MLflow clients send no heartbeats: each write to
    the run counts as one, so a run that writes nothing for ``lost_run_timeout`` is marked LOST
    (FAILED to MLflow) until its client ends it.
    """
    tags = split_tags(body.tags)
    run_name = body.run_name or tags.get(RUN_NAME_TAG) or None
    tags.pop(RUN_NAME_TAG, None)
    claimed = tags.pop(USER_TAG, None)  # the run's user, never a tag of its own
    user = body.user_id or claimed or "unknown"
    parent = tags.pop(PARENT_TAG, None) or None
    experiment_id = keel_experiment_id(client, body.experiment_id or "0", create=True)
    assert experiment_id is not None
    run = client.create_remote_run(
        experiment_id,
        host=request.client.host if request.client else "unknown",
        user=user,
        run_name=run_name,
        tags=tags,
        parent_run_id=parent,
        start_time=body.start_time,
    )
    return RunResponse(run=run_message(run))


@router.post(f"{PREFIX}/runs/update", response_model_exclude_none=True)
def update_run(body: UpdateRunRequest, client: ClientDep) -> UpdateRunResponse:
    """Rename a run and/or end it (FINISHED, FAILED, KILLED); an ended run cannot reopen."""
    run_id = body.id
    run = client.get_run(run_id)
    if body.run_name and body.run_name != run.run_name:
        run = client.rename_run(run_id, body.run_name)
    if body.status:
        status = _run_status(body.status)
        if status.is_terminal:
            client.end_run(run_id, status=status, end_time=body.end_time)
            run = client.get_run(run_id)
        elif status is not run.status:
            raise InvalidInput(
                f"Keel cannot set run {run_id} back to {status.value}: an ended run stays "
                "ended; start a new run instead"
            )
    return UpdateRunResponse(run_info=run_info_message(run))


@router.get(f"{PREFIX}/runs/get", response_model_exclude_none=True)
def get_run(
    client: ClientDep, run_id: str | None = None, run_uuid: str | None = None
) -> RunResponse:
    return RunResponse(
        run=run_message(client.get_run(RunIdRequest(run_id=run_id, run_uuid=run_uuid).id))
    )


@router.post(f"{PREFIX}/runs/delete")
def delete_run(body: RunIdRequest, client: ClientDep) -> Empty:
    if not client.delete_runs([body.id]):
        raise NotFound(f"Run with id={body.id} not found")
    return Empty()


@router.post(f"{PREFIX}/runs/restore")
def restore_run(body: RunIdRequest, client: ClientDep) -> Empty:
    if not client.restore_runs([body.id]):
        raise NotFound(f"Run with id={body.id} not found")
    return Empty()


@router.post(f"{PREFIX}/runs/log-metric")
def log_metric(body: LogMetricRequest, request: Request, client: ClientDep) -> Empty:
    """Log one point; it is stored before the answer, as MLflow's server does."""
    _log_points(request, client, body.id, [body])
    return Empty()


@router.post(f"{PREFIX}/runs/log-parameter")
def log_param(body: TagRequest, request: Request, client: ClientDep) -> Empty:
    client.log_param(body.id, body.key, body.value)
    keep_alive(request, body.id)
    return Empty()


@router.post(f"{PREFIX}/runs/set-tag")
def set_tag(body: TagRequest, request: Request, client: ClientDep) -> Empty:
    _set_tags(client, body.id, {body.key: body.value})
    keep_alive(request, body.id)
    return Empty()


@router.post(f"{PREFIX}/runs/delete-tag")
def delete_tag(body: TagRequest, client: ClientDep) -> Empty:
    client.delete_tag(body.id, body.key)
    return Empty()


@router.post(f"{PREFIX}/runs/log-batch")
def log_batch(body: LogBatchRequest, request: Request, client: ClientDep) -> Empty:
    """Params, then tags, then metric points, all stored before the answer."""
    run_id = body.id
    if body.params:
        client.log_params(run_id, split_tags(body.params))
    if body.tags:
        _set_tags(client, run_id, split_tags(body.tags))
    if body.metrics:
        _log_points(request, client, run_id, body.metrics)
    else:
        keep_alive(request, run_id)
    return Empty()


@router.post(f"{PREFIX}/runs/search", response_model_exclude_none=True)
def search_runs(body: SearchRunsRequest, client: ClientDep) -> SearchRunsResponse:
    """Runs matching a filter, in order; Keel's filter language is a superset of MLflow's."""
    experiment_ids = [
        keel_id
        for keel_id in (keel_experiment_id(client, e) for e in body.experiment_ids)
        if keel_id is not None
    ]
    if not experiment_ids:
        return SearchRunsResponse()
    page = client.search_runs(
        rewrite_run_search(body.filter or ""),
        order_by=[rewrite_run_search(clause) for clause in body.order_by],
        experiment_ids=experiment_ids,
        max_results=_max_results(body.max_results),
        page_token=body.page_token or None,
        lifecycle=_lifecycle(body.run_view_type),
    )
    return SearchRunsResponse(
        runs=[run_message(run) for run in page.runs], next_page_token=page.next_page_token
    )


@router.get(f"{PREFIX}/metrics/get-history", response_model_exclude_none=True)
def get_metric_history(
    metric_key: str,
    client: ClientDep,
    run_id: str | None = None,
    run_uuid: str | None = None,
    max_results: int | None = None,
    page_token: str | None = None,
) -> MetricHistoryResponse:
    """Every point of a metric, in step order (paged when ``max_results`` is given)."""
    run = RunIdRequest(run_id=run_id, run_uuid=run_uuid).id
    points = client.get_metric_history(run, metric_key)
    offset = _offset(page_token)
    end = len(points) if max_results is None else offset + _max_results(max_results)
    return MetricHistoryResponse(
        metrics=[
            MetricMessage.model_construct(
                key=p.key, value=p.value, timestamp=p.timestamp, step=p.step
            )
            for p in points[offset:end]
        ],
        next_page_token=str(end) if end < len(points) else None,
    )


@router.post(f"{PREFIX}/logged-models/search")
def search_logged_models() -> dict[str, list[str]]:
    """No MLflow logged models live in Keel, so none match.

    MLflow 3 searches them whenever it lists a folder of a run's artifacts (a folder may be a
    model); an empty answer lets the listing go on with the run's own artifacts.
    """
    return {"models": []}


def _log_points(
    request: Request, client: TrackingService, run_id: str, metrics: Sequence[MetricMessage]
) -> None:
    """Store metric points now (nothing buffered: the answer means they are stored)."""
    run = client.get_run(run_id)
    if run.lifecycle_stage is not LifecycleStage.ACTIVE:
        raise InvalidInput(
            f"The run {run_id} must be in the 'active' state. Current state is "
            f"{LifecycleStage(run.lifecycle_stage).value}."
        )
    now = now_ms()
    client.write_metric_points(
        [
            (run_id, m.key, m.value, m.step or 0, now if m.timestamp is None else m.timestamp)
            for m in metrics
        ]
    )
    keep_alive(request, run_id)


def _set_tags(client: TrackingService, run_id: str, tags: dict[str, str]) -> None:
    """Set tags; ``mlflow.runName`` renames the run, ``mlflow.user`` cannot change."""
    name, user = tags.pop(RUN_NAME_TAG, None), tags.pop(USER_TAG, None)
    if name is not None or user is not None:
        run = client.get_run(run_id)
        if name is not None and name != run.run_name:
            client.rename_run(run_id, name)
        if user is not None and user != run.user:
            raise InvalidInput(f"Keel cannot change the user of run {run_id} ({run.user})")
    if tags:
        client.set_tags(run_id, tags)


def _run_status(text: str) -> RunStatus:
    try:
        return RunStatus(text.upper())
    except ValueError:
        raise InvalidInput(
            f"unknown run status {text!r}; use RUNNING, SCHEDULED, FINISHED, FAILED or KILLED"
        ) from None


# -- paging and views ----------------------------------------------------------------------------

_VIEWS: dict[str, Lifecycle] = {
    "ACTIVE_ONLY": "active",
    "1": "active",
    "DELETED_ONLY": "deleted",
    "2": "deleted",
    "ALL": "all",
    "3": "all",
}


def _lifecycle(view: str | int | None) -> Lifecycle:
    if view is None:
        return "active"
    found = _VIEWS.get(str(view).upper())
    if found is None:
        raise InvalidInput(f"unknown view type {view!r}; use ACTIVE_ONLY, DELETED_ONLY or ALL")
    return found


def _max_results(value: int | None) -> int:
    if value is None:
        return DEFAULT_MAX_RESULTS
    if not 0 < value <= MAX_RESULTS:
        raise InvalidInput(
            f"Invalid value {value} for parameter 'max_results' supplied: it must be between "
            f"1 and {MAX_RESULTS}"
        )
    return value


def _offset(token: str | None) -> int:
    if not token:
        return 0
    if not token.isdigit():
        raise InvalidInput(f"page token {token!r} is not one this server issued")
    return int(token)


router.include_router(artifacts_router)


@router.api_route(
    f"{PREFIX}/{{path:path}}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
    response_model=None,
)
def not_implemented(path: str) -> Response:
    """Every MLflow endpoint Keel does not serve (traces, datasets, ...). The registry's are
    mounted before this route (keel.models.mlflow_compat), so only the ones it lacks end here."""
    return error_response(
        404,
        "ENDPOINT_NOT_FOUND",
        f"keel server does not implement the MLflow endpoint {PREFIX}/{path}; "
        "see docs/mlflow.md for what it serves",
    )
