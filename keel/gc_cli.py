"""``keel data gc``: delete the store objects nothing references and report the bytes freed.

It lives outside ``keel.data`` because it asks tracking which objects runs reference (see
:mod:`keel.gc`); ``keel data`` registers it lazily.
"""

from __future__ import annotations

import json
import sys

import click

from keel.data.cli_maint import progress_bar
from keel.data.cli_output import size_text
from keel.gc import gc as collect
from keel.gc import parse_duration

__all__ = ["gc"]


@click.command()
@click.option("--dry-run", is_flag=True, help="Delete nothing; report what would be deleted.")
@click.option(
    "--all-commits",
    is_flag=True,
    help="Also keep what the pointer files of every commit of every branch and tag name.",
)
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    help="Never delete objects younger than this (30m, 1h, 7d): an add or a run may be "
    "writing them, their pointer or record not yet written.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def gc(dry_run: bool, all_commits: bool, grace: str, as_json: bool) -> None:
    """Delete store objects nothing references; report the bytes freed.

    Kept: what pointer files in the working tree name (under the git root, else the current
    folder), with --all-commits what pointers in any commit of any branch or tag name, what
    runs' artifacts and dataset versions name, the files of every kept folder, and every
    object younger than --grace. A pointer that does not parse or a folder listing that is
    missing stops gc before it deletes anything.

    \b
    Example:
      keel data gc --dry-run
      keel data gc --all-commits --grace 1d
    """
    seconds = parse_duration(grace)
    with progress_bar(enabled=not as_json and sys.stderr.isatty()) as progress:
        report = collect(dry_run=dry_run, all_commits=all_commits, grace=seconds, progress=progress)
    if as_json:
        click.echo(json.dumps(report.model_dump(), indent=2))
        return
    verb = "Would delete" if dry_run else "Deleted"
    click.echo(
        f"{verb} {report.deleted:,} object{'s' if report.deleted != 1 else ''}, "
        f"{size_text(report.bytes_freed)}{' (dry run)' if dry_run else ''}."
    )
    kept = report.referenced + report.young
    kept_bytes = size_text(report.referenced_bytes + report.young_bytes)
    click.echo(
        f"Kept {kept:,} of {report.objects:,} objects ({kept_bytes}): "
        f"{report.referenced:,} referenced, {report.young:,} younger than --grace {grace}."
    )
    sources = ", ".join(f"{name} {count:,}" for name, count in report.references.items())
    click.echo(f"References read: {sources}.")
    if report.missing:
        click.secho(
            f"{report.missing:,} referenced object{'s are' if report.missing != 1 else ' is'} "
            "not in the store (keel data fsck lists them; keel data pull fetches them).",
            fg="yellow",
        )
