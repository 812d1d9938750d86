"""MLflow's search strings where Keel's own grammar does not take them as they are.

Run filters and order_by clauses go to Keel's run search unchanged (its language is a superset
of MLflow's), except that the MLflow tags Keel keeps as run attributes are renamed:
``tags.mlflow.runName`` is ``attributes.run_name`` (:func:`rewrite_run_search`).

Experiment search has no counterpart in Keel's API: experiments are few, so MLflow's small
experiment filter (comparisons on ``name``, ``tags.<key>``, ``creation_time`` and
``last_update_time`` joined by ``AND``) and its order_by run here over the listed experiments.
Both are read with Keel's search tokenizer, so quoting works as in run search.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

from keel.errors import InvalidInput, InvalidQuery
from keel.tracking.models import Experiment
from keel.tracking.search_lexer import Token, TokenKind, tokenize

__all__ = [
    "PARENT_TAG",
    "RUN_NAME_TAG",
    "USER_TAG",
    "experiment_filter",
    "rewrite_run_search",
    "sort_experiments",
]

RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
PARENT_TAG = "mlflow.parentRunId"

# What MLflow keeps as a tag and Keel as an attribute (or under its own tag).
_TAG_FIELDS = {
    RUN_NAME_TAG: "attributes.run_name",
    USER_TAG: "attributes.user",
    PARENT_TAG: "tags.`keel.parent_run_id`",
}
_ATTRIBUTE_PREFIXES = ("", "attribute", "attributes", "attr")
_TAG_PREFIXES = ("tag", "tags")
_TIMES = {"creation_time": "created_at", "last_update_time": "updated_at"}
_ORDER_KEYS = {"name": "name", "experiment_id": "experiment_id", **_TIMES}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
ExperimentTest = Callable[[Experiment], bool]


def rewrite_run_search(text: str) -> str:
    """A run filter or order_by clause with MLflow's attribute tags named as Keel keeps them.

    ``tags.mlflow.runName = 'x'`` becomes ``attributes.run_name = 'x'``; strings and every
    other field stay as written.
    """
    if "mlflow." not in text:
        return text
    out, last = [], 0
    for token in tokenize(text):
        if (
            token.kind is TokenKind.FIELD
            and _prefix(token) in _TAG_PREFIXES
            and token.value in _TAG_FIELDS
        ):
            out += [text[last : token.position], _TAG_FIELDS[token.value]]
            last = token.position + len(token.text)
    out.append(text[last:])
    return "".join(out)


def experiment_filter(text: str) -> ExperimentTest:
    """A test for MLflow's experiment filter ``text`` (blank matches every experiment).

    Raises:
        InvalidQuery: the filter does not parse; the error points at the spot.
    """
    tokens = list(tokenize(text))  # always ends with an END token
    tests: list[ExperimentTest] = []
    i = 0
    while tokens[i].kind is not TokenKind.END:
        if tests:
            if tokens[i].kind is not TokenKind.KEYWORD or tokens[i].value != "AND":
                raise _error(text, tokens[i], "expected AND (experiment filters join with AND)")
            i += 1
        field, op, value = (tokens[min(i + k, len(tokens) - 1)] for k in range(3))
        tests.append(_comparison(text, field, op, value))
        i = min(i + 3, len(tokens) - 1)
    return lambda experiment: all(test(experiment) for test in tests)


def _comparison(text: str, field: Token, op: Token, value: Token) -> ExperimentTest:
    if field.kind is not TokenKind.FIELD:
        raise _error(text, field, "expected name, creation_time, last_update_time or tags.<key>")
    prefix = _prefix(field)
    if prefix in _ATTRIBUTE_PREFIXES and field.value in _TIMES:
        if op.kind is not TokenKind.OP:
            raise _error(text, op, f"compare {field.value} with =, !=, <, <=, > or >=")
        if value.kind is not TokenKind.NUMBER:
            raise _error(text, value, f"{field.value} is milliseconds: compare it with a number")
        compare, number, attribute = _COMPARE[op.value], float(value.value), _TIMES[field.value]
        return lambda e: compare(getattr(e, attribute), number)
    get: Callable[[Experiment], str | None]
    if prefix in _ATTRIBUTE_PREFIXES and field.value == "name":
        get = operator.attrgetter("name")
    elif prefix in _TAG_PREFIXES:
        key = field.value
        get = lambda e: e.tags.get(key)  # noqa: E731
    else:
        raise _error(
            text,
            field,
            f"unknown field {field.text!r}; use name, creation_time, last_update_time or "
            "tags.<key>",
        )
    if value.kind is not TokenKind.STRING:
        raise _error(text, value, "compare names and tags with a quoted string")
    matches = _string_test(text, op, value.value)
    return lambda e: (found := get(e)) is not None and matches(found)


def _string_test(text: str, op: Token, value: str) -> Callable[[str], bool]:
    if op.kind is TokenKind.OP and op.value in ("=", "!="):
        compare = _COMPARE[op.value]
        return lambda found: compare(found, value)
    if op.kind is TokenKind.KEYWORD and op.value in ("LIKE", "ILIKE"):
        pattern = _like_regex(value, ignore_case=op.value == "ILIKE")
        return lambda found: pattern.fullmatch(found) is not None
    raise _error(text, op, "compare names and tags with =, !=, LIKE or ILIKE")


def _like_regex(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    """SQL LIKE as a regex: % any run, _ any one character, a backslash escapes the next."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def sort_experiments(
    experiments: Sequence[Experiment], order_by: Sequence[str]
) -> list[Experiment]:
    """Experiments in order_by order, then MLflow's default: newest first, ties by id.

    Raises:
        InvalidInput: a clause names something other than name, experiment_id,
            creation_time or last_update_time, with an optional ASC or DESC.
    """
    keys = [_order_key(clause) for clause in order_by] or [("created_at", True)]
    ordered = sorted(experiments, key=operator.attrgetter("experiment_id"))
    for attribute, descending in reversed(keys):
        ordered.sort(key=operator.attrgetter(attribute), reverse=descending)
    return ordered


def _order_key(clause: str) -> tuple[str, bool]:
    tokens = [t for t in tokenize(clause) if t.kind is not TokenKind.END]
    direction = tokens[1].value if len(tokens) == 2 else "ASC"
    if (
        not tokens
        or len(tokens) > 2
        or tokens[0].kind is not TokenKind.FIELD
        or _prefix(tokens[0]) not in _ATTRIBUTE_PREFIXES
        or tokens[0].value not in _ORDER_KEYS
        or direction not in ("ASC", "DESC")
    ):
        raise InvalidInput(
            f"invalid order_by clause {clause!r}; order experiments by name, experiment_id, "
            "creation_time or last_update_time, optionally followed by ASC or DESC"
        )
    return _ORDER_KEYS[tokens[0].value], direction == "DESC"


def _prefix(token: Token) -> str:
    return (token.prefix or "").lower()


def _error(text: str, token: Token, message: str) -> InvalidQuery:
    return InvalidQuery(message, query=text, position=token.position)
