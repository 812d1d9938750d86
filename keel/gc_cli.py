"""Placeholder: ``gc`` are being built (issue 4)."""

from __future__ import annotations

import click

from keel.errors import KeelError

__all__ = ["gc"]


@click.command()
def gc() -> None:
    """Not available yet (issue 4).

    \b
    Example:
      keel data gc
    """
    raise KeelError("this command is not built yet (issue 4)")
