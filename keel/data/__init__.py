"""Data versioning: files and folders in git as small pointer files, content in the store.

``keel data add PATH`` stores the content in the artifact store and writes ``PATH.keel`` (commit
it) and a ``.gitignore`` line; ``keel data status`` lists what changed since; ``keel data
checkout`` restores the working copy exactly. A stat cache answers for unchanged files without
reading them. Named dataset versions (``log_dataset``, ``load``, ``lineage``...) live in
:mod:`keel.data.versions` and are imported from there on first use, so ``import keel.data``
stays light (they need the metadata database). See ``docs/data.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

from keel.data.api import Workspace, add, checkout, status
from keel.data.models import AddResult, CheckoutResult, PathStatus, Pointer

__all__ = [
    "AddResult",
    "CheckoutResult",
    "PathStatus",
    "Pointer",
    "Workspace",
    "add",
    "checkout",
    "get_version",
    "lineage",
    "list_versions",
    "load",
    "log_dataset",
    "resolve",
    "run_inputs",
    "status",
]

_LAZY = dict.fromkeys(
    ("get_version", "lineage", "list_versions", "load", "log_dataset", "resolve", "run_inputs"),
    "keel.data.versions",
)


def __getattr__(name: str) -> Any:
    """``keel.data.log_dataset`` and the other named-version functions, imported on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keel.data' has no attribute {name!r}")
