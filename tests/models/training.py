"""Real training data for the model tests: scikit-learn's diabetes (regression) and iris
(classification) tables, loaded once; and :func:`need`, which skips a test whose framework is
missing, except under ``CI=true``, where every flavor's framework is installed and must import.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import pandas as pd
import pytest

from tests.conftest import IN_CI


@functools.cache
def _diabetes() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return X, y


@functools.cache
def _iris() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in X.columns]
    return X, y


def diabetes() -> tuple[pd.DataFrame, pd.Series]:
    """442 rows, ten float columns, a float target."""
    X, y = _diabetes()
    return X.copy(), y.copy()


def iris() -> tuple[pd.DataFrame, pd.Series]:
    """150 rows, four float columns (sepal_length ...), an integer class 0-2."""
    X, y = _iris()
    return X.copy(), y.copy()


def need(module: str) -> ModuleType:
    """``module`` imported; skipped when missing, except under CI=true (a failure there)."""
    if IN_CI:
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed")
