"""What differs between two model versions: params, metrics, signature, requirements, data.

:func:`diff_versions` is pure: the registry (:mod:`keel.models.api`) gathers each side's
version, manifest, run values and training data, and this compares them, so the comparison is
tested without a database. Only differences are listed; a key on one side only has ``None``
on the other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from keel.models.models import ColumnSpec, ModelManifest, ModelVersion, Signature

__all__ = ["Change", "MetricChange", "ModelDiff", "Side", "diff_versions"]


class Change(BaseModel):
    """One key whose value differs; ``None`` where a side does not have it."""

    key: str
    left: Any = None
    right: Any = None


class MetricChange(Change):
    """A metric that differs, with ``right - left`` when both sides have it."""

    delta: float | None = None


class ModelDiff(BaseModel):
    """Two versions side by side; every list holds only what differs."""

    left: ModelVersion
    right: ModelVersion
    flavor: Change | None = None
    params: list[Change] = Field(default_factory=list)
    metrics: list[MetricChange] = Field(default_factory=list)
    signature: list[Change] = Field(
        default_factory=list, description="inputs.COLUMN / outputs.COLUMN: type, or absent"
    )
    requirements: list[Change] = Field(
        default_factory=list, description="by distribution: the pinned requirement lines"
    )
    training_data: list[Change] = Field(
        default_factory=list, description="by dataset (and context): NAME@VERSION"
    )

    @property
    def same(self) -> bool:
        """True when nothing compared differs."""
        return self.flavor is None and not any(
            (self.params, self.metrics, self.signature, self.requirements, self.training_data)
        )


@dataclass(frozen=True)
class Side:
    """Everything known about one version for a diff.

    Attributes:
        version: the registered version.
        manifest: its ``keel-model.json``, when readable.
        params: the run's params (the manifest's when the run is gone).
        metrics: the run's latest metrics (the manifest's when the run is gone).
        inputs: ``{dataset (context): NAME@VERSION}`` the run trained on.
    """

    version: ModelVersion
    manifest: ModelManifest | None
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)


def diff_versions(left: Side, right: Side) -> ModelDiff:
    """Compare two versions.

    Example:
        >>> diff_versions(a, b).metrics[0].delta  # doctest: +SKIP
        -4.2
    """
    flavor = None
    if left.version.flavor != right.version.flavor:
        flavor = Change(key="flavor", left=left.version.flavor, right=right.version.flavor)
    metrics = [
        MetricChange(key=c.key, left=c.left, right=c.right, delta=_delta(c.left, c.right))
        for c in _changes(left.metrics, right.metrics)
    ]
    left_requirements = _requirements(left.manifest.requirements if left.manifest else [])
    right_requirements = _requirements(right.manifest.requirements if right.manifest else [])
    return ModelDiff(
        left=left.version,
        right=right.version,
        flavor=flavor,
        params=_changes(left.params, right.params),
        metrics=metrics,
        signature=_changes(_signature(left.version.signature), _signature(right.version.signature)),
        requirements=_changes(left_requirements, right_requirements),
        training_data=_changes(left.inputs, right.inputs),
    )


def _changes(left: Mapping[str, Any], right: Mapping[str, Any]) -> list[Change]:
    changes = []
    for key in sorted(left.keys() | right.keys()):
        a, b = left.get(key), right.get(key)
        if a != b:
            changes.append(Change(key=key, left=a, right=b))
    return changes


def _delta(left: Any, right: Any) -> float | None:
    if isinstance(left, int | float) and isinstance(right, int | float):
        return float(right) - float(left)
    return None


_DISTRIBUTION = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _requirements(lines: Sequence[str]) -> dict[str, str]:
    """``["scikit-learn==1.7.2"]`` -> ``{"scikit-learn": "scikit-learn==1.7.2"}``."""
    found = {}
    for line in lines:
        match = _DISTRIBUTION.match(line)
        key = re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else line
        found[key] = line.strip()
    return found


def _signature(signature: Signature | None) -> dict[str, str]:
    if signature is None:
        return {}
    flat: dict[str, str] = {}
    for side, spec in (("inputs", signature.inputs), ("outputs", signature.outputs)):
        if spec is None:
            continue
        if isinstance(spec, list):
            for column in spec:
                flat[f"{side}.{column.name}"] = _column(column)
        else:
            flat[side] = f"tensor {spec.dtype} {list(spec.shape)}"
    return flat


def _column(column: ColumnSpec) -> str:
    return f"{column.type}{' (nullable)' if column.nullable else ''}"
