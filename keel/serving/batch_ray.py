"""The Ray engine of ``keel batch-predict``: the same job through Ray Data, on a local Ray or a
cluster (``--ray-address`` or ``RAY_ADDRESS``).

The input files are read by Ray (``ray.data.read_parquet`` / ``read_csv``, the columns and CSV
types the local engine uses) and scored by a pool of actors (:class:`RayScorer`), each of which
loads the model once. The model reaches the actors as bytes in Ray's object store: the driver,
which has loaded it, puts its folder's files there once (one ``ray.put``), and each actor writes
them into ``<tmp>/keel-batch-models/<digest>/`` on its node (once per node, checked against the
digest), then opens that folder. So workers need neither the Keel database nor the artifact
store, only Keel and the model's framework installed, and the same job runs on a laptop and on
a cluster. The predictions come back to the driver in input order (``preserve_order``), which
writes the one output file as the local engine does: rows, order and values are identical.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel import errors
from keel.errors import InvalidInput, KeelError, MissingExtra
from keel.models.loading import Predictor, open_folder
from keel.models.models import MANIFEST_FILE
from keel.models.packaging import local_folder_digest
from keel.serving.batch_files import ParquetSink, csv_options
from keel.serving.batch_scoring import BatchJob, BatchProgress, Scorer

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["MODEL_CACHE", "RayScorer", "model_files", "open_model_files", "score_with_ray"]

MODEL_CACHE = "keel-batch-models"
"""Actors write the model's files into ``<tmp>/keel-batch-models/<digest>/`` on their node."""

_PATH_COLUMN = "path"  # what Ray's include_paths adds: the file each row came from


def score_with_ray(
    job: BatchJob,
    sink: ParquetSink,
    *,
    address: str | None = None,
    actors: int | None = None,
    progress: BatchProgress | None = None,
) -> None:
    """Score ``job`` through Ray Data and write its rows to ``sink`` in input order.

    Connects to ``address`` (else ``RAY_ADDRESS``, else a local Ray) unless Ray is already
    initialised in this process; a Ray started here is shut down at the end.

    Args:
        job: the planned job (see :func:`keel.serving.batch_scoring.plan_job`).
        sink: where the output rows go.
        address: a Ray cluster's address (``ray://host:10001`` or ``host:6379``).
        actors: the most scoring actors (each loads the model once); default the cluster's
            CPU count.
        progress: told the rows as they are written.

    Raises:
        MissingExtra: Ray is not installed.
        KeelError: Ray cannot be reached, or the job failed (a scoring error names the input
            file of the failing batch).
    """
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        _connect(ray, address)
    try:
        dataset = _scored(ray, job, actors)
        if progress is not None:
            progress.start(job.source.total_rows())
        for batch in _batches(dataset):
            table = _table(batch)
            sink.write(table, where=f"a batch of {table.num_rows} rows from Ray")
            if progress is not None:
                progress.advance(table.num_rows)
    finally:
        if started:
            ray.shutdown()


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingExtra("ray", extra="ray") from None
    return ray


def _connect(ray: Any, address: str | None) -> None:
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "RAY_ADDRESS (or a new local Ray)"
        raise KeelError(f"cannot connect to Ray at {where}: {exc}") from None


def _scored(ray: Any, job: BatchJob, actors: int | None) -> Any:
    """The dataset of output rows: read, then scored by an actor pool, in input order."""
    files = model_files(job.predictor.path)
    source = job.source
    with_paths = _PATH_COLUMN not in job.columns
    dataset = _read(ray, job, include_paths=with_paths)
    most = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    dataset = dataset.map_batches(
        RayScorer,
        fn_constructor_kwargs={
            "files": ray.put(files),
            "digest": job.predictor.digest,
            "uri": job.predictor.uri,
            "features": job.features,
            "keep": job.keep,
            "source_url": source.url,
            "source_root": source.root,
        },
        batch_size=job.chunk_rows,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=most),
        num_cpus=1,
    )
    dataset.context.execution_options.preserve_order = True
    dataset.context.enable_progress_bars = False
    return dataset


def _read(ray: Any, job: BatchJob, *, include_paths: bool) -> Any:
    source = job.source
    filesystem = None
    if not source.is_local:
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        filesystem = PyFileSystem(FSSpecHandler(source.fs))
    common = {
        "filesystem": filesystem,
        "partitioning": None,
        "include_paths": include_paths,
        "file_extensions": None,
    }
    files = list(source.files)
    if source.format == "parquet":  # the projection is pushed down into the read
        columns = [*job.columns, _PATH_COLUMN] if include_paths else job.columns
        with _first_parquet_reader(ray):
            return ray.data.read_parquet(files, **common).select_columns(columns)
    options = csv_options(columns=job.columns, types=job.csv_types)
    return ray.data.read_csv(files, **options, **common)


@contextmanager
def _first_parquet_reader(ray: Any) -> Iterator[None]:
    """Build the read with Ray's first Parquet datasource: the second (the default since Ray
    2.5x) lists files in 8 threads that each try to import fsspec's HTTP module, which fails
    without aiohttp, and the threads race on the half-imported module (``cannot import name
    'HTTPFileSystem'``, seen one run in three with two files)."""
    context = ray.data.DataContext.get_current()
    before = getattr(context, "use_datasource_v2", None)
    if before is None:
        yield
        return
    context.use_datasource_v2 = False
    try:
        yield
    finally:
        context.use_datasource_v2 = before


