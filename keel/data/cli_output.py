"""How the ``keel data`` commands print amounts: one formatter for every command's sizes."""

from __future__ import annotations

__all__ = ["size_text"]


def size_text(n: int) -> str:
    """Bytes for people: ``950 B``, ``3.2 GB`` (powers of 1000).

    Example:
        >>> size_text(3_200_000)
        '3.2 MB'
    """
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover
