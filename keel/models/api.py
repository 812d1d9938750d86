"""The model registry: register logged models, move aliases, tag, diff, trace, audit.

``register("runs:/RUN_ID/model", "churn")`` checks the folder is a Keel model (its
``keel-model.json``), then records version 1, 2, 3... of ``churn`` with the folder's digest, so
the version names those exact bytes. Aliases (``champion``, ``challenger``...) point at versions
and move atomically; every change lands in the model's append-only audit trail
(:func:`history`) with who made it, when and why.

A :class:`Registry` works over one :class:`~keel.settings.Settings` (its database and artifact
store); the module functions make one per call, as :mod:`keel.data.api` does. With a tracking
server (``KEEL_TRACKING_URI``) they use :class:`~keel.models.remote.RemoteRegistry` over its
``/api/v1/models`` routes instead (:func:`registry_for`), and so do governance's (policies,
approvals, cards: :mod:`keel.models.governance`). Evaluation and release gates are local-only
for now and refuse a tracking server with :class:`~keel.errors.InvalidInput`
(:func:`keel.models.evaluation.local_registry`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from pydantic import ValidationError

from keel.artifacts import ArtifactStore
from keel.artifacts.models import manifest_bytes
from keel.auth.models import Role
from keel.closing import Closing
from keel.errors import InvalidInput, NotFound, StorageError
from keel.models import tracing
from keel.models.compare import ModelDiff
from keel.models.governance_models import AliasRequest
from keel.models.lineage import ModelLineage
from keel.models.models import (
    MANIFEST_FILE,
    AuditEvent,
    ModelManifest,
    ModelVersion,
    RegisteredModel,
)
from keel.models.packaging import (
    folder_digest,
    folder_entries,
    folder_files,
    read_manifest_of,
)
from keel.models.registry_governance import RegistryGovernance
from keel.models.remote import RemoteRegistry
from keel.models.store import VersionReference
from keel.models.store_governance import GovernanceStore
from keel.models.uris import (
    LATEST,
    RunsUri,
    check_alias,
    check_model_name,
    parse_model_uri,
    parse_version_ref,
)
from keel.settings import Settings
from keel.tracking.api import Client
from keel.tracking.models import ArtifactEntry
from keel.tracking.source import current_user

__all__ = [
    "Registry",
    "delete_alias",
    "delete_tag",
    "diff",
    "get_model",
    "get_version",
    "history",
    "lineage",
    "list_models",
    "list_versions",
    "model_version_references",
    "register",
    "registry_for",
    "set_alias",
    "set_description",
    "set_tag",
]

MAX_TAG_KEY = 250


class Registry(Closing, RegistryGovernance):
    """The model registry over one store and database.

    Args:
        settings: where the database and artifact store are; default ``Settings()``.
        actor: who makes the changes (the audit trail's ``actor``); default the OS user.
        role: the actor's role, for governance (changing a policy needs ``Role.ADMIN``; an
            approvers entry ``admins`` means any admin). A keel server passes the
            authenticated principal's; locally the OS user owns the store: ``Role.ADMIN``.

    Raises:
        InvalidInput: ``settings`` names a tracking server (a Registry works on the database
            itself; :func:`registry_for` picks :class:`~keel.models.remote.RemoteRegistry`).

    Example:
        >>> with Registry() as registry:
        ...     registry.set_alias("churn", "champion", 3, reason="rmse 52 < 57")
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        actor: str | None = None,
        role: Role = Role.ADMIN,
    ) -> None:
        self.settings = settings or Settings()
        _check_local(self.settings)
        self.actor = actor or current_user()
        self.role = role
        from keel.db import open_engine

        self._engine = open_engine(
            self.settings.db_url, busy_timeout=self.settings.sqlite_busy_timeout
        )
        self.store = GovernanceStore(self._engine)
        self._client: Client | None = None
        self._artifacts: ArtifactStore | None = None

    def close(self) -> None:
        """Release the database connections (and the tracking client, if one was opened)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._engine.dispose()

    @property
    def client(self) -> Client:
        """The tracking client on the same settings, opened on first use."""
        if self._client is None:
            self._client = Client(self.settings)
        return self._client

    @property
    def artifacts(self) -> ArtifactStore:
        """The artifact store the versions' files are in."""
        if self._artifacts is None:
            self._artifacts = ArtifactStore(self.settings.artifacts_url)
        return self._artifacts

    # -- registering ------------------------------------------------------------------------

    def register(
        self,
        uri: str,
        name: str,
        *,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> ModelVersion:
        """Register the logged model at ``uri`` as the next version of ``name``.

        See :func:`register`.
        """
        check_model_name(name)
        source = parse_model_uri(uri)
        if not isinstance(source, RunsUri):
            raise InvalidInput(
                f"register a run's logged model (runs:/RUN_ID/model), not {uri}: a registered "
                "version already has a name and number",
                uri=uri,
            )
        checked_tags = _check_tags(tags)
        self.client.get_run(source.run_id)  # NotFound names the run
        entries = folder_entries(
            self.client.list_artifacts(source.run_id, source.path), source.path
        )
        manifest = read_manifest_of(source.run_id, source.path, entries, client=self.client)
        digest = self.keep_folder(entries, source.path)
        return self.store.create_version(
            name,
            source=str(source),
            run_id=source.run_id,
            digest=digest,
            flavor=manifest.flavor,
            signature=manifest.signature,
            actor=self.actor,
            description=description,
            tags=checked_tags,
        )

    def keep_folder(self, entries: Sequence[ArtifactEntry], path: str) -> str:
        """The digest of folder ``path`` among a run's artifact ``entries``, its manifest object
        stored unless it is there, so a version's digest names a listing gc can follow to the
        files once the run is gone."""
        digest = folder_digest(entries, path)
        if not self.artifacts.exists(digest):
            self.artifacts.put_bytes(manifest_bytes(folder_files(entries, path)))
        return digest

    # -- reading ----------------------------------------------------------------------------

    def get_model(self, name: str) -> RegisteredModel:
        """See :func:`get_model`."""
        return self.store.get_model(check_model_name(name))

    def get_version(self, name: str, version_or_alias: int | str = LATEST) -> ModelVersion:
        """See :func:`get_version`."""
        check_model_name(name)
        selector = _selector(version_or_alias)
        if isinstance(selector, int):
            return self.store.get_version(name, selector)
        if selector == LATEST:
            return self.store.get_latest_version(name)
        return self.store.get_version_by_alias(name, selector)

    def resolve(self, ref: str | ModelVersion) -> ModelVersion:
        """The version ``ref`` names: ``NAME/3``, ``NAME@champion``, ``models:/...`` or itself."""
        if isinstance(ref, ModelVersion):
            return ref
        parsed = parse_version_ref(ref)
        return self.get_version(parsed.name, parsed.selector)

    def list_models(self, *, name_like: str | None = None) -> list[RegisteredModel]:
        """See :func:`list_models`."""
        return self.store.list_models(name_like=name_like)

    def list_versions(self, name: str) -> list[ModelVersion]:
        """See :func:`list_versions`."""
        return self.store.list_versions(check_model_name(name))

    def search_versions(
        self, *, name: str | None = None, run_id: str | None = None
    ) -> list[ModelVersion]:
        """Versions of ``name`` and/or registered from run ``run_id``; all when neither."""
        return self.store.search_versions(name=name, run_id=run_id)

    def history(self, name: str) -> list[AuditEvent]:
        """See :func:`history`."""
        return self.store.history(check_model_name(name))

    def manifest(self, version: ModelVersion) -> ModelManifest:
        """The ``keel-model.json`` of ``version``, read from the store by the version's digest
        (the exact bytes registered, also after its run is gone).

        Raises:
            NotFound: the folder or its manifest is not in the store.
            StorageError: the stored bytes are corrupt.
        """
        files = self.artifacts.read_manifest(version.digest)
        if MANIFEST_FILE not in files:
            raise NotFound(
                f"{version.uri} has no {MANIFEST_FILE} in its folder {version.digest}",
                digest=version.digest,
            )
        data = self.artifacts.read_bytes(files[MANIFEST_FILE].digest)
        try:
            return ModelManifest.model_validate_json(data)
        except ValidationError as error:
            raise StorageError(f"{version.uri}'s {MANIFEST_FILE} does not parse: {error}") from None

    # -- changing ---------------------------------------------------------------------------

    def set_alias(
        self, name: str, alias: str, version: int | str, *, reason: str | None = None
    ) -> ModelVersion | AliasRequest:
        """See :func:`set_alias`."""
        check_model_name(name)
        check_alias(alias)
        number = _selector(version)
        if not isinstance(number, int):
            raise InvalidInput(
                f"an alias points at a version number, not {version!r}", version=repr(version)
            )
        policy = self.store.get_policy(name)
        if policy is not None and alias in policy.protect:
            checks = self.checks(policy, self.store.get_version(name, number))
            return self.store.create_request(
                name, alias, number, actor=self.actor, reason=reason, checks=checks
            )
        self.store.set_alias(name, alias, number, actor=self.actor, reason=reason)
        return self.store.get_version(name, number)

    def delete_alias(self, name: str, alias: str, *, reason: str | None = None) -> int:
        """See :func:`delete_alias`."""
        return self.store.delete_alias(
            check_model_name(name), alias, actor=self.actor, reason=reason
        )

    def set_tag(self, name: str, key: str, value: str, *, version: int | None = None) -> None:
        """See :func:`set_tag`."""
        _check_tags({key: value})
        self.store.set_tag(check_model_name(name), key, value, actor=self.actor, version=version)

    def delete_tag(self, name: str, key: str, *, version: int | None = None) -> None:
        """See :func:`delete_tag`."""
        self.store.delete_tag(check_model_name(name), key, actor=self.actor, version=version)

    def set_description(self, name: str, description: str, *, version: int | None = None) -> None:
        """See :func:`set_description`."""
        if not isinstance(description, str):
            raise InvalidInput(f"a description is text, not {description!r}")
        check_model_name(name)
        if version is None:
            self.store.set_model_description(name, description, actor=self.actor)
        else:
            self.store.set_version_description(name, version, description, actor=self.actor)

    # -- diff and lineage (keel.models.tracing gathers them) ---------------------------------

    def diff(self, left: str | ModelVersion, right: str | ModelVersion) -> ModelDiff:
        """See :func:`diff`."""
        return tracing.diff(self, left, right)

    def lineage(self, uri: str | ModelVersion) -> ModelLineage:
        """See :func:`lineage`."""
        return tracing.lineage(self, uri)


# -- module functions --------------------------------------------------------------------------


def register(
    uri: str,
    name: str,
    *,
    description: str = "",
    tags: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> ModelVersion:
    """Register the logged model at ``uri`` as the next version of ``name``.

    The model is registered as it is now: its folder's digest is recorded, and loading the
    version later checks the files still hash to it. The name is created on first use.

    Args:
        uri: ``runs:/RUN_ID/PATH`` of a model logged with :func:`keel.models.log_model`.
        name: the registered model's name (letters, digits, ``.``, ``_``, ``-``).
        description: the version's description.
        tags: the version's tags.
        settings: where the database and store are; default ``Settings()``.

    Returns:
        The new :class:`~keel.models.models.ModelVersion` (1 for a new name).

    Raises:
        InvalidInput: a malformed URI or name, the folder is not a Keel model, or a tracking
            server is configured.
        NotFound: no such run, or nothing at that path in its artifacts.

    Example:
        >>> version = keel.models.register(logged.uri, "churn")  # doctest: +SKIP
        >>> version.uri
        'models:/churn/1'
    """
    with registry_for(settings) as registry:
        return registry.register(uri, name, description=description, tags=tags)


def get_model(name: str, *, settings: Settings | None = None) -> RegisteredModel:
    """The registered model ``name``: description, tags, aliases, latest version.

    Raises:
        NotFound: no such model (the message names similar ones).

    Example:
        >>> get_model("churn").aliases  # doctest: +SKIP
        {'champion': 3}
    """
    with registry_for(settings) as registry:
        return registry.get_model(name)


def get_version(
    name: str, version_or_alias: int | str = LATEST, *, settings: Settings | None = None
) -> ModelVersion:
    """A registered version by number (``3`` or ``"3"``), alias (``"champion"``) or ``"latest"``.

    Raises:
        InvalidInput: a malformed name, version or alias.
        NotFound: no such model, version or alias (the message lists those that exist).

    Example:
        >>> get_version("churn", "champion").version  # doctest: +SKIP
        3
    """
    with registry_for(settings) as registry:
        return registry.get_version(name, version_or_alias)


def list_models(
    *, name_like: str | None = None, settings: Settings | None = None
) -> list[RegisteredModel]:
    """Every registered model, by name; ``name_like`` filters with a SQL LIKE pattern.

    Example:
        >>> [m.name for m in list_models(name_like="churn%")]  # doctest: +SKIP
        ['churn', 'churn-small']
    """
    with registry_for(settings) as registry:
        return registry.list_models(name_like=name_like)


def list_versions(name: str, *, settings: Settings | None = None) -> list[ModelVersion]:
    """Every version of ``name``, newest first.

    Raises:
        NotFound: no such model.

    Example:
        >>> [v.version for v in list_versions("churn")]  # doctest: +SKIP
        [3, 2, 1]
    """
    with registry_for(settings) as registry:
        return registry.list_versions(name)


def set_alias(
    name: str,
    alias: str,
    version: int | str,
    *,
    reason: str | None = None,
    settings: Settings | None = None,
) -> ModelVersion | AliasRequest:
    """Point ``alias`` of ``name`` at ``version``, moving it atomically if it is set.

    The move and its audit row (who, when, from which version, ``reason``) are one transaction.
    An alias the model's policy protects does not move: a pending request is recorded instead
    (:func:`keel.models.governance.approve` moves it).

    Returns:
        The version the alias now points at, or the
        :class:`~keel.models.governance_models.AliasRequest` for a protected alias.

    Raises:
        InvalidInput: a malformed alias (``latest`` is reserved) or version.
        NotFound: no such model or version.

    Example:
        >>> set_alias("churn", "champion", 3, reason="rmse 52 < 57")  # doctest: +SKIP
    """
    with registry_for(settings) as registry:
        return registry.set_alias(name, alias, version, reason=reason)


def delete_alias(
    name: str, alias: str, *, reason: str | None = None, settings: Settings | None = None
) -> int:
    """Remove ``alias`` of ``name`` (audited).

    Returns:
        The version it pointed at.

    Raises:
        NotFound: no such model or alias.
        PermissionDenied: the model's policy protects the alias (take it out of the policy
            first).

    Example:
        >>> delete_alias("churn", "challenger")  # doctest: +SKIP
        4
    """
    with registry_for(settings) as registry:
        return registry.delete_alias(name, alias, reason=reason)


def set_tag(
    name: str,
    key: str,
    value: str,
    *,
    version: int | None = None,
    settings: Settings | None = None,
) -> None:
    """Set tag ``key`` on model ``name``, or on its version ``version`` (audited).

    Raises:
        InvalidInput: an empty or too long key, or a value that is not text.
        NotFound: no such model or version.

    Example:
        >>> set_tag("churn", "validated", "yes", version=3)  # doctest: +SKIP
    """
    with registry_for(settings) as registry:
        registry.set_tag(name, key, value, version=version)


def delete_tag(
    name: str, key: str, *, version: int | None = None, settings: Settings | None = None
) -> None:
    """Delete tag ``key`` from model ``name``, or from its version ``version`` (audited).

    Raises:
        NotFound: no such model, version or tag.

    Example:
        >>> delete_tag("churn", "validated", version=3)  # doctest: +SKIP
    """
    with registry_for(settings) as registry:
        registry.delete_tag(name, key, version=version)


def set_description(
    name: str,
    description: str,
    *,
    version: int | None = None,
    settings: Settings | None = None,
) -> None:
    """Replace the description of model ``name``, or of its version ``version`` (audited).

    Raises:
        NotFound: no such model or version.

    Example:
        >>> set_description("churn", "Predicts churn from 90 days of usage")  # doctest: +SKIP
    """
    with registry_for(settings) as registry:
        registry.set_description(name, description, version=version)


def history(name: str, *, settings: Settings | None = None) -> list[AuditEvent]:
    """The audit trail of model ``name``, oldest first: every registry change, who, when, why.

    Raises:
        NotFound: no such model and no events under that name.

    Example:
        >>> [(e.action, e.actor) for e in history("churn")][:2]  # doctest: +SKIP
        [('create_model', 'ana'), ('create_version', 'ana')]
    """
    with registry_for(settings) as registry:
        return registry.history(name)


def diff(
    left: str | ModelVersion, right: str | ModelVersion, *, settings: Settings | None = None
) -> ModelDiff:
    """What differs between two versions: params, metrics, signature, requirements, data.

    Args:
        left: ``NAME/3``, ``NAME@champion``, ``models:/...`` or a ModelVersion.
        right: the same.
        settings: where the database and store are; default ``Settings()``.

    Returns:
        A :class:`~keel.models.compare.ModelDiff` listing only what differs.

    Raises:
        InvalidInput: a malformed reference.
        NotFound: no such model, version or alias.

    Example:
        >>> [m.key for m in diff("churn@champion", "churn/4").metrics]  # doctest: +SKIP
        ['rmse']
    """
    with registry_for(settings) as registry:
        return registry.diff(left, right)


def lineage(uri: str | ModelVersion, *, settings: Settings | None = None) -> ModelLineage:
    """Where a model version came from: data versions -> run -> version -> aliases, as a graph.

    Args:
        uri: ``NAME/3``, ``NAME@champion``, ``models:/...``, ``runs:/RUN_ID/PATH`` or a
            ModelVersion.
        settings: where the database and store are; default ``Settings()``.

    Returns:
        A :class:`~keel.models.lineage.ModelLineage` (nodes and edges; ``root`` is the
        version's node, or the run's for a ``runs:/`` URI).

    Raises:
        InvalidInput: a malformed reference.
        NotFound: no such model, version or alias.

    Example:
        >>> graph = lineage("churn@champion")  # doctest: +SKIP
        >>> [n.kind for n in graph.nodes]
        ['run', 'model_version', 'dataset', 'alias']
    """
    with registry_for(settings) as registry:
        return registry.lineage(uri)


def model_version_references(settings: Settings) -> Iterator[VersionReference]:
    """The folder digest of every registered version, for gc (:mod:`keel.gc`).

    Example:
        >>> {r.digest for r in model_version_references(Settings())}  # doctest: +SKIP
        {'5b1e...'}
    """
    with Registry(settings) as registry:
        yield from registry.store.references()


# -- helpers ----------------------------------------------------------------------------------


def registry_for(
    settings: Settings | None = None, *, actor: str | None = None
) -> Registry | RemoteRegistry:
    """The registry ``settings`` name: over HTTP when a tracking server is set, else local."""
    settings = settings or Settings()
    if settings.tracking_uri:
        return RemoteRegistry(settings, actor=actor)
    return Registry(settings, actor=actor)


def _check_local(settings: Settings) -> None:
    if settings.tracking_uri:
        raise InvalidInput(
            "a Registry works on the metadata database itself, and these settings name the "
            f"tracking server {settings.tracking_uri}: use registry_for(settings) (a "
            "RemoteRegistry: the registry and governance over HTTP), or unset "
            "KEEL_TRACKING_URI to work on KEEL_DATABASE_URL",
            tracking_uri=settings.tracking_uri,
        )


def _selector(value: int | str) -> int | str:
    """A version number, ``latest``, or a checked alias."""
    if isinstance(value, bool):
        raise InvalidInput(f"a version is a number from 1 or an alias, not {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise InvalidInput(f"a version is a number from 1, not {value}", version=value)
        return value
    if isinstance(value, str) and value.isascii() and value.isdecimal():
        return _selector(int(value))
    if value == LATEST:
        return LATEST
    return check_alias(value)


def _check_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    checked = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_TAG_KEY:
            raise InvalidInput(
                f"a tag key is non-empty text of up to {MAX_TAG_KEY} characters, not {key!r}",
                key=repr(key),
            )
        if not isinstance(value, str):
            raise InvalidInput(f"tag {key!r}: a value is text, not {value!r}", key=key)
        checked[key] = value
    return checked
