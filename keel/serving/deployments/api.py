"""Deployments: create them, shift traffic, promote a canary, roll back, and read the history.

``create("churn", "churn@champion", canaries={"churn@challenger": 10})`` records revision 1 of
deployment ``churn``: 90% of requests to the version ``champion`` points at, 10% to
``challenger``'s. Every change appends a new revision holding the whole configuration (who,
when, why), so :func:`rollback` is one more revision, never an edit of the past. References are
checked against the model registry when written: one that does not resolve is an error listing
what exists. A serving process (``keel serve --deployment churn``) follows the current revision
and the aliases it names (:mod:`keel.serving.deployments.source`).

:class:`Deployments` works on one :class:`~keel.settings.Settings` (its database and registry);
the module functions make one per call. With a tracking server (``KEEL_TRACKING_URI``) they use
:class:`~keel.serving.deployments.remote.RemoteDeployments` over ``/api/v1/deployments``
instead (:func:`deployments_for`), as :func:`keel.models.api.registry_for` does.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from keel.auth.models import Role
from keel.closing import Closing
from keel.errors import Conflict, InvalidInput, NotFound
from keel.models.api import Registry
from keel.models.models import ModelVersion
from keel.models.uris import ModelsUri, parse_version_ref
from keel.serving.deployments.models import (
    Action,
    Deployment,
    DeploymentConfig,
    Promotion,
    Revision,
    check_deployment_name,
)
from keel.serving.deployments.remote import RemoteDeployments
from keel.serving.deployments.store import DeploymentStore, StaleRevision
from keel.settings import Settings
from keel.tracking.source import current_user

__all__ = [
    "Deployments",
    "add_shadow",
    "create",
    "delete",
    "deployments_for",
    "get",
    "get_revision",
    "history",
    "list_deployments",
    "promote",
    "remove_shadow",
    "rollback",
    "set_traffic",
]

ATTEMPTS = 8
"""How often a change is rebuilt on a revision another writer appended meanwhile."""

_MLFLOW_FLAVOR = "mlflow"


class Deployments(Closing):
    """Deployments over one database, checked against its model registry.

    Args:
        settings: where the database and artifact store are; default ``Settings()``.
        actor: who makes the changes (each revision's ``actor``); default the OS user.
        role: the actor's role, for the registry's governance when ``promote`` moves an alias.

    Raises:
        InvalidInput: ``settings`` names a tracking server (use :func:`deployments_for`).

    Example:
        >>> with Deployments() as deployments:
        ...     deployments.set_traffic("churn", {"churn@challenger": 25})
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        actor: str | None = None,
        role: Role = Role.ADMIN,
    ) -> None:
        self.settings = settings or Settings()
        if self.settings.tracking_uri:
            raise InvalidInput(
                "Deployments works on the metadata database itself, and these settings name "
                f"the tracking server {self.settings.tracking_uri}: use deployments_for(settings)",
                tracking_uri=self.settings.tracking_uri,
            )
        self.actor = actor or current_user()
        self.role = role
        from keel.db import open_engine

        self._engine = open_engine(
            self.settings.db_url, busy_timeout=self.settings.sqlite_busy_timeout
        )
        self.store = DeploymentStore(self._engine)
        self._registry: Registry | None = None
        self._owns_registry = True

    def close(self) -> None:
        """Release the database connections (and the registry's, if this opened it)."""
        if self._registry is not None and self._owns_registry:
            self._registry.close()
            self._registry = None
        self._engine.dispose()

    @property
    def registry(self) -> Registry:
        """The model registry references are checked against, acting as the same actor."""
        if self._registry is None:
            self._registry = Registry(self.settings, actor=self.actor, role=self.role)
        return self._registry

    def acting_as(self, actor: str, *, registry: Registry) -> Deployments:
        """A view sharing this one's connections that records changes as ``actor`` and checks
        references with ``registry`` (a server's view of its registry as the caller)."""
        import copy

        view = copy.copy(self)
        view.actor = actor
        view.role = registry.role
        view._registry = registry
        view._owns_registry = False
        return view

    # -- reading ----------------------------------------------------------------------------

    def get(self, name: str) -> Deployment:
        """See :func:`get`."""
        return self.store.get(check_deployment_name(name))

    def list_deployments(self) -> list[Deployment]:
        """See :func:`list_deployments`."""
        return self.store.list_deployments()

    def history(self, name: str) -> list[Revision]:
        """See :func:`history`."""
        return self.store.history(check_deployment_name(name))

    def get_revision(self, name: str, number: int) -> Revision:
        """See :func:`get_revision`."""
        return self.store.revision(check_deployment_name(name), _number(number))

    # -- changing ---------------------------------------------------------------------------

    def create(self, name: str, config: DeploymentConfig, *, note: str | None = None) -> Deployment:
        """See :func:`create`."""
        check_deployment_name(name)
        resolved = self.resolve(config)
        return self.store.create(name, config, resolved=resolved, actor=self.actor, note=note)

    def set_traffic(
        self, name: str, weights: Mapping[str, float], *, note: str | None = None
    ) -> Deployment:
        """See :func:`set_traffic`."""
        return self._change(name, "set-traffic", lambda now: now.config.with_traffic(weights), note)

    def add_shadow(self, name: str, ref: str, *, note: str | None = None) -> Deployment:
        """See :func:`add_shadow`."""
        return self._change(name, "add-shadow", lambda now: now.config.with_shadow(ref), note)

    def remove_shadow(self, name: str, ref: str, *, note: str | None = None) -> Deployment:
        """See :func:`remove_shadow`."""
        return self._change(name, "remove-shadow", lambda now: now.config.without_shadow(ref), note)

    def rollback(self, name: str, *, to: int | None = None, note: str | None = None) -> Deployment:
        """See :func:`rollback`."""

        def build(now: Deployment) -> DeploymentConfig:
            target = now.revision - 1 if to is None else _number(to)
            if to is None and target < 1:
                raise InvalidInput(
                    f"deployment {name!r} has only revision 1: there is nothing to roll back to"
                )
            if target == now.revision:
                raise InvalidInput(
                    f"revision {target} is the current revision of deployment {name!r}"
                )
            return self.store.revision(name, target).config

        default = None if to is None else f"rollback to revision {to}"
        text = note if note is not None else default
        return self._change(name, "rollback", build, text, allow_same=True)

    def promote(
        self,
        name: str,
        arm: str | None = None,
        *,
        move_alias: bool = False,
        note: str | None = None,
    ) -> Promotion:
        """See :func:`promote`."""
        now = self.get(name)
        ref = now.config.canary(arm)
        target = self._version(ref)
        self.resolve(now.config.promoted(ref), known=now.config.refs)  # before an alias moves
        alias = as_ref = None
        moved = request = None
        if move_alias:
            main = _main_alias(now.config, target)
            alias = f"{main.name}@{main.alias}"
            reason = note or f"promoted in deployment {name}"
            assert main.alias is not None  # _main_alias checked it
            done = self.registry.set_alias(main.name, main.alias, target.version, reason=reason)
            if isinstance(done, ModelVersion):
                moved, as_ref = done, alias
            else:
                request = done

        def build(latest: Deployment) -> DeploymentConfig:
            if latest.config.canary(arm) != ref:  # changed since it was read: do not guess
                raise Conflict(
                    f"deployment {name} changed while {ref} was being promoted (now "
                    f"revision {latest.revision}); look at it again (keel deploy show {name})",
                    name=name,
                )
            return latest.config.promoted(ref, as_ref=as_ref)

        deployment = self._change(name, "promote", build, note)
        return Promotion(
            deployment=deployment,
            promoted=ref,
            version=target.version,
            alias=alias,
            moved=moved,
            request=request,
        )

    def delete(self, name: str) -> int:
        """See :func:`delete`."""
        return self.store.delete(check_deployment_name(name))

    # -- helpers ----------------------------------------------------------------------------

    def resolve(self, config: DeploymentConfig, *, known: Collection[str] = ()) -> dict[str, int]:
        """The version each reference of ``config`` names now.

        Args:
            config: the configuration.
            known: references the deployment has already: two of them resolving to one
                version is not refused (an alias moved since they were written), so a change
                that does not touch them, or a rollback, goes through.

        Raises:
            NotFound: a reference does not resolve (the message lists what exists).
            InvalidInput: a new reference is the same version as another arm, or a version
                cannot be served.
        """
        resolved: dict[str, int] = {}
        seen: dict[tuple[str, int], str] = {}
        for ref in config.refs:
            version = self._version(ref)
            key = (version.name, version.version)
            if key in seen and not (ref in known and seen[key] in known):
                raise InvalidInput(
                    f"{seen[key]} and {ref} are both {version.name}/{version.version}; each "
                    "arm serves a different version",
                    refs=[seen[key], ref],
                )
            seen.setdefault(key, ref)
            resolved[ref] = version.version
        return resolved

    def _version(self, ref: str) -> ModelVersion:
        parsed = parse_version_ref(ref)
        try:
            version = self.registry.get_version(parsed.name, parsed.selector)
        except NotFound as exc:
            raise NotFound(f"{ref} does not resolve: {exc.message}", ref=ref) from None
        if version.flavor == _MLFLOW_FLAVOR:
            raise InvalidInput(
                f"{ref} is an MLflow-format model, which keel serve cannot load", ref=ref
            )
        return version

    def _change(
        self,
        name: str,
        action: Action,
        build: Callable[[Deployment], DeploymentConfig],
        note: str | None,
        *,
        allow_same: bool = False,
    ) -> Deployment:
        """Build the new configuration on the current revision and append it; rebuilt when
        another writer appended a revision meanwhile (see :mod:`~.store`)."""
        check_deployment_name(name)
        for attempt in range(ATTEMPTS):
            now = self.store.get(name)
            config = build(now)
            known = config.refs if allow_same else now.config.refs
            resolved = self.resolve(config, known=known)
            try:
                return self.store.append(
                    name,
                    config,
                    expected=now.revision,
                    resolved=resolved,
                    action=action,
                    actor=self.actor,
                    note=note,
                )
            except StaleRevision:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


