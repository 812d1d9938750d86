"""Compare two versions of tracked data: the files added, deleted and modified between them,
and for two profiled tables, their schema changes and per-column distribution shift.

A version is named the way a user would point at it (:func:`resolve_version`):

- ``images`` or ``images.keel``: the pointer file as it is now in the working tree;
- ``REV:PATH`` (``HEAD~1:images``): the pointer as committed in a git revision, read with
  ``git cat-file`` (the data itself need not be checked out);
- ``NAME@VERSION`` (``diabetes@3``): a named dataset version.

Only manifests are read (a folder's listing, one small object each), never file content: a
file pointer is one file, and two files differ when their digests do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from keel.artifacts import ArtifactStore, Blob
from keel.data.git import commit_of, read_committed, toplevel
from keel.data.models import POINTER_SUFFIX, Pointer, parse_pointer
from keel.data.profile_models import ProfileDiff
from keel.data.version_models import DatasetVersion
from keel.data.versions import resolve
from keel.errors import InvalidInput, KeelError, NotFound, StorageError
from keel.settings import Settings

__all__ = ["DataDiff", "DataVersion", "FileChange", "diff", "resolve_version"]

_DATASET_REF = re.compile(r"^(?P<name>[^@:/\\\s]+)@(?P<version>[^@:/\\\s]+)$")


class DataVersion(BaseModel):
    """One side of a diff: a version of tracked data, as named and as resolved."""

    spec: str = Field(description="what was asked for: images, HEAD~1:images, diabetes@3")
    source: Literal["pointer", "git", "dataset"]
    name: str = Field(description="the data path (or dataset name) the version belongs to")
    kind: Literal["file", "directory"]
    digest: str = Field(description="BLAKE3 of the file, or of the folder's manifest")
    size: int = Field(ge=0, description="bytes, all files together")
    files: int = Field(ge=0)
    commit: str | None = Field(default=None, description="the git commit (source 'git')")
    dataset: DatasetVersion | None = Field(default=None, description="source 'dataset'")


class FileChange(BaseModel):
    """One file that differs: its path inside the tracked folder (the file name for a tracked
    file) and its size on each side (None where it does not exist)."""

    path: str
    size_a: int | None = None
    size_b: int | None = None


class DataDiff(BaseModel):
    """What changed from version ``a`` to version ``b``."""

    a: DataVersion
    b: DataVersion
    added: list[FileChange] = Field(default_factory=list)
    deleted: list[FileChange] = Field(default_factory=list)
    modified: list[FileChange] = Field(default_factory=list)
    profile: ProfileDiff | None = Field(
        default=None, description="schema and distribution shift, when both sides are profiled"
    )

    @property
    def bytes_changed(self) -> int:
        """Bytes of the files added (their size), deleted (their old size) and modified (their
        new size): what turning ``a`` into ``b`` writes or removes."""
        return (
            sum(c.size_b or 0 for c in self.added)
            + sum(c.size_a or 0 for c in self.deleted)
            + sum(c.size_b or 0 for c in self.modified)
        )

    @property
    def identical(self) -> bool:
        """True when both sides hold the same files with the same content."""
        return not (self.added or self.deleted or self.modified)

    def summary(self) -> dict[str, int]:
        """Counts and bytes, as ``--json`` prints them."""
        return {
            "added": len(self.added),
            "deleted": len(self.deleted),
            "modified": len(self.modified),
            "bytes_changed": self.bytes_changed,
            "size_a": self.a.size,
            "size_b": self.b.size,
        }


def diff(a: str, b: str | None = None, *, settings: Settings | None = None) -> DataDiff:
    """Compare two versions of tracked data (see :func:`resolve_version` for how to name them).

    With ``b`` omitted, ``a`` must name tracked data in git: ``PATH`` compares the pointer
    committed in ``HEAD`` with the working pointer, and ``REV:PATH`` the one in ``REV`` with
    the working pointer.

    Args:
        a: the old version.
        b: the new version; default: the working pointer of ``a``'s path.
        settings: where the store is; default ``Settings()``.

    Returns:
        A :class:`DataDiff`; ``profile`` is set when both sides are dataset versions of tables
        with profiles.

    Raises:
        InvalidInput: a name that cannot be resolved (see :func:`resolve_version`), or only
            ``a`` given as a dataset version.
        NotFound: a pointer, revision or dataset version does not exist, or a folder's
            manifest is not in the local store (``keel data pull`` fetches it).
        StorageError: a manifest is corrupt, or git fails.

    Example:
        >>> d = diff("HEAD~1:images", "images")  # doctest: +SKIP
        >>> [c.path for c in d.added], d.bytes_changed  # doctest: +SKIP
        (['cats/new.png'], 20511)
    """
    settings = settings or Settings()
    if b is None:
        a, b = _default_pair(a)
    old = resolve_version(a, settings=settings)
    new = resolve_version(b, settings=settings)
    store = ArtifactStore(settings.artifacts_url)
    before = _files(old, store)
    after = _files(new, store)
    result = DataDiff(a=old, b=new)
    for key in sorted(before.keys() | after.keys()):
        shown = key or (new.name if key in after else old.name)
        if key not in before:
            result.added.append(FileChange(path=shown, size_b=after[key].size))
        elif key not in after:
            result.deleted.append(FileChange(path=shown, size_a=before[key].size))
        elif before[key].digest != after[key].digest:
            result.modified.append(
                FileChange(path=shown, size_a=before[key].size, size_b=after[key].size)
            )
    if old.dataset and new.dataset and old.dataset.profile and new.dataset.profile:
        from keel.data.profile import diff_profiles  # numpy and friends: only when needed

        result.profile = diff_profiles(old.dataset.profile, new.dataset.profile)
    return result


def _default_pair(spec: str) -> tuple[str, str]:
    """``PATH`` -> (``HEAD:PATH``, ``PATH``); ``REV:PATH`` -> (``REV:PATH``, ``PATH``)."""
    if _names_working_pointer(spec):
        return f"HEAD:{spec}", spec
    if ":" in spec:
        return spec, spec.split(":", 1)[1]
    if _DATASET_REF.match(spec):
        raise InvalidInput(
            f"{spec} is a dataset version: name the version to compare it with, e.g. "
            f"keel data diff {spec.split('@')[0]}@1 {spec}"
        )
    return f"HEAD:{spec}", spec


def resolve_version(spec: str, *, settings: Settings | None = None) -> DataVersion:
    """The version of tracked data that ``spec`` names.

    Tried in this order: a tracked path in the working tree (``images``, ``images.keel``:
    the pointer as it is now); ``REV:PATH`` (the pointer committed in git revision ``REV``,
    PATH relative to the current folder); ``NAME@VERSION`` (a named dataset version).

    Args:
        spec: the name, as typed on the command line.
        settings: for dataset versions (the database); default ``Settings()``.

    Returns:
        The :class:`DataVersion`.

    Raises:
        NotFound: no such pointer, revision, pointer in that revision or dataset version.
        InvalidInput: a pointer that does not parse; ``REV:PATH`` outside a git repository.
        StorageError: git cannot be run.

    Example:
        >>> resolve_version("HEAD~1:images").digest  # doctest: +SKIP
        '5b1e0a6f...'
    """
    if not spec:
        raise InvalidInput("an empty name: give a path, REV:PATH or NAME@VERSION")
    if _names_working_pointer(spec):
        return _working_version(spec)
    if ":" in spec and not re.match(r"^[A-Za-z]:[\\/]", spec):
        revision, path = spec.split(":", 1)
        return _git_version(spec, revision, path)
    match = _DATASET_REF.match(spec)
    if match:
        return _dataset_version(spec, settings or Settings())
    raise NotFound(
        f"{spec} is not tracked: there is no {_pointer_name(spec)} here (give a tracked path, "
        "REV:PATH for a git revision, or NAME@VERSION)",
        spec=spec,
    )


# -- the three kinds of names -------------------------------------------------------------


def _pointer_name(path: str) -> str:
    return path if path.endswith(POINTER_SUFFIX) else path.rstrip("/\\") + POINTER_SUFFIX


def _data_name(pointer: str) -> str:
    return pointer[: -len(POINTER_SUFFIX)] if pointer.endswith(POINTER_SUFFIX) else pointer


def _names_working_pointer(spec: str) -> bool:
    return Path(_pointer_name(spec)).is_file()


def _working_version(spec: str) -> DataVersion:
    pointer_file = Path(_pointer_name(spec))
    try:
        text = pointer_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{pointer_file} is not a valid Keel pointer: not UTF-8") from None
    except OSError as error:
        raise StorageError(f"cannot read {pointer_file}: {error.strerror or error}") from error
    pointer = parse_pointer(text, source=str(pointer_file))
    return _from_pointer(spec, "pointer", _data_name(str(pointer_file)), pointer)


def _from_pointer(
    spec: str,
    source: Literal["pointer", "git"],
    name: str,
    pointer: Pointer,
    commit: str | None = None,
) -> DataVersion:
    return DataVersion(
        spec=spec,
        source=source,
        name=name,
        kind=pointer.kind,
        digest=pointer.hash,
        size=pointer.size,
        files=pointer.files,
        commit=commit,
    )


def _git_version(spec: str, revision: str, path: str) -> DataVersion:
    if not revision or not path:
        raise InvalidInput(f"{spec}: expected REV:PATH, e.g. HEAD~1:data/images")
    commit = commit_of(revision)
    top = toplevel()
    assert top is not None  # commit_of checked it
    pointer_file = _pointer_name(path)
    absolute = Path(os.path.realpath(os.path.abspath(pointer_file)))
    try:
        rel = absolute.relative_to(os.path.realpath(top)).as_posix()
    except ValueError:
        raise InvalidInput(
            f"{path} is outside the git repository {top}", path=path, repository=str(top)
        ) from None
    content = read_committed(commit, rel)
    if content is None:
        raise NotFound(
            f"there is no pointer {rel} in {revision} (commit {commit[:12]}): was the data "
            "added (keel data add) and the pointer committed there?",
            revision=revision,
            path=rel,
        )
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{rel} in {revision} is not a valid Keel pointer: not UTF-8") from None
    pointer = parse_pointer(text, source=f"{rel} in {revision}")
    return _from_pointer(spec, "git", _data_name(path.rstrip("/\\")), pointer, commit)


def _dataset_version(spec: str, settings: Settings) -> DataVersion:
    version = resolve(spec, settings=settings)
    return DataVersion(
        spec=spec,
        source="dataset",
        name=version.name,
        kind=version.kind,
        digest=version.digest,
        size=version.size,
        files=version.files,
        dataset=version,
    )


# -- content --------------------------------------------------------------------------------


def _files(version: DataVersion, store: ArtifactStore) -> dict[str, Blob]:
    """The files of a version by path inside it; a file is the one entry ``""``."""
    if version.kind == "file":
        return {"": Blob(version.digest, version.size)}
    try:
        return store.read_manifest(version.digest)
    except NotFound:
        raise NotFound(
            f"the folder listing of {version.spec} (object {version.digest}) is not in the "
            f"local store {store.url}: fetch it with `keel data pull`, then diff again",
            digest=version.digest,
        ) from None
    except KeelError as error:
        raise type(error)(
            f"cannot read the folder listing of {version.spec}: {error.message}", **error.context
        ) from None
