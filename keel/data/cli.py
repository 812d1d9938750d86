"""``keel data add``, ``keel data status`` and ``keel data checkout``.

Each command calls one function of :mod:`keel.data.api`; ``status`` takes ``--json``.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import click

from keel.data.api import add as add_paths
from keel.data.api import checkout as checkout_paths
from keel.data.api import status as status_paths
from keel.data.cli_output import size_text
from keel.data.models import PathStatus
from keel.lazy_cli import LazyGroup

__all__ = ["DATA_COMMANDS", "data"]

#: subcommands in their own modules, imported on first use: name -> ("module:attr", summary)
DATA_COMMANDS = {
    "push": ("keel.data.cli_remote:push", "Send the objects tracked data needs to a remote."),
    "pull": ("keel.data.cli_remote:pull", "Fetch missing objects from a remote and check out."),
    "diff": ("keel.data.cli_diff:diff", "Compare two versions: files, or schema and profile."),
    "gc": ("keel.gc_cli:gc", "Delete store objects nothing references; report bytes freed."),
    "fsck": ("keel.data.cli_maint:fsck", "Verify every object in the store against its hash."),
    "versions": ("keel.data.cli_versions:versions", "List the versions of a named dataset."),
    "lineage": ("keel.data.cli_versions:lineage", "List the runs that used a dataset version."),
    "show": ("keel.data.cli_versions:show", "Print a dataset version's schema and profile."),
    "validate": ("keel.data.cli_validate:validate", "Check a table against a reference version."),
}

_paths_argument = click.argument("paths", nargs=-1, type=click.Path())


@click.group(cls=LazyGroup, lazy=DATA_COMMANDS)
def data() -> None:
    """Version data files and folders: pointer files in git, content in the Keel store.

    \b
    Example:
      keel data add data/train.csv images/
      git add data/train.csv.keel images.keel data/.gitignore .gitignore
    """


@data.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--name",
    metavar="NAME",
    help="Also record the content as the next version of dataset NAME (one PATH); the "
    "pointer gets the name and version.",
)
def add(paths: tuple[str, ...], name: str | None) -> None:
    """Store files or folders and write a pointer PATH.keel beside each.

    The content goes into the Keel store, PATH.keel (commit it to git) names it by its BLAKE3
    hash, and /PATH is added to the .gitignore beside PATH. Adding unchanged data again does
    nothing and reads nothing. With --name, the content also becomes a version of a named
    dataset (the same as an unchanged latest version), profiled if a CSV or Parquet file;
    the pointer keeps the name, so adding changed content later records the next version.

    \b
    Example:
      keel data add data/train.csv images/
      keel data add data/train.csv --name diabetes
    """
    results = add_paths(list(paths), name=name)
    for result in results:
        p = result.pointer
        what = f"{p.files} file{'s' if p.files != 1 else ''}, {size_text(p.size)}"
        if result.changed:
            click.echo(f"Added {result.path} ({what}) -> {result.pointer_path}")
        else:
            click.echo(f"{result.path} is unchanged ({what}); {result.pointer_path} kept")
        if result.dataset_version is not None:
            click.echo(f"Recorded {result.path} as dataset version {result.dataset_version}")
    to_commit = [r.pointer_path for r in results if r.changed]
    for result in results:
        gitignore = (PurePosixPath(result.path).parent / ".gitignore").as_posix()
        if result.ignored and gitignore not in to_commit:
            to_commit.append(gitignore)
    if to_commit:
        click.echo(f"To track the changes with git: git add {' '.join(to_commit)}")


@data.command()
@_paths_argument
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(paths: tuple[str, ...], as_json: bool) -> None:
    """List files added, modified and deleted since each pointer.

    With no PATH, every pointer under the current folder. Unchanged files are answered from
    the stat cache, unread. Exits 0 whatever changed.

    \b
    Example:
      keel data status
      keel data status images --json
    """
    results = status_paths(list(paths))
    if as_json:
        rows = [r.to_dict() for r in results]
        click.echo(json.dumps(rows, indent=2))
        return
    if not results:
        click.echo("No tracked data here (no *.keel pointer files).")
    for result in results:
        _print_status(result)


def _print_status(result: PathStatus) -> None:
    if result.up_to_date:
        click.echo(f"{result.path}: up to date")
        return
    click.echo(f"{result.path}: changed since {result.pointer}")
    for label, names, color in (
        ("added", result.added, "green"),
        ("modified", result.modified, "yellow"),
        ("deleted", result.deleted, "red"),
    ):
        for name in names:
            click.secho(f"  {label + ':':9} {name}", fg=color)


@data.command()
@_paths_argument
@click.option(
    "--force",
    is_flag=True,
    help="Also delete files a tracked folder has beyond its pointer, and replace a folder "
    "where a file is tracked (or the reverse).",
)
def checkout(paths: tuple[str, ...], force: bool) -> None:
    """Restore tracked data exactly as its pointer says.

    With no PATH, every pointer under the current folder. Missing and modified files are
    copied from the store (checked against their hash first); extra files in a tracked folder
    are listed and kept unless --force.

    \b
    Example:
      keel data checkout images
    """
    results = checkout_paths(list(paths), force=force)
    if not results:
        click.echo("No tracked data here (no *.keel pointer files).")
    for result in results:
        if result.restored:
            n = len(result.restored)
            click.echo(f"{result.path}: restored {n} file{'s' if n != 1 else ''}")
        else:
            click.echo(f"{result.path}: up to date")
        for name in result.removed:
            click.secho(f"  deleted (not in {result.pointer}): {name}", fg="red")
        for name in result.extra:
            click.secho(
                f"  kept (not in {result.pointer}; --force deletes it): {name}", fg="yellow"
            )