# -- module functions --------------------------------------------------------------------------


def create(
    name: str,
    model: str,
    *,
    canaries: Mapping[str, float] | None = None,
    shadows: Sequence[str] = (),
    note: str | None = None,
    settings: Settings | None = None,
) -> Deployment:
    """Create deployment ``name``: ``model`` takes the traffic the ``canaries`` leave.

    Args:
        name: the deployment's name (letters, digits, ``.``, ``_``, ``-``).
        model: the main version, ``NAME@alias`` or ``NAME/VERSION``.
        canaries: more primaries and their percent of traffic (``{"churn@challenger": 10}``).
        shadows: versions that get a copy of every request, logged and never returned.
        note: why; kept with the revision.
        settings: where the database is; default ``Settings()``.

    Returns:
        The :class:`~keel.serving.deployments.models.Deployment` at revision 1.

    Raises:
        InvalidInput: a malformed name, reference or weight; two arms that are one version.
        NotFound: a reference that does not resolve (the message lists what exists).
        AlreadyExists: a deployment of that name exists.

    Example:
        >>> create("churn", "churn@champion", canaries={"churn@challenger": 10})
        ... # doctest: +SKIP
    """
    config = DeploymentConfig.of(model, canaries=canaries, shadows=shadows)
    with deployments_for(settings) as deployments:
        return deployments.create(name, config, note=note)


