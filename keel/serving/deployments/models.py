"""Deployment entities, their wire format, and the pure rules that change a configuration.

A deployment is a name and an append-only history of :class:`Revision` s; each revision holds a
whole :class:`DeploymentConfig`: the primary arms (model versions with traffic weights summing
to 100%) and the shadows (versions that get a copy of traffic, logged, never returned). Arms
name registered versions as ``NAME@alias`` or ``NAME/VERSION``; an alias is resolved by the
server that serves the deployment, and again whenever it moves.

The changes (:meth:`DeploymentConfig.with_traffic`, :meth:`~DeploymentConfig.promoted`, ...)
are pure functions here, so the local store, the server and the tests apply the same rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from keel.errors import InvalidInput
from keel.models.governance_models import AliasRequest
from keel.models.models import MODEL_NAME_PATTERN, ModelVersion
from keel.models.uris import parse_version_ref

__all__ = [
    "DEPLOYMENT_NAME_PATTERN",
    "Action",
    "ArmConfig",
    "CreateRequest",
    "Deployment",
    "DeploymentConfig",
    "DeploymentDeleted",
    "DeploymentList",
    "PromoteRequest",
    "Promotion",
    "Revision",
    "RevisionList",
    "RollbackRequest",
    "ShadowChange",
    "TrafficSet",
    "check_deployment_name",
    "check_weight",
    "normalize_ref",
]

DEPLOYMENT_NAME_PATTERN = MODEL_NAME_PATTERN
"""A deployment's name: letters, digits, ``.``, ``_``, ``-``; up to 128 characters (it names
the prediction logs' partition folder, so nothing else is allowed)."""

Action = Literal["create", "set-traffic", "promote", "rollback", "add-shadow", "remove-shadow"]
"""What made a revision."""

_NAME = re.compile(DEPLOYMENT_NAME_PATTERN)
_STEP = 0.01  # a weight's resolution, in percent: one sticky-routing bucket of 10,000
_REQUEST = ConfigDict(extra="forbid")
Note = Annotated[str | None, Field(max_length=4096, pattern=r"^[^\x00]*$")]
Ref = Annotated[str, Field(min_length=1, max_length=300)]


def check_deployment_name(name: str) -> str:
    """``name`` when it is a valid deployment name.

    Raises:
        InvalidInput: it is not (the message says what is allowed).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid deployment name {name!r}: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit), up to 128 characters",
            name=repr(name),
        )
    return name


def normalize_ref(ref: str) -> str:
    """The short form of a registered version reference: ``NAME@alias`` or ``NAME/VERSION``.

    ``models:/`` URIs are accepted and shortened; ``NAME/latest`` stays as it is.

    Raises:
        InvalidInput: anything else (a ``runs:/`` URI cannot be deployed: register it first).

    Example:
        >>> normalize_ref("models:/churn@champion")
        'churn@champion'
    """
    if isinstance(ref, str) and ref.startswith("runs:/"):
        raise InvalidInput(
            f"a deployment serves registered versions, not {ref}: register it first "
            "(keel models register RUN_URI NAME), then name NAME/VERSION or NAME@alias",
            ref=ref,
        )
    return parse_version_ref(ref).ref


def check_weight(weight: float, *, ref: str = "", shadow_ok: bool = False) -> float:
    """``weight`` (percent) when it is a valid traffic weight: above 0 (0 only when
    ``shadow_ok``), at most 100, in steps of 0.01%.

    Raises:
        InvalidInput: it is not.
    """
    about = f" for {ref}" if ref else ""
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise InvalidInput(f"a traffic weight{about} is a percentage, not {weight!r}")
    low_ok = weight >= 0 if shadow_ok else weight > 0
    if not low_ok or weight > 100:
        raise InvalidInput(
            f"a traffic weight{about} is above 0% and at most 100%, not {weight:g}%",
            weight=weight,
        )
    steps = weight / _STEP
    if abs(steps - round(steps)) > 1e-6:
        raise InvalidInput(
            f"a traffic weight{about} has at most two decimals (0.01% steps), not {weight!r}%",
            weight=weight,
        )
    return round(weight, 2)


class ArmConfig(BaseModel):
    """A primary arm: a registered version and its share of traffic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ref: Ref = Field(description="NAME@alias or NAME/VERSION")
    weight: float = Field(description="percent of primary traffic, above 0, 0.01% steps")

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        return normalize_ref(value)

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: float) -> float:
        return check_weight(value)


