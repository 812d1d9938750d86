"""``keel server``: serve the REST API over HTTP with uvicorn."""

from __future__ import annotations

import sys
from typing import Any

import click

__all__ = ["server"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=5000, show_default=True, type=click.IntRange(0, 65535), help="TCP port."
)
@click.option(
    "--database-url",
    default=None,
    help="Metadata database, e.g. postgresql://keel@db/keel (default: KEEL_DATABASE_URL, else "
    "the SQLite file in the .keel home).",
)
@click.option(
    "--artifact-url",
    default=None,
    help="Artifact store: a folder or an fsspec URL such as s3://bucket/keel (default: "
    "KEEL_ARTIFACT_URL, else <home>/artifacts).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Worker processes sharing the port (use several on PostgreSQL).",
)
@click.option(
    "--auth",
    is_flag=True,
    default=None,
    help="Require a token on every request and enforce roles, per-experiment grants and the "
    "audit log (default: KEEL_AUTH, else off). See docs/server.md#authentication.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def server(
    host: str,
    port: int,
    database_url: str | None,
    artifact_url: str | None,
    workers: int,
    auth: bool | None,
    log_level: str,
) -> None:
    """Serve the tracking REST API (/api/v1, OpenAPI at /api/v1/docs) with uvicorn.

    Every worker opens the store, applying migrations once under a lock, so a fresh
    database needs no separate setup step.

    \b
    Examples:
      keel server                                    # http://127.0.0.1:5000 over ./.keel
      keel server --host 0.0.0.0 --workers 4 --auth \\
        --database-url postgresql://keel@db.internal/keel \\
        --artifact-url s3://ml-artifacts/keel
    """
    from keel.server.launch import serve
    from keel.settings import Settings

    given: dict[str, Any] = {
        "database_url": database_url,
        "artifact_url": artifact_url,
        "auth": auth,
    }
    # only the options given: an explicit None would hide the KEEL_* environment variable
    settings = Settings(**{name: value for name, value in given.items() if value})
    status = serve(settings, host=host, port=port, workers=workers, log_level=log_level)
    if status:
        sys.exit(status)