def get(name: str, *, settings: Settings | None = None) -> Deployment:
    """Deployment ``name`` at its current revision.

    Raises:
        NotFound: no such deployment (the message names similar ones).

    Example:
        >>> get("churn").config.describe()  # doctest: +SKIP
        'churn@champion=90%, churn@challenger=10%'
    """
    with deployments_for(settings) as deployments:
        return deployments.get(name)


def list_deployments(*, settings: Settings | None = None) -> list[Deployment]:
    """Every deployment at its current revision, by name.

    Example:
        >>> [d.name for d in list_deployments()]  # doctest: +SKIP
        ['churn']
    """
    with deployments_for(settings) as deployments:
        return deployments.list_deployments()


def history(name: str, *, settings: Settings | None = None) -> list[Revision]:
    """Every revision of deployment ``name``, oldest first: configuration, who, when, why.

    Raises:
        NotFound: no such deployment.

    Example:
        >>> [(r.revision, r.action) for r in history("churn")]  # doctest: +SKIP
        [(1, 'create'), (2, 'set-traffic')]
    """
    with deployments_for(settings) as deployments:
        return deployments.history(name)


def get_revision(name: str, number: int, *, settings: Settings | None = None) -> Revision:
    """Revision ``number`` of deployment ``name``.

    Raises:
        NotFound: no such deployment or revision.
    """
    with deployments_for(settings) as deployments:
        return deployments.get_revision(name, number)


def set_traffic(
    name: str,
    weights: Mapping[str, float],
    *,
    note: str | None = None,
    settings: Settings | None = None,
) -> Deployment:
    """Give the arms named their percent of traffic; the other primaries share the rest in
    proportion to their weights now. 0% removes a primary; a new reference (or a shadow)
    becomes a primary.

    Raises:
        InvalidInput: malformed weights, or weights that cannot sum to 100%.
        NotFound: no such deployment, or a reference that does not resolve.
        Conflict: other writers kept changing the deployment (tried 8 times).

    Example:
        >>> set_traffic("churn", {"churn@challenger": 25})  # 75% to champion  # doctest: +SKIP
    """
    with deployments_for(settings) as deployments:
        return deployments.set_traffic(name, weights, note=note)


