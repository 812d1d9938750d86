"""What an artifact store says when an object is malformed, missing, unreadable or corrupt, and
the move of a corrupt object aside into ``quarantine/`` so that putting its content again
repairs it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from keel.artifacts.backends import FsspecBackend, LocalBackend
from keel.errors import InvalidInput, NotFound, StorageError

__all__ = ["Problems", "check_digest"]

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_RESTORE_ADVICE = "re-uploading the file (log the artifact again) restores it"


def check_digest(digest: object) -> str:
    """``digest`` if it is 64 lowercase hex characters, else InvalidInput."""
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise InvalidInput(
            f"not an artifact digest: {digest!r} (expected 64 lowercase hex characters)",
            digest=str(digest),
        )
    return digest


class Problems:
    """The errors of one store (its backend, and its URL as the user gave it)."""

    def __init__(self, backend: LocalBackend | FsspecBackend, url: str) -> None:
        self._backend = backend
        self._url = url

    def missing(self, digest: str, path: str) -> NotFound:
        """No object at ``path``; the message says where it went if a read quarantined it."""
        backend = self._backend
        moved = backend.quarantined(f"{digest}.")
        if moved:
            shown = backend.display(moved[-1])
            return NotFound(
                f"artifact object {digest} is not in the store {self._url}: a read found it "
                f"corrupt and moved it to {shown}; {_RESTORE_ADVICE}",
                digest=digest,
                path=backend.display(path),
                quarantined=shown,
            )
        return NotFound(
            f"artifact object {digest} is not in the store {self._url}",
            digest=digest,
            path=backend.display(path),
        )

    def corrupt(self, digest: str, path: str, why: str, *, identity: Any) -> StorageError:
        """Move a corrupt object into quarantine/ and return the error that says so.

        Putting the same content again skips objects that exist, so a corrupt one left in
        place would stay forever; moved aside, the next put writes it afresh. ``identity``
        (local stores) is the file that was read: one a writer has since replaced is kept.
        """
        backend = self._backend
        shown = backend.display(path)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        dest = backend.join("quarantine", f"{digest}.{stamp}")
        problem = f"artifact object {digest} at {shown} is corrupt: it does not match its digest"
        try:
            moved = backend.quarantine(path, dest, identity=identity)
        except OSError as error:
            return StorageError(
                f"{problem} ({why}), and it could not be moved aside into quarantine "
                f"({error.strerror or error}): delete {shown}, then re-upload the file (log the "
                "artifact again) or restore it from a backup",
                digest=digest,
                path=shown,
            )
        if not moved:
            return StorageError(
                f"{problem} ({why}); another process has since moved it aside or replaced "
                "it: read it again, and if it is missing, re-upload the file (log the artifact "
                "again)",
                digest=digest,
                path=shown,
            )
        quarantined = backend.display(dest)
        return StorageError(
            f"{problem} ({why}). It was quarantined (moved to {quarantined}); "
            f"{_RESTORE_ADVICE}, or restore it from a backup",
            digest=digest,
            path=shown,
            quarantined=quarantined,
        )

    def unreadable(self, digest: str, path: str, error: OSError) -> StorageError:
        shown = self._backend.display(path)
        return StorageError(
            f"cannot read artifact object {digest} at {shown}: {error.strerror or error}",
            digest=digest,
            path=shown,
        )

    def unwritable(self, error: OSError) -> StorageError:
        return StorageError(
            f"cannot write to the artifact store {self._url}: {error.strerror or error}",
            url=self._url,
        )
