"""Models: log them with their flavor, signature and lineage; load them anywhere with one line;
register versions, move aliases, and govern what reaches production. See ``docs/models.md``.

Everything here is imported on first use (``keel.models.log_model`` pulls in the flavor's
framework only when it is called), so ``import keel.models`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ModelManifest",
    "ModelVersion",
    "PythonModel",
    "RegisteredModel",
    "Signature",
    "evaluate",
    "gate",
    "load",
    "log_model",
    "register",
]

_LAZY = {
    "ModelManifest": "keel.models.models",
    "ModelVersion": "keel.models.models",
    "RegisteredModel": "keel.models.models",
    "Signature": "keel.models.models",
    "PythonModel": "keel.models.flavors.python",
    "evaluate": "keel.models.evaluation",
    "gate": "keel.models.release_gate",
    "load": "keel.models.loading",
    "log_model": "keel.models.packaging",
    "register": "keel.models.api",
}


def __getattr__(name: str) -> Any:
    """The public names, each imported from its module on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keel.models' has no attribute {name!r}")
