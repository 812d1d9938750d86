"""How a deployment's arms are doing, from its prediction logs (:mod:`keel.serving.predlog`).

Per arm (``NAME/VERSION``, primary or shadow): requests, rows, errors, and p50/p99 of the
scoring latency (one value per request). For each shadow, how often it agrees with the primary
that answered the same request, row by row (``request_id`` and ``row``): floating-point outputs
agree within a relative tolerance (``|shadow - primary| <= tolerance * |primary|``, default 1%)
and their mean absolute difference is given; integers, booleans and text (classes, labels)
agree when equal. A row agrees when every output column does.

The logs are written by the serving processes' background threads every few seconds (10 s or
20,000 rows by default, and on shutdown), so the newest requests may not be counted yet.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from keel.db import now_ms
from keel.errors import InvalidInput, KeelError, NotFound
from keel.models.api import registry_for
from keel.models.uris import parse_version_ref
from keel.serving.deployments.api import deployments_for
from keel.serving.deployments.models import Deployment, check_deployment_name
from keel.settings import Settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "FLUSH_NOTE",
    "ArmStatus",
    "DeploymentStatus",
    "parse_since",
    "status",
    "summarize",
]

FLUSH_NOTE = (
    "Prediction logs are flushed every few seconds (10 s or 20,000 rows by default, and on "
    "shutdown): the newest requests may not be counted yet."
)
DEFAULT_TOLERANCE = 0.01
_SINCE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class ArmStatus(BaseModel):
    """One arm's numbers over the window."""

    model_config = ConfigDict(frozen=True)

    arm: str = Field(description="NAME/VERSION as the logs name it")
    role: Literal["primary", "shadow"]
    ref: str | None = Field(default=None, description="the reference configured now, if any")
    weight: float | None = Field(default=None, description="its configured weight (primaries)")
    requests: int = 0
    rows: int = 0
    errors: int = Field(default=0, description="requests that failed")
    p50_ms: float | None = None
    p99_ms: float | None = None
    compared: int = Field(default=0, description="shadow rows matched with a primary row")
    agreement: float | None = Field(
        default=None, description="share of compared rows where the shadow agrees (0-1)"
    )
    mean_abs_diff: float | None = Field(
        default=None, description="mean |shadow - primary| over floating-point outputs"
    )


class DeploymentStatus(BaseModel):
    """A deployment's arms over ``[since, until]``."""

    model_config = ConfigDict(frozen=True)

    deployment: str
    revision: int | None = Field(default=None, description="the current revision, if it exists")
    since: datetime | None
    until: datetime
    tolerance: float
    arms: list[ArmStatus]
    note: str = FLUSH_NOTE


def parse_since(text: str, *, now: int | None = None) -> int:
    """Milliseconds since the epoch for ``30m``, ``1h``, ``2d``, ``1w`` ago, or an ISO time.

    Raises:
        InvalidInput: anything else.

    Example:
        >>> parse_since("1h", now=7_200_000)
        3600000
    """
    now = now_ms() if now is None else now
    found = _SINCE.match(text.strip()) if isinstance(text, str) else None
    try:
        if found:
            at_ms = now - int(float(found.group(1)) * _UNIT_MS[found.group(2)])
        else:
            at = datetime.fromisoformat(text)
            if at.tzinfo is None:
                at = at.astimezone()  # local time, as a person types it
            at_ms = int(at.timestamp() * 1000)
    except (TypeError, ValueError, OverflowError, OSError):
        raise InvalidInput(
            f"--since takes a duration (30m, 1h, 2d, 1w) or an ISO time "
            f"(2026-11-22T10:00), not {text!r}",
            since=text,
        ) from None
    if not 0 <= at_ms <= now:
        raise InvalidInput(
            f"--since {text} is {'before 1970' if at_ms < 0 else 'in the future'}: give a time "
            "between the epoch and now",
            since=text,
        )
    return at_ms


