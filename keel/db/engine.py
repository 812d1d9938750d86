"""SQLAlchemy engines tuned for Keel: SQLite in WAL mode with a busy timeout, or PostgreSQL.

SQLite writers start with ``BEGIN IMMEDIATE`` so that two processes never deadlock upgrading a
read lock to a write lock (the classic "database is locked" that a busy timeout cannot cure);
readers start a plain deferred transaction and never block writers in WAL mode.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

__all__ = [
    "EngineStore",
    "dialect_insert",
    "from_ms",
    "is_sqlite",
    "make_engine",
    "now_ms",
    "write_options",
]

#: Execution options that mark a connection as a writer (``BEGIN IMMEDIATE`` on SQLite).
WRITE = {"keel_write": True}


def write_options() -> dict[str, Any]:
    """Execution options for a connection that will write."""
    return dict(WRITE)


def now_ms() -> int:
    """Now, as the database's timestamp columns store it: milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def from_ms(ms: int) -> datetime:
    """A timestamp column's milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def dialect_insert(engine: Engine) -> Any:
    """The dialect's own ``insert`` (it has ``on_conflict_do_nothing`` / ``_do_update``),
    imported only for the engine in use: the PostgreSQL dialect alone pulls in asyncio and
    costs 60 ms of start-up on SQLite."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


class EngineStore:
    """What every store over the metadata database starts from: the engine, the dialect's
    ``insert`` (``self._insert``) and writer connections (``self._write()``).

    Args:
        engine: a Keel database engine (:func:`make_engine`), schema ensured.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert: Any = dialect_insert(engine)

    def _write(self) -> Connection:
        """A connection that will write (``BEGIN IMMEDIATE`` on SQLite)."""
        return self.engine.connect().execution_options(**write_options())


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, busy_timeout: float = 60.0) -> Engine:
    """Create an engine for ``url``; SQLite files get WAL, a busy timeout and foreign keys.

    Args:
        url: a SQLAlchemy URL; ``postgresql://`` is mapped to the psycopg 3 driver.
        busy_timeout: seconds a SQLite writer waits for a lock held by another process.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        # Searches plan every execution with its values (plan_cache_mode=force_custom_plan, set
        # per search transaction by the tracking store), not the whole connection: set here it
        # also re-planned the foreign-key check of every metric row written (420 ms against
        # 155 ms per 10,000 points).
        return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=10)

    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    in_memory = not database or database == ":memory:"
    engine = create_engine(
        parsed,
        connect_args={"timeout": busy_timeout, "check_same_thread": False},
        # one connection for an in-memory database: each new one would be a new, empty database
        **({"poolclass": StaticPool} if in_memory else {}),
    )
    timeout_ms = int(busy_timeout * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from the sqlite3 module (see _on_begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        # up to 64 MiB of page cache per connection (allocated as used): index inserts of a
        # large metric batch stay in memory
        cursor.execute("PRAGMA cache_size = -65536")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("keel_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine
