"""Fixtures for the tracking tests: a migrated, empty database as a SQLAlchemy engine.

``engine`` runs each test on a SQLite file and on the session's PostgreSQL database (see
``store_url`` in tests/conftest.py: PostgreSQL tests skip without a server, and fail under CI).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from keel.db import ensure_schema, make_engine


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    """An engine on an empty database at the head schema; parametrized sqlite / postgresql."""
    engine = make_engine(store_url)
    ensure_schema(engine)
    yield engine
    engine.dispose()
