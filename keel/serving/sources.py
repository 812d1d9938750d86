"""Plan sources for one model: :class:`ModelSource` (a model URI, optionally following its alias)
and :class:`PredictorSource` (a model already loaded in this process), plus
:func:`source_from_spec`, which rebuilds any source in a worker process.

``keel serve models:/diabetes@champion --follow-alias`` serves a :class:`ModelSource` that asks
the registry every few seconds where ``@champion`` points; when it moved, the new version is
loaded (off the event loop) and swapped in with one assignment, and requests already in flight
finish on the old one.

Example:
    >>> source = ModelSource("models:/diabetes@champion", follow_alias=True, interval=5.0)
    >>> plan = source.load()  # doctest: +SKIP
    >>> plan.choose().label  # doctest: +SKIP
    'diabetes/3'
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from keel.errors import InvalidInput, KeelError
from keel.models.api import get_version
from keel.models.loading import Predictor, load, load_folder, load_version
from keel.models.models import ModelVersion
from keel.models.uris import ModelsUri, parse_model_uri
from keel.serving.plan import Arm, PlanSource, ServingPlan

__all__ = [
    "DEFAULT_DEPLOYMENT",
    "ModelSource",
    "PredictorSource",
    "deployment_source",
    "load_for_serving",
    "source_from_spec",
]

DEFAULT_DEPLOYMENT = "default"
"""The deployment name of a model that is not registered (a ``runs:/`` URI)."""

_DEPLOYMENT_SOURCES = "keel.serving.deployments.source"


def load_for_serving(uri: str) -> tuple[Predictor, ModelVersion | None]:
    """The model at ``uri`` (a model URI, or a local model folder such as one
    ``keel models export`` wrote) and, for ``models:/`` URIs, the registered version it resolved to
    (resolved once, so an alias moved meanwhile cannot make the two disagree).

    Raises:
        KeelError: the URI is malformed, or names nothing loadable (see :func:`keel.models.load`).
    """
    folder = _local_folder(uri)
    if folder is not None:
        return load_folder(folder), None
    parsed = parse_model_uri(uri)
    if isinstance(parsed, ModelsUri):
        version = get_version(parsed.name, parsed.selector)
        return load_version(version, uri=uri), version
    return load(uri), None


def _local_folder(uri: str) -> Path | None:
    """The folder ``uri`` names when it is a local path (``./model``, ``/app/model``,
    ``file:///app/model``) to an existing folder, not a ``runs:/`` or ``models:/`` URI."""
    if uri.startswith(("runs:/", "models:/")):
        return None
    path = Path(uri.removeprefix("file://"))
    return path if path.is_dir() else None


def one_arm_plan(
    ref: str, predictor: Predictor, version: ModelVersion | None, **details: Any
) -> ServingPlan:
    """A plan that sends all traffic to one model, named after its registered model."""
    deployment = version.name if version is not None else DEFAULT_DEPLOYMENT
    arm = Arm(ref=ref, predictor=predictor, version=version)
    return ServingPlan(deployment=deployment, arms=(arm,), details=details)


class PredictorSource:
    """A model already loaded in this process, as a plan that never changes (for tests and for
    mounting the scoring app in another app).

    Args:
        predictor: the loaded model.
        version: the registered version it was loaded as, if any.
    """

    interval: float | None = None

    def __init__(self, predictor: Predictor, version: ModelVersion | None = None) -> None:
        self.predictor = predictor
        self.version = version

    def load(self) -> ServingPlan:
        return one_arm_plan(self.predictor.uri, self.predictor, self.version, kind="predictor")

    def poll(self, current: ServingPlan) -> ServingPlan | None:
        return None

    def spec(self) -> dict[str, Any]:
        if self.version is not None:
            return {"kind": "model", "uri": self.version.uri}
        return {"kind": "model", "uri": self.predictor.uri}


class ModelSource:
    """One model URI as a one-arm plan; with ``follow_alias``, the version its alias (or
    ``latest``) points at now.

    Args:
        uri: ``runs:/RUN_ID/PATH``, ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, or a
            local model folder.
        follow_alias: re-resolve the alias every ``interval`` seconds and serve the version it
            points at (only for ``models:/NAME@ALIAS`` and ``models:/NAME/latest``).
        interval: seconds between two looks at the registry.
        version: serve this version of the URI's model, not what the alias points at when
            loading (how worker processes serve the version their supervisor resolved).

    Raises:
        InvalidInput: ``follow_alias`` for a URI that names no alias, or an interval <= 0.
    """

    def __init__(
        self,
        uri: str,
        *,
        follow_alias: bool = False,
        interval: float = 5.0,
        version: int | None = None,
    ) -> None:
        parsed = None if _local_folder(uri) is not None else parse_model_uri(uri)
        movable = isinstance(parsed, ModelsUri) and parsed.version is None
        if follow_alias and not movable:
            raise InvalidInput(
                f"--follow-alias needs a models:/NAME@ALIAS URI (or models:/NAME/latest); "
                f"{uri} names one fixed model",
                field="uri",
            )
        if follow_alias and interval <= 0:
            raise InvalidInput(
                f"the poll interval must be above 0 seconds, not {interval:g}", field="interval"
            )
        self.uri = uri
        self.follow_alias = follow_alias
        self.interval: float | None = interval if follow_alias else None
        self.pinned = version
        self._parsed = parsed

    def __repr__(self) -> str:
        follows = " following its alias" if self.follow_alias else ""
        return f"<ModelSource {self.uri}{follows}>"

    def load(self) -> ServingPlan:
        """The plan serving the model now (pinned, or what the URI resolves to)."""
        parsed = self._parsed
        if self.pinned is not None and isinstance(parsed, ModelsUri):
            version = get_version(parsed.name, self.pinned)
            return self._plan(load_version(version, uri=self.uri), version)
        predictor, resolved = load_for_serving(self.uri)
        return self._plan(predictor, resolved)

    def poll(self, current: ServingPlan) -> ServingPlan | None:
        """A plan with the version the alias points at now, when it moved; else None.

        Raises:
            KeelError: the registry cannot be read or the new version cannot be loaded (the
                app keeps serving ``current``).
        """
        parsed = self._parsed
        if not self.follow_alias or not isinstance(parsed, ModelsUri):
            return None
        version = get_version(parsed.name, parsed.selector)
        now = current.primaries[0].version
        if now is not None and (now.name, now.version) == (version.name, version.version):
            return None
        return self._plan(load_version(version, uri=self.uri), version)

    def spec(self) -> dict[str, Any]:
        """``{"kind": "model", "uri", "follow_alias", "interval", "version"}``."""
        return {
            "kind": "model",
            "uri": self.uri,
            "follow_alias": self.follow_alias,
            "interval": self.interval,
            "version": self.pinned,
        }

    def pin(self, plan: ServingPlan) -> ModelSource:
        """This source fixed to the version ``plan`` serves (unless it follows its alias, when
        workers must follow it too): what the supervisor hands to worker processes."""
        version = plan.primaries[0].version
        if self.follow_alias or version is None:
            return self
        return ModelSource(self.uri, version=version.version)

    def _plan(self, predictor: Predictor, version: ModelVersion | None) -> ServingPlan:
        return one_arm_plan(
            self.uri, predictor, version, kind="model", follow_alias=self.follow_alias
        )


def source_from_spec(spec: dict[str, Any]) -> PlanSource:
    """The source a :meth:`PlanSource.spec` describes (in a worker process).

    Raises:
        InvalidInput: an unknown kind, or a spec missing what its kind needs.
        KeelError: ``"deployment"`` specs when deployments are not in this installation.
    """
    kind = spec.get("kind")
    if kind == "model":
        interval = spec.get("interval")
        return ModelSource(
            spec["uri"],
            follow_alias=bool(spec.get("follow_alias")),
            interval=float(interval) if interval is not None else 5.0,
            version=spec.get("version"),
        )
    if kind == "deployment":
        source: PlanSource = _deployments().source_from_spec(spec)
        return source
    raise InvalidInput(f"unknown plan source kind {kind!r}: expected 'model' or 'deployment'")


def deployment_source(name: str, *, interval: float = 5.0) -> PlanSource:
    """The source of deployment ``name`` (from ``keel.serving.deployments.source``, imported
    on use).

    Raises:
        KeelError: deployments are not available in this installation.
    """
    source: PlanSource = _deployments().DeploymentSource(name, interval=interval)
    return source


def _deployments() -> Any:
    try:  # by name: the deployments package sits above serving's sources
        return importlib.import_module(_DEPLOYMENT_SOURCES)
    except ImportError as exc:
        raise KeelError(
            f"cannot serve a deployment: {_DEPLOYMENT_SOURCES} is not available ({exc})"
        ) from exc
