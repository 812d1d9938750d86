"""``keel remote add|list|remove|default`` and ``keel data push|pull``.

Each command calls one function of :mod:`keel.data.remotes` or :mod:`keel.data.transfer`;
``remote list`` takes ``--json``. Push and pull show a progress bar on stderr when it is a
terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from keel.data.cli_output import size_text
from keel.data.remotes import (
    add_remote,
    list_remotes,
    remove_remote,
    set_default_remote,
)
from keel.data.transfer import IncompleteTransfer, Progress, TransferResult
from keel.data.transfer import pull as pull_objects
from keel.data.transfer import push as push_objects

__all__ = ["pull", "push", "remote"]

_remote_option = click.option(
    "--remote", "-r", "remote_name", metavar="NAME", help="The remote (default: the default one)."
)
_jobs_option = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    help="Objects moved at once (default: 1 for a folder, 16 for an object store).",
)


@click.group()
def remote() -> None:
    """Name the stores that keel data push and pull move objects to and from.

    A remote is a local folder (relative paths are relative to the project folder, the one
    holding .keel) or any fsspec URL (s3://, gs://, memory://...). Remotes are kept in
    .keel/config.yaml, which is meant to be committed; --local ones in .keel/config.local.yaml.

    \b
    Example:
      keel remote add origin s3://my-bucket/keel --default
      keel remote list
    """


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--default", "make_default", is_flag=True, help="Make it the default remote.")
@click.option(
    "--local",
    is_flag=True,
    help="Keep it in .keel/config.local.yaml (this machine only, not committed).",
)
def add_command(name: str, url: str, make_default: bool, local: bool) -> None:
    """Add remote NAME at URL (the first remote becomes the default).

    \b
    Example:
      keel remote add origin s3://my-bucket/keel
      keel remote add nas ../keel-remote --default
    """
    added = add_remote(name, url, default=make_default, local=local)
    where = "config.local.yaml" if local else "config.yaml"
    default = " (default)" if added.default else ""
    click.echo(f"Added remote {added.name}{default}: {added.resolved_url} (in .keel/{where})")
    if not local:
        click.echo("To share it: git add .keel/config.yaml .keel/.gitignore")


@remote.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def list_command(as_json: bool) -> None:
    """List the remotes; the default one is starred.

    \b
    Example:
      keel remote list --json
    """
    remotes = list_remotes()
    if as_json:
        click.echo(json.dumps([r.model_dump() for r in remotes], indent=2))
        return
    if not remotes:
        click.echo("No remotes; add one with: keel remote add origin URL")
    for r in remotes:
        mark = "*" if r.default else " "
        scope = "  (local)" if r.scope == "local" else ""
        shown = r.url if r.url == r.resolved_url else f"{r.url} -> {r.resolved_url}"
        click.echo(f"{mark} {r.name}  {shown}{scope}")


@remote.command("remove")
@click.argument("name")
def remove_command(name: str) -> None:
    """Forget remote NAME (nothing stored there is deleted).

    \b
    Example:
      keel remote remove nas
    """
    removed = remove_remote(name)
    click.echo(f"Removed remote {removed.name} ({removed.url}); its data was not touched")


@remote.command("default")
@click.argument("name")
@click.option("--local", is_flag=True, help="Only on this machine (.keel/config.local.yaml).")
def default_command(name: str, local: bool) -> None:
    """Make NAME the remote push and pull use without --remote.

    \b
    Example:
      keel remote default origin
    """
    chosen = set_default_remote(name, local=local)
    click.echo(f"Default remote: {chosen.name} ({chosen.resolved_url})")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@_remote_option
@_jobs_option
def push(paths: tuple[str, ...], remote_name: str | None, jobs: int | None) -> None:
    """Send the objects tracked data needs to a remote: only the missing ones.

    With no PATH, every pointer under the current folder. A push that was interrupted sends
    only what is still missing when run again.

    \b
    Example:
      keel data push
      keel data push images --remote nas --jobs 8
    """
    with _progress() as progress:
        try:
            result = push_objects(list(paths), remote=remote_name, jobs=jobs, progress=progress)
        except IncompleteTransfer as error:
            _summary(error.result)
            raise
    _summary(result)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@_remote_option
@_jobs_option
@click.option("--no-checkout", is_flag=True, help="Only fetch into the store.")
@click.option(
    "--force", is_flag=True, help="Checkout deletes files a tracked folder has beyond its pointer."
)
def pull(
    paths: tuple[str, ...],
    remote_name: str | None,
    jobs: int | None,
    no_checkout: bool,
    force: bool,
) -> None:
    """Fetch the objects tracked data needs from a remote, then check the data out.

    With no PATH, every pointer under the current folder. Each object is checked against its
    hash before it enters the store; an interrupted pull fetches only what is still missing
    when run again.

    \b
    Example:
      git clone https://example.com/project.git && cd project
      keel data pull
    """
    with _progress() as progress:
        try:
            result = pull_objects(
                list(paths),
                remote=remote_name,
                jobs=jobs,
                checkout=not no_checkout,
                force=force,
                progress=progress,
            )
        except IncompleteTransfer as error:
            _summary(error.result)
            raise
    _summary(result)


def _summary(result: TransferResult) -> None:
    verb = "Sent" if result.direction == "push" else "Fetched"
    where = "to" if result.direction == "push" else "from"
    there = "on the remote" if result.direction == "push" else "in the local store"
    click.echo(
        f"{verb} {_count(result.transferred)} ({size_text(result.transferred_bytes)}) {where} "
        f"{result.remote}; {_count(result.present)} ({size_text(result.present_bytes)}) already "
        f"{there}"
    )
    restored = sum(len(c.restored) for c in result.checkout)
    if result.checkout:
        n = len(result.checkout)
        click.echo(f"Checked out {n} path{'s' if n != 1 else ''}: {restored:,} files written")
    for checked in result.checkout:
        for name in checked.extra:
            click.secho(
                f"  kept (not in {checked.pointer}; --force deletes it): {name}", fg="yellow"
            )


@contextmanager
def _progress() -> Iterator[Progress | None]:
    """A rich progress bar on stderr while objects move, when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bars = Progress(
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, object] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total)
        task = tasks[phase]
        bars.update(task, completed=done, total=total)  # type: ignore[arg-type]

    with bars:
        yield update


def _count(n: int) -> str:
    return f"{n:,} object{'s' if n != 1 else ''}"
