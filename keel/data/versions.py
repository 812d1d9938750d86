"""Named dataset versions: ``log_dataset``, ``load``, run inputs and lineage.

``log_dataset(df_or_path, name="diabetes")`` stores the content in the artifact store (a
DataFrame as Parquet, a file as itself, a folder as its files plus a manifest), profiles tables
(:func:`keel.data.profile.profile_table`) and records version 1, 2, 3... of the name in the
metadata database. ``load("diabetes@2")`` gives it back: a DataFrame for a table, else a local
read-only copy (under ``<home>/datasets/<digest>/``), checked against its digest when written.

**Run inputs without importing tracking.** keel.data may not import keel.tracking (an
import-linter contract: tracking builds on data, not the reverse), yet ``load`` inside a run must
record the run's input, and ``log_dataset`` inside a run its producer. So this module keeps a
small registry of *run finders*: functions that answer "which run is active here, and in which
store?" with ``(run_id, settings)`` or None. :mod:`keel.tracking.fluent` registers its finder when
it is imported, which is the only way a fluent run can be active; nothing registers in a program
that never imports tracking, and then no run is active. A finder reads the caller's
``ContextVar``, so threads and asyncio tasks each see their own run.

Dataset versions live in the local metadata database only: with a tracking server
(``KEEL_TRACKING_URI``) these functions raise a :class:`~keel.errors.KeelError` saying so, rather
than write to a local database the server never sees.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.artifacts import ArtifactStore, walk_files
from keel.data.models import dump_pointer, parse_pointer
from keel.data.profile_models import TableProfile
from keel.data.version_models import DatasetVersion
from keel.data.versions_store import (
    DatasetRun,
    DatasetSummary,
    Lineage,
    RunInput,
    VersionStore,
)
from keel.data.workspace import pointer_path_of, require_exists, write_text_atomically
from keel.errors import InvalidInput, KeelError, StorageError
from keel.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DatasetRun",
    "DatasetSummary",
    "Lineage",
    "RunFinder",
    "RunInput",
    "get_version",
    "lineage",
    "list_datasets",
    "list_versions",
    "load",
    "log_dataset",
    "log_input",
    "log_pointer",
    "materialize",
    "parse_ref",
    "register_run_finder",
    "resolve",
    "run_inputs",
]

RunFinder = Callable[[], "tuple[str, Settings] | None"]
"""Answers "which run is active here?": ``(run_id, the settings of the store it is in)``."""

_run_finders: list[RunFinder] = []

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
CONTEXT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
DATAFRAME_SOURCE = "pandas.DataFrame"
MATERIALIZED_FOLDER = "datasets"


def register_run_finder(finder: RunFinder) -> None:
    """Let ``log_dataset``, ``load`` and ``log_input`` see the active run through ``finder``.

    :mod:`keel.tracking.fluent` registers one at import; registering the same function again
    does nothing.

    Args:
        finder: returns ``(run_id, settings)`` of the active run in the caller's context, or
            None when no run is active.

    Example:
        >>> register_run_finder(lambda: None)  # doctest: +SKIP
    """
    if finder not in _run_finders:
        _run_finders.append(finder)


def parse_ref(ref: str) -> tuple[str, int | None]:
    """Split ``"name@3"`` into ``("name", 3)``; ``"name"`` and ``"name@latest"`` give None.

    Args:
        ref: a dataset reference.

    Returns:
        The name and version number (None: the latest).

    Raises:
        InvalidInput: the name is not valid or the version is not a number >= 1 or ``latest``.

    Example:
        >>> parse_ref("diabetes@2")
        ('diabetes', 2)
    """
    if not isinstance(ref, str):
        raise InvalidInput(f"a dataset reference is a string like 'diabetes@2', not {ref!r}")
    name, at, version = ref.partition("@")
    _check_name(name, ref=ref)
    if not at or version == "latest":
        return name, None
    if not version.isdecimal() or int(version) < 1:
        raise InvalidInput(
            f"malformed dataset reference {ref!r}: after '@' comes a version number (1, 2, "
            f"...) or 'latest', as in {name}@1",
            ref=ref,
        )
    return name, int(version)


# -- logging ---------------------------------------------------------------------------------


def log_dataset(
    data: pd.DataFrame | str | os.PathLike[str], name: str, *, settings: Settings | None = None
) -> DatasetVersion:
    """Record a new version of dataset ``name``: a DataFrame, a file or a folder.

    A DataFrame is stored as Parquet (the same bytes for equal frames with one Keel, pandas
    and pyarrow), a file as itself, a folder as its files plus a manifest. DataFrames, CSV
    and Parquet files get a schema and profile. When the content equals the latest version's,
    that version is returned and nothing new is recorded. Inside an active run, the run is
    recorded as the producer.

    Args:
        data: a pandas DataFrame, or the path of a file or folder.
        name: the dataset's name (letters, digits, ``_ . -``; up to 128 characters).
        settings: where the store and database are; default the active run's, else
            ``Settings()``.

    Returns:
        The new (or equal latest) :class:`~keel.data.version_models.DatasetVersion`.

    Raises:
        InvalidInput: a bad name, something that is neither a DataFrame nor a path, a CSV or
            Parquet file that does not parse.
        NotFound: the path does not exist.
        KeelError: a tracking server is configured (not served over HTTP yet).
        StorageError: the store or database failed.

    Example:
        >>> keel.data.log_dataset(df, name="diabetes")  # doctest: +SKIP
        DatasetVersion(name='diabetes', version=1, ...)
    """
    _check_name(name)
    run = _active_run()
    settings = _resolve(settings, run)
    store = ArtifactStore(settings.artifacts_url, fsync=settings.data_fsync)
    if not isinstance(data, str | os.PathLike) and not _is_dataframe(data):
        raise InvalidInput(
            f"log_dataset takes a pandas DataFrame or the path of a file or folder, "
            f"not {type(data).__name__}"
        )
    # one flush to disk for every new object, before the database row that names them
    with store.batch():
        if isinstance(data, str | os.PathLike):
            content = _store_path(store, Path(data))
        else:
            content = _store_frame(store, data)
    return _record(settings, name, content, run_id=run[0] if run else None, frame=data)


def log_pointer(
    path: str | os.PathLike[str], name: str, *, settings: Settings | None = None
) -> DatasetVersion:
    """Record what ``PATH.keel`` points at as a version of ``name``; write name and version
    into the pointer (what ``keel data add PATH --name NAME`` does after adding).

    The content is in the store already; CSV and Parquet files are profiled from ``path``.
    When it equals the latest version, the pointer gets that version.

    Args:
        path: the data path (its pointer is ``PATH.keel``).
        name: the dataset's name.
        settings: where the store and database are; default ``Settings()``.

    Returns:
        The version recorded (or the equal latest one).

    Raises:
        NotFound: no pointer or data at ``path``.
        InvalidInput: a bad name; the pointer does not parse.
        KeelError: a tracking server is configured.

    Example:
        >>> log_pointer("data/train.csv", "diabetes").ref  # doctest: +SKIP
        'diabetes@3'
    """
    _check_name(name)
    run = _active_run()
    settings = _resolve(settings, run)
    data = Path(os.path.abspath(path))
    pointer_path = pointer_path_of(data)
    try:
        text = pointer_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(
            f"{path} is not added: there is no {pointer_path.name} (keel data add {path})",
            path=str(path),
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise StorageError(f"cannot read {pointer_path}: {error}") from error
    pointer = parse_pointer(text, source=str(pointer_path))
    content = _Content(
        digest=pointer.hash,
        kind=pointer.kind,
        format=_table_format(data) if pointer.kind == "file" else None,
        size=pointer.size,
        files=pointer.files,
        source=str(data),
        profile_source=data,
    )
    version = _record(settings, name, content, run_id=run[0] if run else None)
    named = replace(pointer, name=name, version=str(version.version))
    if named != pointer:
        write_text_atomically(pointer_path, dump_pointer(named))
    return version


class _Content:
    """What was stored, before it is numbered."""

    def __init__(
        self,
        *,
        digest: str,
        kind: str,
        format: str | None,
        size: int,
        files: int,
        source: str,
        profile_source: Path | None,
    ) -> None:
        self.digest = digest
        self.kind = kind
        self.format = format
        self.size = size
        self.files = files
        self.source = source
        self.profile_source = profile_source


def _store_path(store: ArtifactStore, given: Path) -> _Content:
    path = Path(os.path.abspath(given))
    st = require_exists(path, str(given))
    if stat.S_ISDIR(st.st_mode):
        blob = store.put_dir(path)
        manifest = store.read_manifest(blob.digest)
        return _Content(
            digest=blob.digest,
            kind="directory",
            format=None,
            size=sum(b.size for b in manifest.values()),
            files=len(manifest),
            source=str(path),
            profile_source=None,
        )
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"{given} is not a regular file or folder", path=str(given))
    blob = store.put_file(path)
    fmt = _table_format(path)
    return _Content(
        digest=blob.digest,
        kind="file",
        format=fmt,
        size=blob.size,
        files=1,
        source=str(path),
        profile_source=path if fmt else None,
    )


def _store_frame(store: ArtifactStore, frame: Any) -> _Content:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pandas(frame)
    except (pa.ArrowException, TypeError, ValueError) as error:
        raise InvalidInput(f"the DataFrame cannot be stored as Parquet: {error}") from None
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    blob = store.put_bytes(sink.getvalue().to_pybytes())
    return _Content(
        digest=blob.digest,
        kind="file",
        format="parquet",
        size=blob.size,
        files=1,
        source=DATAFRAME_SOURCE,
        profile_source=None,
    )


def _record(
    settings: Settings, name: str, content: _Content, *, run_id: str | None, frame: Any = None
) -> DatasetVersion:
    with _version_store(settings) as versions:
        latest = versions.latest_with(name, content.digest, content.kind)
        if latest is not None:
            return latest
        profile = _profile(content, frame)
        version, _ = versions.add_version(
            name,
            digest=content.digest,
            kind=content.kind,
            format=content.format,
            size=content.size,
            files=content.files,
            profile=profile,
            source=content.source,
            run_id=run_id,
        )
        return version


def _profile(content: _Content, frame: Any) -> TableProfile | None:
    if content.format is None:
        return None
    from keel.data.profile import profile_table

    if content.profile_source is not None:
        return profile_table(content.profile_source, format=content.format)
    if frame is not None and _is_dataframe(frame):
        return profile_table(frame)
    return None


# -- reading ---------------------------------------------------------------------------------


def get_version(ref: str | DatasetVersion, *, settings: Settings | None = None) -> DatasetVersion:
    """The version ``ref`` names (``"name@3"``, ``"name"`` or ``"name@latest"``: the latest).

    Raises:
        InvalidInput: a malformed reference.
        NotFound: no such dataset, or no such version (the message lists those that exist).

    Example:
        >>> get_version("diabetes@latest").version  # doctest: +SKIP
        3
    """
    name, number = _ref(ref)
    with _version_store(_for_reading(settings)) as versions:
        return versions.get_version(name, number)


def resolve(ref: str | DatasetVersion, *, settings: Settings | None = None) -> DatasetVersion:
    """:func:`get_version` under the name ``keel data diff`` calls (``NAME@VERSION`` specs).

    Example:
        >>> resolve("diabetes@1").digest  # doctest: +SKIP
        '5b1e...'
    """
    return get_version(ref, settings=settings)


def list_versions(name: str, *, settings: Settings | None = None) -> list[DatasetVersion]:
    """Every version of dataset ``name``, newest first.

    Raises:
        NotFound: no dataset of that name.

    Example:
        >>> [v.version for v in list_versions("diabetes")]  # doctest: +SKIP
        [2, 1]
    """
    _check_name(name)
    with _version_store(_for_reading(settings)) as versions:
        return versions.list_versions(name)


def list_datasets(*, settings: Settings | None = None) -> list[DatasetSummary]:
    """Every named dataset, by name, with its version count and latest version.

    Example:
        >>> [d.name for d in list_datasets()]  # doctest: +SKIP
        ['diabetes', 'images']
    """
    with _version_store(_for_reading(settings)) as versions:
        return versions.list_datasets()


def load(
    ref: str | DatasetVersion,
    *,
    context: str = "train",
    settings: Settings | None = None,
) -> Any:
    """Read a dataset version: a DataFrame for a table, else the Path of a local read-only copy.

    Files and folders are written once under ``<home>/datasets/<digest>/`` (checked against
    their digest, then made read-only) and reused while their size, mtime and inode are
    unchanged. Inside an active run, the run's input is recorded (``context``).

    Args:
        ref: ``"name@3"``, ``"name"`` or ``"name@latest"`` (the latest), or a DatasetVersion.
        context: how the active run uses it, e.g. ``"train"`` or ``"eval"``.
        settings: where the store and database are; default the active run's, else
            ``Settings()``.

    Returns:
        A pandas DataFrame (CSV or Parquet), or the Path of the file or folder.

    Raises:
        InvalidInput: a malformed reference or context.
        NotFound: no such dataset or version; its content is missing from the store.
        StorageError: the content is corrupt in the store.
        KeelError: a tracking server is configured.

    Example:
        >>> df = keel.data.load("diabetes@2")  # doctest: +SKIP
        >>> images = keel.data.load("images", context="eval")  # doctest: +SKIP
    """
    name, number = _ref(ref)
    _check_context(context)
    run = _active_run()
    settings = _resolve(settings, run)
    with _version_store(settings) as versions:
        version = versions.get_version(name, number)
        path = materialize(version, settings=settings)
        if run is not None:
            versions.record_input(run[0], version, context)
    return _read_table(version, path) if version.format is not None else path


def log_input(
    run_id: str,
    ref: str | DatasetVersion,
    *,
    context: str = "train",
    settings: Settings | None = None,
) -> DatasetVersion:
    """Record that run ``run_id`` used dataset version ``ref`` (``keel.log_input`` calls it).

    Recording the same (run, version, context) again does nothing.

    Args:
        run_id: a run in the same database.
        ref: ``"name@3"``, ``"name"`` (the latest) or a DatasetVersion.
        context: how the run uses it, e.g. ``"train"`` or ``"eval"``.
        settings: where the database is; default ``Settings()``.

    Returns:
        The version recorded.

    Raises:
        NotFound: no such run, dataset or version.
        InvalidInput: a malformed reference or context.
        KeelError: a tracking server is configured.

    Example:
        >>> log_input(run.run_id, "diabetes@2", context="eval")  # doctest: +SKIP
    """
    name, number = _ref(ref)
    _check_context(context)
    settings = _resolve(settings, None)
    with _version_store(settings) as versions:
        version = versions.get_version(name, number)
        versions.record_input(run_id, version, context)
    return version


def lineage(ref: str | DatasetVersion, *, settings: Settings | None = None) -> Lineage:
    """The run that produced dataset version ``ref`` and the runs that used it.

    Returns:
        A :class:`Lineage`: ``produced_by`` (or None) and ``used_by`` (run id, experiment,
        run name, status, context, time), oldest first.

    Raises:
        InvalidInput: a malformed reference.
        NotFound: no such dataset or version.

    Example:
        >>> [r.run_id for r in keel.data.lineage("diabetes@2").used_by]  # doctest: +SKIP
        ['5f0c...']
    """
    name, number = _ref(ref)
    with _version_store(_for_reading(settings)) as versions:
        return versions.lineage(name, number)


def run_inputs(run_id: str, *, settings: Settings | None = None) -> list[RunInput]:
    """The dataset versions run ``run_id`` read (``keel.log_input``, ``keel.data.load``).

    Returns:
        One :class:`RunInput` (``version``, ``context``) per version and context, in the
        order the run read them; empty for a run that read none (or an unknown run id).

    Example:
        >>> [i.version.ref for i in keel.data.run_inputs(run.run_id)]  # doctest: +SKIP
        ['diabetes@2']
    """
    with _version_store(_for_reading(settings)) as versions:
        return versions.run_inputs(run_id)


# -- materialized copies ---------------------------------------------------------------------


def materialize(version: DatasetVersion, *, settings: Settings | None = None) -> Path:
    """A local read-only copy of ``version``'s file or folder; written from the store if needed.

    The copy is ``<home>/datasets/<digest>/<name>``, where ``<name>`` is the source's file or
    folder name (``<dataset>.parquet`` for a DataFrame). Writing goes through a temp path,
    verified against the digest, then renamed; a stat record (size, mtime, inode per file)
    beside it tells later calls the copy is intact, without reading it. A copy that was
    changed is written again.

    Raises:
        NotFound: the content is not in the store.
        StorageError: the content is corrupt, or the copy cannot be written.

    Example:
        >>> materialize(get_version("images@1"))  # doctest: +SKIP
        PosixPath('/home/me/project/.keel/datasets/5b1e.../images')
    """
    settings = settings or Settings()
    folder = settings.home_path / MATERIALIZED_FOLDER / version.digest
    target = folder / _copy_name(version)
    record = folder / f".{target.name}.keel-stat"
    if _intact(target, record, version):
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(f"cannot create {folder}: {error.strerror or error}") from error
    with _locked(folder / ".lock"):
        if _intact(target, record, version):
            return target
        for stale in folder.glob(".tmp-*"):  # left by a killed load; we hold the lock
            _remove(stale)
        _write_copy(
            ArtifactStore(settings.artifacts_url, fsync=settings.data_fsync),
            version,
            target,
            record,
        )
    return target


def _copy_name(version: DatasetVersion) -> str:
    if version.source and version.source != DATAFRAME_SOURCE:
        base = Path(version.source).name
        if base and base not in (".", ".."):
            return base
    return f"{version.name}.parquet" if version.format == "parquet" else version.name


def _write_copy(store: ArtifactStore, version: DatasetVersion, target: Path, record: Path) -> None:
    temp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
    try:
        if version.kind == "file":
            store.get_file(version.digest, temp)
        else:
            temp.mkdir()
            store.get_dir(version.digest, temp)
        for path in [temp] if version.kind == "file" else _files_under(temp):
            path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        record.unlink(missing_ok=True)
        _remove(target)
        os.replace(temp, target)
        write_text_atomically(record, json.dumps(_stat_record(target, version)))
    except OSError as error:
        raise StorageError(
            f"cannot write the local copy {target}: {error.strerror or error}"
        ) from error
    finally:
        _remove(temp)


def _files_under(folder: Path) -> list[Path]:
    return [Path(path) for path, _ in walk_files(folder).values()]


def _stat_record(target: Path, version: DatasetVersion) -> dict[str, list[int]]:
    single = version.kind == "file"
    entries = {"": (str(target), target.stat())} if single else walk_files(target)
    return {rel: [st.st_size, st.st_mtime_ns, st.st_ino] for rel, (_, st) in entries.items()}


def _intact(target: Path, record: Path, version: DatasetVersion) -> bool:
    try:
        expected = json.loads(record.read_text(encoding="utf-8"))
        return bool(_stat_record(target, version) == expected)
    except (OSError, ValueError, KeelError):
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    import fcntl  # POSIX; imported here so that importing keel.data works everywhere

    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_table(version: DatasetVersion, path: Path) -> Any:
    import pandas as pd

    if version.format == "csv":
        return pd.read_csv(path)
    return pd.read_parquet(path)


# -- helpers ---------------------------------------------------------------------------------


def _active_run() -> tuple[str, Settings] | None:
    for finder in _run_finders:
        found = finder()
        if found is not None:
            return found
    return None


def _for_reading(settings: Settings | None) -> Settings:
    """The settings to read with: those given, else the active run's, else ``Settings()``."""
    if settings is None:
        run = _active_run()
        settings = run[1] if run is not None else Settings()
    return _resolve(settings, None)


