"""The release gate: does a candidate version beat the champion on a metric?

``gate("diabetes/4", against="diabetes@champion", metric="rmse", min_improvement="1%")``
compares the two versions' evaluations of the same dataset version and target (the latest
evaluation each has there; with ``data=`` and ``target=`` that dataset, evaluating either
version first when it has no evaluation of it), decides, and records a
:class:`~keel.models.evaluation_models.GateVerdict` (``gate_verdicts``) with a ``gate`` event in
the candidate model's audit trail.

The rules, with *improvement* the amount by which the candidate is better (champion minus
candidate for a lower-is-better metric, candidate minus champion otherwise):

- ``min_improvement``: improvement >= the threshold (``"1%"`` of the champion's value, or an
  absolute number);
- ``max_regression``: improvement >= minus the threshold (worse by at most that);
- neither: improvement >= 0 (the candidate is at least as good).

No champion passes, recorded as "no champion to beat", only when the model has no aliases at all
(its first release) or with ``allow_no_champion``; an unset alias of a model that has others
(``diabetes@champoin``) raises :class:`~keel.errors.NotFound` naming the aliases it has, so a
typo does not pass. No evaluation both
versions share raises :class:`NoCommonEvaluation` naming the ``keel models evaluate`` commands
to run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from keel.data.versions import get_version as get_dataset_version
from keel.errors import InvalidInput, NotFound
from keel.models.api import Registry
from keel.models.evaluation import Evaluator, local_registry
from keel.models.evaluation_models import Evaluation, GateVerdict
from keel.models.models import ModelVersion
from keel.models.uris import parse_version_ref
from keel.settings import Settings

__all__ = [
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "NoCommonEvaluation",
    "Threshold",
    "gate",
    "higher_is_better",
]

LOWER_IS_BETTER = frozenset({"rmse", "mae", "mape", "log_loss", "max_error"})
"""Metrics where a smaller value is better."""

HIGHER_IS_BETTER = frozenset(
    {
        "r2",
        "accuracy",
        "precision_macro",
        "precision_weighted",
        "recall_macro",
        "recall_weighted",
        "f1_macro",
        "f1_weighted",
        "roc_auc",
    }
)
"""Metrics where a larger value is better; ``precision*``, ``recall*`` and ``f1*`` names too."""

_HIGHER_PREFIXES = ("precision", "recall", "f1")


class NoCommonEvaluation(InvalidInput):
    """The two versions have no evaluation of one dataset version in common: a usage problem
    (evaluate them first), not a failed gate."""

    code = "no_common_evaluation"


@dataclass(frozen=True)
class Threshold:
    """A gate threshold: ``relative`` (a fraction of the champion's value) or absolute."""

    value: float
    relative: bool

    @classmethod
    def parse(cls, text: str | float, *, option: str) -> Threshold:
        """``"1%"`` -> 0.01 relative; ``"0.5"`` or ``0.5`` -> 0.5 absolute.

        Raises:
            InvalidInput: not a non-negative number or percentage.
        """
        raw = str(text).strip()
        relative = raw.endswith("%")
        try:
            value = float(raw[:-1] if relative else raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise InvalidInput(
                f"{option} is a non-negative number (absolute, e.g. 0.5) or percentage of the "
                f"champion's value (e.g. 1%), not {text!r}",
                option=option,
            )
        return cls(value / 100 if relative else value, relative)

    def amount(self, champion: float) -> float:
        """The threshold in the metric's units, given the champion's value."""
        return self.value * abs(champion) if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


def higher_is_better(metric: str) -> bool | None:
    """True or False for a known metric (:data:`HIGHER_IS_BETTER`, :data:`LOWER_IS_BETTER`),
    None for one the gate must be told about."""
    if metric in LOWER_IS_BETTER:
        return False
    if metric in HIGHER_IS_BETTER or metric.startswith(_HIGHER_PREFIXES):
        return True
    return None


def gate(
    candidate: str | ModelVersion,
    *,
    against: str,
    metric: str,
    min_improvement: str | float | None = None,
    max_regression: str | float | None = None,
    data: str | None = None,
    target: str | None = None,
    higher_is_better: bool | None = None,
    allow_no_champion: bool = False,
    settings: Settings | None = None,
) -> GateVerdict:
    """Decide whether ``candidate`` may replace ``against`` on ``metric``, and record it.

    Args:
        candidate: the version to release, ``NAME/4`` (or ``NAME@challenger``, ``models:/...``).
        against: what it must beat, usually ``NAME@champion``; a version number works too.
        metric: an evaluation metric, e.g. ``rmse``, ``r2``, ``accuracy``, ``roc_auc``.
        min_improvement: the candidate must be better by at least this: ``"1%"`` of the
            champion's value, or an absolute amount (``0.5``).
        max_regression: the candidate may be worse by at most this (``"0.5%"`` or ``0.5``).
        data: compare on this dataset version (``NAME@VERSION``), evaluating either version
            on it first if it has not been; needs ``target``. Default: the latest dataset
            version both have been evaluated on.
        target: the target column for ``data``.
        higher_is_better: the metric's direction; needed only for a metric the gate does not
            know (see :data:`LOWER_IS_BETTER` and :data:`HIGHER_IS_BETTER`).
        allow_no_champion: pass when ``against`` is an alias that is not set although the
            model has other aliases (without it, only a model with no aliases at all passes
            with no champion to beat).
        settings: where the registry is; default ``Settings()``.

    Returns:
        The recorded :class:`~keel.models.evaluation_models.GateVerdict`; ``passed`` says the
        verdict and ``detail`` the values, change, thresholds and reason.

    Raises:
        NoCommonEvaluation: no dataset version both versions were evaluated on (the message
            names the evaluate commands to run).
        InvalidInput: an unknown metric without a direction, a malformed threshold, ``data``
            without ``target``, or a metric the evaluations do not have.
        NotFound: no such model, version or dataset version; or ``against`` is an alias that
            is not set while the model has others (the message names them).

    Example:
        >>> verdict = keel.models.gate("diabetes/4", against="diabetes@champion",
        ...                            metric="rmse", min_improvement="1%")
        >>> verdict.passed  # doctest: +SKIP
        True
    """
    direction = _direction(metric, higher_is_better)
    rules = _rules(min_improvement, max_regression)
    if (data is None) != (target is None):
        raise InvalidInput(
            "give --data and --target together (the dataset version and its "
            "target column to compare on), or neither"
        )
    with local_registry(settings) as registry:
        evaluator = Evaluator(registry)
        chosen = registry.resolve(candidate)
        champion = _champion(registry, against, allow_no_champion=allow_no_champion)
        if champion is None:
            return _record(
                evaluator,
                chosen,
                against=against,
                against_version=None,
                metric=metric,
                passed=True,
                detail={
                    "candidate": _ref(chosen),
                    "champion": None,
                    "reason": f"no champion to beat: {against} is not set",
                },
            )
        if data is not None and target is not None:
            pair = _on_data(evaluator, chosen, champion, data=data, target=target)
        else:
            pair = _latest_common(evaluator, chosen, champion, metric)
        mine, theirs = pair
        detail = _decide(mine, theirs, metric=metric, higher=direction, rules=rules)
        detail = {"candidate": _ref(chosen), "champion": _ref(champion), **detail}
        return _record(
            evaluator,
            chosen,
            against=against,
            against_version=champion.version,
            metric=metric,
            passed=bool(detail["passed"]),
            detail=detail,
        )


# -- deciding ---------------------------------------------------------------------------------


def _direction(metric: str, given: bool | None) -> bool:
    if given is not None:
        return given
    known = higher_is_better(metric)
    if known is None:
        names = ", ".join(sorted(LOWER_IS_BETTER | HIGHER_IS_BETTER))
        raise InvalidInput(
            f"the gate does not know whether a higher {metric!r} is better: pass "
            f"--higher-is-better or --lower-is-better (known metrics: {names})",
            metric=metric,
        )
    return known


def _rules(
    min_improvement: str | float | None, max_regression: str | float | None
) -> list[tuple[str, Threshold | None]]:
    rules: list[tuple[str, Threshold | None]] = []
    if min_improvement is not None:
        threshold = Threshold.parse(min_improvement, option="--min-improvement")
        rules.append(("min_improvement", threshold))
    if max_regression is not None:
        threshold = Threshold.parse(max_regression, option="--max-regression")
        rules.append(("max_regression", threshold))
    return rules or [("no_regression", None)]


def _decide(
    mine: Evaluation,
    theirs: Evaluation,
    *,
    metric: str,
    higher: bool,
    rules: list[tuple[str, Threshold | None]],
) -> dict[str, Any]:
    if metric not in mine.metrics or metric not in theirs.metrics:
        lacking = mine if metric not in mine.metrics else theirs
        raise InvalidInput(
            f"evaluation {lacking.id} of {lacking.ref} on {lacking.dataset} has no {metric!r}; "
            f"it has {', '.join(sorted(lacking.metrics))}",
            metric=metric,
        )
    value, champion = mine.metrics[metric], theirs.metrics[metric]
    change = value - champion
    improvement = change if higher else -change
    checks: list[dict[str, Any]] = []
    for rule, threshold in rules:
        if threshold is None:
            required, text = 0.0, "at least as good as the champion"
        elif rule == "min_improvement":
            required, text = threshold.amount(champion), f"better by at least {threshold}"
        else:
            required, text = -threshold.amount(champion), f"worse by at most {threshold}"
        checks.append(
            {
                "rule": rule,
                "threshold": str(threshold) if threshold is not None else None,
                "required_improvement": required,
                "text": text,
                "passed": _at_least(improvement, required),
            }
        )
    passed = all(c["passed"] for c in checks)
    relative = change / abs(champion) if champion else None
    word = "better" if improvement > 0 else "worse" if improvement < 0 else "equal"
    results = "; ".join(f"{c['text']}: {'yes' if c['passed'] else 'no'}" for c in checks)
    verdict = "pass" if passed else "fail"
    reason = f"{verdict}: {metric} {value:.6g} against {champion:.6g} ({word}); {results}"
    return {
        "passed": passed,
        "dataset": mine.dataset,
        "target": mine.target,
        "direction": "higher" if higher else "lower",
        "candidate_value": value,
        "champion_value": champion,
        "change": change,
        "relative_change": relative,
        "improvement": improvement,
        "checks": checks,
        "evaluations": {"candidate": mine.id, "champion": theirs.id},
        "reason": reason,
    }


def _at_least(value: float, required: float) -> bool:
    """``value >= required``, forgiving float noise (``1.01 * x`` computed two ways)."""
    return value >= required or math.isclose(value, required, rel_tol=1e-9, abs_tol=1e-12)


# -- finding what to compare -------------------------------------------------------------------


def _champion(registry: Registry, against: str, *, allow_no_champion: bool) -> ModelVersion | None:
    """The version ``against`` names; None when it is an alias that is not set and the model
    has no aliases at all (or ``allow_no_champion``).

    Raises:
        NotFound: ``against`` is an unset alias of a model that has other aliases: a typo
            (``champoin``) must not pass as "no champion to beat".
    """
    parsed = parse_version_ref(against)
    if parsed.alias is None:
        return registry.get_version(parsed.name, parsed.selector)
    aliases = registry.get_model(parsed.name).aliases
    if parsed.alias in aliases:
        return registry.get_version(parsed.name, parsed.alias)
    if aliases and not allow_no_champion:
        have = ", ".join(f"{alias} -> {number}" for alias, number in sorted(aliases.items()))
        raise NotFound(
            f"{against} is not set, and {parsed.name} has aliases {have}: is it a typo? "
            "(--allow-no-champion passes with no champion to beat)",
            name=parsed.name,
            alias=parsed.alias,
        )
    return None


def _on_data(
    evaluator: Evaluator,
    candidate: ModelVersion,
    champion: ModelVersion,
    *,
    data: str,
    target: str,
) -> tuple[Evaluation, Evaluation]:
    dataset = get_dataset_version(data, settings=evaluator.registry.settings).ref
    found = []
    for version in (candidate, champion):
        existing = [
            e
            for e in evaluator.store.list_evaluations(version.name, version.version)
            if e.dataset == dataset and e.target == target
        ]
        if existing:
            found.append(existing[0])
        else:
            found.append(evaluator.evaluate(version, data=dataset, target=target))
    return found[0], found[1]


def _latest_common(
    evaluator: Evaluator, candidate: ModelVersion, champion: ModelVersion, metric: str
) -> tuple[Evaluation, Evaluation]:
    mine = _latest_by_data(evaluator, candidate)
    theirs = _latest_by_data(evaluator, champion)
    common = [key for key in mine if key in theirs]
    if not common:
        raise NoCommonEvaluation(_no_common_message(candidate, champion, mine, theirs))
    with_metric = [k for k in common if metric in mine[k].metrics and metric in theirs[k].metrics]
    key = max(with_metric or common, key=lambda k: max(mine[k].created_at, theirs[k].created_at))
    return mine[key], theirs[key]


def _latest_by_data(
    evaluator: Evaluator, version: ModelVersion
) -> dict[tuple[str, str], Evaluation]:
    """The newest evaluation of ``version`` per (dataset version, target)."""
    latest: dict[tuple[str, str], Evaluation] = {}
    for found in evaluator.store.list_evaluations(version.name, version.version):  # newest first
        latest.setdefault((found.dataset, found.target), found)
    return latest


def _no_common_message(
    candidate: ModelVersion,
    champion: ModelVersion,
    mine: dict[tuple[str, str], Evaluation],
    theirs: dict[tuple[str, str], Evaluation],
) -> str:
    lines = [
        f"{_ref(candidate)} and {_ref(champion)} have no evaluation on the same dataset "
        "version to compare; evaluate both on one first:"
    ]
    if mine or theirs:
        for done, other, todo in ((mine, theirs, champion), (theirs, mine, candidate)):
            for dataset, target in list(done)[:1]:
                if (dataset, target) not in other:
                    lines.append(
                        f"  keel models evaluate {_ref(todo)} --data {dataset} --target {target}"
                    )
    else:
        for version in (candidate, champion):
            lines.append(
                f"  keel models evaluate {_ref(version)} --data DATASET@VERSION --target COLUMN"
            )
    lines.append("(or pass --data DATASET@VERSION --target COLUMN to the gate to do both)")
    return "\n".join(lines)


def _record(
    evaluator: Evaluator,
    candidate: ModelVersion,
    *,
    against: str,
    against_version: int | None,
    metric: str,
    passed: bool,
    detail: dict[str, Any],
) -> GateVerdict:
    registry = evaluator.registry
    verdict = evaluator.store.add_verdict(
        candidate.name,
        candidate.version,
        against=against,
        against_version=against_version,
        metric=metric,
        passed=passed,
        detail=detail,
        actor=registry.actor,
    )
    return verdict


def _ref(version: ModelVersion) -> str:
    return f"{version.name}/{version.version}"
