"""Fixtures for the model registry: a ModelStore on each database, registry tables emptied.

The session's PostgreSQL database is shared by every test; tests/conftest.py empties the tables
it lists after each one, and this empties the registry's (``model_audit`` refuses DELETE, but
TRUNCATE is not a row change).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from keel.models.store import ModelStore

REGISTRY_TABLES = (
    "registered_models, model_versions, registered_model_tags, model_version_tags, "
    "model_aliases, model_audit"
)


def _truncate(url: str) -> None:
    from sqlalchemy import create_engine, text

    from keel.db import ensure_schema

    engine = create_engine(url)
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {REGISTRY_TABLES} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(autouse=True)
def _empty_registry(request: pytest.FixtureRequest) -> Iterator[None]:
    url = request.getfixturevalue("store_url") if "store_url" in request.fixturenames else None
    postgres = url is not None and url.startswith("postgresql")
    if postgres:
        _truncate(url)  # type: ignore[arg-type]
    yield
    if postgres:
        _truncate(url)  # type: ignore[arg-type]


@pytest.fixture
def models(engine: Engine) -> ModelStore:
    """A ModelStore on an empty registry; parametrized sqlite / postgresql."""
    return ModelStore(engine)