def status(
    name: str,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    settings: Settings | None = None,
    logs: str | None = None,
) -> DeploymentStatus:
    """Per-arm requests, rows, errors, latency and shadow agreement of deployment ``name``.

    Args:
        name: the deployment (or the model name a plain ``keel serve models:/NAME...`` logs as).
        since_ms: the window's start (default: one hour ago).
        until_ms: its end (default: now).
        tolerance: relative tolerance for floating-point agreement (0.01 = 1%).
        settings: where the deployment is and, by default, the logs (its artifact store).
        logs: the prediction logs' root instead (``<artifact_url>/predictions-log`` of the
            serving processes).

    Returns:
        A :class:`DeploymentStatus`; configured arms with no traffic yet are listed with zeros.

    Raises:
        InvalidInput: a malformed name or tolerance.
        NotFound: no such deployment and nothing logged under that name.

    Example:
        >>> [(a.arm, a.requests) for a in status("churn").arms]  # doctest: +SKIP
        [('churn/3', 912), ('churn/4', 88)]
    """
    from keel.serving.predlog import log_url, read_predictions

    check_deployment_name(name)
    if not (isinstance(tolerance, int | float) and 0 <= tolerance < 1):
        raise InvalidInput(f"a tolerance is a fraction from 0 to 1 (0.01 = 1%), not {tolerance!r}")
    settings = settings or Settings()
    until = now_ms() if until_ms is None else until_ms
    since = until - 3_600_000 if since_ms is None else since_ms
    deployment, labels = _configured(name, settings)
    frame = read_predictions(logs or log_url(settings), name, since_ms=since, until_ms=until)
    if deployment is None and frame.empty:
        raise NotFound(
            f"no deployment named {name!r}, and nothing logged under that name since {_iso(since)}",
            name=name,
        )
    arms = summarize(frame, tolerance=tolerance)
    arms = _with_configured(arms, deployment, labels)
    return DeploymentStatus(
        deployment=name,
        revision=deployment.revision if deployment is not None else None,
        since=datetime.fromtimestamp(since / 1000, tz=UTC),
        until=datetime.fromtimestamp(until / 1000, tz=UTC),
        tolerance=tolerance,
        arms=arms,
    )


def summarize(frame: pd.DataFrame, *, tolerance: float = DEFAULT_TOLERANCE) -> list[ArmStatus]:
    """The arms' numbers in a prediction-log frame (:func:`keel.serving.predlog.read_predictions`),
    primaries first, then shadows, each by name."""
    if frame.empty:
        return []
    primary = frame[frame["role"] == "primary"]
    found = []
    for (arm, role), rows in frame.groupby(["arm", "role"], sort=True):
        per_request = rows.drop_duplicates("request_id")
        latency = per_request["latency_ms"].dropna().to_numpy(dtype=float)
        numbers: dict[str, Any] = {
            "arm": str(arm),
            "role": str(role),
            "requests": len(per_request),
            "rows": len(rows),
            "errors": int(per_request["error"].notna().sum()),
            "p50_ms": _percentile(latency, 50),
            "p99_ms": _percentile(latency, 99),
        }
        if role == "shadow":
            numbers.update(_agreement(rows, primary, tolerance))
        found.append(ArmStatus(**numbers))
    return sorted(found, key=lambda a: (a.role != "primary", a.arm))


# -- agreement ---------------------------------------------------------------------------------


def _agreement(shadow: pd.DataFrame, primary: pd.DataFrame, tolerance: float) -> dict[str, Any]:
    outputs = _output_columns(shadow)
    ok_shadow = shadow[shadow["error"].isna()]
    ok_primary = primary[primary["error"].isna()]
    joined = ok_shadow[["request_id", "row", *outputs]].merge(
        ok_primary[["request_id", "row", *outputs]],
        on=["request_id", "row"],
        suffixes=("@shadow", "@primary"),
    )
    if joined.empty or not outputs:
        return {"compared": 0}
    import numpy as np

    agree = np.ones(len(joined), dtype=bool)
    differences: list[np.ndarray] = []
    for column in outputs:
        same, diff = _compare(joined[f"{column}@shadow"], joined[f"{column}@primary"], tolerance)
        agree &= same
        if diff is not None:
            differences.append(diff)
    mean_abs = None
    if differences:
        cells = np.concatenate([d.ravel() for d in differences])
        cells = cells[~np.isnan(cells)]
        mean_abs = float(cells.mean()) if cells.size else None
    return {
        "compared": len(joined),
        "agreement": float(agree.mean()),
        "mean_abs_diff": mean_abs,
    }