def _resolve(settings: Settings | None, run: tuple[str, Settings] | None) -> Settings:
    """The settings to use, checked: local, and the same database as the active run."""
    if settings is None:
        settings = run[1] if run is not None else Settings()
    if settings.tracking_uri:
        raise KeelError(
            f"dataset versions and run inputs are not served by the tracking server "
            f"({settings.tracking_uri}) yet; use them with a local or shared database: unset "
            "KEEL_TRACKING_URI and set KEEL_DATABASE_URL to the server's database",
            tracking_uri=settings.tracking_uri,
        )
    if run is not None and run[1].tracking_uri:
        raise KeelError(
            f"the active run {run[0]} is on the tracking server {run[1].tracking_uri}, which "
            "does not serve dataset versions and run inputs yet; end it, or track to a "
            "database (KEEL_DATABASE_URL) for runs that use keel.data",
            run_id=run[0],
        )
    if run is not None and run[1].db_url != settings.db_url:
        raise InvalidInput(
            f"the active run {run[0]} is in the database {_hide(run[1].db_url)}, but these "
            f"dataset versions are in {_hide(settings.db_url)}; pass the run's settings, or "
            "end the run first",
            run_id=run[0],
        )
    return settings


@contextlib.contextmanager
def _version_store(settings: Settings) -> Iterator[VersionStore]:
    from keel.db import open_engine

    engine = open_engine(settings.db_url, busy_timeout=settings.sqlite_busy_timeout)
    try:
        yield VersionStore(engine)
    finally:
        engine.dispose()


def _ref(ref: str | DatasetVersion) -> tuple[str, int | None]:
    if isinstance(ref, DatasetVersion):
        return ref.name, ref.version
    return parse_ref(ref)


def _check_name(name: str, *, ref: str | None = None) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        what = f"malformed dataset reference {ref!r}: " if ref is not None else ""
        raise InvalidInput(
            f"{what}invalid dataset name {name!r}: use letters, digits, '_', '.' and '-' "
            "(starting with a letter or digit), up to 128 characters",
            name=name,
        )


def _check_context(context: str) -> None:
    if not isinstance(context, str) or not CONTEXT_PATTERN.match(context):
        raise InvalidInput(
            f"invalid input context {context!r}: a short word such as 'train' or 'eval' "
            "(letters, digits, '_', '.', ':' and '-', up to 64 characters)",
            context=context,
        )


def _table_format(path: Path) -> str | None:
    return TABLE_SUFFIXES.get(path.suffix.lower())


def _is_dataframe(value: Any) -> bool:
    module = type(value).__module__
    if not module.startswith("pandas"):
        return False
    import pandas as pd

    return isinstance(value, pd.DataFrame)


def _hide(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # only for display
        return url
