"""``log_model``: save a model with its flavor into the active run's artifacts, with a manifest.

The model's folder is written to a temp directory (the flavor's files, the input example as
Parquet, ``keel-model.json``) and logged with ``client.log_artifacts``, so it works the same on
the local store and against ``keel server``. The folder's digest is the BLAKE3 hash of the
canonical artifact manifest of its files (:func:`folder_digest` from a run's listing,
:func:`local_folder_digest` from files on disk): the same bytes always give the same digest,
wherever they are stored, and loading checks the files it wrote against it.
"""

from __future__ import annotations

import json
import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3
from pydantic import ValidationError

from keel.artifacts import hash_file, walk_files
from keel.artifacts.models import manifest_bytes
from keel.errors import AlreadyExists, InvalidInput, NotFound
from keel.models.flavors import detect_flavor, get_flavor
from keel.models.flavors.base import class_path
from keel.models.models import MANIFEST_FILE, DatasetRef, ModelManifest, Signature
from keel.models.requirements import BASE_DISTRIBUTIONS, merge, pin
from keel.models.signature import as_frame, check, infer_schema
from keel.tracking import fluent
from keel.tracking.models import ArtifactEntry
from keel.tracking.remote import TrackingClient

__all__ = [
    "EXAMPLE_ARRAY_FILE",
    "EXAMPLE_TABLE_FILE",
    "MODELS_TAG",
    "LoggedModel",
    "folder_digest",
    "local_folder_digest",
    "log_model",
    "parse_manifest",
    "read_manifest",
]

MODELS_TAG = "keel.models"
"""The run tag listing the artifact paths of the models logged in it (a JSON list)."""

EXAMPLE_TABLE_FILE = "input_example.parquet"
EXAMPLE_ARRAY_FILE = "input_example.npy"


@dataclass(frozen=True)
class LoggedModel:
    """A model logged to a run: where it is and what its manifest says."""

    run_id: str
    artifact_path: str
    digest: str
    """The folder's digest (:func:`folder_digest`); a registered version records it."""
    manifest: ModelManifest

    @property
    def uri(self) -> str:
        """``runs:/RUN_ID/PATH``, what :func:`keel.models.load` and ``register`` take."""
        return f"runs:/{self.run_id}/{self.artifact_path}"