def _output_columns(frame: pd.DataFrame) -> list[str]:
    if "output" in frame.columns:
        return ["output"]
    return [c for c in frame.columns if c.startswith("output.")]


def _compare(
    shadow: pd.Series, primary: pd.Series, tolerance: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per row: does the shadow agree; and |shadow - primary| for floating-point outputs."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_float_dtype(shadow) and pd.api.types.is_float_dtype(primary):
        a = shadow.to_numpy(dtype=float, na_value=np.nan)
        b = primary.to_numpy(dtype=float, na_value=np.nan)
        return np.isclose(a, b, rtol=tolerance, atol=0.0, equal_nan=True), np.abs(a - b)
    grid = _float_lists(shadow, primary)
    if grid is not None:  # multi-output arrays logged as lists of numbers
        a, b = grid
        close = np.isclose(a, b, rtol=tolerance, atol=0.0, equal_nan=True).all(axis=1)
        return close, np.abs(a - b)
    same = [_plain(x) == _plain(y) for x, y in zip(shadow, primary, strict=True)]
    return np.array(same, dtype=bool), None


def _float_lists(shadow: pd.Series, primary: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    import numpy as np

    def grid(values: pd.Series) -> np.ndarray | None:
        items = [_plain(v) for v in values]
        if not items or not all(isinstance(v, list) for v in items):
            return None
        if not all(isinstance(x, float) for v in items for x in v):
            return None
        try:
            return np.array(items, dtype=float)
        except ValueError:  # ragged
            return None

    a, b = grid(shadow), grid(primary)
    if a is None or b is None or a.shape != b.shape or a.ndim != 2:
        return None
    return a, b


def _plain(value: Any) -> Any:
    """A logged value as plain Python, comparable with ``==`` (arrays as lists)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# -- helpers -----------------------------------------------------------------------------------


def _percentile(values: np.ndarray, q: float) -> float | None:
    import numpy as np

    return float(np.percentile(values, q)) if values.size else None


def _configured(
    name: str, settings: Settings
) -> tuple[Deployment | None, dict[str, tuple[str, float | None]]]:
    """The deployment, if it exists, and each configured arm's label now (``NAME/VERSION``)
    -> (reference, weight). References that do not resolve are left out."""
    try:
        with deployments_for(settings) as deployments:
            deployment = deployments.get(name)
    except NotFound:
        return None, {}
    labels: dict[str, tuple[str, float | None]] = {}
    with registry_for(settings) as registry:
        for ref in deployment.config.refs:
            parsed = parse_version_ref(ref)
            try:
                version = registry.get_version(parsed.name, parsed.selector)
            except KeelError:
                continue
            labels[f"{version.name}/{version.version}"] = (ref, deployment.config.weight_of(ref))
    return deployment, labels


def _with_configured(
    arms: list[ArmStatus],
    deployment: Deployment | None,
    labels: dict[str, tuple[str, float | None]],
) -> list[ArmStatus]:
    if deployment is None:
        return arms
    found = []
    seen = set()
    for arm in arms:
        ref, weight = labels.get(arm.arm, (None, None))
        role_now = "shadow" if ref is not None and weight is None else "primary"
        if ref is not None and role_now == arm.role:
            seen.add(arm.arm)
            arm = arm.model_copy(update={"ref": ref, "weight": weight})
        found.append(arm)
    for label, (ref, weight) in labels.items():
        if label not in seen:
            role: Literal["primary", "shadow"] = "shadow" if weight is None else "primary"
            found.append(ArmStatus(arm=label, role=role, ref=ref, weight=weight))
    return sorted(found, key=lambda a: (a.role != "primary", a.arm))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
