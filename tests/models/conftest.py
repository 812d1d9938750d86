"""Fixtures for the model registry: a ModelStore on each database (tests/conftest.py empties the
registry's tables after each PostgreSQL test, with the others)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from keel.models.store import ModelStore


@pytest.fixture
def models(engine: Engine) -> ModelStore:
    """A ModelStore on an empty registry; parametrized sqlite / postgresql."""
    return ModelStore(engine)
