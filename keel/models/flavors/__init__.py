"""Flavors: how each framework's models are saved, loaded and asked for predictions.

One module per flavor, each holding a :class:`~keel.models.flavors.base.Flavor` as ``FLAVOR``;
none imports its framework until a model is saved or loaded. :func:`detect_flavor` picks the
flavor of a model object, :func:`get_flavor` one by name (what a manifest records).
"""

from __future__ import annotations

import importlib
from typing import Any

from keel.errors import InvalidInput
from keel.models.flavors.base import Flavor

__all__ = ["FLAVOR_NAMES", "Flavor", "detect_flavor", "get_flavor"]

# In detection order: XGBoost's and LightGBM's scikit-learn wrappers derive from sklearn's
# bases, so their own flavors (native formats) are tried before sklearn's.
_MODULES = {
    "python": "keel.models.flavors.python",
    "xgboost": "keel.models.flavors.xgboost",
    "lightgbm": "keel.models.flavors.lightgbm",
    "pytorch": "keel.models.flavors.pytorch",
    "onnx": "keel.models.flavors.onnx",
    "sklearn": "keel.models.flavors.sklearn",
}

FLAVOR_NAMES = tuple(_MODULES)
"""Every flavor's name, in the order detection tries them."""


def get_flavor(name: str) -> Flavor:
    """The flavor called ``name`` (sklearn, xgboost, lightgbm, pytorch, onnx or python).

    Raises:
        InvalidInput: no flavor has that name.
    """
    module = _MODULES.get(name)
    if module is None:
        raise InvalidInput(
            f"unknown model flavor {name!r}: use one of {', '.join(sorted(_MODULES))}",
            flavor=name,
        )
    flavor: Flavor = importlib.import_module(module).FLAVOR
    return flavor


def detect_flavor(model: Any) -> Flavor:
    """The flavor that stores ``model``, judged by its class (no framework is imported).

    Raises:
        InvalidInput: no flavor knows the model's class; the message says what to do.
    """
    for name in _MODULES:
        flavor = get_flavor(name)
        if flavor.matches(model):
            return flavor
    cls = type(model)
    raise InvalidInput(
        f"Keel has no flavor for a {cls.__module__}.{cls.__qualname__}: log a scikit-learn, "
        "XGBoost, LightGBM, PyTorch or ONNX model, or wrap it in a keel.models.PythonModel "
        "subclass",
        model_class=f"{cls.__module__}.{cls.__qualname__}",
    )
