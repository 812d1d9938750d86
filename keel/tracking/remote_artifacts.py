"""The artifact half of the remote client: uploads and downloads checked against BLAKE3 digests.

Every upload names the content's digest (``X-Keel-Digest``), so the server refuses bytes damaged
in transit; every download is hashed as it arrives and compared with the digest the server names.
:class:`RemoteArtifactMethods` is a base of :class:`keel.tracking.remote.RemoteClient`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import blake3

from keel.errors import InvalidInput, NotFound, StorageError
from keel.tracking.client_base import EncodedArtifacts
from keel.tracking.models import ArtifactEntry, ArtifactList
from keel.tracking.remote_http import HttpApi, error_from

__all__ = ["RemoteArtifactMethods"]

_CHUNK = 1 << 20
_DIGEST = "X-Keel-Digest"


def _clean(path: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidInput(f"artifact path {path!r} may not contain '..'")
    return "/".join(parts)


def _file_digest(path: Path) -> str:
    hasher = blake3.blake3()
    with open(path, "rb") as source:
        while chunk := source.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as source:
        while chunk := source.read(_CHUNK):
            yield chunk


class RemoteArtifactMethods(EncodedArtifacts):
    """Run artifacts over ``PUT``/``GET /runs/{run_id}/artifacts/{path}``."""

    _api: HttpApi

    def _url(self, run_id: str, path: str) -> str:
        return f"/runs/{run_id}/artifacts/{quote(path, safe='/')}"

    def _upload(self, run_id: str, path: str, content: Any, digest: str) -> ArtifactEntry:
        if not path:
            raise InvalidInput("artifact_file must name a file, e.g. 'notes/summary.txt'")
        response = self._api.request(
            "PUT",
            self._url(run_id, path),
            content=content,
            headers={_DIGEST: digest, "content-type": "application/octet-stream"},
        )
        return ArtifactEntry.model_validate(response.json())

    def log_artifact(
        self, run_id: str, local_path: str | Path, *, artifact_path: str | None = None
    ) -> ArtifactEntry:
        """Upload a file as ``<artifact_path>/<file name>``."""
        path = Path(local_path)
        if not path.is_file():
            raise InvalidInput(f"{path} is not a file (use log_artifacts for a directory)")
        target = _clean(f"{artifact_path or ''}/{path.name}")
        return self._upload(run_id, target, lambda: _file_chunks(path), _file_digest(path))

    def log_artifacts(
        self, run_id: str, local_dir: str | Path, *, artifact_path: str | None = None
    ) -> ArtifactEntry:
        """Upload every file of a directory under ``artifact_path``.

        Returns an entry of kind ``dir`` whose digest hashes the uploaded files' paths and
        digests (the server stores the files one by one).
        """
        root = Path(local_dir)
        if not root.is_dir():
            raise InvalidInput(f"{root} is not a directory (use log_artifact for a file)")
        base = _clean(artifact_path or "")
        listing = blake3.blake3()
        size = 0
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = file.relative_to(root).as_posix()
            entry = self._upload(
                run_id,
                _clean(f"{base}/{rel}"),
                lambda file=file: _file_chunks(file),
                _file_digest(file),
            )
            listing.update(f"{rel}\0{entry.digest}\n".encode())
            size += entry.size
        return ArtifactEntry(path=base, digest=listing.hexdigest(), size=size, kind="dir")

    def log_bytes(self, run_id: str, data: bytes, artifact_file: str) -> ArtifactEntry:
        return self._upload(run_id, _clean(artifact_file), data, blake3.blake3(data).hexdigest())

    def list_artifacts(self, run_id: str, path: str = "") -> list[ArtifactEntry]:
        """Every artifact file of the run under ``path`` (directories expanded)."""
        data = self._api.get_json(f"/runs/{run_id}/artifacts", path=_clean(path))
        return ArtifactList.model_validate(data).artifacts

    def _fetch(self, run_id: str, path: str, sink: Any) -> None:
        """Stream one artifact file into ``sink`` (a binary writer), verifying its digest."""
        with self._api.stream(self._url(run_id, _clean(path))) as response:
            if response.status_code >= 400:
                response.read()
                raise error_from(response)
            expected = response.headers.get(_DIGEST)
            hasher = blake3.blake3()
            for chunk in response.iter_bytes(_CHUNK):
                hasher.update(chunk)
                sink.write(chunk)
        if expected is not None and hasher.hexdigest() != expected:
            raise StorageError(
                f"artifact {path!r} of run {run_id} arrived damaged: it hashes to "
                f"{hasher.hexdigest()}, the server named {expected}",
                run_id=run_id,
                path=path,
            )

    def read_artifact(self, run_id: str, path: str) -> bytes:
        """The bytes of one artifact file (verified against its digest)."""
        buffer = io.BytesIO()
        self._fetch(run_id, path, buffer)
        return buffer.getvalue()

    def download_artifacts(self, run_id: str, path: str = "", *, dst: str | Path) -> Path:
        """Copy the artifacts under ``path`` into ``dst``; returns the local path of ``path``.

        Raises:
            NotFound: the run has no artifact at ``path``.
            StorageError: a file arrived damaged (its digest differs).
        """
        entries = self.list_artifacts(run_id, path)
        if not entries:
            raise NotFound(f"run {run_id} has no artifact at {path!r}", run_id=run_id, path=path)
        root = Path(dst)
        for entry in entries:
            target = root / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.part")
            with open(partial, "wb") as sink:
                self._fetch(run_id, entry.path, sink)
            partial.replace(target)
        return root / _clean(path) if path else root
