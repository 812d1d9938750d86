"""The artifact half of the tracking API: log files, folders, text, dicts, figures and tables to
a run, list them and read them back (every read verified against the content hash).

:class:`ArtifactMethods` is a base of :class:`keel.tracking.api.Client`; it needs the client's
``settings`` and ``store``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keel.artifacts import ArtifactStore, BlobReader
from keel.errors import InvalidInput, NotFound
from keel.settings import Settings
from keel.tracking.client_base import EncodedArtifacts
from keel.tracking.models import ArtifactEntry
from keel.tracking.store import TrackingStore

__all__ = ["ArtifactMethods"]


class ArtifactMethods(EncodedArtifacts):
    """Run artifacts over the content-addressed store named by ``settings.artifact_url``."""

    settings: Settings
    store: TrackingStore
    _artifacts: ArtifactStore | None = None

    @property
    def artifacts(self) -> ArtifactStore:
        if self._artifacts is None:
            self._artifacts = ArtifactStore(self.settings.artifacts_url)
        return self._artifacts

    # -- artifacts ------------------------------------------------------------------------
    def log_artifact(
        self, run_id: str, local_path: str | Path, *, artifact_path: str | None = None
    ) -> ArtifactEntry:
        """Store a file as ``<artifact_path>/<file name>``."""
        path = Path(local_path)
        if not path.is_file():
            raise InvalidInput(f"{path} is not a file (use log_artifacts for a directory)")
        blob = self.artifacts.put_file(path)
        entry = ArtifactEntry(
            path=_join(artifact_path, path.name), digest=blob.digest, size=blob.size, kind="file"
        )
        self.store.record_artifact(run_id, entry)
        return entry

    def log_artifacts(
        self, run_id: str, local_dir: str | Path, *, artifact_path: str | None = None
    ) -> ArtifactEntry:
        """Store a directory's files under ``artifact_path``.

        The folder is stored as its files plus a manifest object (returned); the run records
        each file, so logging a second folder to the same path adds to the first, as MLflow does.
        """
        path = Path(local_dir)
        if not path.is_dir():
            raise InvalidInput(f"{path} is not a directory (use log_artifact for a file)")
        blob = self.artifacts.put_dir(path)
        base = _clean(artifact_path or "")
        files = [
            ArtifactEntry(path=_join(base, rel), digest=b.digest, size=b.size, kind="file")
            for rel, b in self.artifacts.read_manifest(blob.digest).items()
        ]
        self.store.record_artifacts(run_id, files)
        return ArtifactEntry(path=base, digest=blob.digest, size=blob.size, kind="dir")

    def log_bytes(self, run_id: str, data: bytes, artifact_file: str) -> ArtifactEntry:
        blob = self.artifacts.put_bytes(data)
        entry = ArtifactEntry(
            path=_clean(artifact_file), digest=blob.digest, size=blob.size, kind="file"
        )
        if not entry.path:
            raise InvalidInput("artifact_file must name a file, e.g. 'notes/summary.txt'")
        self.store.record_artifact(run_id, entry)
        return entry

    def log_stream(
        self,
        run_id: str,
        stream: Any,
        artifact_file: str,
        *,
        digest: str | None = None,
        size_hint: int | None = None,
    ) -> ArtifactEntry:
        """Store what ``stream.read(n)`` yields as the file ``artifact_file``, in flat memory.

        Args:
            digest: the BLAKE3 hex digest the content must have; on a mismatch nothing is
                recorded.
            size_hint: the expected size, if known.

        Raises:
            InvalidInput: ``artifact_file`` is empty or has ``..``, or the digest differs.
            NotFound: no such run.
        """
        path = _clean(artifact_file)
        if not path:
            raise InvalidInput("artifact_file must name a file, e.g. 'notes/summary.txt'")
        blob = self.artifacts.put_stream(stream, size_hint=size_hint)
        if digest is not None and blob.digest != digest:
            raise InvalidInput(
                f"the content of {path!r} hashes to {blob.digest}, not the {digest} it was "
                "sent with (damaged in transit?); nothing was recorded",
                path=path,
                expected=digest,
                actual=blob.digest,
            )
        entry = ArtifactEntry(path=path, digest=blob.digest, size=blob.size, kind="file")
        self.store.record_artifact(run_id, entry)
        return entry

    def open_artifact(self, run_id: str, path: str) -> BlobReader:
        """A stream over one artifact file; the read that reaches its end checks its digest.

        The reader's ``digest`` and ``size`` say what it will deliver.

        Raises:
            NotFound: the run has no artifact file at ``path``.
            StorageError: (on the last read) the stored bytes do not match their digest.
        """
        wanted = _clean(path)
        entries = (
            [e for e in self.list_artifacts(run_id, wanted) if e.path == wanted] if wanted else []
        )
        if not entries:
            raise NotFound(f"run {run_id} has no artifact file {path!r}", run_id=run_id, path=path)
        return self.artifacts.open(entries[0].digest)

    def list_artifacts(self, run_id: str, path: str = "") -> list[ArtifactEntry]:
        """Every artifact file of the run under ``path`` (directories expanded)."""
        prefix = _clean(path)
        files: dict[str, ArtifactEntry] = {}
        for entry in self.store.artifact_entries(run_id):
            if entry.kind == "dir":
                for rel, blob in self.artifacts.read_manifest(entry.digest).items():
                    full = _join(entry.path, rel)
                    files[full] = ArtifactEntry(
                        path=full, digest=blob.digest, size=blob.size, kind="file"
                    )
            else:
                files[entry.path] = entry
        return [
            e
            for p, e in sorted(files.items())
            if not prefix or p == prefix or p.startswith(prefix + "/")
        ]

    def download_artifacts(self, run_id: str, path: str = "", *, dst: str | Path) -> Path:
        """Copy the artifacts under ``path`` into ``dst``; returns the local path of ``path``.

        Raises:
            NotFound: the run has no artifact at ``path``.
            Conflict: a local file stands where a folder must go, or a folder where a file
                goes; nothing is written then.
            StorageError: a stored object does not match its hash (corruption).
        """
        entries = self.list_artifacts(run_id, path)
        if not entries:
            raise NotFound(f"run {run_id} has no artifact at {path!r}", run_id=run_id, path=path)
        root = Path(dst)
        self.artifacts.get_files({entry.path: entry.digest for entry in entries}, root)
        return root / _clean(path) if path else root

    def read_artifact(self, run_id: str, path: str) -> bytes:
        """The bytes of one artifact file (verified against its hash)."""
        entries = [e for e in self.list_artifacts(run_id, path) if e.path == _clean(path)]
        if not entries:
            raise NotFound(f"run {run_id} has no artifact file {path!r}", run_id=run_id)
        return self.artifacts.read_bytes(entries[0].digest)


def _clean(path: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidInput(f"artifact path {path!r} may not contain '..'")
    if "\x00" in path:
        raise InvalidInput(f"artifact path {path!r} may not contain a NUL character")
    return "/".join(parts)


def _join(base: str | None, name: str) -> str:
    return _clean(f"{base or ''}/{name}")
