"""``/api/v1/experiments``: create, list, look up, rename, delete and restore experiments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from keel.errors import NotFound
from keel.tracking.models import (
    Experiment,
    ExperimentCreate,
    ExperimentList,
    ExperimentUpdate,
    Lifecycle,
)
from keel.tracking.routes.common import ClientDep, ExperimentIdPath, NameText

__all__ = ["router"]

router = APIRouter(prefix="/experiments", tags=["experiments"])
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "the name is taken (error: already_exists)"}
}


@router.post("", status_code=201, responses=_CONFLICT)
def create_experiment(body: ExperimentCreate, client: ClientDep) -> Experiment:
    """Create an experiment (its name must be unique, deleted experiments included)."""
    return client.create_experiment(body.name, tags=body.tags)


@router.get("")
def list_experiments(client: ClientDep, lifecycle: Lifecycle = "active") -> ExperimentList:
    """Experiments in id order: active ones, deleted ones, or all."""
    return ExperimentList(experiments=client.list_experiments(lifecycle=lifecycle))


@router.get("/by-name/{name:path}")
def get_experiment_by_name(name: NameText, client: ClientDep) -> Experiment:
    """The experiment called ``name`` (it may contain slashes)."""
    found = client.get_experiment_by_name(name)
    if found is None:
        raise NotFound(f"no experiment named {name!r}", name=name)
    return found


@router.get("/{experiment_id}")
def get_experiment(experiment_id: ExperimentIdPath, client: ClientDep) -> Experiment:
    return client.get_experiment(experiment_id)


@router.patch("/{experiment_id}", responses=_CONFLICT)
def rename_experiment(
    experiment_id: ExperimentIdPath, body: ExperimentUpdate, client: ClientDep
) -> Experiment:
    """Rename an experiment."""
    return client.rename_experiment(experiment_id, body.name)


@router.delete("/{experiment_id}", status_code=204, response_class=Response)
def delete_experiment(experiment_id: ExperimentIdPath, client: ClientDep) -> None:
    """Soft-delete an experiment and its runs (``POST .../restore`` undoes it)."""
    client.delete_experiment(experiment_id)


@router.post("/{experiment_id}/restore")
def restore_experiment(experiment_id: ExperimentIdPath, client: ClientDep) -> Experiment:
    """Restore a deleted experiment and its runs."""
    client.restore_experiment(experiment_id)
    return client.get_experiment(experiment_id)
