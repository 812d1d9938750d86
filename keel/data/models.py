"""Data entities: the pointer file (``PATH.keel``) and the status of a tracked path.

A pointer is a small YAML file committed to git next to the data it names; the data itself is
in the content-addressed store and ignored by git::

    # Keel data pointer: commit it; `keel data checkout` restores the data it names.
    keel_pointer: 1
    kind: directory
    hash: 5b1e...c0       # BLAKE3: of the file, or of the folder's manifest
    size: 10485760        # bytes, all files together
    files: 120
    name: null            # dataset name and version (named versions come later)
    version: null
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel.data.profile_models import TableProfile
from keel.errors import InvalidInput

__all__ = [
    "POINTER_SUFFIX",
    "POINTER_VERSION",
    "AddResult",
    "CheckoutResult",
    "DatasetVersion",
    "PathStatus",
    "Pointer",
    "dump_pointer",
    "parse_pointer",
]

POINTER_SUFFIX = ".keel"
POINTER_VERSION = 1
_HEADER = "# Keel data pointer: commit it; `keel data checkout` restores the data it names.\n"


class Pointer(BaseModel):
    """What ``PATH.keel`` records about the data at ``PATH``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keel_pointer: Literal[1] = Field(default=1, description="pointer format version")
    kind: Literal["file", "directory"]
    hash: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="BLAKE3 hex digest of the file, or of the directory's manifest object",
    )
    size: int = Field(ge=0, description="bytes, all files together")
    files: int = Field(ge=0, description="how many files (1 for a file)")
    name: str | None = Field(default=None, description="dataset name (not set yet)")
    version: str | None = Field(default=None, description="dataset version (not set yet)")


class PathStatus(BaseModel):
    """How the working copy of a tracked path differs from its pointer.

    Paths in ``added``, ``modified`` and ``deleted`` are shown as the user would type them
    (the data path joined with the file's path inside a tracked directory).
    """

    path: str = Field(description="the tracked data path")
    pointer: str = Field(description="its pointer file")
    kind: Literal["file", "directory"]
    added: list[str] = Field(default_factory=list)
    modified: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        """True when the working copy matches the pointer exactly."""
        return not (self.added or self.modified or self.deleted)


class AddResult(BaseModel):
    """What ``add`` did for one path."""

    path: str = Field(description="the data path")
    pointer_path: str = Field(description="its pointer file")
    pointer: Pointer
    changed: bool = Field(description="False when the pointer already named this content")
    ignored: bool = Field(description="True when a line was added to .gitignore")
    dataset_version: str | None = Field(
        default=None, description="NAME@VERSION recorded for a named pointer, else None"
    )


class CheckoutResult(BaseModel):
    """What ``checkout`` did for one tracked path."""

    path: str = Field(description="the tracked data path")
    pointer: str = Field(description="its pointer file")
    restored: list[str] = Field(default_factory=list, description="files written from the store")
    extra: list[str] = Field(
        default_factory=list, description="files in a tracked folder the pointer does not list"
    )
    removed: list[str] = Field(default_factory=list, description="extra files deleted (--force)")


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


def dump_pointer(pointer: Pointer) -> str:
    """The YAML text of a pointer file (a comment line, then the fields in a fixed order)."""
    import yaml  # lazily: importing keel.data (the fluent API does) stays light

    body = yaml.safe_dump(pointer.model_dump(), sort_keys=False, default_flow_style=False)
    return _HEADER + body


def parse_pointer(text: str, *, source: str) -> Pointer:
    """Read a pointer file's YAML; ``source`` names the file in errors.

    Raises:
        InvalidInput: not YAML, not a mapping, an unknown or missing field, a bad value.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, about 12x faster
    try:
        document = yaml.load(text, Loader=loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InvalidInput(
            f"{source} is not a valid Keel pointer: not YAML{where}", path=source
        ) from None
    if not isinstance(document, dict):
        raise InvalidInput(f"{source} is not a valid Keel pointer: not a YAML mapping", path=source)
    if document.get("keel_pointer") != POINTER_VERSION:
        found = document.get("keel_pointer")
        raise InvalidInput(
            f"{source} is not a Keel pointer of version {POINTER_VERSION} "
            f"(keel_pointer: {found!r}); a newer Keel may have written it",
            path=source,
        )
    try:
        return Pointer.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "pointer"
        raise InvalidInput(
            f"{source} is not a valid Keel pointer: {field}: {first['msg']}", path=source
        ) from None
