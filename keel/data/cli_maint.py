"""Placeholder: ``fsck`` are being built (issue 4)."""

from __future__ import annotations

import click

from keel.errors import KeelError

__all__ = ["fsck"]


@click.command()
def fsck() -> None:
    """Not available yet (issue 4).

    \b
    Example:
      keel data fsck
    """
    raise KeelError("this command is not built yet (issue 4)")