class DeploymentConfig(BaseModel):
    """What a deployment serves: weighted primaries (the first is the main one, the others
    canaries or A/B arms) and shadows.

    Raises:
        InvalidInput: (on construction) no primary, weights that do not sum to 100%, or a
            reference named twice.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    primaries: list[ArmConfig] = Field(min_length=1)
    shadows: list[Ref] = Field(default_factory=list, description="NAME@alias or NAME/VERSION")

    @field_validator("shadows")
    @classmethod
    def _shadows(cls, value: list[str]) -> list[str]:
        return [normalize_ref(ref) for ref in value]

    def model_post_init(self, _context: object) -> None:
        total = sum(arm.weight for arm in self.primaries)
        if abs(total - 100.0) > 1e-6:
            weights = ", ".join(f"{arm.ref}={arm.weight:g}%" for arm in self.primaries)
            raise InvalidInput(
                f"the primary weights must sum to 100%, not {total:g}% ({weights})",
                total=total,
            )
        refs = self.refs
        repeated = sorted({ref for ref in refs if refs.count(ref) > 1})
        if repeated:
            raise InvalidInput(
                f"{', '.join(repeated)} is named twice; each version is one arm",
                refs=repeated,
            )

    @classmethod
    def of(
        cls,
        model: str,
        *,
        canaries: Mapping[str, float] | None = None,
        shadows: Sequence[str] = (),
    ) -> DeploymentConfig:
        """``model`` with the traffic ``canaries`` leave (100% without), and ``shadows``.

        Raises:
            InvalidInput: a malformed reference or weight, or canaries taking 100% or more.

        Example:
            >>> DeploymentConfig.of("churn@champion", canaries={"churn@challenger": 10}).describe()
            'churn@champion=90%, churn@challenger=10%'
        """
        taken = {ref: check_weight(w, ref=ref) for ref, w in (canaries or {}).items()}
        left = round(100.0 - sum(taken.values()), 2)
        if left <= 0:
            raise InvalidInput(
                f"the canaries take {sum(taken.values()):g}%, leaving nothing for {model}",
                total=sum(taken.values()),
            )
        primaries = [ArmConfig(ref=model, weight=left)]
        primaries += [ArmConfig(ref=ref, weight=w) for ref, w in taken.items()]
        return cls(primaries=primaries, shadows=list(shadows))

    @property
    def refs(self) -> list[str]:
        """Every arm's reference: primaries first, then shadows."""
        return [arm.ref for arm in self.primaries] + list(self.shadows)

    @property
    def main(self) -> str:
        """The first primary's reference (what ``--model`` named)."""
        return self.primaries[0].ref

    def weight_of(self, ref: str) -> float | None:
        """The weight of primary ``ref``; None when it is not a primary."""
        return next((arm.weight for arm in self.primaries if arm.ref == ref), None)

    def describe(self) -> str:
        """``a@champion=90%, a@challenger=10%; shadows: a/7``."""
        text = ", ".join(f"{arm.ref}={arm.weight:g}%" for arm in self.primaries)
        return text + (f"; shadows: {', '.join(self.shadows)}" if self.shadows else "")

    # -- changes (each returns a new config) -----------------------------------------------

    def with_traffic(self, weights: Mapping[str, float]) -> DeploymentConfig:
        """Set the weights of the arms named; the primaries not named share what is left, in
        proportion to their weights now. A weight of 0 removes a primary; a reference that is
        not a primary yet becomes one (a shadow named here stops being a shadow).

        Raises:
            InvalidInput: no weights, a malformed weight, more than 100% named, nothing left
                for the others, or no primary left.

        Example:
            >>> config.with_traffic({"churn@challenger": 25}).describe()  # doctest: +SKIP
            'churn@champion=75%, churn@challenger=25%'
        """
        if not weights:
            raise InvalidInput("name at least one arm and its weight (REF=25%)")
        named = {
            normalize_ref(ref): check_weight(w, ref=ref, shadow_ok=True)
            for ref, w in weights.items()
        }
        given = sum(named.values())
        others = [arm for arm in self.primaries if arm.ref not in named]
        left = round(100.0 - given, 2)
        if left < -1e-9:
            raise InvalidInput(f"the weights named sum to {given:g}%, over 100%", total=given)
        if not others and abs(left) > 1e-9:
            raise InvalidInput(
                f"the weights named sum to {given:g}% and no other primary takes the rest; "
                "make them sum to 100%",
                total=given,
            )
        if others and left <= 1e-9:
            names = ", ".join(arm.ref for arm in others)
            raise InvalidInput(
                f"the weights named take 100% and leave nothing for {names}; give them 0% to "
                "remove them",
            )
        shares = _shares(left, [arm.weight for arm in others])
        kept = {arm.ref: share for arm, share in zip(others, shares, strict=True)}
        vanished = [arm.ref for arm, share in zip(others, shares, strict=True) if share <= 0]
        if vanished:
            raise InvalidInput(
                f"{', '.join(vanished)} would round to 0% of what is left ({left:g}%): give "
                "each arm its weight explicitly (or 0% to remove it)",
            )
        current = [arm.ref for arm in self.primaries]
        order = current + [ref for ref in named if ref not in current]
        merged = {**kept, **named}
        primaries = [ArmConfig(ref=ref, weight=merged[ref]) for ref in order if merged[ref] > 0]
        if not primaries:
            raise InvalidInput("every primary would get 0%: a deployment serves at least one")
        shadows = [ref for ref in self.shadows if ref not in merged]
        return DeploymentConfig(primaries=primaries, shadows=shadows)

    def canary(self, arm: str | None) -> str:
        """The reference a promotion makes the only primary: ``arm`` (a primary or a shadow),
        else the one primary that is not the main one.

        Raises:
            InvalidInput: ``arm`` is not in the deployment, or it is not clear which arm to
                promote (name it).
        """
        if arm is not None:
            ref = normalize_ref(arm)
            if ref not in self.refs:
                raise InvalidInput(
                    f"{ref} is not an arm of this deployment; its arms: {', '.join(self.refs)}",
                    arm=ref,
                )
            return ref
        canaries = [a.ref for a in self.primaries[1:]]
        if len(canaries) == 1:
            return canaries[0]
        if not canaries:
            raise InvalidInput(
                f"nothing to promote: {self.main} takes 100% and there is no canary; name the "
                "arm to promote (a shadow)",
            )
        raise InvalidInput(
            f"several canaries ({', '.join(canaries)}): name the one to promote", arms=canaries
        )

    def promoted(self, ref: str, *, as_ref: str | None = None) -> DeploymentConfig:
        """``ref`` takes 100% (written ``as_ref`` when given: the main alias once it was
        moved to ``ref``'s version); the other primaries go, the shadows stay (``ref`` leaves
        them if it was one)."""
        primary = as_ref or ref
        shadows = [s for s in self.shadows if s not in (ref, primary)]
        return DeploymentConfig(primaries=[ArmConfig(ref=primary, weight=100)], shadows=shadows)

    def with_shadow(self, ref: str) -> DeploymentConfig:
        """``ref`` added as a shadow.

        Raises:
            InvalidInput: it is an arm already.
        """
        ref = normalize_ref(ref)
        if ref in self.refs:
            role = "a shadow" if ref in self.shadows else "a primary"
            raise InvalidInput(f"{ref} is {role} of this deployment already", ref=ref)
        return DeploymentConfig(primaries=self.primaries, shadows=[*self.shadows, ref])

    def without_shadow(self, ref: str) -> DeploymentConfig:
        """``ref`` removed from the shadows.

        Raises:
            InvalidInput: it is not a shadow.
        """
        ref = normalize_ref(ref)
        if ref not in self.shadows:
            have = ", ".join(self.shadows) or "none"
            raise InvalidInput(f"{ref} is not a shadow of this deployment; shadows: {have}")
        return DeploymentConfig(
            primaries=self.primaries, shadows=[s for s in self.shadows if s != ref]
        )


