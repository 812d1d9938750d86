"""A logged model's pip requirements: its framework's distributions pinned at the versions
installed here, with what the user lists overriding or extending them.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterable

from keel.errors import InvalidInput

__all__ = ["BASE_DISTRIBUTIONS", "merge", "pin", "requirement_name"]

BASE_DISTRIBUTIONS = ("numpy", "pandas")
"""What every model's predict path uses (input checks, DataFrames)."""

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_name(requirement: str) -> str:
    """The canonical distribution name of a requirement line (``Scikit_Learn>=1.5`` ->
    ``scikit-learn``), as PEP 503 normalizes it.

    Raises:
        InvalidInput: the line does not start with a distribution name.
    """
    match = _NAME.match(requirement)
    if match is None:
        raise InvalidInput(f"not a pip requirement: {requirement!r}", requirement=requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def pin(distributions: Iterable[str]) -> list[str]:
    """``name==version`` for each installed distribution (those not installed are left out),
    without duplicates, in the order given."""
    pinned: dict[str, str] = {}
    for name in distributions:
        key = requirement_name(name)
        if key in pinned:
            continue
        try:
            pinned[key] = f"{key}=={importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return list(pinned.values())


def merge(pinned: Iterable[str], given: Iterable[str] | None) -> list[str]:
    """``pinned`` with each of ``given`` replacing the line of the same distribution, or added.

    Example:
        >>> merge(["numpy==2.1.0", "pandas==2.2.3"], ["pandas>=2.2", "shap==0.46"])
        ['numpy==2.1.0', 'pandas>=2.2', 'shap==0.46']
    """
    lines = {requirement_name(line): line for line in pinned}
    for line in given or ():
        if not isinstance(line, str) or not line.strip():
            raise InvalidInput(f"requirements are pip requirement strings, not {line!r}")
        lines[requirement_name(line)] = line.strip()
    return list(lines.values())
