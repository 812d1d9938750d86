"""Placeholder: ``versions, lineage, show`` are being built (issue 4)."""

from __future__ import annotations

import click

from keel.errors import KeelError

__all__ = ["lineage", "show", "versions"]


@click.command()
def versions() -> None:
    """Not available yet (issue 4).

    \b
    Example:
      keel data versions
    """
    raise KeelError("this command is not built yet (issue 4)")


@click.command()
def lineage() -> None:
    """Not available yet (issue 4).

    \b
    Example:
      keel data lineage
    """
    raise KeelError("this command is not built yet (issue 4)")


@click.command()
def show() -> None:
    """Not available yet (issue 4).

    \b
    Example:
      keel data show
    """
    raise KeelError("this command is not built yet (issue 4)")