def _shares(total: float, weights: list[float]) -> list[float]:
    """``total`` split in proportion to ``weights``, in 0.01% steps summing exactly."""
    if not weights:
        return []
    cents = round(total * 100)
    whole = sum(weights)
    parts = [math.floor(cents * w / whole) for w in weights]
    parts[0] += cents - sum(parts)
    return [p / 100 for p in parts]


class Revision(BaseModel):
    """One change of a deployment, kept for good: its whole configuration afterwards."""

    model_config = ConfigDict(frozen=True)

    deployment: str
    revision: int = Field(ge=1)
    config: DeploymentConfig
    resolved: dict[str, int] = Field(
        default_factory=dict, description="what each reference resolved to when written"
    )
    action: Action
    actor: str
    note: str | None = None
    created_at: datetime


class Deployment(BaseModel):
    """A deployment as it is now: its current revision's configuration."""

    model_config = ConfigDict(frozen=True)

    name: str
    revision: int = Field(ge=1, description="the current revision")
    config: DeploymentConfig
    resolved: dict[str, int] = Field(
        default_factory=dict, description="what each reference resolved to when written"
    )
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


class Promotion(BaseModel):
    """What ``promote`` did: the deployment after it and, with ``move_alias``, the alias
    moved or the approval request made instead (a protected alias does not move)."""

    model_config = ConfigDict(frozen=True)

    deployment: Deployment
    promoted: str = Field(description="the arm that took 100%, as it was named")
    version: int = Field(description="the version it resolved to")
    alias: str | None = Field(default=None, description="the alias asked to move (NAME@alias)")
    moved: ModelVersion | None = None
    request: AliasRequest | None = None


