"""Store maintenance: garbage collection (delete the objects nothing references) and fsck
(check every object against its hash, and every object the working tree's pointers need).

Garbage collection takes its references from *sources*: callables yielding
:class:`Reference`\\s. This module has the sources of data versioning (pointer files in the
working tree and in every git commit); :mod:`keel.gc` adds the others (runs' artifacts,
dataset versions, and later models and aliases) and runs :func:`collect_garbage` with all of
them. A folder's manifest keeps the files it lists. Whatever the sources cannot vouch for
(a pointer that does not parse, a manifest that is missing or corrupt) stops gc before it
deletes anything: it cannot know what that pointer keeps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

from pydantic import BaseModel, Field

from keel.artifacts import ArtifactStore, Blob
from keel.data.git import committed_pointers, toplevel
from keel.data.models import Pointer, parse_pointer
from keel.data.workspace import find_pointers
from keel.errors import InvalidInput, KeelError, NotFound, StorageError

__all__ = [
    "FsckProblem",
    "FsckReport",
    "GcReport",
    "Progress",
    "Reference",
    "ReferenceSource",
    "collect_garbage",
    "fsck",
    "git_history_references",
    "working_tree_references",
    "working_tree_root",
]


DELETE_THREADS = 8
"""Objects checked and deleted at once: unlinks wait on the filesystem's journal (about 1.5 ms
each on a busy ext4 disk), and 8 threads deleted 4x faster than one; remote stores wait on
round trips."""


class Reference(NamedTuple):
    """An object something needs kept.

    ``manifest`` marks a folder's manifest: the files it lists are kept too. ``where`` names
    the referrer in messages (``images.keel``, ``run 3f2a...``).
    """

    digest: str
    manifest: bool
    where: str


ReferenceSource = Callable[[], Iterable[Reference]]
"""Yields the references of one kind of referrer (pointers, runs, dataset versions...)."""


class Progress(Protocol):
    """Where long work reports how far it is (the CLI draws a progress bar)."""

    def phase(self, description: str, total: int | None) -> None:
        """A new step begins; ``total`` units of work, if known."""

    def advance(self, amount: int = 1) -> None:
        """``amount`` more units of the current step are done."""


class _NoProgress:
    def phase(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


class GcReport(BaseModel):
    """What :func:`collect_garbage` found, and deleted (or would delete, with ``dry_run``)."""

    dry_run: bool
    grace_seconds: float
    objects: int = Field(default=0, description="objects in the store before gc")
    bytes: int = Field(default=0, description="their bytes")
    referenced: int = Field(default=0, description="objects kept because something references them")
    referenced_bytes: int = 0
    young: int = Field(
        default=0, description="unreferenced objects kept: younger than the grace period"
    )
    young_bytes: int = 0
    deleted: int = Field(default=0, description="objects deleted (would be, with dry_run)")
    bytes_freed: int = Field(default=0, description="their bytes")
    missing: int = Field(default=0, description="referenced objects the store does not hold")
    references: dict[str, int] = Field(
        default_factory=dict, description="references each source gave (folder files excluded)"
    )


# -- reference sources of data versioning --------------------------------------------------


def working_tree_root(cwd: Path | None = None) -> Path:
    """Where gc and fsck look for pointers: the git working tree's root, else the folder.

    Args:
        cwd: the folder to start from; default the current folder.

    Returns:
        The folder to search.

    Example:
        >>> working_tree_root()  # doctest: +SKIP
        PosixPath('/home/me/project')
    """
    return toplevel(cwd) or (cwd or Path.cwd())


def working_tree_references(root: Path) -> Iterator[Reference]:
    """The objects the pointer files under ``root`` name (see
    :func:`keel.data.workspace.find_pointers` for what is searched).

    Args:
        root: the folder to search (:func:`working_tree_root`).

    Yields:
        One :class:`Reference` per pointer (a folder's is a manifest).

    Raises:
        InvalidInput: a pointer file does not parse (gc cannot know what it keeps).
        StorageError: a pointer file cannot be read.

    Example:
        >>> [r.where for r in working_tree_references(Path("."))]  # doctest: +SKIP
        ['data/train.csv.keel', 'images.keel']
    """
    for path in find_pointers(root):
        shown = _shown(path, root)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue  # deleted since the walk: it keeps nothing now
        except UnicodeDecodeError:
            raise _stopped(
                InvalidInput(f"{shown} is not a valid Keel pointer: not UTF-8")
            ) from None
        except OSError as error:
            raise _stopped(
                StorageError(f"cannot read {shown}: {error.strerror or error}")
            ) from None
        try:
            pointer = parse_pointer(text, source=shown)
        except InvalidInput as error:
            fix = "fix or delete that pointer (keel data add rewrites it)"
            raise _stopped(error, fix=fix) from None
        yield _reference(pointer, shown)


def git_history_references(root: Path) -> Iterator[Reference]:
    """The objects the pointer files of every commit of every branch and tag name.

    Args:
        root: a folder of the git working tree.

    Yields:
        One :class:`Reference` per distinct pointer content in the history.

    Raises:
        InvalidInput: a committed pointer does not parse.
        StorageError: git fails.

    Example:
        >>> [r.where for r in git_history_references(Path("."))]  # doctest: +SKIP
        ['images.keel in commit a3f09b12c0d1', ...]
    """
    fix = "run gc without --all-commits, which only reads the working tree's pointers"
    for committed in committed_pointers(root):
        shown = f"{committed.path} in commit {committed.commit[:12]}"
        try:
            text = committed.content.decode("utf-8")
        except UnicodeDecodeError:
            error = InvalidInput(f"{shown} is not a valid Keel pointer: not UTF-8")
            raise _stopped(error, fix=fix) from None
        try:
            pointer = parse_pointer(text, source=shown)
        except InvalidInput as error:
            raise _stopped(error, fix=fix) from None
        yield _reference(pointer, shown)


def _reference(pointer: Pointer, where: str) -> Reference:
    return Reference(pointer.hash, pointer.kind == "directory", where)


def _shown(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _stopped(error: KeelError, *, fix: str | None = None) -> KeelError:
    """The same kind of error, saying gc stopped with nothing deleted, and what to do."""
    message = f"keel data gc stopped, nothing was deleted: {error.message}"
    if fix:
        message += f"; {fix}, then run gc again"
    return type(error)(message, **error.context)


# -- garbage collection ----------------------------------------------------------------------


def collect_garbage(
    store: ArtifactStore,
    sources: Mapping[str, ReferenceSource],
    *,
    grace: float = 3600.0,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> GcReport:
    """Delete every object of ``store`` that no source references and that is older than
    ``grace`` seconds.

    First every source is read in full, and every referenced manifest with it (its files are
    kept); any error there stops gc before anything is deleted. Then the store is listed and
    the rest deleted, except objects modified within ``grace`` seconds: a ``keel data add``
    or a run may have written them and not yet written the pointer or row that references
    them.

    Args:
        store: the artifact store.
        sources: name -> source of references (see :mod:`keel.gc` for the registry).
        grace: seconds; younger objects are never deleted. Stores other than a local folder
            do not report ages and need ``grace=0``.
        dry_run: delete nothing; report what would be deleted.
        progress: where to report progress (the CLI's progress bar).

    Returns:
        A :class:`GcReport`; ``bytes_freed`` is the bytes actually removed.

    Raises:
        InvalidInput: a pointer does not parse, or ``grace`` > 0 on a store that is not a
            local folder.
        NotFound: a referenced manifest is not in the store (``keel data pull`` fetches it).
        StorageError: a referenced manifest is corrupt, or the store cannot be listed or
            an object deleted (what was deleted before is reported in no report: run again).

    Example:
        >>> sources = {"pointers": lambda: refs}  # doctest: +SKIP
        >>> report = collect_garbage(store, sources, dry_run=True)  # doctest: +SKIP
        >>> report.deleted, report.bytes_freed  # doctest: +SKIP
        (12, 104857600)
    """
    progress = progress or _NoProgress()
    if grace > 0 and not _is_local(store):
        raise InvalidInput(
            f"the store {store.url} does not report how old its objects are, so a grace "
            "period cannot protect objects being written: run gc with --grace 0 while nothing "
            "writes to it (no keel data add, push or run)",
            url=store.url,
        )
    report = GcReport(dry_run=dry_run, grace_seconds=grace)
    keep = _referenced(store, sources, report, progress)
    progress.phase("Listing the store", None)
    candidates: list[Blob] = []
    for blob in store.iter_objects():
        report.objects += 1
        report.bytes += blob.size
        if blob.digest in keep:
            report.referenced += 1
            report.referenced_bytes += blob.size
        else:
            candidates.append(blob)
        progress.advance()
    report.missing = len(keep) - report.referenced
    cutoff = time.time() - grace
    progress.phase("Dry run" if dry_run else "Deleting", len(candidates))

    def sweep(blob: Blob) -> tuple[bool, int]:
        """(deleted, bytes): an object younger than the grace period is kept."""
        try:
            if grace > 0 and _modified(store, blob.digest) > cutoff:
                return False, blob.size
            return True, blob.size if dry_run else store.delete(blob.digest)
        finally:
            progress.advance()

    errors: list[KeelError] = []

    def sweep_or_note(blob: Blob) -> tuple[bool, int] | None:
        try:
            return sweep(blob)
        except KeelError as error:
            errors.append(error)
            return None

    with ThreadPoolExecutor(max_workers=DELETE_THREADS) as pool:
        for blob, outcome in zip(candidates, pool.map(sweep_or_note, candidates), strict=True):
            if outcome is None:
                continue
            deleted, size = outcome
            if deleted:
                report.deleted += 1
                report.bytes_freed += size
            else:
                report.young += 1
                report.young_bytes += blob.size
    if errors:
        raise type(errors[0])(
            f"keel data gc deleted {report.deleted:,} objects ({report.bytes_freed:,} bytes), "
            f"then failed on {len(errors):,}: {errors[0].message}",
            **errors[0].context,
        )
    return report


def _referenced(
    store: ArtifactStore,
    sources: Mapping[str, ReferenceSource],
    report: GcReport,
    progress: Progress,
) -> set[str]:
    keep: set[str] = set()
    manifests: set[str] = set()
    for name, source in sources.items():
        progress.phase(f"Reading references: {name}", None)
        count = 0
        for reference in source():
            count += 1
            keep.add(reference.digest)
            if reference.manifest and reference.digest not in manifests:
                manifests.add(reference.digest)
                keep.update(blob.digest for blob in _manifest(store, reference).values())
            progress.advance()
        report.references[name] = count
    return keep


def _manifest(store: ArtifactStore, reference: Reference) -> dict[str, Blob]:
    try:
        return store.read_manifest(reference.digest)
    except NotFound as error:
        raise _stopped(
            NotFound(
                f"{reference.where} names the folder listing {reference.digest}, which is not "
                f"in the store {store.url} ({error.message}), so gc cannot know which files "
                "it keeps",
                digest=reference.digest,
            ),
            fix="fetch it (keel data pull) or re-add or delete what names it",
        ) from None
    except KeelError as error:
        raise _stopped(
            type(error)(
                f"{reference.where} names the folder listing {reference.digest}, which cannot be "
                f"read: {error.message}",
                **error.context,
            ),
            fix="restore it (keel data pull) or re-add or delete what names it",
        ) from None


def _is_local(store: ArtifactStore) -> bool:
    return "://" not in store.url or store.url.startswith("file://")


def _modified(store: ArtifactStore, digest: str) -> float:
    """The object's modification time; +inf (never old enough) when it cannot be read."""
    path = store.path_of(digest)
    if path is None:
        return float("inf")
    try:
        return os.stat(path).st_mtime
    except OSError:
        return float("inf")


# -- fsck -----------------------------------------------------------------------------------

_FSCK_CHUNK = 4096
_SMALL_OBJECT = 1 << 20
"""Objects up to this size are verified from one read into memory: ArtifactStore.verify sets
up a 1 MiB buffer per object, which made it 0.8 ms a small object against 0.25 ms."""

ProblemKind = Literal["corrupt", "quarantined", "missing", "bad_pointer", "bad_manifest"]


class FsckProblem(BaseModel):
    """One thing fsck found wrong."""

    kind: ProblemKind = Field(
        description="corrupt: an object did not match its hash (now quarantined); "
        "quarantined: moved aside by an earlier read; missing: a pointer needs an object the "
        "store does not hold; bad_pointer: a pointer does not parse; bad_manifest: a folder "
        "listing does not parse"
    )
    digest: str | None = None
    path: str | None = Field(
        default=None,
        description="the pointer, the file in a tracked folder, or the quarantine file",
    )
    message: str


class FsckReport(BaseModel):
    """What :func:`fsck` checked and found."""

    objects: int = Field(default=0, description="objects verified")
    bytes: int = Field(default=0, description="their bytes")
    pointers: int = Field(default=0, description="pointer files checked")
    problems: list[FsckProblem] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


def fsck(
    store: ArtifactStore,
    root: Path,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> FsckReport:
    """Check every object in ``store`` against its hash, and that every pointer under ``root``
    has what it needs.

    Corrupt objects are moved into the store's ``quarantine/`` (as any read does), so the
    next ``keel data add`` or ``pull`` of that content stores it afresh. Objects quarantined
    before are listed too (local stores).

    Args:
        store: the artifact store.
        root: the working tree whose pointers are checked (:func:`working_tree_root`).
        jobs: objects verified at once (default: the number of CPUs).
        progress: where to report progress, in bytes verified.

    Returns:
        A :class:`FsckReport`; ``ok`` is False when it found any problem.

    Raises:
        StorageError: the store cannot be listed.

    Example:
        >>> fsck(ArtifactStore(".keel/artifacts"), Path(".")).ok  # doctest: +SKIP
        True
    """
    progress = progress or _NoProgress()
    report = FsckReport()
    for path in _quarantined(store):
        digest = Path(path).name.split(".", 1)[0]
        report.problems.append(
            FsckProblem(
                kind="quarantined",
                digest=digest,
                path=path,
                message=f"object {digest} was found corrupt earlier and moved to {path}",
            )
        )
    progress.phase("Listing the store", None)
    total = sum(blob.size for blob in store.iter_objects())  # listing is cheap: ~1M objects/s
    progress.phase("Verifying objects", total)

    def verify(blob: Blob) -> FsckProblem | None:
        try:
            if blob.size <= _SMALL_OBJECT:
                store.read_bytes(blob.digest)  # checks and quarantines as verify does, 3x faster
            else:
                store.verify(blob.digest)
        except NotFound:
            return None  # deleted since the listing (a gc)
        except KeelError as error:
            return FsckProblem(kind="corrupt", digest=blob.digest, message=error.message)
        finally:
            progress.advance(blob.size)
        return None

    workers = max(1, jobs or os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # a chunk at a time, so memory stays flat however many objects the store holds
        for chunk in _chunks(store.iter_objects(), _FSCK_CHUNK):
            for blob, problem in zip(chunk, pool.map(verify, chunk), strict=True):
                if problem is None:
                    report.objects += 1
                    report.bytes += blob.size
                else:
                    report.problems.append(problem)
    _check_pointers(store, root, report)  # after: corrupt objects are in quarantine now
    return report


def _chunks(items: Iterable[Blob], size: int) -> Iterator[list[Blob]]:
    chunk: list[Blob] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _check_pointers(store: ArtifactStore, root: Path, report: FsckReport) -> None:
    for path in find_pointers(root):
        shown = _shown(path, root)
        report.pointers += 1
        try:
            pointer = parse_pointer(path.read_text(encoding="utf-8"), source=shown)
        except (InvalidInput, UnicodeDecodeError, OSError) as error:
            message = error.message if isinstance(error, InvalidInput) else f"{shown}: {error}"
            report.problems.append(FsckProblem(kind="bad_pointer", path=shown, message=message))
            continue
        data = shown.removesuffix(".keel")
        if not store.exists(pointer.hash):
            what = "folder listing" if pointer.kind == "directory" else "content"
            report.problems.append(
                FsckProblem(
                    kind="missing",
                    digest=pointer.hash,
                    path=shown,
                    message=f"{shown}: the {what} of {data} ({pointer.hash}) is not in the store",
                )
            )
            continue
        if pointer.kind == "file":
            continue
        try:
            files = store.read_manifest(pointer.hash)
        except KeelError as error:
            kind: ProblemKind = "bad_manifest" if isinstance(error, InvalidInput) else "missing"
            report.problems.append(
                FsckProblem(kind=kind, digest=pointer.hash, path=shown, message=error.message)
            )
            continue
        for rel, blob in files.items():
            if not store.exists(blob.digest):
                report.problems.append(
                    FsckProblem(
                        kind="missing",
                        digest=blob.digest,
                        path=f"{data}/{rel}",
                        message=f"{data}/{rel} ({blob.digest}), in {shown}, is not in the store",
                    )
                )


def _quarantined(store: ArtifactStore) -> list[str]:
    """The files in a local store's ``quarantine/`` folder (other stores: not listed)."""
    if not _is_local(store):
        return []
    folder = Path(store.url.removeprefix("file://")).expanduser().absolute() / "quarantine"
    try:
        return sorted(str(entry) for entry in folder.iterdir() if entry.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return []
