"""Profile a table in one streaming pass (pyarrow batches, datasketches sketches).

Contract for issue 4 (being built): :func:`profile_table` and :func:`diff_profiles`.
"""

from __future__ import annotations

import os
from typing import Any

from keel.data.profile_models import ProfileDiff, TableProfile

__all__ = ["diff_profiles", "profile_table"]


def profile_table(
    source: str | os.PathLike[str] | Any, *, format: str | None = None
) -> TableProfile:
    """The schema and profile of a CSV file, a Parquet file or a pandas DataFrame."""
    raise NotImplementedError("profile_table is being built (issue 4)")


def diff_profiles(a: TableProfile, b: TableProfile) -> ProfileDiff:
    """Schema changes and per-column distribution shift from ``a`` to ``b``."""
    raise NotImplementedError("diff_profiles is being built (issue 4)")
