"""Placeholder: ``diff`` are being built (issue 4)."""

from __future__ import annotations

import click

from keel.errors import KeelError

__all__ = ["diff"]


@click.command()
def diff() -> None:
    """Not available yet (issue 4).

    \b
    Example:
      keel data diff
    """
    raise KeelError("this command is not built yet (issue 4)")
