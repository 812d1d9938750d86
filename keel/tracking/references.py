"""The store objects that runs' artifacts reference, so ``keel data gc`` keeps them.

Each row of the ``artifacts`` table names one object: a file (``kind='file'``) or a folder's
manifest (``kind='dir'``, whose files are referenced through it). Deleted runs still count:
their artifacts come back with ``keel runs restore``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from keel.db import open_engine, schema
from keel.errors import Conflict
from keel.settings import Settings
from keel.tracking.store_base import SqlStore

__all__ = ["ArtifactReference", "ReferenceStore", "artifact_references"]

_ROWS_PER_FETCH = 10_000


class ArtifactReference(NamedTuple):
    """One object runs reference: its digest, ``file`` or ``dir`` (a manifest), and one run
    that references it (to name in messages)."""

    digest: str
    kind: str
    run_id: str


class ReferenceStore(SqlStore):
    """Reads the digests the ``artifacts`` table holds."""

    def artifact_references(self) -> Iterator[ArtifactReference]:
        """Every distinct (digest, kind) of every run, deleted runs included, streamed."""
        a = schema.artifacts
        query = select(a.c.digest, a.c.kind, func.min(a.c.run_id)).group_by(a.c.digest, a.c.kind)
        with self._read() as conn:
            rows = conn.execution_options(yield_per=_ROWS_PER_FETCH).execute(query)
            for digest, kind, run_id in rows:
                yield ArtifactReference(digest, kind, run_id)


def artifact_references(settings: Settings) -> Iterator[ArtifactReference]:
    """The objects the artifacts of every run in the tracking database reference.

    Args:
        settings: where the database is (``database_url``, default ``<home>/keel.db``).

    Yields:
        One :class:`ArtifactReference` per distinct object (a ``dir`` one is a manifest whose
        files are referenced too); nothing when the SQLite file does not exist yet.

    Raises:
        Conflict: ``tracking_uri`` points at a server, whose database cannot be read from
            here (run gc where the server's database is).

    Example:
        >>> {r.digest for r in artifact_references(Settings())}  # doctest: +SKIP
        {'af1349b9...', ...}
    """
    if settings.tracking_uri:
        raise Conflict(
            f"runs are tracked by the server {settings.tracking_uri}, whose database gc cannot "
            "read from here, so it cannot know which objects runs use: run `keel data gc` on "
            "the server's machine (with its database_url), or unset KEEL_TRACKING_URI if this "
            "store is not the server's",
            tracking_uri=settings.tracking_uri,
        )
    url = settings.db_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not Path(database).exists():
            return  # no runs were ever tracked here
    engine = open_engine(url, busy_timeout=settings.sqlite_busy_timeout)
    try:
        yield from ReferenceStore(engine).artifact_references()
    finally:
        engine.dispose()
