"""Artifacts: a content-addressed blob store (BLAKE3 names, atomic writes, verified reads).

Everything Keel keeps as bytes (run artifacts, dataset files, models) goes through
:class:`ArtifactStore`, in a local folder or any fsspec location; a folder is stored as its
files plus a manifest object. See ``docs/artifacts.md``.
"""

from keel.artifacts.files import hash_file, walk_files
from keel.artifacts.models import Blob
from keel.artifacts.store import ArtifactStore, BlobReader

__all__ = ["ArtifactStore", "Blob", "BlobReader", "hash_file", "walk_files"]
