"""The model registry over HTTP: :class:`RemoteRegistry` talks to a ``keel server``.

It has the public methods of :class:`keel.models.api.Registry` and returns the same entities,
read back from the server's answers (:mod:`keel.models.routes`). Requests go through
:class:`keel.tracking.remote_http.HttpApi`: the token from ``KEEL_TRACKING_TOKEN``, retries with
backoff on connection errors and 5xx, and the server's error answers raised as the same
:class:`keel.errors.KeelError` subclasses a local registry raises. Registering sends only the
URI: the run's artifacts are on the server, which checks the folder itself.

Loading a registered model (``keel.models.load("models:/...")``) is local for now: it reads the
artifact store by the version's digest, which a remote caller does not have.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from keel.errors import Conflict, InvalidInput
from keel.models.compare import ModelDiff
from keel.models.lineage import ModelLineage
from keel.models.models import AuditEvent, ModelVersion, RegisteredModel
from keel.models.uris import LATEST, check_alias, check_model_name, parse_version_ref
from keel.models.wire import (
    ACTOR_HEADER,
    AliasDeleted,
    AliasSet,
    DescriptionSet,
    EventList,
    ModelList,
    RegisterRequest,
    TagSet,
    VersionList,
)
from keel.settings import Settings
from keel.tracking.remote_http import HttpApi, token_of
from keel.tracking.source import current_user

__all__ = ["RemoteRegistry"]


def _segment(text: str) -> str:
    return quote(text, safe="")


class RemoteRegistry:
    """The model registry of the keel server ``settings.tracking_uri`` names.

    Args:
        settings: the server's URI (``KEEL_TRACKING_URI``) and token (``KEEL_TRACKING_TOKEN``).
        actor: who makes the changes, sent to a server without ``--auth`` (default the OS
            user); a server with ``--auth`` records the token's user instead.

    Raises:
        InvalidInput: ``settings`` names no tracking server.

    Example:
        >>> with RemoteRegistry(Settings(tracking_uri="http://127.0.0.1:5000")) as registry:
        ...     registry.set_alias("churn", "champion", 3, reason="rmse 52 < 57")
    """

    def __init__(self, settings: Settings | None = None, *, actor: str | None = None) -> None:
        self.settings = settings or Settings()
        if not self.settings.tracking_uri:
            raise InvalidInput("RemoteRegistry needs settings.tracking_uri (KEEL_TRACKING_URI)")
        self.actor = actor or current_user()
        self._api = HttpApi(self.settings.tracking_uri, token=token_of(self.settings))
        self._headers = {ACTOR_HEADER: quote(self.actor, safe="")}  # any name fits a header

    def __repr__(self) -> str:
        return f"<RemoteRegistry {self._api.base_url}>"

    def __enter__(self) -> RemoteRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._api.close()

    def _get(self, path: str, **params: Any) -> Any:
        wanted = {key: value for key, value in params.items() if value is not None}
        return self._api.request("GET", path, params=wanted or None).json()

    def _write(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool = True,
    ) -> Any:
        response = self._request(method, path, body=body, params=params, idempotent=idempotent)
        return response.json() if response.content else None

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        return self._api.request(
            method,
            path,
            json=None if body is None else body.model_dump(mode="json", exclude_none=True),
            params=params,
            headers=self._headers,
            idempotent=idempotent,
        )

    @staticmethod
    def _model_path(name: str) -> str:
        return f"/models/{_segment(check_model_name(name))}"

    # -- registering ------------------------------------------------------------------------

    def register(
        self,
        uri: str,
        name: str,
        *,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> ModelVersion:
        """See :func:`keel.models.api.register`. Not retried once sent (a retry could register
        a second version)."""
        body = RegisterRequest(uri=uri, description=description, tags=dict(tags or {}))
        found = self._write(
            "POST", f"{self._model_path(name)}/versions", body=body, idempotent=False
        )
        return ModelVersion.model_validate(found)

    # -- reading ----------------------------------------------------------------------------

    def get_model(self, name: str) -> RegisteredModel:
        """See :func:`keel.models.api.get_model`."""
        return RegisteredModel.model_validate(self._get(self._model_path(name)))

    def get_version(self, name: str, version_or_alias: int | str = LATEST) -> ModelVersion:
        """See :func:`keel.models.api.get_version`."""
        if isinstance(version_or_alias, bool) or not isinstance(version_or_alias, int | str):
            raise InvalidInput(
                f"a version is a number from 1 or an alias, not {version_or_alias!r}"
            )
        selector = _segment(str(version_or_alias))
        found = self._get(f"{self._model_path(name)}/versions/{selector}")
        return ModelVersion.model_validate(found)

    def resolve(self, ref: str | ModelVersion) -> ModelVersion:
        """The version ``ref`` names: ``NAME/3``, ``NAME@champion``, ``models:/...`` or itself."""
        if isinstance(ref, ModelVersion):
            return ref
        parsed = parse_version_ref(ref)
        return self.get_version(parsed.name, parsed.selector)

    def list_models(self, *, name_like: str | None = None) -> list[RegisteredModel]:
        """See :func:`keel.models.api.list_models`."""
        return ModelList.model_validate(self._get("/models", name_like=name_like)).models

    def list_versions(self, name: str) -> list[ModelVersion]:
        """See :func:`keel.models.api.list_versions`."""
        found = self._get(f"{self._model_path(name)}/versions")
        return VersionList.model_validate(found).versions

    def search_versions(
        self, *, name: str | None = None, run_id: str | None = None
    ) -> list[ModelVersion]:
        """Versions of ``name`` and/or registered from run ``run_id``; all when neither."""
        found = self._get("/model-versions", name=name, run_id=run_id)
        return VersionList.model_validate(found).versions

    def history(self, name: str) -> list[AuditEvent]:
        """See :func:`keel.models.api.history`."""
        return EventList.model_validate(self._get(f"{self._model_path(name)}/history")).events

    # -- changing ---------------------------------------------------------------------------

    def set_alias(
        self, name: str, alias: str, version: int | str, *, reason: str | None = None
    ) -> ModelVersion:
        """See :func:`keel.models.api.set_alias`."""
        number = _number(version)
        path = f"{self._model_path(name)}/aliases/{_segment(check_alias(alias))}"
        response = self._request("PUT", path, body=AliasSet(version=number, reason=reason))
        if response.status_code == 202:  # a protected alias: an approval request was made
            request = response.json()
            raise Conflict(
                f"{name}@{alias} is protected: it did not move; approval request "
                f"{request.get('id')} for version {number} is {request.get('state')}",
                request_id=request.get("id"),
            )
        return ModelVersion.model_validate(response.json())

    def delete_alias(self, name: str, alias: str, *, reason: str | None = None) -> int:
        """See :func:`keel.models.api.delete_alias`."""
        path = f"{self._model_path(name)}/aliases/{_segment(alias)}"
        params = {"reason": reason} if reason is not None else None
        return AliasDeleted.model_validate(self._write("DELETE", path, params=params)).version

    def set_tag(self, name: str, key: str, value: str, *, version: int | None = None) -> None:
        """See :func:`keel.models.api.set_tag`."""
        if not isinstance(value, str):
            raise InvalidInput(f"tag {key!r}: a value is text, not {value!r}", key=key)
        self._write("PUT", self._tag_path(name, key, version), body=TagSet(value=value))

    def delete_tag(self, name: str, key: str, *, version: int | None = None) -> None:
        """See :func:`keel.models.api.delete_tag`."""
        self._write("DELETE", self._tag_path(name, key, version))

    def set_description(self, name: str, description: str, *, version: int | None = None) -> None:
        """See :func:`keel.models.api.set_description`."""
        if not isinstance(description, str):
            raise InvalidInput(f"a description is text, not {description!r}")
        path = self._model_path(name)
        if version is not None:
            path += f"/versions/{_number(version)}"
        self._write("PUT", f"{path}/description", body=DescriptionSet(description=description))

    def _tag_path(self, name: str, key: str, version: int | None) -> str:
        if not isinstance(key, str) or not key.strip():
            raise InvalidInput(f"a tag key is non-empty text, not {key!r}", key=repr(key))
        path = self._model_path(name)
        if version is not None:
            path += f"/versions/{_number(version)}"
        return f"{path}/tags/{quote(key, safe='/')}"

    # -- diff and lineage -------------------------------------------------------------------

    def diff(self, left: str | ModelVersion, right: str | ModelVersion) -> ModelDiff:
        """See :func:`keel.models.api.diff`."""
        found = self._get("/model-versions/diff", left=_ref(left), right=_ref(right))
        return ModelDiff.model_validate(found)

    def lineage(self, uri: str | ModelVersion) -> ModelLineage:
        """See :func:`keel.models.api.lineage`."""
        return ModelLineage.model_validate(self._get("/model-versions/lineage", uri=_ref(uri)))


def _ref(ref: str | ModelVersion) -> str:
    return ref.uri if isinstance(ref, ModelVersion) else ref


def _number(version: int | str) -> int:
    if isinstance(version, bool):
        raise InvalidInput(f"a version is a number from 1, not {version!r}")
    if isinstance(version, str) and version.isascii() and version.isdecimal():
        version = int(version)
    if not isinstance(version, int) or version < 1:
        raise InvalidInput(f"an alias points at a version number, not {version!r}")
    return version
