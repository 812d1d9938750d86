"""Keel: the whole model lifecycle in one pip install.

The fluent tracking functions (``keel.start_run``, ``keel.log_metric``, ...) work over an
explicit :class:`keel.Client`. Every name here is loaded on first use, so ``import keel`` costs
almost nothing and heavy libraries (pandas, pyarrow, scipy, sklearn) load only in the functions
that need them.

Example:
    >>> import keel
    >>> keel.set_experiment("diabetes")
    >>> with keel.start_run(name="ridge"):
    ...     keel.log_param("alpha", 0.5)
    ...     keel.log_metric("rmse", 53.1)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ActiveRun",
    "Client",
    "KeelError",
    "Settings",
    "active_run",
    "autolog",
    "download_artifacts",
    "end_run",
    "get_metric_history",
    "get_run",
    "log_artifact",
    "log_artifacts",
    "log_dict",
    "log_figure",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "log_table",
    "log_text",
    "search_runs",
    "set_experiment",
    "set_tag",
    "set_tags",
    "set_tracking_uri",
    "start_run",
]

_HOMES = {
    "Client": "keel.tracking.api",
    "KeelError": "keel.errors",
    "Settings": "keel.settings",
    "autolog": "keel.models.autolog",
}
_SUBMODULES = {"errors", "settings", "tracking", "artifacts", "db"}

if TYPE_CHECKING:
    from keel.errors import KeelError
    from keel.models.autolog import autolog
    from keel.settings import Settings
    from keel.tracking.api import Client
    from keel.tracking.fluent import (
        ActiveRun,
        active_run,
        download_artifacts,
        end_run,
        get_metric_history,
        get_run,
        log_artifact,
        log_artifacts,
        log_dict,
        log_figure,
        log_input,
        log_metric,
        log_metrics,
        log_param,
        log_params,
        log_table,
        log_text,
        search_runs,
        set_experiment,
        set_tag,
        set_tags,
        set_tracking_uri,
        start_run,
    )


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"keel.{name}")
    if name not in __all__:
        raise AttributeError(f"module 'keel' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES.get(name, "keel.tracking.fluent")), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, *_SUBMODULES])