# -- wire format (routes and remote client) ---------------------------------------------------


class CreateRequest(BaseModel):
    """``POST /deployments``."""

    model_config = _REQUEST

    name: Annotated[str, Field(min_length=1, max_length=128)]
    config: DeploymentConfig
    note: Note = None


class TrafficSet(BaseModel):
    """``PUT /deployments/{name}/traffic``: the weights of the arms named (percent)."""

    model_config = _REQUEST

    weights: dict[Ref, float] = Field(min_length=1)
    note: Note = None


class PromoteRequest(BaseModel):
    """``POST /deployments/{name}/promote``."""

    model_config = _REQUEST

    arm: Ref | None = Field(default=None, description="default: the one canary")
    move_alias: bool = False
    note: Note = None


class RollbackRequest(BaseModel):
    """``POST /deployments/{name}/rollback``."""

    model_config = _REQUEST

    to: int | None = Field(default=None, ge=1, le=2**31 - 1, description="default: previous")
    note: Note = None


class ShadowChange(BaseModel):
    """``POST /deployments/{name}/shadows`` (add) and ``.../shadows/remove``."""

    model_config = _REQUEST

    ref: Ref
    note: Note = None


class DeploymentDeleted(BaseModel):
    """``DELETE /deployments/{name}``: the revision it was at."""

    name: str
    revision: int


class DeploymentList(BaseModel):
    deployments: list[Deployment]


class RevisionList(BaseModel):
    revisions: list[Revision]