def log_model(
    model: Any,
    name: str = "model",
    *,
    input_example: Any = None,
    signature: Signature | None = None,
    requirements: Sequence[str] | None = None,
    artifacts: Mapping[str, str | Path] | None = None,
    flavor: str | None = None,
) -> LoggedModel:
    """Log ``model`` to the active run as the artifact folder ``name``.

    Args:
        model: a scikit-learn estimator or Pipeline, an XGBoost or LightGBM model, a PyTorch
            ``nn.Module``, an ``onnx.ModelProto`` or a :class:`keel.models.PythonModel`.
        name: the folder's path in the run's artifacts.
        input_example: a few rows of input (DataFrame, numpy array, dict of columns, list of
            row dicts). It is stored as Parquet (an array as ``.npy``), and unless
            ``signature`` is given the signature is inferred from it and from the model's
            predictions on it. PyTorch models are exported with it.
        signature: the signature, when not inferred.
        requirements: pip requirement lines overriding or extending the pinned ones
            (the framework's distributions, numpy and pandas at their installed versions).
        artifacts: ``{name: path}`` of files or folders a PythonModel reads in
            ``load_context``; they are copied into the model's folder.
        flavor: the flavor's name, when not detected from the model's class.

    Returns:
        A :class:`LoggedModel` with the ``runs:/`` URI, the folder's digest and the manifest.

    Raises:
        InvalidInput: no run is active, no flavor knows the model, ``artifacts`` were given
            for a flavor other than python, or the model fails to predict on the example.
        AlreadyExists: the run already has artifacts at ``name``.
        MissingExtra: the model's framework is not installed.

    Example:
        >>> with keel.start_run():
        ...     logged = keel.models.log_model(pipeline, input_example=X.head())
        >>> keel.models.load(logged.uri).predict(X)  # doctest: +SKIP
    """
    active = fluent.active_run()
    if active is None:
        raise InvalidInput("log_model needs an active run: call it inside `with keel.start_run():`")
    client, run_id = active.client, active.run_id
    path = _artifact_path(name)
    if client.list_artifacts(run_id, path):
        raise AlreadyExists(
            f"run {run_id} already has artifacts at {path!r}; log the model under another "
            "name, e.g. log_model(model, name='model-2')",
            run_id=run_id,
            path=path,
        )
    chosen = get_flavor(flavor) if flavor is not None else detect_flavor(model)
    if artifacts and chosen.name != "python":
        raise InvalidInput(
            f"artifacts are for keel.models.PythonModel models; a {chosen.name} model keeps "
            "everything it needs in its own files"
        )
    example = None if input_example is None else _normalize(input_example)
    with tempfile.TemporaryDirectory(prefix="keel-model-") as tmp:
        folder = Path(tmp)
        files = chosen.save(model, folder, example=example, artifacts=artifacts)
        if signature is None and example is not None:
            signature = _infer(chosen.predictor(model, folder), example)
        example_file = None if example is None else _write_example(example, folder)
        run = client.get_run(run_id)
        manifest = ModelManifest(
            flavor=chosen.name,
            flavor_version=chosen.version(),
            model_class=class_path(model),
            files=files,
            signature=signature,
            input_example=example_file,
            requirements=merge(
                pin([*chosen.requirements(folder), *BASE_DISTRIBUTIONS]), requirements
            ),
            python_version=platform.python_version(),
            keel_version=_keel_version(),
            run_id=run_id,
            artifact_path=path,
            inputs=_run_inputs(run_id, client),
            metrics=dict(run.metrics),
            params=dict(run.params),
            created_at=datetime.now(UTC),
        )
        (folder / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        client.log_artifacts(run_id, folder, artifact_path=path)
    digest = folder_digest(client.list_artifacts(run_id, path), path)
    logged = json.loads(run.tags.get(MODELS_TAG, "[]"))
    client.set_tag(run_id, MODELS_TAG, json.dumps([*logged, path]))
    return LoggedModel(run_id=run_id, artifact_path=path, digest=digest, manifest=manifest)


def _run_inputs(run_id: str, client: TrackingClient) -> list[DatasetRef]:
    """The dataset versions the run read, for the manifest's lineage. Dataset versions live in
    the local database only (no server routes yet), so a run on a keel server records none."""
    if client.settings.tracking_uri:
        return []
    from keel.data import run_inputs

    return [
        DatasetRef(
            name=i.version.name,
            version=i.version.version,
            digest=i.version.digest,
            context=i.context,
        )
        for i in run_inputs(run_id, settings=client.settings)
    ]


def read_manifest(
    run_id: str, artifact_path: str, *, client: TrackingClient
) -> tuple[ModelManifest, str]:
    """The manifest of the model logged at ``runs:/RUN_ID/ARTIFACT_PATH``, and its folder digest.

    Raises:
        NotFound: the run has nothing at ``artifact_path``.
        InvalidInput: the folder holds no ``keel-model.json`` (it is not a Keel model), or
            one that is not a valid manifest (:func:`parse_manifest`).
        StorageError: the manifest's stored bytes are corrupt.

    Example:
        >>> manifest, digest = read_manifest(run_id, "model", client=get_client())
        ... # doctest: +SKIP
    """
    path = _artifact_path(artifact_path)
    entries = folder_entries(client.list_artifacts(run_id, path), path)
    return read_manifest_of(run_id, path, entries, client=client), folder_digest(entries, path)


def read_manifest_of(
    run_id: str, path: str, entries: Sequence[ArtifactEntry], *, client: TrackingClient
) -> ModelManifest:
    """The manifest among a model folder's ``entries`` (see :func:`read_manifest`)."""
    if not entries:
        raise NotFound(f"run {run_id} has no model at {path!r}", run_id=run_id, path=path)
    manifest_path = f"{path}/{MANIFEST_FILE}"
    if not any(entry.path == manifest_path for entry in entries):
        raise InvalidInput(
            f"runs:/{run_id}/{path} is not a Keel model: it has no {MANIFEST_FILE} (log it "
            "with keel.models.log_model)",
            run_id=run_id,
            path=path,
        )
    return parse_manifest(
        client.read_artifact(run_id, manifest_path), source=f"runs:/{run_id}/{path}"
    )


def parse_manifest(data: str | bytes, *, source: str) -> ModelManifest:
    """A ``keel-model.json``'s text as a :class:`ModelManifest`; ``source`` names the model's
    folder in the error.

    Raises:
        InvalidInput: it is not JSON or not a manifest; the message names each field that is
            wrong and why (``flavor: Input should be a valid string``).

    Example:
        >>> parse_manifest(path.read_bytes(), source=str(path.parent))  # doctest: +SKIP
    """
    try:
        return ModelManifest.model_validate_json(data)
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(part) for part in item['loc']) or 'the file'}: {item['msg']}"
            for item in error.errors(include_url=False)
        ]
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise InvalidInput(
            f"{source}/{MANIFEST_FILE} is not a valid Keel model manifest: {shown}",
            source=source,
            problems=problems,
        ) from None


