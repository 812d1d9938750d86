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

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, KeelError, MissingExtra
from keel.models.flavors import get_flavor
from keel.models.loading import Predictor
from keel.models.models import MANIFEST_FILE
from keel.models.packaging import local_folder_digest, parse_manifest
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
        ray.init(address=address, log_to_driver=False)
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
    if source.format == "parquet":
        return ray.data.read_parquet(files, columns=job.columns, **common)
    options = csv_options(columns=job.columns, types=job.csv_types)
    return ray.data.read_csv(files, **options, **common)


def _batches(dataset: Any) -> Any:
    """The dataset's output batches; a failure inside Ray becomes the KeelError it carries."""
    try:
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
    except KeelError:
        raise
    except Exception as exc:
        cause = _keel_cause(exc)
        if cause is not None:
            raise cause from None
        raise KeelError(f"the Ray job failed: {_first_line(exc)}") from exc


def _keel_cause(exc: BaseException) -> KeelError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeelError):
            return current
        seen.add(id(current))
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


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
        where = f"a batch of {batch.num_rows} rows"
        if _PATH_COLUMN in batch.column_names and _PATH_COLUMN not in self._scorer.keep:
            paths = batch.column(_PATH_COLUMN)
            where += f" from {self._display(paths[0].as_py())}"
            batch = batch.drop_columns([_PATH_COLUMN])
        return self._scorer.score(batch, where=where)

    def _display(self, path: str) -> str:
        root = self._root.rstrip("/")
        if path == root or not path.startswith(root + "/"):
            return self._url if path == root else path
        return self._url.rstrip("/") + path[len(root) :]


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
    manifest = parse_manifest((folder / MANIFEST_FILE).read_bytes(), source=uri)
    flavor = get_flavor(manifest.flavor)
    raw = flavor.load(folder, model_class=manifest.model_class, files=manifest.files)
    return Predictor(
        uri=uri,
        manifest=manifest,
        digest=digest,
        path=folder,
        raw=raw,
        predict=flavor.predictor(raw, folder),
    )


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
