"""Deployments over HTTP: :class:`RemoteDeployments` talks to a ``keel server``.

It has the public methods of :class:`keel.serving.deployments.api.Deployments` and returns the
same entities, read back from the server's answers (:mod:`keel.serving.deployments.routes`).
A change is sent as what the caller asked (``{"weights": {"churn@challenger": 25}}``), not as
a whole configuration, so the server builds it on its current revision (no lost update between
two callers). Changes are not retried once sent: a retry could append a second revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from keel.closing import Closing
from keel.errors import InvalidInput
from keel.models.wire import ACTOR_HEADER
from keel.serving.deployments.models import (
    CreateRequest,
    Deployment,
    DeploymentConfig,
    DeploymentDeleted,
    DeploymentList,
    PromoteRequest,
    Promotion,
    Revision,
    RevisionList,
    RollbackRequest,
    ShadowChange,
    TrafficSet,
    check_deployment_name,
)
from keel.settings import Settings
from keel.tracking.remote_http import HttpApi, token_of
from keel.tracking.source import current_user

__all__ = ["RemoteDeployments"]

_Body = TypeVar("_Body", bound=BaseModel)


class RemoteDeployments(Closing):
    """The deployments of the keel server ``settings.tracking_uri`` names.

    Args:
        settings: the server's URI (``KEEL_TRACKING_URI``) and token (``KEEL_TRACKING_TOKEN``).
        actor: who makes the changes, sent to a server without ``--auth`` (default the OS
            user); a server with ``--auth`` records the token's user instead.

    Raises:
        InvalidInput: ``settings`` names no tracking server.

    Example:
        >>> with RemoteDeployments(Settings(tracking_uri="http://127.0.0.1:5000")) as remote:
        ...     remote.set_traffic("churn", {"churn@challenger": 25})
    """

    def __init__(self, settings: Settings | None = None, *, actor: str | None = None) -> None:
        self.settings = settings or Settings()
        if not self.settings.tracking_uri:
            raise InvalidInput("RemoteDeployments needs settings.tracking_uri (KEEL_TRACKING_URI)")
        self.actor = actor or current_user()
        self._api = HttpApi(self.settings.tracking_uri, token=token_of(self.settings))
        self._headers = {ACTOR_HEADER: quote(self.actor, safe="")}

    def __repr__(self) -> str:
        return f"<RemoteDeployments {self._api.base_url}>"

    def close(self) -> None:
        """Close the connection pool."""
        self._api.close()

    # -- reading ----------------------------------------------------------------------------

    def get(self, name: str) -> Deployment:
        """See :func:`keel.serving.deployments.api.get`."""
        return Deployment.model_validate(self._get(_path(name)))

    def list_deployments(self) -> list[Deployment]:
        """See :func:`keel.serving.deployments.api.list_deployments`."""
        return DeploymentList.model_validate(self._get("/deployments")).deployments

    def history(self, name: str) -> list[Revision]:
        """See :func:`keel.serving.deployments.api.history`."""
        return RevisionList.model_validate(self._get(f"{_path(name)}/revisions")).revisions

    def get_revision(self, name: str, number: int) -> Revision:
        """See :func:`keel.serving.deployments.api.get_revision`."""
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise InvalidInput(f"a revision is a number from 1, not {number!r}")
        return Revision.model_validate(self._get(f"{_path(name)}/revisions/{number}"))

    # -- changing ---------------------------------------------------------------------------

    def create(self, name: str, config: DeploymentConfig, *, note: str | None = None) -> Deployment:
        """See :func:`keel.serving.deployments.api.create`."""
        body = _body(CreateRequest, name=check_deployment_name(name), config=config, note=note)
        return Deployment.model_validate(self._send("POST", "/deployments", body))

    def set_traffic(
        self, name: str, weights: Mapping[str, float], *, note: str | None = None
    ) -> Deployment:
        """See :func:`keel.serving.deployments.api.set_traffic`."""
        body = _body(TrafficSet, weights=dict(weights), note=note)
        return Deployment.model_validate(self._send("PUT", f"{_path(name)}/traffic", body))

    def add_shadow(self, name: str, ref: str, *, note: str | None = None) -> Deployment:
        """See :func:`keel.serving.deployments.api.add_shadow`."""
        body = _body(ShadowChange, ref=ref, note=note)
        return Deployment.model_validate(self._send("POST", f"{_path(name)}/shadows", body))

    def remove_shadow(self, name: str, ref: str, *, note: str | None = None) -> Deployment:
        """See :func:`keel.serving.deployments.api.remove_shadow`."""
        body = _body(ShadowChange, ref=ref, note=note)
        path = f"{_path(name)}/shadows/remove"
        return Deployment.model_validate(self._send("POST", path, body))

    def promote(
        self,
        name: str,
        arm: str | None = None,
        *,
        move_alias: bool = False,
        note: str | None = None,
    ) -> Promotion:
        """See :func:`keel.serving.deployments.api.promote`."""
        body = _body(PromoteRequest, arm=arm, move_alias=move_alias, note=note)
        return Promotion.model_validate(self._send("POST", f"{_path(name)}/promote", body))

    def rollback(self, name: str, *, to: int | None = None, note: str | None = None) -> Deployment:
        """See :func:`keel.serving.deployments.api.rollback`."""
        body = _body(RollbackRequest, to=to, note=note)
        return Deployment.model_validate(self._send("POST", f"{_path(name)}/rollback", body))

    def delete(self, name: str) -> int:
        """See :func:`keel.serving.deployments.api.delete`."""
        response = self._api.request("DELETE", _path(name), headers=self._headers, idempotent=False)
        return DeploymentDeleted.model_validate(response.json()).revision

    # -- helpers ----------------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        return self._api.request("GET", path).json()

    def _send(self, method: str, path: str, body: BaseModel) -> Any:
        response = self._api.request(
            method,
            path,
            json=body.model_dump(mode="json", exclude_none=True),
            headers=self._headers,
            idempotent=False,
        )
        return response.json()


def _path(name: str) -> str:
    return f"/deployments/{quote(check_deployment_name(name), safe='')}"


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
