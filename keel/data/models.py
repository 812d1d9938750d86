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

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from keel.errors import InvalidInput

__all__ = [
    "POINTER_SUFFIX",
    "POINTER_VERSION",
    "AddResult",
    "CheckoutResult",
    "PathStatus",
    "Pointer",
    "dump_pointer",
    "parse_pointer",
]

POINTER_SUFFIX = ".keel"
POINTER_VERSION = 1
_HEADER = "# Keel data pointer: commit it; `keel data checkout` restores the data it names.\n"


Kind = Literal["file", "directory"]
_KINDS = ("file", "directory")
_HASH = re.compile(r"[0-9a-f]{64}")

# Plain dataclasses, not pydantic: `keel data status` and `add` import this module, and
# pydantic's import alone costs them ~0.18 s of a ~0.4 s no-op status on 20,000 files.


@dataclass(frozen=True)
class Pointer:
    """What ``PATH.keel`` records about the data at ``PATH``.

    Build one from a file with :func:`parse_pointer`, which checks every field.
    """

    kind: Kind
    hash: str
    """BLAKE3 hex digest of the file, or of the directory's manifest object."""
    size: int
    """Bytes, all files together."""
    files: int
    """How many files (1 for a file)."""
    name: str | None = None
    """Dataset name, for a pointer recorded as a named dataset version."""
    version: str | None = None
    """Dataset version of that name."""
    keel_pointer: Literal[1] = 1
    """Pointer format version."""

    def to_dict(self) -> dict[str, Any]:
        """The fields in the pointer file's order (``keel_pointer`` first)."""
        body = asdict(self)
        return {"keel_pointer": body.pop("keel_pointer"), **body}


@dataclass
class PathStatus:
    """How the working copy of a tracked path differs from its pointer.

    Paths in ``added``, ``modified`` and ``deleted`` are shown as the user would type them
    (the data path joined with the file's path inside a tracked directory).
    """

    path: str
    """The tracked data path."""
    pointer: str
    """Its pointer file."""
    kind: Kind
    added: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        """True when the working copy matches the pointer exactly."""
        return not (self.added or self.modified or self.deleted)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus ``up_to_date``."""
        return {**asdict(self), "up_to_date": self.up_to_date}


@dataclass(frozen=True)
class AddResult:
    """What ``add`` did for one path."""

    path: str
    """The data path."""
    pointer_path: str
    """Its pointer file."""
    pointer: Pointer
    changed: bool
    """False when the pointer already named this content."""
    ignored: bool
    """True when a line was added to .gitignore."""
    dataset_version: str | None = None
    """NAME@VERSION recorded for a named pointer, else None."""


@dataclass
class CheckoutResult:
    """What ``checkout`` did for one tracked path."""

    path: str
    """The tracked data path."""
    pointer: str
    """Its pointer file."""
    restored: list[str] = field(default_factory=list)
    """Files written from the store."""
    extra: list[str] = field(default_factory=list)
    """Files in a tracked folder the pointer does not list."""
    removed: list[str] = field(default_factory=list)
    """Extra files deleted (--force)."""


def dump_pointer(pointer: Pointer) -> str:
    """The YAML text of a pointer file (a comment line, then the fields in a fixed order)."""
    import yaml  # lazily: importing keel.data (the fluent API does) stays light

    body = yaml.safe_dump(pointer.to_dict(), sort_keys=False, default_flow_style=False)
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
    problem = _pointer_problem(document)
    if problem is not None:
        raise InvalidInput(f"{source} is not a valid Keel pointer: {problem}", path=source)
    return Pointer(**document)


_FIELDS = {f.name for f in fields(Pointer)}
_REQUIRED = ("kind", "hash", "size", "files")


def _pointer_problem(document: dict[Any, Any]) -> str | None:
    """What is wrong with a pointer's YAML mapping (``field: why``), or None."""
    for key in document:
        if key not in _FIELDS:
            return f"{key}: unknown field (a newer Keel may have written it)"
    for key in _REQUIRED:
        if key not in document:
            return f"{key}: missing"
    if document["kind"] not in _KINDS:
        return f"kind: {document['kind']!r} is neither 'file' nor 'directory'"
    digest = document["hash"]
    if not isinstance(digest, str) or not _HASH.fullmatch(digest):
        return f"hash: {digest!r} is not 64 lowercase hex digits"
    for key in ("size", "files"):
        value = document[key]
        if type(value) is not int or value < 0:
            return f"{key}: {value!r} is not a whole number >= 0"
    for key in ("name", "version"):
        value = document.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key}: {value!r} is not text"
    return None
