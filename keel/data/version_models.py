"""A named dataset's version, as the database, the CLI's ``--json`` and (later) the server
return it. Kept apart from :mod:`keel.data.models` (the pointer file's entities, plain
dataclasses) so that ``keel data status`` and ``add`` import no pydantic.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from keel.data.profile_models import TableProfile

__all__ = ["DatasetVersion"]


class DatasetVersion(BaseModel):
    """One version of a named dataset: content in the store, a profile for tables."""

    name: str
    version: int = Field(ge=1, description="1, 2, 3, ... per name")
    digest: str = Field(description="BLAKE3 of the file, or of the folder's manifest")
    kind: Literal["file", "directory"]
    format: Literal["csv", "parquet"] | None = Field(
        default=None, description="set for tables (a DataFrame is stored as Parquet)"
    )
    size: int = Field(ge=0)
    files: int = Field(ge=0)
    profile: TableProfile | None = None
    source: str | None = Field(default=None, description="the path it was logged from")
    run_id: str | None = Field(default=None, description="the run that logged it, if any")
    created_at: datetime

    @property
    def ref(self) -> str:
        """``name@version``, as the CLI and :func:`keel.data.load` take it."""
        return f"{self.name}@{self.version}"
