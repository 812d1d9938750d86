"""The metadata database: engine set-up, the schema, and migrations applied safely at open."""

from keel.db.engine import (
    EngineStore,
    dialect_insert,
    from_ms,
    is_sqlite,
    make_engine,
    now_ms,
    write_options,
)
from keel.db.migrate import HEAD_REVISION, ensure_schema, open_engine

__all__ = [
    "HEAD_REVISION",
    "EngineStore",
    "dialect_insert",
    "ensure_schema",
    "from_ms",
    "is_sqlite",
    "make_engine",
    "now_ms",
    "open_engine",
    "write_options",
]
