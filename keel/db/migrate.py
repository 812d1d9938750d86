"""Bring a database to the head schema revision, safely when several processes open it at once.

Opening a store costs one query when the schema is current. When it is not, the upgrade runs
under an exclusive lock (a file lock beside a SQLite file, an advisory lock on PostgreSQL) and
re-checks the revision once it holds the lock, so two processes opening a fresh store at the same
moment apply each migration exactly once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from keel.db.engine import make_engine, write_options
from keel.errors import StorageError

__all__ = ["HEAD_REVISION", "current_revision", "ensure_schema", "open_engine", "upgrade"]

#: The newest migration in keel/db/migrations/versions (a test keeps the two in step).
HEAD_REVISION = "0012"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 0x6B65656C  # "keel"


def current_revision(engine: Engine) -> str | None:
    """The revision stamped in the database, or None for an empty database."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None


def ensure_schema(engine: Engine) -> None:
    """Upgrade ``engine``'s database to :data:`HEAD_REVISION` unless it is there already.

    Raises:
        StorageError: the database is newer than this Keel, or cannot be migrated.
    """
    revision = current_revision(engine)
    if revision == HEAD_REVISION:
        return
    known = _known_revisions()
    if revision is not None and revision not in known:
        raise StorageError(
            f"the database is at schema revision {revision!r}, newer than this Keel knows "
            f"(head {HEAD_REVISION!r}); upgrade Keel: pip install -U keel",
            revision=revision,
        )
    upgrade(engine, HEAD_REVISION)


def open_engine(url: str, *, busy_timeout: float = 60.0) -> Engine:
    """An engine on the database at ``url``, its schema brought to :data:`HEAD_REVISION`
    (what every store opens with); the engine is disposed of if the schema cannot be.

    Raises:
        StorageError: as :func:`ensure_schema`.
    """
    engine = make_engine(url, busy_timeout=busy_timeout)
    try:
        ensure_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def upgrade(engine: Engine, revision: str = HEAD_REVISION) -> None:
    """Apply migrations up to ``revision`` under the migration lock (tests use older targets)."""
    with _migration_lock(engine) as conn:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = conn
        try:
            command.upgrade(config, revision)
            conn.commit()
        except DBAPIError as exc:
            raise StorageError(f"could not migrate the database: {exc.orig}") from exc


def _known_revisions() -> set[str]:
    return {p.name.split("_", 1)[0] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py")}


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
        return
    database = engine.url.database or ""
    with engine.connect().execution_options(**write_options()) as conn:
        if not database or database == ":memory:" or database.startswith("file:"):
            yield conn
            return
        import fcntl

        lock_path = f"{database}.migrate.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield conn
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
