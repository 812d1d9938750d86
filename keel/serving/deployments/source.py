"""Serve a deployment: :class:`DeploymentSource` builds the :class:`~keel.serving.plan.ServingPlan`
of a deployment's current revision and notices when it should change.

``load()`` reads the deployment, resolves each reference once (an alias to the version it
points at now) and loads every version. ``poll(current)`` (every ``interval`` seconds, off the
event loop) reads it again: a new revision, or an alias that now points at another version,
gives a new plan; versions that did not change keep their loaded predictors, so only what is
new is loaded. Anything that fails (the deployment deleted, an alias removed, a model that
cannot load) raises, and the service keeps the plan it has.

``keel serve --deployment NAME`` uses it; worker processes rebuild it with
:func:`source_from_spec`.
"""

from __future__ import annotations

import threading
from typing import Any

from keel.errors import InvalidInput
from keel.models.api import registry_for
from keel.models.loading import Predictor, load_version
from keel.models.models import ModelVersion
from keel.models.uris import parse_version_ref
from keel.serving.deployments.api import deployments_for
from keel.serving.deployments.models import Deployment, check_deployment_name
from keel.serving.plan import Arm, ServingPlan
from keel.settings import Settings

__all__ = ["KIND", "DeploymentSource", "source_from_spec"]

KIND = "deployment"
"""The ``kind`` of a deployment source's :meth:`~DeploymentSource.spec`."""


class DeploymentSource:
    """The plan of deployment ``name``, followed as it changes.

    Args:
        name: the deployment.
        interval: seconds between polls (None: never poll).
        settings: where the deployment and models are; default ``Settings()`` (over a
            tracking server when ``KEEL_TRACKING_URI`` is set).

    Raises:
        InvalidInput: a malformed name or interval.

    Example:
        >>> source = DeploymentSource("churn", interval=5.0)
        >>> plan = source.load()  # doctest: +SKIP
        >>> [arm.label for arm in plan.arms]  # doctest: +SKIP
        ['churn/3', 'churn/4']
    """

    def __init__(
        self, name: str, *, interval: float | None = 5.0, settings: Settings | None = None
    ) -> None:
        self.name = check_deployment_name(name)
        if interval is not None and (isinstance(interval, bool) or not interval > 0):
            raise InvalidInput(f"a poll interval is a number of seconds above 0, not {interval!r}")
        self.interval = interval
        self.settings = settings
        self._client: Any = None
        self._handles: tuple[Any, Any] | None = None  # (deployments, registry), kept open
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<DeploymentSource {self.name} every {self.interval}s>"

    def load(self) -> ServingPlan:
        """The plan of the deployment's current revision, every version loaded.

        Raises:
            KeelError: no such deployment, a reference that does not resolve, or a version
                that cannot be loaded.
        """
        deployment, versions = self._read()
        return self._plan(deployment, versions, {})

    def poll(self, current: ServingPlan) -> ServingPlan | None:
        """A new plan when the revision changed or an alias now resolves to another version;
        None when nothing changed. Unchanged versions reuse ``current``'s predictors.

        Raises:
            KeelError: the deployment or a version cannot be read or loaded (``current``
                keeps serving).
        """
        deployment, versions = self._read()
        same_revision = deployment.revision == current.revision
        now = {arm.ref: _key(arm.version) if arm.version else None for arm in current.arms}
        if same_revision and now == {ref: _key(v) for ref, v in versions.items()}:
            return None
        loaded = {
            _key(arm.version): arm.predictor for arm in current.arms if arm.version is not None
        }
        return self._plan(deployment, versions, loaded)

    def spec(self) -> dict[str, Any]:
        """``{"kind": "deployment", "name": ..., "interval": ...}``: what a worker process
        needs to rebuild this source (:func:`source_from_spec`)."""
        return {"kind": KIND, "name": self.name, "interval": self.interval}

    def close(self) -> None:
        """Close the connections the source keeps between polls."""
        with self._lock:
            client, self._client = self._client, None
            handles, self._handles = self._handles, None
        if client is not None:
            client.close()
        for handle in handles or ():
            handle.close()

    # -- helpers ----------------------------------------------------------------------------

    def _read(self) -> tuple[Deployment, dict[str, ModelVersion]]:
        """The deployment now, and the version each of its references resolves to (once)."""
        deployments, registry = self._open()
        deployment = deployments.get(self.name)
        versions: dict[str, ModelVersion] = {}
        for ref in deployment.config.refs:
            parsed = parse_version_ref(ref)
            versions[ref] = registry.get_version(parsed.name, parsed.selector)
        return deployment, versions

    def _open(self) -> tuple[Any, Any]:
        """The deployments and the registry, opened once (a poll then costs a few queries,
        not an engine and a schema check each)."""
        with self._lock:
            if self._handles is None:
                deployments = deployments_for(self.settings)
                try:
                    self._handles = (deployments, registry_for(self.settings))
                except BaseException:
                    deployments.close()
                    raise
            return self._handles

    def _plan(
        self,
        deployment: Deployment,
        versions: dict[str, ModelVersion],
        loaded: dict[tuple[str, int], Predictor],
    ) -> ServingPlan:
        loaded = dict(loaded)
        arms = []
        config = deployment.config
        for ref in config.refs:
            version = versions[ref]
            key = _key(version)
            if key not in loaded:
                loaded[key] = self._load(version)
            weight = config.weight_of(ref)
            shadow = weight is None
            arms.append(
                Arm(
                    ref=ref,
                    predictor=loaded[key],
                    version=version,
                    weight=0.0 if shadow else float(weight or 0.0),
                    shadow=shadow,
                )
            )
        details = {
            "kind": KIND,
            "deployment": deployment.name,
            "revision": deployment.revision,
            "config": config.model_dump(mode="json"),
            "resolved": {ref: version.version for ref, version in versions.items()},
        }
        return ServingPlan(
            deployment=deployment.name,
            arms=tuple(arms),
            revision=deployment.revision,
            details=details,
        )

    def _load(self, version: ModelVersion) -> Predictor:
        settings = self.settings
        if settings is None:
            return load_version(version)
        if not settings.tracking_uri:
            return load_version(version, settings=settings)
        with self._lock:
            if self._client is None:
                from keel.tracking.remote import connect

                self._client = connect(settings)
        return load_version(version, client=self._client)


def source_from_spec(spec: dict[str, Any]) -> DeploymentSource:
    """The source :meth:`DeploymentSource.spec` describes (in a worker process: settings from
    its environment).

    Raises:
        InvalidInput: ``spec`` is not a deployment source's.

    Example:
        >>> source_from_spec({"kind": "deployment", "name": "churn", "interval": 5.0})
        <DeploymentSource churn every 5.0s>
    """
    if not isinstance(spec, dict) or spec.get("kind") != KIND or "name" not in spec:
        raise InvalidInput(f"not a deployment source's spec: {spec!r}")
    return DeploymentSource(spec["name"], interval=spec.get("interval", 5.0))


def _key(version: ModelVersion) -> tuple[str, int]:
    return (version.name, version.version)
