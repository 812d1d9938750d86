"""Artifacts over HTTP: streamed uploads and downloads, checked against their BLAKE3 digest.

An upload goes from the socket into the content-addressed store chunk by chunk (never whole in
memory); with an ``X-Keel-Digest`` header, content that hashes differently is refused and
nothing is recorded. A download streams the stored object through the store's verifying reader
and names its digest in ``X-Keel-Digest``, so the client can check what it received.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated, Any

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from keel.artifacts.models import DIGEST_PATTERN
from keel.errors import InvalidInput, StorageError
from keel.tracking.body_reader import BodyReader
from keel.tracking.models import MAX_ARTIFACT_PATH_LENGTH, ArtifactEntry, ArtifactList
from keel.tracking.routes.common import NO_NUL, ClientDep, RunIdPath

__all__ = ["DIGEST_HEADER", "router"]

router = APIRouter(prefix="/runs/{run_id}/artifacts", tags=["artifacts"])
DIGEST_HEADER = "X-Keel-Digest"
log = logging.getLogger(__name__)
_CHUNK = 1 << 20
ArtifactPath = Annotated[
    str, Path(min_length=1, max_length=MAX_ARTIFACT_PATH_LENGTH, pattern=NO_NUL)
]
_BINARY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.put("/{path:path}", status_code=201, openapi_extra=_BINARY_BODY)
async def upload_artifact(
    run_id: RunIdPath,
    path: ArtifactPath,
    request: Request,
    client: ClientDep,
    digest: Annotated[
        str | None,
        Header(
            alias=DIGEST_HEADER,
            pattern=DIGEST_PATTERN,
            description="the content's BLAKE3 hex digest; a mismatch is a 400 and stores nothing",
        ),
    ] = None,
) -> ArtifactEntry:
    """Store the request body as the run's artifact file ``path`` (replacing one there)."""
    await anyio.to_thread.run_sync(client.get_run, run_id)  # 404 before reading the body
    length = request.headers.get("content-length", "")
    reader = BodyReader(request.stream().__aiter__())
    try:
        return await anyio.to_thread.run_sync(
            lambda: client.log_stream(
                run_id,
                reader,
                path,
                digest=digest,
                size_hint=int(length) if length.isdigit() else None,
            )
        )
    except ClientDisconnect:
        raise InvalidInput(
            f"the upload of {path!r} ended before its body did; nothing was recorded", path=path
        ) from None


@router.get("")
def list_artifacts(
    run_id: RunIdPath,
    client: ClientDep,
    path: Annotated[
        str, Query(max_length=MAX_ARTIFACT_PATH_LENGTH, pattern=NO_NUL, description="a folder")
    ] = "",
) -> ArtifactList:
    """Every artifact file of the run under ``path`` (logged folders are listed file by file)."""
    return ArtifactList(artifacts=client.list_artifacts(run_id, path))


@router.get(
    "/{path:path}",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "headers": {DIGEST_HEADER: {"description": "BLAKE3 hex digest of the content"}},
        }
    },
)
def download_artifact(run_id: RunIdPath, path: ArtifactPath, client: ClientDep) -> Any:
    """The content of one artifact file, streamed; ``X-Keel-Digest`` names its digest.

    The stored object is checked while it streams: if it is corrupt the connection is cut
    before the last byte, so a client never receives a complete body that is wrong.
    """
    reader = client.open_artifact(run_id, path)

    def chunks() -> Iterator[bytes]:
        with reader:
            try:
                while chunk := reader.read(_CHUNK):
                    yield chunk
            except StorageError as exc:
                log.error("keel server: cut the download of %s/%s: %s", run_id, path, exc)
                raise

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={
            DIGEST_HEADER: reader.digest,
            "Content-Length": str(reader.size),
            "X-Content-Type-Options": "nosniff",
        },
    )
