"""Administering users, tokens, grants and the audit log, on the database or through a server.

:func:`admin` picks the way: with ``KEEL_TRACKING_URI`` set it is :class:`RemoteAdmin`, which
calls the server's API with ``KEEL_TRACKING_TOKEN`` (the server checks the token's role and
grants); otherwise :class:`LocalAdmin`, which works on the metadata database directly. Whoever
can open the database is its superuser: that is how the first admin token is made. Local changes
are written to the audit log too, as user ``local:<login>``.
"""

from __future__ import annotations

import getpass
import shlex
import sys
from typing import Any, Protocol
from urllib.parse import quote

from keel.auth.models import (
    AuditEntry,
    AuditPage,
    Grant,
    GrantList,
    NewToken,
    Permission,
    Role,
    TokenInfo,
    TokenList,
    User,
    UserList,
)
from keel.auth.store import AuthStore
from keel.db import open_engine
from keel.errors import NotFound
from keel.settings import Settings
from keel.tracking.remote_http import HttpApi, token_of
from keel.tracking.store_base import now_ms

__all__ = ["Admin", "LocalAdmin", "RemoteAdmin", "admin"]


class Admin(Protocol):
    """What ``keel users``, ``keel tokens``, ``keel grants`` and ``keel audit`` call."""

    def close(self) -> None: ...
    def experiment_id(self, ref: str) -> int: ...
    def create_user(self, name: str) -> User: ...
    def list_users(self) -> list[User]: ...
    def set_user_disabled(self, name: str, disabled: bool) -> User: ...
    def create_token(
        self, user: str, *, role: Role, label: str = "", expires_in_days: float | None = None
    ) -> NewToken: ...
    def list_tokens(self, *, user: str | None = None) -> list[TokenInfo]: ...
    def revoke_token(self, token_id: str) -> None: ...
    def list_grants(self, experiment_id: int) -> list[Grant]: ...
    def grant(self, experiment_id: int, user: str, permission: Permission) -> Grant: ...
    def revoke_grant(self, experiment_id: int, user: str) -> None: ...
    def audit(self, **filters: Any) -> tuple[list[AuditEntry], int | None]: ...


def admin(settings: Settings | None = None) -> Admin:
    """The :class:`Admin` for these settings (remote when a tracking URI is set)."""
    settings = settings or Settings()
    if settings.tracking_uri:
        return RemoteAdmin(settings)
    return LocalAdmin(settings)


class LocalAdmin:
    """Administration on the metadata database itself (the bootstrap path)."""

    def __init__(self, settings: Settings) -> None:
        self.engine = open_engine(settings.db_url, busy_timeout=settings.sqlite_busy_timeout)
        self.store = AuthStore(self.engine)
        self.who = f"local:{_login()}"

    def close(self) -> None:
        self.engine.dispose()

    def _audit(self, action: str, *targets: str) -> None:
        self.store.record(
            {
                "at": now_ms(),
                "user_name": self.who,
                "token_id": None,
                "method": "CLI",
                "path": shlex.join(["keel", *sys.argv[1:]])[:2048],
                "action": action,
                "status": 200,
                "targets": list(targets),
                "client": "local",
            }
        )

    def experiment_id(self, ref: str) -> int:
        from keel.tracking.store import TrackingStore

        store = TrackingStore(self.engine)
        if ref.isdigit():
            return store.get_experiment(int(ref)).experiment_id
        found = store.get_experiment_by_name(ref)
        if found is None:
            raise NotFound(f"no experiment named {ref!r}", name=ref)
        return found.experiment_id

    def create_user(self, name: str) -> User:
        user = self.store.create_user(name)
        self._audit("create_user", f"user/{name}")
        return user

    def list_users(self) -> list[User]:
        return self.store.list_users()

    def set_user_disabled(self, name: str, disabled: bool) -> User:
        user = self.store.set_user_disabled(name, disabled)
        self._audit("disable_user" if disabled else "enable_user", f"user/{name}")
        return user

    def create_token(
        self, user: str, *, role: Role, label: str = "", expires_in_days: float | None = None
    ) -> NewToken:
        token = self.store.create_token(
            user, role=role, label=label, expires_in_days=expires_in_days
        )
        self._audit("create_token", f"user/{user}", f"token/{token.token_id}")
        return token

    def list_tokens(self, *, user: str | None = None) -> list[TokenInfo]:
        return self.store.list_tokens(user=user)

    def revoke_token(self, token_id: str) -> None:
        self.store.revoke_token(token_id)
        self._audit("revoke_token", f"token/{token_id}")

    def list_grants(self, experiment_id: int) -> list[Grant]:
        return self.store.list_grants(experiment_id)

    def grant(self, experiment_id: int, user: str, permission: Permission) -> Grant:
        done = self.store.grant(experiment_id, user, permission, granted_by=self.who)
        self._audit("set_grant", f"experiment/{experiment_id}", f"user/{user}")
        return done

    def revoke_grant(self, experiment_id: int, user: str) -> None:
        self.store.revoke_grant(experiment_id, user)
        self._audit("revoke_grant", f"experiment/{experiment_id}", f"user/{user}")

    def audit(self, **filters: Any) -> tuple[list[AuditEntry], int | None]:
        return self.store.audit(**filters)


