"""``keel sync``: deliver the metric points and run ends a process saved in the outbox while
its keel server could not be reached."""

from __future__ import annotations

import click

from keel.settings import Settings
from keel.tracking.remote_http import token_of
from keel.tracking.remote_sender import sync_outbox

__all__ = ["sync"]


@click.command()
@click.option(
    "--tracking-uri",
    default=None,
    help="Send everything to this server instead of the one each file names.",
)
def sync(tracking_uri: str | None) -> None:
    """Send the metric points saved in <home>/outbox/ to the keel server.

    A run whose process could not reach its server leaves its undelivered points (and its end)
    there; each file is sent once, oldest first, and deleted when the server has it.

    \b
    Example:
      keel sync
      keel sync --tracking-uri http://keel.internal:5000
    """
    settings = Settings()
    outbox = settings.home_path / "outbox"
    report = sync_outbox(
        outbox,
        tracking_uri=tracking_uri,
        token=token_of(settings),
        token_uri=tracking_uri or settings.tracking_uri,  # the server the token was made for
    )
    click.echo(
        f"Delivered {report.delivered_points} metric points ({report.delivered_files} files)"
        + (f" and ended {len(report.ended_runs)} runs" if report.ended_runs else "")
        + f" from {outbox}."
    )
    for path, reason in report.rejected:
        click.secho(f"Refused by the server, moved to {path}: {reason}", fg="red", err=True)
    for uri, reason in report.waiting.items():
        click.secho(f"Could not reach {uri}: {reason}", fg="yellow", err=True)
    if report.left:
        click.secho(
            f"{len(report.left)} files wait in {outbox}; run keel sync again when the server "
            "is up.",
            fg="yellow",
            err=True,
        )
    if report.left or report.rejected:
        raise SystemExit(1)
