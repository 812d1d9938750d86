"""Users, tokens, grants and the audit log in the metadata database (revision 0005).

A token reads ``keel_<token_id>_<secret>``. The ``token_id`` (public, 12 hex digits) finds the
row; the secret (32 random bytes) is checked against ``sha256(salt + secret)`` in constant time.
The secret is never stored. A fast hash is right here, unlike for passwords: a 256-bit random
secret cannot be guessed, so slowing each check would only slow every request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from keel.auth.models import (
    AuditEntry,
    Grant,
    NewToken,
    Permission,
    Principal,
    Role,
    TokenInfo,
    User,
    valid_user_name,
)
from keel.db import schema
from keel.errors import AlreadyExists, InvalidInput, NotFound, Unauthenticated
from keel.tracking.store_base import IN_CHUNK, SqlStore, now_ms

__all__ = ["TOKEN_PREFIX", "AuditRecord", "AuthStore"]

TOKEN_PREFIX = "keel_"
_TOKEN_ID = re.compile(r"^[0-9a-f]{12}$")
DAY_MS = 86_400_000
_users, _tokens, _grants, _audit = (
    schema.users,
    schema.api_tokens,
    schema.experiment_grants,
    schema.audit_log,
)


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}{secret}".encode()).hexdigest()


AuditRecord = dict[str, Any]
"""One audit row to insert: at, user_name, token_id, method, path, action, status, targets,
client."""


class AuthStore(SqlStore):
    """Authentication and authorization data over the metadata database's engine."""

    # -- users ----------------------------------------------------------------------------
    def create_user(self, name: str) -> User:
        if not valid_user_name(name):
            raise InvalidInput(
                f"invalid user name {name!r}: use letters, digits and . _ @ - (at most 64, "
                "starting with a letter or digit)",
                name=name,
            )
        at = now_ms()
        try:
            with self._write() as conn:
                conn.execute(_users.insert().values(name=name, disabled=False, created_at=at))
                conn.commit()
        except IntegrityError:
            raise AlreadyExists(f"user {name!r} already exists", name=name) from None
        return User(name=name, disabled=False, created_at=at)

    def list_users(self) -> list[User]:
        with self._read() as conn:
            rows = conn.execute(
                select(_users.c.name, _users.c.disabled, _users.c.created_at).order_by(
                    _users.c.name
                )
            )
            return [User(name=r.name, disabled=r.disabled, created_at=r.created_at) for r in rows]

    def set_user_disabled(self, name: str, disabled: bool) -> User:
        """Disable a user (every token of theirs stops working at once) or enable them again."""
        with self._write() as conn:
            created_at = conn.execute(
                update(_users)
                .where(_users.c.name == name)
                .values(disabled=disabled)
                .returning(_users.c.created_at)
            ).scalar()
            conn.commit()
        if created_at is None:
            raise NotFound(f"no user named {name!r}; see keel users list", name=name)
        return User(name=name, disabled=disabled, created_at=created_at)

    def _user_id(self, conn: Any, name: str) -> int:
        user_id = conn.execute(select(_users.c.user_id).where(_users.c.name == name)).scalar()
        if user_id is None:
            raise NotFound(
                f"no user named {name!r}; create it first: keel users create {name}", name=name
            )
        return int(user_id)

    # -- tokens ---------------------------------------------------------------------------
    def create_token(
        self,
        user: str,
        *,
        role: Role,
        label: str = "",
        expires_in_days: float | None = None,
    ) -> NewToken:
        """Make a token for ``user``; the answer holds the secret, which is not kept."""
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        at = now_ms()
        expires_at = at + round(expires_in_days * DAY_MS) if expires_in_days else None
        with self._write() as conn:
            user_id = self._user_id(conn, user)
            conn.execute(
                _tokens.insert().values(
                    token_id=token_id,
                    user_id=user_id,
                    role=role.label,
                    label=label,
                    salt=salt,
                    digest=_digest(salt, secret),
                    created_at=at,
                    expires_at=expires_at,
                    revoked_at=None,
                )
            )
            conn.commit()
        return NewToken(
            token_id=token_id,
            user=user,
            role=role.label,
            label=label,
            created_at=at,
            expires_at=expires_at,
            token=f"{TOKEN_PREFIX}{token_id}_{secret}",
        )

    def list_tokens(self, *, user: str | None = None) -> list[TokenInfo]:
        query = (
            select(_tokens, _users.c.name)
            .join(_users, _users.c.user_id == _tokens.c.user_id)
            .order_by(_tokens.c.created_at, _tokens.c.token_id)
        )
        if user is not None:
            query = query.where(_users.c.name == user)
        with self._read() as conn:
            return [
                TokenInfo(
                    token_id=r.token_id,
                    user=r.name,
                    role=r.role,
                    label=r.label,
                    created_at=r.created_at,
                    expires_at=r.expires_at,
                    revoked_at=r.revoked_at,
                )
                for r in conn.execute(query)
            ]

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token (revoking it again changes nothing)."""
        with self._write() as conn:
            exists = conn.execute(
                select(_tokens.c.token_id).where(_tokens.c.token_id == token_id)
            ).scalar()
            conn.execute(
                update(_tokens)
                .where(_tokens.c.token_id == token_id, _tokens.c.revoked_at.is_(None))
                .values(revoked_at=now_ms())
            )
            conn.commit()
        if exists is None:
            raise NotFound(f"no token {token_id!r}; see keel tokens list", token_id=token_id)

    def authenticate(self, token: str, *, user: str | None = None) -> Principal:
        """The principal ``token`` stands for; ``user``, when given (HTTP basic), must match.

        Raises:
            Unauthenticated: malformed, unknown, wrong, revoked or expired token; disabled user.
        """
        parts = token.strip().split("_", 2)
        if len(parts) != 3 or f"{parts[0]}_" != TOKEN_PREFIX or not _TOKEN_ID.match(parts[1]):
            raise Unauthenticated(
                "the token is malformed: Keel tokens look like keel_<id>_<secret> "
                "(make one with: keel tokens create --user NAME --role editor)"
            )
        token_id, secret = parts[1], parts[2]
        with self._read() as conn:
            row = conn.execute(
                select(_tokens, _users.c.name, _users.c.disabled)
                .join(_users, _users.c.user_id == _tokens.c.user_id)
                .where(_tokens.c.token_id == token_id)
            ).first()
        if row is None or not hmac.compare_digest(row.digest, _digest(row.salt, secret)):
            raise Unauthenticated("the token is not valid; check it or make a new one")
        if user is not None and user != row.name:
            raise Unauthenticated(f"the token does not belong to user {user!r}")
        if row.revoked_at is not None:
            raise Unauthenticated(f"token {token_id} was revoked; ask an admin for a new one")
        if row.expires_at is not None and row.expires_at <= now_ms():
            raise Unauthenticated(f"token {token_id} has expired; ask an admin for a new one")
        if row.disabled:
            raise Unauthenticated(f"user {row.name!r} is disabled")
        return Principal(
            user_id=row.user_id, user=row.name, role=Role.parse(row.role), token_id=token_id
        )

    # -- grants ---------------------------------------------------------------------------
    def grant(
        self, experiment_id: int, user: str, permission: Permission, *, granted_by: str
    ) -> Grant:
        """Give ``user`` ``permission`` on an experiment (replacing what they had)."""
        at = now_ms()
        with self._write() as conn:
            user_id = self._user_id(conn, user)
            exists = conn.execute(
                select(schema.experiments.c.experiment_id).where(
                    schema.experiments.c.experiment_id == experiment_id
                )
            ).scalar()
            if exists is None:
                raise NotFound(
                    f"no experiment with id {experiment_id}", experiment_id=experiment_id
                )
            values = {
                "experiment_id": experiment_id,
                "user_id": user_id,
                "permission": permission.label,
                "granted_by": granted_by,
                "granted_at": at,
            }
            conn.execute(self._upsert(_grants, key=("experiment_id", "user_id")).values(**values))
            conn.commit()
        return Grant(
            experiment_id=experiment_id,
            user=user,
            permission=permission.label,
            granted_by=granted_by,
            granted_at=at,
        )

    def revoke_grant(self, experiment_id: int, user: str) -> None:
        with self._write() as conn:
            user_id = self._user_id(conn, user)
            done = conn.execute(
                delete(_grants).where(
                    _grants.c.experiment_id == experiment_id, _grants.c.user_id == user_id
                )
            )
            conn.commit()
        if not done.rowcount:
            raise NotFound(
                f"user {user!r} has no grant on experiment {experiment_id}",
                experiment_id=experiment_id,
                user=user,
            )

    def list_grants(self, experiment_id: int) -> list[Grant]:
        with self._read() as conn:
            rows = conn.execute(
                select(_grants, _users.c.name)
                .join(_users, _users.c.user_id == _grants.c.user_id)
                .where(_grants.c.experiment_id == experiment_id)
                .order_by(_users.c.name)
            )
            return [
                Grant(
                    experiment_id=r.experiment_id,
                    user=r.name,
                    permission=r.permission,
                    granted_by=r.granted_by,
                    granted_at=r.granted_at,
                )
                for r in rows
            ]

    def permission(self, user_id: int, experiment_id: int) -> Permission | None:
        with self._read() as conn:
            text = conn.execute(
                select(_grants.c.permission).where(
                    _grants.c.user_id == user_id, _grants.c.experiment_id == experiment_id
                )
            ).scalar()
        return None if text is None else Permission.parse(text)

    def visible_experiments(self, user_id: int) -> set[int]:
        """The experiments ``user_id`` holds any grant on."""
        with self._read() as conn:
            return set(
                conn.execute(
                    select(_grants.c.experiment_id).where(_grants.c.user_id == user_id)
                ).scalars()
            )

    def run_permissions(
        self, user_id: int, run_ids: Iterable[str]
    ) -> dict[str, tuple[int, Permission | None]]:
        """Each existing run's experiment and the user's permission on it (None: no grant)."""
        runs = schema.runs
        found: dict[str, tuple[int, Permission | None]] = {}
        ids = list(dict.fromkeys(run_ids))
        with self._read() as conn:
            for start in range(0, len(ids), IN_CHUNK):
                rows = conn.execute(
                    select(runs.c.run_id, runs.c.experiment_id, _grants.c.permission)
                    .select_from(
                        runs.outerjoin(
                            _grants,
                            and_(
                                _grants.c.experiment_id == runs.c.experiment_id,
                                _grants.c.user_id == user_id,
                            ),
                        )
                    )
                    .where(runs.c.run_id.in_(ids[start : start + IN_CHUNK]))
                )
                for r in rows:
                    grant = None if r.permission is None else Permission.parse(r.permission)
                    found[r.run_id] = (r.experiment_id, grant)
        return found

    # -- the audit log --------------------------------------------------------------------
    def record(self, entry: AuditRecord) -> None:
        row = {**entry, "targets": json.dumps(entry.get("targets", []))}
        row["path"] = str(row["path"])[:2048]
        with self._write() as conn:
            conn.execute(_audit.insert().values(**row))
            conn.commit()

    def audit(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: int | None = None,
        until: int | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> tuple[list[AuditEntry], int | None]:
        """Audit entries newest first, with the ``before_id`` of the next page (or None).

        Args:
            target: an experiment or run, as ``experiment/3`` or ``run/<id>``.
            since, until: milliseconds since the epoch (since inclusive, until exclusive).
        """
        query = select(_audit).order_by(_audit.c.id.desc()).limit(limit + 1)
        if user is not None:
            query = query.where(_audit.c.user_name == user)
        if action is not None:
            query = query.where(_audit.c.action == action)
        if target is not None:
            query = query.where(_audit.c.targets.contains(json.dumps(target), autoescape=True))
        if since is not None:
            query = query.where(_audit.c.at >= since)
        if until is not None:
            query = query.where(_audit.c.at < until)
        if before_id is not None:
            query = query.where(_audit.c.id < before_id)
        with self._read() as conn:
            rows = conn.execute(query).all()
        entries = [
            AuditEntry(
                id=r.id,
                at=r.at,
                user=r.user_name,
                token_id=r.token_id,
                method=r.method,
                path=r.path,
                action=r.action,
                status=r.status,
                targets=json.loads(r.targets),
                client=r.client,
            )
            for r in rows[:limit]
        ]
        return entries, (entries[-1].id if len(rows) > limit else None)

    def count_admin_tokens(self) -> int:
        """Live admin tokens of enabled users (0 means nobody can administer over HTTP)."""
        at = now_ms()
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(_tokens.join(_users, _users.c.user_id == _tokens.c.user_id))
                    .where(
                        _tokens.c.role == Role.ADMIN.label,
                        _tokens.c.revoked_at.is_(None),
                        (_tokens.c.expires_at.is_(None)) | (_tokens.c.expires_at > at),
                        _users.c.disabled.is_(False),
                    )
                ).scalar_one()
            )
