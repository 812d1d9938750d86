"""The registry's REST wire format under ``/api/v1``: request bodies and list envelopes.

Entities travel as they are (:class:`~keel.models.models.RegisteredModel`,
:class:`~keel.models.models.ModelVersion`, :class:`~keel.models.models.AuditEvent`,
:class:`~keel.models.compare.ModelDiff`, :class:`~keel.models.lineage.ModelLineage`); the
models here wrap lists and carry what a request sends. The routes (:mod:`keel.models.routes`)
and the remote registry (:mod:`keel.models.remote`) both use them, so the format is written once.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from keel.models.governance_models import AliasRequest
from keel.models.models import AuditEvent, ModelVersion, RegisteredModel

__all__ = [
    "ACTOR_HEADER",
    "MAX_TAG_KEY",
    "AliasDeleted",
    "AliasSet",
    "CardEdit",
    "CardGenerate",
    "Decision",
    "DescriptionSet",
    "EventList",
    "ModelList",
    "PolicySet",
    "RegisterRequest",
    "RequestList",
    "TagSet",
    "VersionList",
]

ACTOR_HEADER = "Keel-User"
"""Who makes a change, as a caller of a server without ``--auth`` claims it, percent-encoded
(``j%C3%B6rg``); with ``--auth`` the token's user is recorded and this header is ignored."""

MAX_TAG_KEY = 250
_REQUEST = ConfigDict(extra="forbid")
Text = Annotated[str, Field(pattern=r"^[^\x00]*$")]
TagKey = Annotated[str, Field(min_length=1, max_length=MAX_TAG_KEY, pattern=r"^[^\x00]*$")]


class RegisterRequest(BaseModel):
    """``POST /models/{name}/versions``: register a run's logged model as the next version."""

    model_config = _REQUEST

    uri: Annotated[str, Field(min_length=1, max_length=2048, description="runs:/RUN_ID/PATH")]
    description: Annotated[Text, Field(max_length=65_536)] = ""
    tags: dict[TagKey, Text] = Field(default_factory=dict)


class AliasSet(BaseModel):
    """``PUT /models/{name}/aliases/{alias}``: point the alias at ``version``."""

    model_config = _REQUEST

    version: Annotated[int, Field(ge=1, le=2**31 - 1)]
    reason: Annotated[Text, Field(max_length=4096)] | None = None


class AliasDeleted(BaseModel):
    """What ``DELETE /models/{name}/aliases/{alias}`` removed."""

    name: str
    alias: str
    version: int = Field(description="the version the alias pointed at")


class TagSet(BaseModel):
    """``PUT .../tags/{key}``."""

    model_config = _REQUEST

    value: Annotated[Text, Field(max_length=65_536)]


class DescriptionSet(BaseModel):
    """``PUT .../description``."""

    model_config = _REQUEST

    description: Annotated[Text, Field(max_length=65_536)]


class PolicySet(BaseModel):
    """``PUT /models/{name}/policy``: set (replace) the model's policy (admin only)."""

    model_config = _REQUEST

    protect: Annotated[
        list[Annotated[str, Field(max_length=64)]],
        Field(min_length=1, max_length=100, description="aliases that move only when approved"),
    ]
    approvers: Annotated[
        list[Annotated[str, Field(max_length=1024)]],
        Field(min_length=1, max_length=100, description="admins (any admin) and/or user names"),
    ]
    requires: Annotated[
        list[Annotated[Text, Field(max_length=1024)]],
        Field(max_length=100, description="checks, e.g. metrics.rmse < 60"),
    ] = Field(default_factory=list)
    require_card: bool = False


class Decision(BaseModel):
    """``POST .../requests/{id}/approve`` or ``.../reject``: why (a rejection needs it)."""

    model_config = _REQUEST

    reason: Annotated[Text, Field(max_length=4096)] | None = None


class CardEdit(BaseModel):
    """``PUT .../versions/{version}/card``: the new card."""

    model_config = _REQUEST

    markdown: Annotated[Text, Field(max_length=1_048_576)]


class CardGenerate(BaseModel):
    """``POST .../versions/{version}/card/generate``."""

    model_config = _REQUEST

    replace: bool = Field(default=False, description="replace a card a person edited")


class RequestList(BaseModel):
    requests: list[AliasRequest]


class ModelList(BaseModel):
    models: list[RegisteredModel]


class VersionList(BaseModel):
    versions: list[ModelVersion]


class EventList(BaseModel):
    events: list[AuditEvent]
