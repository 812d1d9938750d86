"""Who may do what: roles, per-experiment permissions, users, tokens, grants, audit entries.

A token carries a **role** (what kind of thing its holder may do anywhere); a **grant** gives one
user a **permission** on one experiment (which experiments they may do it to). Both must allow
an action: a viewer token cannot write even to an experiment its user owns.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field

from keel.errors import InvalidInput

__all__ = [
    "USER_NAME_PATTERN",
    "AuditEntry",
    "AuditPage",
    "Grant",
    "GrantList",
    "GrantSet",
    "NewToken",
    "Permission",
    "Principal",
    "Role",
    "TokenCreate",
    "TokenInfo",
    "TokenList",
    "User",
    "UserCreate",
    "UserList",
    "UserName",
]

USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
_USER_NAME = re.compile(USER_NAME_PATTERN)
UserName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=USER_NAME_PATTERN,
        description="letters, digits and . _ @ - (at most 64, starting with a letter or digit)",
    ),
]


class _Level(enum.IntEnum):
    """An ordered choice spelled in lower case on the wire and the command line."""

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Self:
        try:
            return cls[text.upper()]
        except KeyError:
            what = cls.__name__.lower()
            choices = ", ".join(member.label for member in cls)
            raise InvalidInput(
                f"unknown {what} {text!r}; choose one of {choices}", **{what: text}
            ) from None


class Role(_Level):
    """What a token may do anywhere. Ordered: a higher role can do all a lower one can."""

    VIEWER = 1  # read the experiments its user is granted
    EDITOR = 2  # also write to them, and create experiments (becoming their owner)
    ADMIN = 3  # everything: every experiment, users, tokens, grants, the audit log


class Permission(_Level):
    """What a grant allows on one experiment. Ordered like :class:`Role`."""

    READ = 1  # see it, its runs, metrics and artifacts
    WRITE = 2  # also log to it and create runs in it
    OWNER = 3  # also rename, delete and restore it, and grant others read or write


def valid_user_name(name: str) -> bool:
    return bool(_USER_NAME.fullmatch(name))  # match() would let "alice\n" through ($)


class Principal(BaseModel):
    """The authenticated caller of one request."""

    model_config = ConfigDict(frozen=True)

    user_id: int
    user: str
    role: Role
    token_id: str

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


# -- the wire format (/api/v1/users, /tokens, /experiments/{id}/grants, /audit) -----------------
_REQUEST = ConfigDict(extra="forbid")
RoleText = Annotated[str, Field(pattern="^(viewer|editor|admin)$")]
PermissionText = Annotated[str, Field(pattern="^(read|write|owner)$")]


class User(BaseModel):
    name: str
    disabled: bool
    created_at: int = Field(description="milliseconds since the epoch")


class UserList(BaseModel):
    users: list[User]


class UserCreate(BaseModel):
    model_config = _REQUEST

    name: UserName


class TokenInfo(BaseModel):
    """A token as listed: never its secret, which exists only in the answer that created it."""

    token_id: str
    user: str
    role: RoleText
    label: str
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None


class NewToken(TokenInfo):
    token: str = Field(description="the secret; shown once, stored only as a salted hash")


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class TokenCreate(BaseModel):
    model_config = _REQUEST

    user: UserName
    role: RoleText = "editor"
    label: Annotated[str, Field(max_length=128, pattern=r"^[^\x00]*$")] = ""
    expires_in_days: Annotated[float, Field(gt=0, le=36_500)] | None = None


class Grant(BaseModel):
    experiment_id: int
    user: str
    permission: PermissionText
    granted_by: str
    granted_at: int


class GrantList(BaseModel):
    grants: list[Grant]


class GrantSet(BaseModel):
    model_config = _REQUEST

    permission: PermissionText


class AuditEntry(BaseModel):
    """One write request a server with authentication answered."""

    id: int
    at: int = Field(description="milliseconds since the epoch")
    user: str | None = Field(description="None when the request carried no valid credentials")
    token_id: str | None
    method: str
    path: str
    action: str = Field(description="the operation: create_run, log_metrics, grant ...")
    status: int
    targets: list[str] = Field(description='what it touched: "experiment/3", "run/<id>"')
    client: str


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_before_id: int | None = Field(
        default=None, description="pass as before_id for the next (older) page"
    )