def folder_entries(entries: Sequence[ArtifactEntry], path: str) -> list[ArtifactEntry]:
    """The files inside folder ``path`` among a run's artifact ``entries``."""
    prefix = path + "/"
    return [entry for entry in entries if entry.path.startswith(prefix)]


def folder_files(entries: Sequence[ArtifactEntry], path: str) -> dict[str, tuple[str, int]]:
    """The files of folder ``path`` among a run's artifact ``entries``: relative path ->
    (digest, size), what the folder's artifact manifest lists."""
    prefix = path + "/"
    return {
        entry.path[len(prefix) :]: (entry.digest, entry.size)
        for entry in entries
        if entry.path.startswith(prefix)
    }


def folder_digest(entries: Sequence[ArtifactEntry], path: str) -> str:
    """The digest of folder ``path``: BLAKE3 of the canonical artifact manifest of its files
    (what ``ArtifactStore.put_dir`` returns for the same files)."""
    return _digest_of(folder_files(entries, path))


def local_folder_digest(folder: Path) -> str:
    """The digest of the files under ``folder`` on disk, each hashed as the store would: what
    :func:`folder_digest` gives for the same files in a run (and ``ArtifactStore.put_dir``).

    Raises:
        StorageError: a file cannot be read.
    """
    files = {}
    for rel, (path, _) in walk_files(folder).items():
        blob = hash_file(path)
        files[rel] = (blob.digest, blob.size)
    return _digest_of(files)


def _digest_of(files: Mapping[str, tuple[str, int]]) -> str:
    """BLAKE3 of the canonical artifact manifest of ``{relative path: (digest, size)}``."""
    return blake3.blake3(manifest_bytes(files)).hexdigest()


def _artifact_path(name: str) -> str:
    if not isinstance(name, str):
        raise InvalidInput(f"a model's name is an artifact path like 'model', not {name!r}")
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise InvalidInput(f"a model's name is an artifact path like 'model', not {name!r}")
    return "/".join(parts)


def _normalize(example: Any) -> Any:
    """The input example as a DataFrame (tables) or a numpy array (tensors)."""
    import numpy as np
    import pandas as pd

    if isinstance(example, pd.DataFrame | np.ndarray):
        return example
    if isinstance(example, pd.Series):
        return example.to_frame()
    if isinstance(example, Mapping) or (
        isinstance(example, list) and example and isinstance(example[0], Mapping)
    ):
        return as_frame(example)
    if hasattr(example, "detach") and hasattr(example, "numpy"):  # a torch tensor
        return example.detach().cpu().numpy()
    return np.asarray(example)


def _infer(predict: Any, example: Any) -> Signature:
    inputs = infer_schema(example)
    try:
        outputs = predict(check(example, Signature(inputs=inputs)))
    except Exception as exc:  # any framework error: the example is unusable
        raise InvalidInput(
            f"the model failed to predict on input_example ({type(exc).__name__}: {exc}); "
            "give an example it accepts, or a signature"
        ) from exc
    return Signature(
        inputs=inputs, outputs=None if outputs is None else infer_schema(outputs, what="output")
    )


def _write_example(example: Any, folder: Path) -> str:
    import numpy as np

    if isinstance(example, np.ndarray):
        np.save(folder / EXAMPLE_ARRAY_FILE, example, allow_pickle=False)
        return EXAMPLE_ARRAY_FILE
    example.to_parquet(folder / EXAMPLE_TABLE_FILE, index=False)
    return EXAMPLE_TABLE_FILE


def _keel_version() -> str:
    # Not ``from keel import __version__``: keel/__init__.py names keel.models.autolog, which
    # sits above this module in the import layers.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keel")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"