def _batches(dataset: Any) -> Any:
    """The dataset's output batches; a Keel error raised in an actor is raised again here."""
    try:
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
    except KeelError:
        raise
    except Exception as exc:
        raise _keel_error_in(exc) or KeelError(f"the Ray job failed: {_raised_in(exc)}") from None


_KEEL_RAISED = re.compile(r"^keel\.errors\.(\w+): (.+)$", re.MULTILINE)
_RAISED = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$", re.MULTILINE)


def _keel_error_in(exc: BaseException) -> KeelError | None:
    """The Keel error an actor raised, rebuilt from Ray's report of it: Ray sends a user
    function's error to the driver as text inside its own ``RayTaskError(UserCodeException)``,
    without the exception object."""
    found = _KEEL_RAISED.search(str(exc))
    if found is None:
        return None
    name, message = found.groups()
    kind = getattr(errors, name, None)
    if isinstance(kind, type) and issubclass(kind, KeelError):
        try:
            return kind(message)
        except TypeError:  # a kind whose constructor takes more than a message
            pass
    return KeelError(message)


def _raised_in(exc: BaseException) -> str:
    """The innermost ``Kind: message`` line of Ray's report, else its first line."""
    found = _RAISED.findall(str(exc))
    if found:
        return ": ".join(found[0])
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _table(batch: Any) -> pa.Table:
    import pyarrow as pa

    return batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])


class RayScorer:
    """A Ray Data actor that loads the model once, from its files in the object store, and
    scores batches with the local engine's :class:`Scorer`."""

    def __init__(
        self,
        *,
        files: Any,
        digest: str,
        uri: str,
        features: tuple[str, ...],
        keep: tuple[str, ...],
        source_url: str,
        source_root: str,
    ) -> None:
        import ray

        if isinstance(files, ray.ObjectRef):
            files = ray.get(files)
        predictor = open_model_files(files, digest=digest, uri=uri)
        self._scorer = Scorer(predictor, features=features, keep=keep)
        self._url, self._root = source_url, source_root

    def __call__(self, batch: pa.Table) -> pa.Table:
        if _PATH_COLUMN not in batch.column_names or _PATH_COLUMN in self._scorer.keep:
            return self._scorer.score(batch, where=f"a batch of {batch.num_rows} rows")
        paths = batch.column(_PATH_COLUMN)
        rows = batch.drop_columns([_PATH_COLUMN])
        try:
            return self._scorer.score(rows, where=f"a batch of {batch.num_rows} rows")
        except KeelError:
            self._find_the_file(rows, paths)  # raises, naming the file (a batch spans files)
            raise

    def _find_the_file(self, rows: pa.Table, paths: pa.ChunkedArray) -> None:
        """Score the rows of each file of a failed batch alone: the first to fail raises an
        error naming its file."""
        import pyarrow.compute as pc

        for path in pc.unique(paths).to_pylist():
            part = rows.filter(pc.equal(paths, path))
            self._scorer.score(part, where=f"{self._display(path)} ({part.num_rows} rows)")

    def _display(self, path: str) -> str:
        """``path`` as the user named it: under the input URL they gave."""
        root = self._root.rstrip("/")
        if path == root:
            return self._url
        if path.startswith(root + "/"):
            return self._url.rstrip("/") + path[len(root) :]
        return path


def model_files(folder: Path) -> dict[str, bytes]:
    """Every file of a loaded model's folder, by path relative to it (what actors receive).

    Raises:
        InvalidInput: the folder is larger than Ray's object store should carry in one object
            (2 GiB); serve such a model from shared storage instead.
    """
    files = {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    size = sum(len(data) for data in files.values())
    if size > 2 << 30:
        raise InvalidInput(
            f"the model's files take {size / 2**30:.1f} GiB; the Ray engine ships a model "
            "through the object store and takes models up to 2 GiB",
            size=size,
        )
    return files


def open_model_files(
    files: dict[str, bytes], *, digest: str, uri: str, cache: Path | None = None
) -> Predictor:
    """The model whose folder holds ``files``, written once into ``cache/<digest>`` (default
    ``<tmp>/keel-batch-models``) and checked against ``digest`` before it is opened.

    Raises:
        KeelError: the files written do not hash to ``digest`` (they were damaged on the way).
    """
    root = cache or Path(tempfile.gettempdir()) / MODEL_CACHE
    folder = root / digest
    if not (folder / MANIFEST_FILE).is_file():
        _write_folder(root, folder, files, digest)
    return open_folder(folder, uri, digest=digest)


def _write_folder(root: Path, folder: Path, files: dict[str, bytes], digest: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-{uuid.uuid4().hex[:6]}-", dir=root))
    try:
        for name, data in files.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        written = local_folder_digest(staging)
        if written != digest:
            raise KeelError(
                f"the model's files reached a Ray worker damaged: they hash to {written}, "
                f"not {digest}"
            )
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / MANIFEST_FILE).is_file():  # not another actor's copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
