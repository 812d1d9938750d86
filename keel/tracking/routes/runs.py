"""``/api/v1/runs``: create, read, end, delete and restore runs; params, tags, heartbeats; search.

Runs are created for a caller in another process: the server records the ``user``, ``host``
and ``start_time`` the caller sends, never its own source or process (see
:meth:`keel.tracking.api.Client.create_remote_run`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy.exc import DataError

from keel.errors import InvalidInput, NotFound
from keel.tracking.models import (
    MAX_KEY_LENGTH,
    ParamsLog,
    Run,
    RunCreate,
    RunOut,
    RunPageOut,
    RunRename,
    RunSearch,
    RunUpdate,
    TagsSet,
)
from keel.tracking.routes.common import NO_NUL, ClientDep, RunIdPath

__all__ = ["router"]

router = APIRouter(prefix="/runs", tags=["runs"])
TagKeyPath = Annotated[str, Path(min_length=1, max_length=MAX_KEY_LENGTH, pattern=NO_NUL)]


def _out(run: Run) -> RunOut:
    return RunOut.model_construct(**dict(run))


@router.post("", status_code=201)
def create_run(body: RunCreate, request: Request, client: ClientDep) -> RunOut:
    """Start a RUNNING run. ``host`` defaults to the caller's address, ``user`` to 'unknown'."""
    host = body.host or (request.client.host if request.client else None) or "unknown"
    run = client.create_remote_run(
        body.experiment_id,
        host=host,
        user=body.user or "unknown",
        run_name=body.run_name,
        tags=body.tags,
        parent_run_id=body.parent_run_id,
        start_time=body.start_time,
    )
    return _out(run)


@router.post("/search")
def search_runs(body: RunSearch, client: ClientDep) -> RunPageOut:
    """One page of runs matching ``filter`` (docs/search.md); pass ``next_page_token`` back for
    the next. A filter that does not parse is a 400 whose message points a caret at the fault.
    """
    try:
        page = client.search_runs(
            body.filter,
            order_by=body.order_by,
            experiment_ids=body.experiment_ids,
            max_results=body.max_results,
            page_token=body.page_token,
            lifecycle=body.lifecycle,
        )
    except (OverflowError, DataError) as exc:
        # a literal the filter grammar accepts but the column cannot hold (a start_time of 10**25)
        raise InvalidInput(
            "a number in the filter is out of range for the field it is compared with",
            filter=body.filter,
        ) from exc
    return RunPageOut.model_construct(
        runs=[_out(run) for run in page.runs], next_page_token=page.next_page_token
    )


@router.get("/by-prefix/{prefix}")
def resolve_run_id(prefix: RunIdPath, client: ClientDep) -> dict[str, str]:
    """The full id of the one run whose id starts with ``prefix`` (404 if none, 400 if several)."""
    return {"run_id": client.resolve_run_id(prefix)}


@router.get("/{run_id}")
def get_run(run_id: RunIdPath, client: ClientDep) -> RunOut:
    """A run with its params, latest metric values and tags."""
    return _out(client.get_run(run_id))


@router.patch("/{run_id}")
def end_run(run_id: RunIdPath, body: RunUpdate, client: ClientDep) -> RunOut:
    """End a run with a final status (FINISHED, FAILED or KILLED); its end time is now."""
    client.end_run(run_id, status=body.status, end_time=body.end_time)
    return _out(client.get_run(run_id))


@router.put("/{run_id}/name")
def rename_run(run_id: RunIdPath, body: RunRename, client: ClientDep) -> RunOut:
    """Give a run another name (names need not be unique)."""
    return _out(client.rename_run(run_id, body.run_name))


@router.delete("/{run_id}", status_code=204, response_class=Response)
def delete_run(run_id: RunIdPath, client: ClientDep) -> None:
    """Soft-delete a run (``POST .../restore`` undoes it)."""
    if not client.delete_runs([run_id]):
        raise NotFound(f"no run with id {run_id!r}", run_id=run_id)


@router.post("/{run_id}/restore")
def restore_run(run_id: RunIdPath, client: ClientDep) -> RunOut:
    if not client.restore_runs([run_id]):
        raise NotFound(f"no run with id {run_id!r}", run_id=run_id)
    return _out(client.get_run(run_id))


@router.post("/{run_id}/heartbeat", status_code=204, response_class=Response)
def heartbeat(run_id: RunIdPath, client: ClientDep) -> None:
    """The caller's process is alive: without heartbeats a RUNNING run is marked LOST after
    ``KEEL_LOST_RUN_TIMEOUT`` seconds."""
    client.heartbeat(run_id)


@router.post(
    "/{run_id}/params",
    status_code=204,
    response_class=Response,
    responses={409: {"description": "a param already has another value (error: conflict)"}},
)
def log_params(run_id: RunIdPath, body: ParamsLog, client: ClientDep) -> None:
    """Record params. They are immutable: the same value again is fine, another is a 409."""
    if not body.params:
        client.get_run(run_id)  # nothing to write, but the run must exist
    client.log_params(run_id, body.params)


@router.post("/{run_id}/tags", status_code=204, response_class=Response)
def set_tags(run_id: RunIdPath, body: TagsSet, client: ClientDep) -> None:
    """Set tags (a tag that exists gets the new value)."""
    if not body.tags:
        client.get_run(run_id)
    client.set_tags(run_id, body.tags)


@router.delete("/{run_id}/tags/{key:path}", status_code=204, response_class=Response)
def delete_tag(run_id: RunIdPath, key: TagKeyPath, client: ClientDep) -> None:
    """Delete one tag (``key`` may contain slashes)."""
    client.delete_tag(run_id, key)
