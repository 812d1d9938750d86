"""Artifact store entities: a stored object (:class:`Blob`) and the manifest of a folder.

A manifest is itself an object: canonical JSON (sorted keys, no spaces, UTF-8)::

    {"files":{"sub/a.txt":{"digest":"...","size":3}},"kind":"keel.manifest","version":1}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from keel.errors import InvalidInput

__all__ = [
    "DIGEST_PATTERN",
    "MANIFEST_KIND",
    "MANIFEST_VERSION",
    "Blob",
    "decode_manifest",
    "encode_manifest",
    "manifest_bytes",
]

DIGEST_PATTERN = r"^[0-9a-f]{64}$"
MANIFEST_KIND = "keel.manifest"
MANIFEST_VERSION = 1


_DIGEST = re.compile(DIGEST_PATTERN)


@dataclass(frozen=True, slots=True)
class Blob:
    """One object of the artifact store: the same bytes always give the same ``digest``.

    A plain dataclass (not pydantic): the store makes one per object on its hot paths, and
    ``keel data status`` imports this module without paying for pydantic. The store builds
    them from digests it computed; :func:`decode_manifest` checks those read from a manifest.
    """

    digest: str
    """BLAKE3 digest of the content, 64 lowercase hex."""
    size: int
    """Content length in bytes."""


def encode_manifest(files: Mapping[str, Blob]) -> bytes:
    """The canonical bytes of a manifest: compact JSON, sorted keys, UTF-8."""
    return manifest_bytes({rel: (b.digest, b.size) for rel, b in files.items()})


def manifest_bytes(entries: Mapping[str, tuple[str, int]]) -> bytes:
    """:func:`encode_manifest` of ``{rel: (digest, size)}``: no Blob per file on hot paths."""
    document = {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "files": {rel: {"digest": digest, "size": size} for rel, (digest, size) in entries.items()},
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def decode_manifest(data: bytes, digest: str) -> dict[str, Blob]:
    """Parse and check a manifest object's bytes; ``digest`` only names it in errors.

    Raises:
        InvalidInput: not a version-1 Keel manifest, or a path with ``.``, ``..`` or an
            empty part (what could escape the folder it is materialised in).
    """

    def invalid(why: str) -> InvalidInput:
        return InvalidInput(
            f"artifact object {digest} is not a Keel manifest: {why}", digest=digest
        )

    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid("not JSON") from None
    if not isinstance(document, dict) or document.get("kind") != MANIFEST_KIND:
        raise invalid(f'no "kind": "{MANIFEST_KIND}"')
    if document.get("version") != MANIFEST_VERSION:
        raise invalid(f"unsupported version {document.get('version')!r}")
    entries = document.get("files")
    if not isinstance(entries, dict):
        raise invalid('"files" is not an object')
    files: dict[str, Blob] = {}
    for rel, entry in sorted(entries.items()):
        if not isinstance(rel, str) or any(part in ("", ".", "..") for part in rel.split("/")):
            raise invalid(f"unsafe path {rel!r}")
        try:
            digest_of, size = entry["digest"], entry["size"]
        except (KeyError, TypeError):
            raise invalid(f"bad entry for {rel!r}") from None
        if not (isinstance(digest_of, str) and _DIGEST.fullmatch(digest_of)):
            raise invalid(f"bad digest for {rel!r}")
        if type(size) is not int or size < 0:
            raise invalid(f"bad size for {rel!r}")
        files[rel] = Blob(digest_of, size)
    return files
