"""MLflow's artifact proxy (``/api/2.0/mlflow-artifacts/artifacts/...``) over Keel's run artifacts.

A run's MLflow artifact URI is ``mlflow-artifacts:/<experiment_id>/<run_id>/artifacts``, so the
client sends every artifact call here with a path ``<experiment_id>/<run_id>/artifacts/<rel>``:
that is the run's artifact ``<rel>``, stored in Keel's content-addressed store and recorded on
the run like any artifact Keel logs itself (``keel runs show`` and ``keel.download_artifacts``
see it). Uploads stream from the socket into the store and downloads from the store to the
socket, a chunk at a time (memory stays flat whatever the size); a download is checked against
its digest as it goes.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from keel.errors import InvalidInput
from keel.tracking.body_reader import BodyReader
from keel.tracking.mlflow_compat_wire import (
    Empty,
    MlflowRoute,
    client_of,
    error_response,
    keep_alive,
)
from keel.tracking.service import TrackingService

__all__ = ["PREFIX", "router"]

PREFIX = "/api/2.0/mlflow-artifacts/artifacts"
_RUN_PATH = re.compile(r"(?P<experiment>\d+)/(?P<run>[0-9a-f]{32})/artifacts(?:/(?P<rel>.*))?")

router = APIRouter(tags=["mlflow"], route_class=MlflowRoute)
ClientDep = Annotated[TrackingService, Depends(client_of)]


class FileInfo(BaseModel):
    path: str = Field(description="relative to the listed folder")
    is_dir: bool
    file_size: int | None = None


class ListArtifactsResponse(BaseModel):
    files: list[FileInfo] = Field(default_factory=list)


def _run_path(path: str) -> tuple[str, str] | None:
    """``(run_id, rel)`` for ``<experiment>/<run_id>/artifacts[/<rel>]``, else None."""
    match = _RUN_PATH.fullmatch(path.strip("/"))
    if match is None:
        return None
    rel = "/".join(p for p in (match["rel"] or "").split("/") if p not in ("", "."))
    if ".." in rel.split("/"):
        raise InvalidInput(f"artifact path {path!r} may not contain '..'")
    if "\x00" in rel:
        raise InvalidInput(f"artifact path {path!r} may not contain a NUL character")
    return match["run"], rel


def _file_path(path: str) -> tuple[str, str]:
    found = _run_path(path)
    if found is None or not found[1]:
        raise InvalidInput(
            f"{path!r} is not a run artifact file: expected <experiment_id>/<run_id>/artifacts/"
            "<path>, as in a run's artifact_uri"
        )
    return found


@router.get(PREFIX, response_model_exclude_none=True)
def list_artifacts(client: ClientDep, path: str = "") -> ListArtifactsResponse:
    """The files and folders right under ``path`` (nothing for a file, as MLflow's server)."""
    found = _run_path(path)
    if found is None:
        return ListArtifactsResponse()
    run_id, rel = found
    children: dict[str, FileInfo] = {}
    for entry in client.list_artifacts(run_id, rel):
        if entry.path == rel:
            return ListArtifactsResponse()  # a file, not a folder
        below = entry.path[len(rel) + 1 :] if rel else entry.path
        name, _, rest = below.partition("/")
        if rest:
            children[name] = FileInfo(path=name, is_dir=True)
        else:
            children[name] = FileInfo(path=name, is_dir=False, file_size=entry.size)
    return ListArtifactsResponse(files=[children[name] for name in sorted(children)])


@router.get(f"{PREFIX}/{{path:path}}", response_model=None)
def download_artifact(path: str, client: ClientDep) -> Response:
    """One artifact file's bytes, streamed and verified against its digest."""
    run_id, rel = _file_path(path)
    reader = client.open_artifact(run_id, rel)

    def chunks() -> Iterator[bytes]:
        with reader:  # closed when the body is sent or the caller hangs up
            yield from reader

    return StreamingResponse(
        chunks(),
        media_type=mimetypes.guess_type(rel)[0] or "application/octet-stream",
        headers={"Content-Length": str(reader.size)},
    )


@router.put(f"{PREFIX}/{{path:path}}")
async def upload_artifact(path: str, request: Request, client: ClientDep) -> Empty:
    """Store the request body as the run's artifact ``rel`` (replacing one of the same path).

    The body streams from the socket into the store chunk by chunk: the store reads in a worker
    thread, which pulls each chunk from the event loop.
    """
    run_id, rel = _file_path(path)
    size = request.headers.get("content-length")
    body = BodyReader(request.stream().__aiter__())
    await run_in_threadpool(
        client.log_stream,
        run_id,
        body,
        rel,
        size_hint=int(size) if size and size.isdigit() else None,
    )
    keep_alive(request, run_id)
    return Empty()


@router.delete(f"{PREFIX}/{{path:path}}", response_model=None)
def delete_artifact(path: str) -> Response:
    return error_response(
        501, "NOT_IMPLEMENTED", "keel server does not delete run artifacts (they are immutable)"
    )
