"""Deployments: named, versioned configurations of what a scoring service serves, with canary,
A/B and shadow traffic between registered model versions. See ``docs/deployments.md``.

The functions of :mod:`keel.serving.deployments.api` are available here (imported on first
use, so the server can mount the routes without the rest)::

    from keel.serving import deployments

    deployments.create("churn", "churn@champion", canaries={"churn@challenger": 10})
    deployments.set_traffic("churn", {"churn@challenger": 25})
    deployments.promote("churn", move_alias=True)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "add_shadow",
    "create",
    "delete",
    "get",
    "get_revision",
    "history",
    "list_deployments",
    "promote",
    "remove_shadow",
    "rollback",
    "set_traffic",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from keel.serving.deployments import api

        return getattr(api, name)
    raise AttributeError(f"module 'keel.serving.deployments' has no attribute {name!r}")
