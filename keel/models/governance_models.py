"""Governance entities: a model's policy, requests to move protected aliases, checks, cards.

A :class:`Policy` protects some of a model's aliases (``production``...): moving one records an
:class:`AliasRequest` instead, which an approver other than the requester approves (the alias
moves, if every :class:`CheckResult` passes) or rejects. A :class:`ModelCard` is a version's
Markdown description, generated from its lineage and metrics and then edited by people.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ADMINS",
    "AliasRequest",
    "CheckResult",
    "ModelCard",
    "Policy",
    "RequestState",
    "approvers_text",
]

ADMINS = "@admin"
"""An approvers entry meaning any user with the admin role (written ``admins`` or ``@admin``)."""

RequestState = Literal["pending", "approved", "rejected", "cancelled"]


class Policy(BaseModel):
    """What guards a model's aliases."""

    model_config = ConfigDict(frozen=True)

    name: str
    protect: list[str] = Field(description="aliases that move only through an approved request")
    approvers: list[str] = Field(description=f"user names, or {ADMINS} for any admin")
    requires: list[str] = Field(
        default_factory=list, description="checks the version must pass, e.g. metrics.rmse < 60"
    )
    require_card: bool = Field(default=False, description="the version must have a model card")
    updated_at: datetime
    updated_by: str

    @property
    def approvers_text(self) -> str:
        """``admins``, ``ana, bo`` or ``admins or ana``."""
        return approvers_text(self.approvers)


class CheckResult(BaseModel):
    """One check of a version against a policy, and what it found."""

    model_config = ConfigDict(frozen=True)

    check: str = Field(description="metrics.rmse < 60, or card")
    passed: bool
    found: str = Field(description="what the version has, e.g. metrics.rmse = 52.1")

    def __str__(self) -> str:
        return f"{self.check} ({'passes' if self.passed else 'fails'}: {self.found})"


class AliasRequest(BaseModel):
    """A pending (or decided) move of a protected alias."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    alias: str
    version: int
    state: RequestState
    requested_by: str
    reason: str | None = None
    created_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    checks: list[CheckResult] = Field(
        default_factory=list, description="the checks when requested, or when decided"
    )
    approvers: list[str] = Field(
        default_factory=list, description="who may approve it (the policy's approvers, now)"
    )

    @property
    def summary(self) -> str:
        """``request #4: moving production to 7 needs approval by admins; checks: ...``."""
        checks = "; ".join(str(c) for c in self.checks) or "none"
        who = approvers_text(self.approvers) or "an approver"
        if self.state == "pending":
            return (
                f"request #{self.id}: moving {self.alias} to {self.version} needs approval by "
                f"{who}; checks: {checks}"
            )
        return (
            f"request #{self.id}: moving {self.alias} to {self.version} was {self.state} by "
            f"{self.decided_by}; checks: {checks}"
        )


class ModelCard(BaseModel):
    """A version's card: Markdown, generated, then editable."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    markdown: str
    generated: bool = Field(description="False once a person edited it")
    updated_at: datetime
    updated_by: str


def approvers_text(approvers: list[str]) -> str:
    """How people read a list of approvers: ``admins`` for the admin role, names as they are."""
    return " or ".join(
        ", ".join(group)
        for group in (
            ["admins"] if ADMINS in approvers else [],
            [a for a in approvers if a != ADMINS],
        )
        if group
    )