class RemoteAdmin:
    """Administration through a keel server's API, as the token's user."""

    def __init__(self, settings: Settings) -> None:
        assert settings.tracking_uri
        self.api = HttpApi(settings.tracking_uri, token=token_of(settings))

    def close(self) -> None:
        self.api.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.api.request(method, path, **kwargs)
        except NotFound as exc:
            if "without authentication" in exc.message or exc.message.startswith("Not Found"):
                raise NotFound(
                    f"the keel server at {self.api.base_url} runs without authentication; "
                    "start it with keel server --auth"
                ) from None
            raise
        return None if response.status_code == 204 else response.json()

    def experiment_id(self, ref: str) -> int:
        if ref.isdigit():
            return int(ref)
        found = self.api.get_json(f"/experiments/by-name/{quote(ref, safe='/')}")
        return int(found["experiment_id"])

    def create_user(self, name: str) -> User:
        return User.model_validate(self._send("POST", "/users", json={"name": name}))

    def list_users(self) -> list[User]:
        return UserList.model_validate(self._send("GET", "/users")).users

    def set_user_disabled(self, name: str, disabled: bool) -> User:
        verb = "disable" if disabled else "enable"
        return User.model_validate(self._send("POST", f"/users/{name}/{verb}"))

    def create_token(
        self, user: str, *, role: Role, label: str = "", expires_in_days: float | None = None
    ) -> NewToken:
        body = {"user": user, "role": role.label, "label": label}
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days  # type: ignore[assignment]
        return NewToken.model_validate(self._send("POST", "/tokens", json=body, idempotent=False))

    def list_tokens(self, *, user: str | None = None) -> list[TokenInfo]:
        params = {"user": user} if user else None
        return TokenList.model_validate(self._send("GET", "/tokens", params=params)).tokens

    def revoke_token(self, token_id: str) -> None:
        self._send("DELETE", f"/tokens/{token_id}")

    def list_grants(self, experiment_id: int) -> list[Grant]:
        return GrantList.model_validate(
            self._send("GET", f"/experiments/{experiment_id}/grants")
        ).grants

    def grant(self, experiment_id: int, user: str, permission: Permission) -> Grant:
        return Grant.model_validate(
            self._send(
                "PUT",
                f"/experiments/{experiment_id}/grants/{user}",
                json={"permission": permission.label},
            )
        )

    def revoke_grant(self, experiment_id: int, user: str) -> None:
        self._send("DELETE", f"/experiments/{experiment_id}/grants/{user}")

    def audit(self, **filters: Any) -> tuple[list[AuditEntry], int | None]:
        params = {k: v for k, v in filters.items() if v is not None}
        page = AuditPage.model_validate(self._send("GET", "/audit", params=params))
        return page.entries, page.next_before_id


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
