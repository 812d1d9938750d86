"""Placeholder: ``remote, push, pull`` are being built (issue 4)."""

from __future__ import annotations

import click

from keel.errors import KeelError

__all__ = ["pull", "push", "remote"]


@click.group()
def remote() -> None:
    """Not available yet (issue 4).

    \b
    Example:
      keel remote
    """
    raise KeelError("this command is not built yet (issue 4)")


@click.command()
def push() -> None:
    """Not available yet (issue 4).

    \b
    Example:
      keel data push
    """
    raise KeelError("this command is not built yet (issue 4)")


@click.command()
def pull() -> None:
    """Not available yet (issue 4).

    \b
    Example:
      keel data pull
    """
    raise KeelError("this command is not built yet (issue 4)")