def add_shadow(
    name: str, ref: str, *, note: str | None = None, settings: Settings | None = None
) -> Deployment:
    """Send a copy of every request to ``ref`` as well; its outputs are logged, never returned.

    Raises:
        InvalidInput: ``ref`` is an arm already.
        NotFound: no such deployment, or ``ref`` does not resolve.

    Example:
        >>> add_shadow("churn", "churn/7")  # doctest: +SKIP
    """
    with deployments_for(settings) as deployments:
        return deployments.add_shadow(name, ref, note=note)


def remove_shadow(
    name: str, ref: str, *, note: str | None = None, settings: Settings | None = None
) -> Deployment:
    """Stop shadowing ``ref``.

    Raises:
        InvalidInput: ``ref`` is not a shadow.
        NotFound: no such deployment.

    Example:
        >>> remove_shadow("churn", "churn/7")  # doctest: +SKIP
    """
    with deployments_for(settings) as deployments:
        return deployments.remove_shadow(name, ref, note=note)


def promote(
    name: str,
    arm: str | None = None,
    *,
    move_alias: bool = False,
    note: str | None = None,
    settings: Settings | None = None,
) -> Promotion:
    """The canary (or ``arm``, a primary or a shadow) takes 100%; the other primaries go, the
    shadows stay.

    With ``move_alias``, the main arm's alias (``champion`` of ``churn@champion``) is moved to
    the promoted version first, through the registry (audited), and the deployment keeps
    following that alias. An alias the model's policy protects does not move: the approval
    request made instead is in the result's ``request``, and the deployment serves the
    promoted arm as it was named.

    Raises:
        InvalidInput: no canary to promote or several (name one), ``arm`` is not an arm, or
            ``move_alias`` when the main arm names no alias or another model.
        NotFound: no such deployment, or a reference that does not resolve.

    Example:
        >>> promote("churn", move_alias=True).moved.version  # doctest: +SKIP
        4
    """
    with deployments_for(settings) as deployments:
        return deployments.promote(name, arm, move_alias=move_alias, note=note)


def rollback(
    name: str, *, to: int | None = None, note: str | None = None, settings: Settings | None = None
) -> Deployment:
    """A new revision with the configuration of the previous one (or of revision ``to``).

    Aliases in it are resolved again: a rollback restores what the deployment named, not the
    versions those aliases pointed at then (name versions, ``NAME/3``, to pin them). Two
    references that now resolve to one version are kept (both arms serve it; ``resolved``
    shows it). The other changes refuse only a reference they add that is the same version as
    another arm.

    Raises:
        InvalidInput: there is no previous revision, or ``to`` is the current one.
        NotFound: no such deployment or revision, or a reference no longer resolves.

    Example:
        >>> rollback("churn").revision  # doctest: +SKIP
        4
    """
    with deployments_for(settings) as deployments:
        return deployments.rollback(name, to=to, note=note)


def delete(name: str, *, settings: Settings | None = None) -> int:
    """Delete deployment ``name`` and its history; returns the revision it was at.

    A service serving it keeps its current plan (its polls fail until it is stopped).

    Raises:
        NotFound: no such deployment.

    Example:
        >>> delete("churn")  # doctest: +SKIP
        5
    """
    with deployments_for(settings) as deployments:
        return deployments.delete(name)


def deployments_for(
    settings: Settings | None = None, *, actor: str | None = None
) -> Deployments | RemoteDeployments:
    """The deployments ``settings`` name: over HTTP when a tracking server is set, else local."""
    settings = settings or Settings()
    if settings.tracking_uri:
        return RemoteDeployments(settings, actor=actor)
    return Deployments(settings, actor=actor)


# -- helpers ----------------------------------------------------------------------------------


def _number(number: int) -> int:
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise InvalidInput(f"a revision is a number from 1, not {number!r}")
    return number


def _main_alias(config: DeploymentConfig, target: ModelVersion) -> ModelsUri:
    """The main arm's reference, when ``--move-alias`` can move its alias to ``target``."""
    main = parse_version_ref(config.main)
    if main.alias is None:
        raise InvalidInput(
            f"--move-alias moves the main arm's alias, and {config.main} names no alias "
            "(create the deployment with --model NAME@ALIAS)",
            main=config.main,
        )
    if main.name != target.name:
        raise InvalidInput(
            f"--move-alias cannot point {config.main} at {target.name}/{target.version}: "
            "another model's version",
            main=config.main,
        )
    return main
