"""Authentication and authorization for ``keel server --auth``: users, tokens, grants, audit.

See ``docs/server.md#authentication``.
"""

from keel.auth.models import Permission, Principal, Role
from keel.auth.store import AuthStore

__all__ = ["AuthStore", "Permission", "Principal", "Role"]
