"""Deployment fixtures: three real Ridge models on diabetes, registered as ``diabetes`` 1, 2, 3
(``champion`` -> 1, ``challenger`` -> 2), in the store of the ``settings`` fixture (SQLite or
PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

import keel
import keel.models
from keel.models import api
from keel.settings import Settings
from tests.models.training import diabetes

ALPHAS = {1: 0.01, 2: 1.0, 3: 10.0}
"""Version -> Ridge alpha: three models whose predictions differ."""


@dataclass
class Registered:
    """What the fixture registered: the fitted models by version, and the features."""

    models: dict[int, Any]
    X: pd.DataFrame

    def predict(self, version: int, rows: pd.DataFrame) -> Any:
        return self.models[version].predict(rows)


def train_and_register(name: str = "diabetes", settings: Settings | None = None) -> Registered:
    """Ridge models for :data:`ALPHAS`, logged and registered as versions 1, 2, 3 of ``name``;
    champion -> 1 and challenger -> 2."""
    from sklearn.linear_model import Ridge

    X, y = diabetes()
    models = {}
    for version, alpha in ALPHAS.items():
        with keel.start_run(f"ridge-{alpha}"):
            model = Ridge(alpha=alpha).fit(X, y)
            logged = keel.models.log_model(model, input_example=X.head(3))
        registered = api.register(logged.uri, name, settings=settings)
        assert registered.version == version
        models[version] = model
    api.set_alias(name, "champion", 1, settings=settings)
    api.set_alias(name, "challenger", 2, settings=settings)
    return Registered(models=models, X=X)


@pytest.fixture
def registered(settings: Settings) -> Registered:
    """diabetes 1, 2, 3 (champion 1, challenger 2) on SQLite and PostgreSQL."""
    return train_and_register(settings=settings)
