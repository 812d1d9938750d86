"""``keel data fsck``: check every object of the store against its hash, and every object the
working tree's pointers need; plus the progress bar and size format ``keel data gc`` shares.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import groupby

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bar

from keel.artifacts import ArtifactStore
from keel.data.cli_output import size_text
from keel.data.maintenance import FsckReport, Progress, working_tree_root
from keel.data.maintenance import fsck as check_store
from keel.settings import Settings

__all__ = ["fsck", "progress_bar"]

_SHOWN_PER_KIND = 20
_HINTS = {
    "missing": "To restore missing objects: keel data pull fetches them from a remote; "
    "keel data add PATH stores an intact working copy again.",
    "quarantined": "Quarantined objects were moved aside, not deleted: once the content is "
    "stored again (add or pull), delete the files in quarantine/ you no longer need.",
    "bad_pointer": "A pointer that does not parse: restore it from git (git checkout -- "
    "PATH.keel) or rewrite it with keel data add PATH.",
}


@click.command()
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Objects verified at once (default: one per CPU).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def fsck(jobs: int | None, as_json: bool) -> None:
    """Verify every object in the store against its hash.

    Corrupt objects are moved to the store's quarantine/ folder (keel data add or pull of
    that content stores it again); objects quarantined earlier are listed. Also checks that
    each pointer in the working tree (under the git root, else the current folder) parses and
    that everything it names is in the store. Exits 1 when it found a problem.

    \b
    Example:
      keel data fsck
      keel data fsck --jobs 8 --json
    """
    settings = Settings()
    store = ArtifactStore(settings.artifacts_url)
    with progress_bar(enabled=not as_json and sys.stderr.isatty(), bytes_=True) as progress:
        report = check_store(store, working_tree_root(), jobs=jobs, progress=progress)
    if as_json:
        click.echo(json.dumps({**report.model_dump(), "ok": report.ok}, indent=2))
    else:
        _print(report)
    if not report.ok:
        sys.exit(1)


def _print(report: FsckReport) -> None:
    what = f"{report.objects:,} objects, {size_text(report.bytes)} verified"
    if report.ok:
        click.echo(f"{what}, no problems")
        return
    colors = {"corrupt": "red", "quarantined": "yellow", "missing": "red"}
    for kind, group in groupby(sorted(report.problems, key=lambda p: p.kind), lambda p: p.kind):
        problems = list(group)
        for problem in problems[:_SHOWN_PER_KIND]:
            click.secho(f"{kind}: {problem.message}", fg=colors.get(kind, "red"))
        if len(problems) > _SHOWN_PER_KIND:
            click.echo(
                f"{kind}: ... and {len(problems) - _SHOWN_PER_KIND:,} more (--json lists all)"
            )
    kinds = {p.kind for p in report.problems}
    for kind, hint in _HINTS.items():
        if kind in kinds:
            click.echo(hint)
    n = len(report.problems)
    click.echo(f"{what}; {n:,} problem{'s' if n != 1 else ''}")


class _RichProgress:
    """:class:`~keel.data.maintenance.Progress` drawn by a rich progress bar."""

    def __init__(self, bar: Bar) -> None:
        self._bar = bar
        self._task: TaskID | None = None

    def phase(self, description: str, total: int | None) -> None:
        if self._task is not None:
            self._bar.update(self._task, visible=False)
        self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._bar.advance(self._task, amount)


@contextmanager
def progress_bar(*, enabled: bool, bytes_: bool = False) -> Iterator[Progress | None]:
    """A progress bar on stderr while the block runs (amounts in bytes with ``bytes_``), or
    None when not ``enabled``."""
    if not enabled:
        yield None
        return
    amount = DownloadColumn() if bytes_ else MofNCompleteColumn()
    columns = (TextColumn("{task.description}"), BarColumn(), amount, TimeRemainingColumn())
    with Bar(*columns, console=Console(stderr=True), transient=True) as bar:
        yield _RichProgress(bar)
