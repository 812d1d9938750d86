"""``load``: a logged or registered model as a :class:`Predictor` whose ``predict`` checks its
input against the model's signature.

The model's files are downloaded through the tracking client, which hashes every file as it
reads it (a corrupt object is a :class:`~keel.errors.StorageError` naming it), into
``<home>/models/<digest>/``, where ``<digest>`` is the folder's digest: a complete folder is
renamed into place only after every file checked out and the files written hash to that digest
(an artifact overwritten while it downloaded is a :class:`~keel.errors.StorageError`, never a
cached folder under the wrong name), so a second load of the same model reads no model bytes
again. For ``models:/`` URIs the registered version names the digest, so a cached
model loads without asking the store anything, and an uncached one is materialised from the
artifact store by that digest: exactly the files that were registered, even if the run's folder
gained files since or the run was deleted (gc keeps registered versions' objects). Through a
keel server (``KEEL_TRACKING_URI``) the version is resolved by the server's registry and its
run's folder downloaded, and its digest must still be the registered one.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from keel.artifacts import ArtifactStore
from keel.errors import InvalidInput, StorageError
from keel.models.api import get_version
from keel.models.flavors import get_flavor
from keel.models.flavors.base import Predict
from keel.models.models import MANIFEST_FILE, ModelManifest, ModelVersion, Signature
from keel.models.packaging import (
    EXAMPLE_ARRAY_FILE,
    folder_digest,
    folder_entries,
    local_folder_digest,
    parse_manifest,
    read_manifest_of,
)
from keel.models.signature import as_frame, check
from keel.models.uris import ModelsUri, RunsUri, parse_model_uri
from keel.settings import Settings
from keel.tracking import fluent
from keel.tracking.remote import TrackingClient

__all__ = ["CACHE_FOLDER", "Predictor", "load", "load_folder", "load_version", "open_folder"]

CACHE_FOLDER = "models"
"""Loaded models live in ``<home>/models/<digest>/``."""

_MLFLOW_FLAVOR = "mlflow"  # an MLflow model folder registered through the MLflow endpoints


class Predictor:
    """A loaded model: ``predict`` checks input against the signature, then asks the model.

    Attributes:
        uri: what it was loaded from.
        manifest: its ``keel-model.json``.
        digest: the folder's digest.
        path: the local folder holding its files.
        raw: the framework's own model object (a fitted Pipeline, a Booster, an
            InferenceSession, an ``nn.Module``, a PythonModel).
    """

    def __init__(
        self,
        *,
        uri: str,
        manifest: ModelManifest,
        digest: str,
        path: Path,
        raw: Any,
        predict: Predict,
    ) -> None:
        self.uri = uri
        self.manifest = manifest
        self.digest = digest
        self.path = path
        self.raw = raw
        self._predict = predict

    def __repr__(self) -> str:
        return f"<Predictor {self.uri} {self.manifest.flavor} {self.manifest.model_class}>"

    @property
    def signature(self) -> Signature | None:
        """What ``predict`` takes and returns (None when the model was logged without one)."""
        return self.manifest.signature

    def predict(self, data: Any) -> Any:
        """Predictions for ``data`` (a DataFrame, an array, a dict of columns, row dicts).

        The input is checked against the signature first: columns are put in its order and
        integer columns widen to float where floats are expected.

        Raises:
            SchemaMismatch: a column is missing, unexpected or of the wrong type (the message
                names it, what was expected and what came), or an array's dtype or shape
                differs.

        Example:
            >>> model.predict({"age": [0.03], "bmi": [0.06]})  # doctest: +SKIP
            array([151.2])
        """
        return self._predict(self.check(data))

    def check(self, data: Any) -> Any:
        """``data`` checked against the signature, as the model will take it (what
        :meth:`predict` does before asking the model; :meth:`predict_checked` then scores it).

        Split out for callers that check each request alone and score many at once (the
        serving micro-batcher): a bad request is refused without costing the others.

        Raises:
            SchemaMismatch: as :meth:`predict`.
        """
        if isinstance(data, Mapping) or (
            isinstance(data, list) and data and isinstance(data[0], Mapping)
        ):
            data = as_frame(data)
        return check(data, self.manifest.signature)

    def predict_checked(self, checked: Any) -> Any:
        """Predictions for input that :meth:`check` returned (or several such DataFrames
        concatenated): the model is asked without checking again."""
        return self._predict(checked)

    def input_example(self) -> Any:
        """The input example logged with the model (a DataFrame or an array), or None."""
        name = self.manifest.input_example
        if name is None:
            return None
        if name == EXAMPLE_ARRAY_FILE:
            import numpy as np

            return np.load(self.path / name, allow_pickle=False)
        import pandas as pd

        return pd.read_parquet(self.path / name)


def load(uri: str, *, dst: str | Path | None = None) -> Predictor:
    """Load a model: ``runs:/RUN_ID/PATH``, ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.

    Args:
        uri: where the model is.
        dst: the cache folder to use instead of ``<home>/models`` (the files land in
            ``dst/<digest>/``).

    Returns:
        A :class:`Predictor`.

    Raises:
        InvalidInput: a malformed URI, or the folder is not a Keel model (it has no
            ``keel-model.json``, or one that is not a valid manifest, or the version is an
            MLflow-format model registered through the MLflow endpoints).
        NotFound: no such run, folder, registered model, version or alias.
        StorageError: a stored file does not match its hash (the message names it).
        MissingExtra: the model's framework is not installed.

    Example:
        >>> model = keel.models.load("models:/diabetes@champion")
        >>> model.predict(X.head())  # doctest: +SKIP
    """
    parsed = parse_model_uri(uri)
    active = fluent.active_run()
    client = active.client if active is not None else fluent.get_client()
    root = Path(dst) if dst is not None else client.settings.home_path / CACHE_FOLDER
    if isinstance(parsed, ModelsUri):
        version = get_version(parsed.name, parsed.selector, settings=client.settings)
        return load_version(version, client=client, dst=dst, uri=uri)
    return open_folder(_fetch(client, parsed, root), uri)


def load_version(
    version: ModelVersion,
    *,
    client: TrackingClient | None = None,
    settings: Settings | None = None,
    dst: str | Path | None = None,
    uri: str | None = None,
) -> Predictor:
    """Load a registered version already resolved, without resolving its name again.

    The files come from the cache (``<home>/models/<digest>``), else from the artifact store of
    ``settings`` (or of ``client``) by the version's digest, else, through a keel server
    (``client`` with a ``tracking_uri``), from its run's folder, checked against that digest.

    Args:
        version: the registered version (from :func:`keel.models.api.get_version`).
        client: the tracking client to download through; default the fluent API's.
        settings: whose artifact store and cache to use, when not the client's.
        dst: the cache folder instead of ``<home>/models``.
        uri: what the caller asked for, kept as the predictor's ``uri`` (default the
            version's ``models:/NAME/VERSION``).

    Raises:
        InvalidInput: the version is an MLflow-format model (registered through the MLflow
            endpoints), which Keel cannot load.
        NotFound: its files are not in the store.
        StorageError: a file does not match its hash, or the folder its digest.
        MissingExtra: the model's framework is not installed.
    """
    if version.flavor == _MLFLOW_FLAVOR:
        raise InvalidInput(
            f"{version.uri} is an MLflow-format model (registered through the MLflow "
            "endpoints), which Keel cannot load; load it with MLflow against the keel "
            f"server: mlflow.pyfunc.load_model({version.uri!r}) with MLFLOW_TRACKING_URI "
            "set to the server's URL",
            uri=version.uri,
            flavor=version.flavor,
        )
    if settings is None:
        client = client or fluent.get_client()
        settings = client.settings
    root = Path(dst) if dst is not None else settings.home_path / CACHE_FOLDER
    folder = root / version.digest
    if (folder / MANIFEST_FILE).is_file():
        pass
    elif client is not None and settings.tracking_uri:
        folder = _from_server(client, version, root)
    else:
        folder = _materialize(settings, version.digest, root)
    return open_folder(folder, uri or version.uri)


def load_folder(path: str | Path, *, digest: str | None = None) -> Predictor:
    """Load a model from a plain local folder holding its files and ``keel-model.json`` (an
    exported model, or a copy of a cache folder), without a store or a registry.

    The files are hashed as the cache's are: with ``digest`` (e.g. the registered version's),
    a folder whose files hash to anything else is refused; without it, the digest they hash
    to becomes the predictor's ``digest``.

    Args:
        path: the model's folder.
        digest: what its files must hash to (:func:`keel.models.packaging.local_folder_digest`).

    Returns:
        A :class:`Predictor` whose ``uri`` is the folder's absolute path.

    Raises:
        InvalidInput: the path is not a folder, or holds no valid ``keel-model.json``.
        StorageError: the files hash to another digest than ``digest`` (they were changed
            after the model was exported), or one cannot be read.
        MissingExtra: the model's framework is not installed.

    Example:
        >>> model = load_folder("build/model")
        >>> model.predict(X.head())  # doctest: +SKIP
    """
    folder = Path(path).absolute()
    if not (folder / MANIFEST_FILE).is_file():
        found = "has no " + MANIFEST_FILE if folder.is_dir() else "is not a folder"
        raise InvalidInput(
            f"{folder} {found}: a Keel model folder holds {MANIFEST_FILE} beside the model's "
            "files (keel models export writes one)",
            path=str(folder),
        )
    written = local_folder_digest(folder)
    if digest is not None and written != digest:
        raise StorageError(
            f"the model files in {folder} were changed: they hash to {written}, the model "
            f"exported was {digest}; export the model again",
            expected=digest,
            actual=written,
        )
    return open_folder(folder, str(folder), digest=written)


def open_folder(folder: Path, uri: str, *, digest: str | None = None) -> Predictor:
    """The model in a complete folder whose files were already checked, through its flavor
    (no hashing: :func:`load_folder` hashes a folder of unknown provenance first).

    Args:
        folder: the model's files and ``keel-model.json``.
        uri: what the predictor says it was loaded from.
        digest: the folder's digest; default the folder's name (a cache folder is named so).
    """
    manifest = parse_manifest((folder / MANIFEST_FILE).read_bytes(), source=uri)
    flavor = get_flavor(manifest.flavor)
    raw = flavor.load(folder, model_class=manifest.model_class, files=manifest.files)
    return Predictor(
        uri=uri,
        manifest=manifest,
        digest=digest or folder.name,
        path=folder,
        raw=raw,
        predict=flavor.predictor(raw, folder),
    )


def _from_server(client: TrackingClient, version: ModelVersion, root: Path) -> Path:
    """A registered version through a keel server: its run's folder, downloaded and checked
    file by file, whose digest must still be the registered one."""
    source = parse_model_uri(version.source)
    if not isinstance(source, RunsUri):
        raise InvalidInput(
            f"{version.uri} was registered from {version.source}, which a keel server cannot "
            "serve as files; load it where its artifact store is",
            source=version.source,
        )
    folder = _fetch(client, source, root)
    if folder.name != version.digest:
        raise StorageError(
            f"the files at {version.source} changed since {version.uri} was registered: they "
            f"hash to {folder.name}, the registered version to {version.digest}; register "
            "the model again",
            expected=version.digest,
            actual=folder.name,
        )
    return folder


def _materialize(settings: Settings, digest: str, root: Path) -> Path:
    """Write the registered folder ``digest`` from the artifact store into ``root/<digest>``."""
    store = ArtifactStore(settings.artifacts_url)
    return _into_cache(root, digest, lambda staging: store.get_dir(digest, staging / "model"))


def _fetch(client: TrackingClient, source: RunsUri, root: Path) -> Path:
    """Download the model folder at ``source`` into ``root/<digest>`` unless it is there."""
    run_id, path = source.run_id, source.path
    entries = folder_entries(client.list_artifacts(run_id, path), path)
    if not any(entry.path == f"{path}/{MANIFEST_FILE}" for entry in entries):
        read_manifest_of(run_id, path, entries, client=client)  # raises: says what is wrong
    digest = folder_digest(entries, path)
    if (root / digest / MANIFEST_FILE).is_file():
        return root / digest
    return _into_cache(
        root, digest, lambda staging: client.download_artifacts(run_id, path, dst=staging)
    )


def _into_cache(root: Path, digest: str, download: Callable[[Path], Path]) -> Path:
    """``root/<digest>``, filled by ``download(staging)`` (which returns the folder it wrote)
    and renamed into place whole once its files hash to ``digest``, so neither a half-written
    folder nor other files are ever taken for a cached one.

    Raises:
        StorageError: the files written hash to another digest (they changed after they were
            listed); nothing is kept.
    """
    folder = root / digest
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-{uuid.uuid4().hex[:6]}-", dir=root))
    try:
        downloaded = download(staging)
        written = local_folder_digest(downloaded)
        if written != digest:
            raise StorageError(
                f"the model's files changed while they were downloaded: they were listed as "
                f"folder {digest} but the files written hash to {written}; nothing was cached, "
                "load it again",
                expected=digest,
                actual=written,
            )
        try:
            downloaded.rename(folder)
        except OSError:
            if not (folder / MANIFEST_FILE).is_file():  # not a concurrent load's copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
