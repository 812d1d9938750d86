"""A Keel model as a Python dependency: ``predict(data)`` and ``metadata()``.

Written by ``keel models export --format wheel``. The model's files are in the ``model``
folder beside this module and are loaded on the first ``predict`` (or ``load``) call, after
their digest is checked against the one exported in ``keel-export.json``. Input is checked
against the model's signature exactly as ``keel.models.load(...).predict`` checks it.

Example:
    >>> import diabetes_model
    >>> diabetes_model.predict({"age": [0.03], "sex": [0.05], ...})  # doctest: +SKIP
    array([151.2])
    >>> diabetes_model.metadata()["version"]  # doctest: +SKIP
    3
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.models.loading import Predictor

__all__ = ["load", "metadata", "predict"]  # and __version__, read on first use

_HERE = Path(__file__).resolve().parent


@functools.cache
def _export() -> dict[str, Any]:
    """``keel-export.json`` beside this module, read once (not at import)."""
    info: dict[str, Any] = json.loads((_HERE / "keel-export.json").read_text(encoding="utf-8"))
    return info


def __getattr__(name: str) -> Any:
    if name == "__version__":  # the package's version, e.g. "3"
        return _export()["package_version"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def metadata() -> dict[str, Any]:
    """The exported model: ``uri``, ``name``, ``version``, ``digest``, ``flavor``,
    ``signature`` (inputs and outputs), ``requirements``, ``python_version``..."""
    return json.loads(json.dumps(_export()))  # a copy the caller may change


@functools.cache
def load() -> Predictor:
    """The model, loaded once per process (a ``keel.models.loading.Predictor``).

    Raises:
        keel.errors.StorageError: the installed model files were changed since the export.
        keel.errors.MissingExtra: the model's framework is not installed.
    """
    from keel.models.loading import load_folder

    info = _export()
    return load_folder(_HERE / info["model_folder"], digest=info["digest"])


def predict(data: Any) -> Any:
    """Predictions for ``data``: a DataFrame, a dict of columns, a list of row dicts or an
    array, checked against the model's signature first.

    Raises:
        keel.errors.SchemaMismatch: a column is missing, unexpected or of the wrong type.
    """
    return load().predict(data)
