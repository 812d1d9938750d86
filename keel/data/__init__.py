"""Data versioning: files and folders in git as small pointer files, content in the store.

``keel data add PATH`` stores the content in the artifact store and writes ``PATH.keel`` (commit
it) and a ``.gitignore`` line; ``keel data status`` lists what changed since; ``keel data
checkout`` restores the working copy exactly. A stat cache answers for unchanged files without
reading them. See ``docs/data.md``.
"""

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
    "status",
]
