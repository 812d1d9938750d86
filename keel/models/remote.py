"""The model registry over HTTP: :class:`RemoteRegistry` talks to a ``keel server``.

It has the public methods of :class:`keel.models.api.Registry` and returns the same entities,
read back from the server's answers (:mod:`keel.models.routes`). Requests go through
:class:`keel.tracking.remote_http.HttpApi`: the token from ``KEEL_TRACKING_TOKEN``, retries with
backoff on connection errors and 5xx, and the server's error answers raised as the same
:class:`keel.errors.KeelError` subclasses a local registry raises. Registering sends only the
URI: the run's artifacts are on the server, which checks the folder itself.

Governance travels the same way (:mod:`keel.models.routes_governance`): policies, requests to
move protected aliases, approvals, rejections and model cards. A server with ``--auth`` decides
who acts (the token's user and role), so there the two-person rule holds between people.

Loading a registered model (``keel.models.load("models:/...")``) is local for now: it reads the
artifact store by the version's digest, which a remote caller does not have.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from keel.closing import Closing
from keel.errors import InvalidInput
from keel.models.compare import ModelDiff
from keel.models.governance_models import AliasRequest, ModelCard, Policy
from keel.models.lineage import ModelLineage
from keel.models.models import AuditEvent, ModelVersion, RegisteredModel
from keel.models.uris import LATEST, check_alias, check_model_name, parse_version_ref
from keel.models.wire import (
    ACTOR_HEADER,
    AliasDeleted,
    AliasSet,
    CardEdit,
    CardGenerate,
    Decision,
    DescriptionSet,
    EventList,
    ModelList,
    PolicySet,
    RegisterRequest,
    RequestList,
    TagSet,
    VersionList,
)
from keel.settings import Settings
from keel.tracking.remote_http import HttpApi, token_of
from keel.tracking.source import current_user

__all__ = ["RemoteRegistry"]

_Body = TypeVar("_Body", bound=BaseModel)


def _segment(text: str) -> str:
    return quote(text, safe="")


class RemoteRegistry(Closing):
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
    ) -> ModelVersion | AliasRequest:
        """See :func:`keel.models.api.set_alias`: a protected alias does not move, and the
        request made instead is returned (the server answers 202). Not retried once sent: a
        second try could record a second request."""
        number = _number(version)
        path = f"{self._model_path(name)}/aliases/{_segment(check_alias(alias))}"
        body = AliasSet(version=number, reason=reason)
        response = self._request("PUT", path, body=body, idempotent=False)
        if response.status_code == 202:
            return AliasRequest.model_validate(response.json())
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

    # -- governance (keel.models.governance has the module functions) -----------------------

    def get_policy(self, name: str) -> Policy | None:
        """See :func:`keel.models.governance.get_policy`."""
        found = self._get(f"{self._model_path(name)}/policy")
        return None if found is None else Policy.model_validate(found)

    def set_policy(
        self,
        name: str,
        *,
        protect: list[str],
        approvers: list[str],
        requires: list[str] | None = None,
        require_card: bool = False,
    ) -> Policy:
        """See :func:`keel.models.governance.set_policy` (the server's token must be admin)."""
        if not protect:
            raise InvalidInput("a policy protects at least one alias (--protect production)")
        body = _body(
            PolicySet,
            protect=protect,
            approvers=approvers,
            requires=requires or [],
            require_card=require_card,
        )
        found = self._write("PUT", f"{self._model_path(name)}/policy", body=body)
        return Policy.model_validate(found)

    def clear_policy(self, name: str) -> Policy:
        """See :func:`keel.models.governance.clear_policy`."""
        path = f"{self._model_path(name)}/policy"
        return Policy.model_validate(self._write("DELETE", path, idempotent=False))

    def requests(self, name: str, *, pending_only: bool = True) -> list[AliasRequest]:
        """See :func:`keel.models.governance.list_requests`."""
        path = f"{self._model_path(name)}/requests"
        found = self._get(path, all=None if pending_only else "true")
        return RequestList.model_validate(found).requests

    def approve(self, name: str, request_id: int, *, reason: str | None = None) -> AliasRequest:
        """See :func:`keel.models.governance.approve`. Not retried once sent."""
        path = f"{self._request_path(name, request_id)}/approve"
        body = _body(Decision, reason=reason)
        return AliasRequest.model_validate(self._write("POST", path, body=body, idempotent=False))

    def reject(self, name: str, request_id: int, *, reason: str) -> AliasRequest:
        """See :func:`keel.models.governance.reject`. Not retried once sent."""
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("a rejection needs a reason (--reason)")
        path = f"{self._request_path(name, request_id)}/reject"
        body = _body(Decision, reason=reason)
        return AliasRequest.model_validate(self._write("POST", path, body=body, idempotent=False))

    def card(self, ref: str | ModelVersion) -> ModelCard:
        """See :func:`keel.models.governance.get_card`."""
        return ModelCard.model_validate(self._get(self._card_path(ref)))

    def generate_card(self, ref: str | ModelVersion, *, replace: bool = False) -> ModelCard:
        """See :func:`keel.models.governance.generate_card`."""
        path = f"{self._card_path(ref)}/generate"
        body = CardGenerate(replace=replace)
        return ModelCard.model_validate(self._write("POST", path, body=body, idempotent=False))

    def edit_card(self, ref: str | ModelVersion, markdown: str) -> ModelCard:
        """See :func:`keel.models.governance.edit_card`."""
        if not isinstance(markdown, str) or not markdown.strip():
            raise InvalidInput("a model card is non-empty Markdown")
        body = _body(CardEdit, markdown=markdown)
        return ModelCard.model_validate(self._write("PUT", self._card_path(ref), body=body))

    def _request_path(self, name: str, request_id: int) -> str:
        if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 1:
            raise InvalidInput(f"a request is a number from 1, not {request_id!r}")
        return f"{self._model_path(name)}/requests/{request_id}"

    def _card_path(self, ref: str | ModelVersion) -> str:
        if isinstance(ref, ModelVersion):
            name, selector = ref.name, str(ref.version)
        else:
            parsed = parse_version_ref(ref)
            name, selector = parsed.name, str(parsed.selector)
        return f"{self._model_path(name)}/versions/{_segment(selector)}/card"

    # -- diff and lineage -------------------------------------------------------------------

    def diff(self, left: str | ModelVersion, right: str | ModelVersion) -> ModelDiff:
        """See :func:`keel.models.api.diff`."""
        found = self._get("/model-versions/diff", left=_ref(left), right=_ref(right))
        return ModelDiff.model_validate(found)

    def lineage(self, uri: str | ModelVersion) -> ModelLineage:
        """See :func:`keel.models.api.lineage`."""
        return ModelLineage.model_validate(self._get("/model-versions/lineage", uri=_ref(uri)))


def _body(model: type[_Body], **fields: Any) -> _Body:
    """A request body, checked here: what the server would refuse as malformed is the same
    InvalidInput before anything is sent."""
    try:
        return model(**fields)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()
        )
        raise InvalidInput(f"invalid {model.__name__}: {problems}") from None


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
