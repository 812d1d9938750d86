"""A policy's parts, parsed strictly: its approvers, and its required checks
(``metrics.rmse < 60``, ``params.solver = 'lbfgs'``, ``tags.validated = 'yes'``), evaluated
against one model version.

The words come from the run-search tokenizer (:mod:`keel.tracking.search_lexer`), so quoting
and numbers read as they do in ``keel runs search``; the grammar is one comparison,
``metrics|params|tags.NAME OP VALUE`` with ``OP`` one of ``< <= > >= = !=``. A metric compares
with a number; a param or tag compares with a string (``=``, ``!=``) or, numerically, with a
number. Anything else is refused with :class:`~keel.errors.InvalidInput` naming the expression.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from keel.auth.models import USER_NAME_PATTERN
from keel.errors import InvalidInput, InvalidQuery
from keel.models.governance_models import ADMINS, CheckResult
from keel.tracking.search_lexer import SPECIAL_NUMBERS, TokenKind, tokenize

__all__ = ["Requirement", "evaluate", "parse_approvers", "parse_requirement"]

Kind = Literal["metrics", "params", "tags"]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    "!=": operator.ne,
}
_USER_NAME = re.compile(USER_NAME_PATTERN)
_FORMS = "metrics.NAME < NUMBER, params.NAME = 'value' or tags.NAME = 'value'"


@dataclass(frozen=True)
class Requirement:
    """One parsed check; ``str()`` is its canonical spelling."""

    kind: Kind
    key: str
    op: str
    value: float | str

    def __str__(self) -> str:
        value = _number_text(self.value) if isinstance(self.value, float) else _quote(self.value)
        return f"{self.kind}.{self.key} {self.op} {value}"


def parse_requirement(text: str) -> Requirement:
    """Parse one check.

    Raises:
        InvalidInput: the expression is malformed; the message quotes it and says why.

    Example:
        >>> str(parse_requirement("metrics.rmse<60"))
        'metrics.rmse < 60'
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"a required check is an expression like {_FORMS}, not {text!r}")
    try:
        tokens = list(tokenize(text))
    except InvalidQuery as error:
        raise _malformed(text, error.reason) from None
    shape = [t.kind for t in tokens]
    if len(shape) != 4 or shape[:2] != [TokenKind.FIELD, TokenKind.OP]:
        raise _malformed(text, f"write one comparison: {_FORMS}")
    field, op, literal = tokens[0], tokens[1].value, tokens[2]
    if field.prefix not in ("metrics", "params", "tags") or not field.value:
        raise _malformed(text, f"{field.text!r} is not metrics.NAME, params.NAME or tags.NAME")
    if literal.kind not in (TokenKind.NUMBER, TokenKind.STRING):
        raise _malformed(text, f"compare with a number or a quoted string, not {literal.text!r}")
    kind: Kind = field.prefix  # type: ignore[assignment]
    if literal.kind is TokenKind.STRING:
        if kind == "metrics":
            raise _malformed(text, "a metric compares with a number")
        if op not in ("=", "!="):
            raise _malformed(text, "a string compares with = or !=")
        return Requirement(kind, field.value, op, literal.value)
    number = _number(literal.value)
    if math.isnan(number):
        raise _malformed(text, "nothing compares with nan")
    return Requirement(kind, field.value, op, number)


def evaluate(
    requirement: Requirement,
    *,
    metrics: Mapping[str, float],
    params: Mapping[str, str],
    tags: Mapping[str, str],
    looked: str = "",
) -> CheckResult:
    """Whether a version's metrics, params or tags pass ``requirement``.

    A missing key, a NaN metric or a param that is not a number where one is compared fails;
    ``looked`` ends the message of a missing key (`` in the manifest of churn/3``).
    """
    source: Mapping[str, Any] = {"metrics": metrics, "params": params, "tags": tags}[
        requirement.kind
    ]
    name = f"{requirement.kind}.{requirement.key}"
    check = str(requirement)
    if requirement.key not in source:
        return CheckResult(check=check, passed=False, found=f"{name} is not recorded{looked}")
    value = source[requirement.key]
    shown = f"{value:.6g}" if isinstance(value, float) else _quote(str(value))
    found = f"{name} = {shown}"
    if isinstance(requirement.value, float):
        try:
            value = float(value)
        except ValueError:
            return CheckResult(check=check, passed=False, found=f"{found}, not a number")
        if math.isnan(value):
            return CheckResult(check=check, passed=False, found=found)
    passed = _OPS[requirement.op](value, requirement.value)
    return CheckResult(check=check, passed=bool(passed), found=found)


def _number(text: str) -> float:
    word = text.lower().lstrip("+-")
    if word in SPECIAL_NUMBERS:
        return -SPECIAL_NUMBERS[word] if text.startswith("-") else SPECIAL_NUMBERS[word]
    return float(text)


def _number_text(value: float) -> str:
    """``60.0`` -> ``60``, ``0.1`` -> ``0.1``: short, and exact."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _malformed(text: str, why: str) -> InvalidInput:
    return InvalidInput(f"malformed check {text!r}: {why}", check=text)


def parse_approvers(entries: Sequence[str]) -> list[str]:
    """A policy's approvers, checked: ``admins`` or ``@admin`` (any admin) and user names.

    Raises:
        InvalidInput: none given, or an entry that is not a user name.

    Example:
        >>> parse_approvers(["admins", "ana"])
        ['@admin', 'ana']
    """
    found: list[str] = []
    for entry in entries:
        for item in (part.strip() for part in entry.split(",")):
            if item.lower() in ("admins", ADMINS):
                item = ADMINS
            elif not _USER_NAME.match(item):
                raise InvalidInput(
                    f"approver {item!r} is neither admins (any admin) nor a user name "
                    "(letters, digits and . _ @ -)",
                    approver=item,
                )
            if item not in found:
                found.append(item)
    if not found:
        raise InvalidInput("a policy needs approvers: admins, or user names (--approvers ana,bo)")
    return found
