"""What a scoring service serves: a :class:`ServingPlan` of one or more :class:`Arm` (loaded model
versions with traffic weights, or shadows), and the :class:`PlanSource` that loads it and notices
when it should change (an alias moved, a deployment edited).

``keel serve models:/NAME@champion`` serves a one-arm plan; ``keel serve --deployment NAME``
serves the deployment's arms: weighted primaries (canary, A/B) and shadows that get a copy of
traffic whose outputs are logged, never returned. The scoring app only ever reads the plan it
holds; a source's :meth:`~PlanSource.poll` builds a whole new plan, which the app swaps in with
one assignment, so a request in flight finishes on the arm it started on.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from keel.errors import InvalidInput
from keel.models.loading import Predictor
from keel.models.models import ModelVersion

__all__ = ["BUCKETS", "Arm", "PlanSource", "ServingPlan", "bucket_of"]

BUCKETS = 10_000
"""Sticky routing hashes a request key into one of this many buckets (0.01% resolution)."""


@dataclass(frozen=True, eq=False)
class Arm:
    """One loaded model version a plan sends traffic to.

    Attributes:
        ref: what the configuration named (``diabetes@champion``, ``diabetes/7``, a ``runs:/``
            URI); an alias is resolved once, when the plan is built.
        predictor: the loaded model.
        version: the registered version ``ref`` resolved to (None for a ``runs:/`` model).
        weight: percent of primary traffic (0 < weight <= 100); 0 for a shadow.
        shadow: True when the arm gets a copy of traffic and its outputs are only logged.
    """

    ref: str
    predictor: Predictor
    version: ModelVersion | None
    weight: float = 100.0
    shadow: bool = False

    @property
    def label(self) -> str:
        """How metrics, logs and headers name the arm: ``NAME/VERSION``, else the model URI."""
        if self.version is not None:
            return f"{self.version.name}/{self.version.version}"
        return self.predictor.uri

    @property
    def model_name(self) -> str | None:
        return self.version.name if self.version is not None else None

    @property
    def model_version(self) -> int | None:
        return self.version.version if self.version is not None else None


@dataclass(frozen=True, eq=False)
class ServingPlan:
    """The arms a service scores with, and how requests are split between them.

    Attributes:
        deployment: the name prediction logs and metrics use (the deployment's name, or for a
            bare model the registered model's name, else ``"default"``).
        arms: primaries (weights summing to 100) and shadows (weight 0), at least one primary.
        revision: the deployment's configuration revision it was built from (0 for a model).
        details: what ``/metadata`` shows about where the plan came from (JSON-ready).
    """

    deployment: str
    arms: tuple[Arm, ...]
    revision: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        primaries = self.primaries
        if not primaries:
            raise InvalidInput(f"deployment {self.deployment!r} has no primary model to serve")
        total = sum(arm.weight for arm in primaries)
        if abs(total - 100.0) > 1e-6:
            raise InvalidInput(
                f"the traffic weights of deployment {self.deployment!r} sum to {total:g}%, not 100%"
            )
        if any(arm.weight <= 0 for arm in primaries):
            raise InvalidInput("every primary model needs a weight above 0%")

    @property
    def primaries(self) -> tuple[Arm, ...]:
        return tuple(arm for arm in self.arms if not arm.shadow)

    @property
    def shadows(self) -> tuple[Arm, ...]:
        return tuple(arm for arm in self.arms if arm.shadow)

    def choose(self, key: str | None = None) -> Arm:
        """The primary arm for one request.

        With a ``key`` (a user or session id the caller sends), the same key always lands on
        the same arm while the weights stay the same (sticky A/B); without one, a random arm
        by weight.
        """
        primaries = self.primaries
        if len(primaries) == 1:
            return primaries[0]
        point = bucket_of(key) if key is not None else random.randrange(BUCKETS)
        edge = 0.0
        for arm in primaries:
            edge += arm.weight * BUCKETS / 100.0
            if point < edge:
                return arm
        return primaries[-1]  # float rounding at the top edge


def bucket_of(key: str) -> int:
    """The sticky-routing bucket of ``key``: stable across processes, machines and restarts
    (BLAKE2b, not Python's salted ``hash``)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class PlanSource(Protocol):
    """Where a service's plan comes from, and how it learns of changes.

    Implementations: ``keel.serving.sources.ModelSource`` (one model URI, optionally following
    its alias) and ``keel.serving.deployments.source.DeploymentSource`` (a deployment's stored
    configuration).
    """

    #: seconds between :meth:`poll` calls; None when the plan never changes
    interval: float | None

    def load(self) -> ServingPlan:
        """The plan to start with (loads every model; blocking).

        Raises:
            KeelError: something named cannot be loaded (the service must not start).
        """
        ...

    def poll(self, current: ServingPlan) -> ServingPlan | None:
        """A new plan when the source changed since ``current`` was built, else None.

        Blocking (it may load models; run it off the event loop). Arms whose version did not
        change should reuse ``current``'s loaded predictors. A change that cannot be loaded
        raises and ``current`` keeps serving.
        """
        ...

    def spec(self) -> dict[str, Any]:
        """A JSON-ready description from which a worker process rebuilds the same source."""
        ...
