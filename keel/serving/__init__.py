"""Serving: loaded models as an HTTP scoring service (``keel serve``), deployments with canary,
A/B and shadow arms, batch scoring, broker workers and exports. See ``docs/serving.md``.

``create_scoring_app`` is imported on first use, so ``keel.server`` can mount the deployment
routes without loading the scoring app.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_scoring_app"]


def __getattr__(name: str) -> Any:
    if name == "create_scoring_app":
        from keel.serving.app import create_scoring_app

        return create_scoring_app
    raise AttributeError(f"module 'keel.serving' has no attribute {name!r}")
