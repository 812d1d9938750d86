"""Garbage collection of the artifact store across every capability that references objects.

The store is shared: data pointers, runs' artifacts, dataset versions (and, with issue 5,
models and aliases) all name objects in it. Each capability contributes a *reference source*
through :data:`REFERENCE_SOURCES`; :func:`gc` gathers them all and runs
:func:`keel.data.maintenance.collect_garbage`. It lives outside ``keel.data`` because data
versioning may not import tracking (an import-linter contract); this module may import both.

To plug in a new kind of referrer, add a factory::

    def _model_sources(options: GcOptions) -> ReferenceSource | None:
        return lambda: (Reference(v.digest, True, f"model {v.name}") for v in ...)

    REFERENCE_SOURCES["models"] = _model_sources
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from keel.artifacts import ArtifactStore
from keel.data.git import toplevel
from keel.data.maintenance import (
    GcReport,
    Progress,
    Reference,
    ReferenceSource,
    collect_garbage,
    git_history_references,
    working_tree_references,
    working_tree_root,
)
from keel.data.versions import list_datasets, list_versions
from keel.errors import InvalidInput
from keel.settings import Settings
from keel.tracking.references import artifact_references

__all__ = ["REFERENCE_SOURCES", "GcOptions", "gc", "parse_duration"]


@dataclass(frozen=True)
class GcOptions:
    """What a gc run is asked to consider; what reference source factories receive."""

    settings: Settings
    root: Path
    all_commits: bool = False


SourceFactory = Callable[[GcOptions], ReferenceSource | None]
"""Makes one reference source for a gc run, or None when it does not apply to it."""


def _working_tree(options: GcOptions) -> ReferenceSource:
    return lambda: working_tree_references(options.root)


def _git_history(options: GcOptions) -> ReferenceSource | None:
    if not options.all_commits:
        return None
    return lambda: git_history_references(options.root)


def _runs(options: GcOptions) -> ReferenceSource:
    def references() -> Iterator[Reference]:
        for ref in artifact_references(options.settings):
            where = f"an artifact {'folder ' if ref.kind == 'dir' else ''}of run {ref.run_id}"
            yield Reference(ref.digest, ref.kind == "dir", where)

    return references


def _dataset_versions(options: GcOptions) -> ReferenceSource | None:
    url = make_url(options.settings.db_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
        return None  # no database: no dataset versions (and none is created)

    def references() -> Iterator[Reference]:
        settings = options.settings
        for dataset in list_datasets(settings=settings):
            for version in list_versions(dataset.name, settings=settings):
                manifest = version.kind == "directory"
                yield Reference(version.digest, manifest, f"dataset version {version.ref}")

    return references


def _model_versions(options: GcOptions) -> ReferenceSource | None:
    url = make_url(options.settings.db_url)
    if options.settings.tracking_uri:
        return None  # the runs source refuses already: the server's database is elsewhere
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
        return None  # no database: no registered models (and none is created)
    from keel.models.api import model_version_references  # pydantic etc. only when used

    versions = list(model_version_references(options.settings))
    if not versions:
        return None  # nothing registered: no line in the report

    def references() -> Iterator[Reference]:
        # a version keeps its folder (manifest and files) after its run is purged
        for ref in versions:
            yield Reference(ref.digest, True, f"model version {ref.name}/{ref.version}")

    return references


REFERENCE_SOURCES: dict[str, SourceFactory] = {
    "working tree pointers": _working_tree,
    "git history pointers": _git_history,
    "runs": _runs,
    "dataset versions": _dataset_versions,
    "model versions": _model_versions,
}
"""Name -> factory of every kind of referrer gc asks (aliases point at versions, so the model
versions cover them)."""


def gc(
    *,
    dry_run: bool = False,
    all_commits: bool = False,
    grace: float = 3600.0,
    settings: Settings | None = None,
    root: Path | None = None,
    progress: Progress | None = None,
) -> GcReport:
    """Delete the store objects nothing references: see :func:`collect_garbage`.

    Kept: objects named by the pointer files of the working tree (the git root's, else the
    current folder's), with ``all_commits`` by the pointers of every commit of every branch
    and tag, by runs' artifacts, by dataset versions; and every object younger than ``grace``.

    Args:
        dry_run: delete nothing; report what would go.
        all_commits: also keep what pointers in any commit name.
        grace: seconds; younger objects are kept.
        settings: the store and database; default ``Settings()``.
        root: the working tree; default the git root or the current folder.
        progress: where to report progress.

    Returns:
        The :class:`~keel.data.maintenance.GcReport`.

    Raises:
        InvalidInput: a pointer does not parse; ``all_commits`` outside a git repository;
            ``grace`` > 0 on a store that is not a local folder.
        NotFound: a referenced folder listing is not in the store.
        Conflict: runs are tracked on a server whose database is not readable from here.
        StorageError: the store, git or the database fails.

    Example:
        >>> gc(dry_run=True).bytes_freed  # doctest: +SKIP
        104857600
    """
    settings = settings or Settings()
    root = root or working_tree_root()
    if all_commits and toplevel(root) is None:
        raise InvalidInput(
            f"--all-commits reads pointers from git history, and {root} is not in a git repository"
        )
    options = GcOptions(settings=settings, root=root, all_commits=all_commits)
    sources: dict[str, ReferenceSource] = {}
    for name, factory in REFERENCE_SOURCES.items():
        source = factory(options)
        if source is not None:
            sources[name] = source
    store = ArtifactStore(settings.artifacts_url)
    return collect_garbage(store, sources, grace=grace, dry_run=dry_run, progress=progress)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``7d``, ``2w`` or plain seconds -> seconds.

    Args:
        text: the duration as typed.

    Returns:
        Seconds.

    Raises:
        InvalidInput: anything else, or a negative duration.

    Example:
        >>> parse_duration("1h")
        3600.0
    """
    value = text.strip().lower()
    unit = 1
    if value and value[-1] in _UNITS:
        unit = _UNITS[value[-1]]
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        raise InvalidInput(
            f"not a duration: {text!r} (use e.g. 30m, 1h, 7d, or seconds)", duration=text
        ) from None
    if number < 0 or number != number:
        raise InvalidInput(f"a duration cannot be negative: {text!r}", duration=text)
    return number * unit
