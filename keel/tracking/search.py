"""The run-search language: a tokenizer and recursive-descent parser for filters and order_by.

A filter such as ``metrics.rmse < 1 AND params.model = 'tree'`` parses into a small tree of frozen
dataclasses (:class:`Comparison`, :class:`And`, :class:`Or`, :class:`Not`); an order_by clause
such as ``"metrics.rmse DESC"`` parses into :class:`OrderKey`. Parsing also checks types (metrics
are numeric, ``start_time`` takes a time ...) and normalises values (an ISO date becomes
milliseconds, ``'5m'`` becomes 300000), so the compiler in :mod:`keel.tracking.query` never has
to reject anything. Every mistake raises :class:`keel.errors.InvalidQuery` with the position of
the offending token. The grammar, in order of increasing precedence::

    filter     := [or]
    or         := and (OR and)*
    and        := unary (AND unary)*
    unary      := NOT unary | '(' or ')' | comparison
    comparison := field (op value | [NOT] (LIKE | ILIKE) string | [NOT] IN list | IS [NOT] NULL)
    order_by   := field [ASC | DESC] (',' field [ASC | DESC])*
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from keel.errors import InvalidQuery
from keel.tracking.search_ast import ATTRIBUTE_ALIASES as _ATTRIBUTE_ALIASES
from keel.tracking.search_ast import (
    ATTRIBUTES,
    And,
    AttributeType,
    Comparison,
    Expr,
    Field,
    Kind,
    Not,
    Number,
    Op,
    Or,
    OrderKey,
    String,
    Value,
)
from keel.tracking.search_ast import INT32_MAX as _INT32_MAX
from keel.tracking.search_ast import INT64_MAX as _INT64_MAX
from keel.tracking.search_ast import LIST_OPS as _LIST_OPS
from keel.tracking.search_ast import NULL_OPS as _NULL_OPS
from keel.tracking.search_ast import OPERATORS_HELP as _OPERATORS_HELP
from keel.tracking.search_ast import PATTERN_OPS as _PATTERN_OPS
from keel.tracking.search_ast import PREFIXES as _PREFIXES
from keel.tracking.search_lexer import SPECIAL_NUMBERS as _SPECIAL_NUMBERS
from keel.tracking.search_lexer import Token as _Token
from keel.tracking.search_lexer import TokenKind as _T
from keel.tracking.search_lexer import tokenize as _tokenize

__all__ = [
    "ATTRIBUTES",
    "And",
    "AttributeType",
    "Comparison",
    "Expr",
    "Field",
    "Kind",
    "Not",
    "Number",
    "Op",
    "Or",
    "OrderKey",
    "String",
    "Value",
    "parse_filter",
    "parse_order_by",
]


def parse_filter(text: str | None) -> Expr | None:
    """Parse a filter string; an empty or blank one means "no filter" and returns None.

    Raises:
        InvalidQuery: the filter is malformed, names an unknown field, or compares a field with
            a value of the wrong type; its ``position`` points at the offending token.

    Example:
        >>> parse_filter("metrics.rmse < 1 and params.model = 'tree'")  # doctest: +ELLIPSIS
        And(operands=(Comparison(field=Field(kind=<Kind.METRIC: 'metrics'>, key='rmse'), ...
    """
    if text is None or not text.strip():
        return None
    if "\x00" in text:
        raise InvalidQuery(
            "a filter may not contain a NUL character", query=text, position=text.index("\x00")
        )
    return _Parser(text).parse_filter()


def parse_order_by(clauses: Sequence[str] | None) -> tuple[OrderKey, ...]:
    """Parse order_by clauses such as ``["metrics.rmse DESC", "start_time"]``.

    A clause may also hold several comma-separated keys; blank clauses are ignored.

    Raises:
        InvalidQuery: a clause is malformed or names an unknown field.
    """
    if isinstance(clauses, str):
        clauses = [clauses]
    keys: list[OrderKey] = []
    for clause in clauses or ():
        if clause.strip():
            keys.extend(_Parser(clause).parse_order_by())
    return tuple(keys)


# --- parser ---------------------------------------------------------------------------------


#: Limits that keep a filter's SQL plannable: PostgreSQL took 54 s to plan 200 ANDed terms,
#: SQLite refuses expression trees deeper than 1,000, and Python recursion ends near 1,000.
MAX_COMPARISONS = 100
MAX_DEPTH = 100


class _Parser:
    def __init__(self, text: str) -> None:
        self.depth = 0
        self.comparisons = 0
        self.text = text
        self.tokens = list(_tokenize(text))
        self.i = 0

    # token helpers

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        token = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def at_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token.kind is _T.KEYWORD and token.value in words

    def error(self, message: str, position: int) -> InvalidQuery:
        return InvalidQuery(message, query=self.text, position=position)

    def describe(self, token: _Token) -> str:
        return "the end of the input" if token.kind is _T.END else repr(token.text)

    # filters

    def parse_filter(self) -> Expr:
        expr = self.parse_or()
        token = self.peek()
        if token.kind is _T.RPAREN:
            raise self.error("unexpected ')' with no matching '('", token.position)
        if token.kind is not _T.END:
            raise self.error(
                f"expected AND, OR or the end of the filter, found {self.describe(token)}",
                token.position,
            )
        return expr

    def parse_or(self) -> Expr:
        operands = [self.parse_and()]
        while self.at_keyword("OR"):
            self.advance()
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else Or(_flatten(Or, operands))

    def parse_and(self) -> Expr:
        operands = [self.parse_unary()]
        while self.at_keyword("AND"):
            self.advance()
            operands.append(self.parse_unary())
        return operands[0] if len(operands) == 1 else And(_flatten(And, operands))

    def parse_unary(self) -> Expr:
        token = self.peek()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(
                f"the filter nests NOT and parentheses more than {MAX_DEPTH} deep; simplify it",
                token.position,
            )
        try:
            return self._parse_unary(token)
        finally:
            self.depth -= 1

    def _parse_unary(self, token: _Token) -> Expr:
        if self.at_keyword("NOT"):
            self.advance()
            return Not(self.parse_unary())
        if token.kind is _T.LPAREN:
            self.advance()
            if self.peek().kind is _T.RPAREN:
                raise self.error("empty parentheses; put a comparison inside", self.peek().position)
            expr = self.parse_or()
            closing = self.peek()
            if closing.kind is _T.END:
                raise self.error("unclosed parenthesis opened here", token.position)
            if closing.kind is not _T.RPAREN:
                raise self.error(
                    f"expected AND, OR or ')', found {self.describe(closing)}", closing.position
                )
            self.advance()
            return expr
        if token.kind is _T.FIELD:
            self.comparisons += 1
            if self.comparisons > MAX_COMPARISONS:
                raise self.error(
                    f"the filter has more than {MAX_COMPARISONS} comparisons; split the search "
                    "or use IN (...) for many values of one field",
                    token.position,
                )
            return self.parse_comparison()
        previous = self.tokens[self.i - 1] if self.i else None
        after = (
            f" after {previous.value}"
            if previous is not None and previous.kind is _T.KEYWORD
            else ""
        )
        raise self.error(
            f"expected a comparison such as metrics.rmse < 1{after}, found {self.describe(token)}",
            token.position,
        )

    def parse_comparison(self) -> Comparison:
        field_token = self.advance()
        target = self.resolve_field(field_token)
        token = self.peek()
        values: tuple[Value, ...] = ()
        if token.kind is _T.OP:
            self.advance()
            op = Op(token.value)
            values = (self.parse_value(token),)
        elif self.at_keyword("LIKE", "ILIKE", "IN", "NOT"):
            negated = self.at_keyword("NOT")
            if negated:
                self.advance()
                if not self.at_keyword("LIKE", "ILIKE", "IN"):
                    raise self.error(
                        f"expected LIKE, ILIKE or IN after NOT, found {self.describe(self.peek())}",
                        self.peek().position,
                    )
            word = self.advance()
            op = Op(f"NOT {word.value}" if negated else word.value)
            values = self.parse_list(word) if op in _LIST_OPS else (self.parse_value(word),)
        elif self.at_keyword("IS"):
            self.advance()
            op = Op.IS_NULL
            if self.at_keyword("NOT"):
                self.advance()
                op = Op.IS_NOT_NULL
            if not self.at_keyword("NULL"):
                raise self.error(
                    f"expected NULL or NOT NULL after IS, found {self.describe(self.peek())}",
                    self.peek().position,
                )
            self.advance()
        else:
            raise self.error(
                f"expected a comparison operator {_OPERATORS_HELP} after {field_token.text!r}, "
                f"found {self.describe(token)}",
                token.position,
            )
        return _check(self, Comparison(target, op, values), token.position)

    def parse_value(self, after: _Token) -> Value:
        token = self.advance()
        if token.kind is _T.STRING:
            return String(token.value, token.position)
        if token.kind is _T.NUMBER:
            number = _number(token.value, token.position)
            if _out_of_range(number):
                raise self.error(
                    f"number {token.value} is out of range; use at most 40 characters and a "
                    "magnitude between 1e-300 and 1e300 (or NaN, inf)",
                    token.position,
                )
            return number
        if token.kind is _T.KEYWORD and token.value == "NULL":
            raise self.error(
                "use IS NULL or IS NOT NULL to test whether a run has a value", token.position
            )
        raise self.error(
            f"expected a value (a number or a quoted string) after {after.text.upper()!r}, "
            f"found {self.describe(token)}",
            token.position,
        )

    def parse_list(self, after: _Token) -> tuple[Value, ...]:
        opening = self.peek()
        if opening.kind is not _T.LPAREN:
            raise self.error(
                f"expected '(' after {after.value}, as in IN ('a', 'b') or IN (1, 2)",
                opening.position,
            )
        self.advance()
        if self.peek().kind is _T.RPAREN:
            raise self.error("an IN list needs at least one value", self.peek().position)
        values = [self.parse_value(opening)]
        while True:
            token = self.peek()
            if token.kind is _T.RPAREN:
                self.advance()
                return tuple(values)
            if token.kind is _T.END:
                raise self.error("unclosed parenthesis opened here", opening.position)
            if token.kind is not _T.COMMA:
                raise self.error(
                    f"expected ',' or ')' in the IN list, found {self.describe(token)}",
                    token.position,
                )
            values.append(self.parse_value(self.advance()))

    def resolve_field(self, token: _Token) -> Field:
        if token.prefix is None:
            name = _attribute_name(token.value)
            if name is None:
                raise self.error(
                    f"unknown field {token.value!r}; use metrics.<key>, params.<key>, tags.<key> "
                    f"or an attribute ({', '.join(sorted(ATTRIBUTES))})"
                    + _suggest(token.value, list(ATTRIBUTES)),
                    token.position,
                )
            return Field(Kind.ATTRIBUTE, name, token.position)
        kind = _PREFIXES.get(token.prefix.lower())
        if kind is None:
            raise self.error(
                f"unknown field prefix {token.prefix!r}; use metrics., params., tags. or "
                "attributes." + _suggest(token.prefix.lower(), list(_PREFIXES)),
                token.position,
            )
        if not token.value:
            raise self.error(
                f"expected a key after {token.prefix}., as in {kind.value}.my_key "
                f"or {kind.value}.`my key`",
                token.key_position,
            )
        if kind is not Kind.ATTRIBUTE:
            return Field(kind, token.value, token.position)
        name = _attribute_name(token.value)
        if name is None:
            raise self.error(
                f"unknown attribute {token.value!r}; known: {', '.join(sorted(ATTRIBUTES))}"
                + _suggest(token.value, list(ATTRIBUTES)),
                token.key_position,
            )
        return Field(Kind.ATTRIBUTE, name, token.position)

    # order_by

    def parse_order_by(self) -> list[OrderKey]:
        keys = []
        while True:
            token = self.peek()
            if token.kind is not _T.FIELD:
                raise self.error(
                    f"expected a field to order by, such as metrics.rmse or start_time, "
                    f"found {self.describe(token)}",
                    token.position,
                )
            self.advance()
            target = self.resolve_field(token)
            descending = False
            if self.at_keyword("ASC", "DESC"):
                descending = self.advance().value == "DESC"
            keys.append(OrderKey(target, descending))
            after = self.peek()
            if after.kind is _T.END:
                return keys
            if after.kind is not _T.COMMA:
                raise self.error(
                    f"expected ASC, DESC, ',' or the end of the clause after {token.text!r}, "
                    f"found {self.describe(after)}",
                    after.position,
                )
            self.advance()


def _flatten(kind: type[And] | type[Or], operands: list[Expr]) -> tuple[Expr, ...]:
    """``(a OR b) OR c`` is ``Or((a, b, c))``: nested operands of the same kind are merged."""
    flat: list[Expr] = []
    for operand in operands:
        flat.extend(operand.operands if isinstance(operand, kind) else (operand,))
    return tuple(flat)


def _attribute_name(word: str) -> str | None:
    name = word.lower().replace(" ", "_")
    name = _ATTRIBUTE_ALIASES.get(name, name)
    return name if name in ATTRIBUTES else None


def _suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _out_of_range(number: Number) -> bool:
    """A literal PostgreSQL's numeric type or a double cannot hold (overflow or underflow)."""
    if number.text.lstrip("+-").lower() in _SPECIAL_NUMBERS:
        return False
    mantissa = number.text.lower().split("e")[0]
    underflow = number.value == 0 and any(c in "123456789" for c in mantissa)
    return len(number.text) > 40 or not math.isfinite(number.value) or underflow


def _number(text: str, position: int) -> Number:
    special = text.lstrip("+-").lower()
    if special in _SPECIAL_NUMBERS:
        value = _SPECIAL_NUMBERS[special]
        negative = text.startswith("-")
        return Number(
            -value if negative else value, f"-{special}" if negative else special, position
        )
    return Number(float(text), text, position)


# --- type checks and normalisation ----------------------------------------------------------

_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _check(parser: _Parser, comparison: Comparison, op_position: int) -> Comparison:
    """Reject a comparison whose values do not suit its field; normalise attribute values."""
    target, op, values = comparison.field, comparison.op, comparison.values
    name = str(target)
    if op in _NULL_OPS:
        return comparison
    numbers = [v for v in values if isinstance(v, Number)]
    strings = [v for v in values if isinstance(v, String)]
    if numbers and strings:
        raise parser.error(
            "an IN list mixes numbers and strings; use all quoted strings (compared as text) "
            "or all numbers (compared numerically)",
            next(v for v in values if type(v) is not type(values[0])).position,
        )
    if op in _PATTERN_OPS:
        for value in values:
            if not isinstance(value, String):
                raise parser.error(
                    f"{op.value} needs a quoted pattern such as '%tree%', not {value.text}",
                    value.position,
                )
            if re.search(r"(?<!\\)(?:\\\\)*\\$", value.value):
                raise parser.error(
                    f"a {op.value} pattern cannot end with a lone backslash, its escape "
                    "character; escape the backslash itself to match one",
                    value.position,
                )
    if target.kind is Kind.METRIC:
        if op in _PATTERN_OPS:
            raise parser.error(
                f"metrics are numeric, so {op.value} does not apply to {name}; "
                "use =, !=, <, <=, >, >= or IN",
                op_position,
            )
        if strings:
            raise parser.error(
                f"metrics are numeric; compare {name} with a number, not "
                f"{_quote(strings[0].value)}",
                strings[0].position,
            )
        return comparison
    if target.kind in (Kind.PARAM, Kind.TAG):
        for number in numbers:
            if not math.isfinite(number.value):
                raise parser.error(
                    f"{target.kind.value} compare numerically only with finite numbers, "
                    f"not {number.text}",
                    number.position,
                )
        return comparison
    return _check_attribute(parser, comparison, op_position)


def _check_attribute(parser: _Parser, comparison: Comparison, op_position: int) -> Comparison:
    target, op, values = comparison.field, comparison.op, comparison.values
    kind = ATTRIBUTES[target.key]
    if kind is AttributeType.TEXT:
        for value in values:
            if isinstance(value, Number):
                raise parser.error(
                    f"{target.key} is text; compare it with a quoted string, not {value.text}",
                    value.position,
                )
        if target.key in ("status", "lifecycle_stage"):
            # stored as RUNNING, FINISHED ... and active, deleted: match any spelling
            fold = str.upper if target.key == "status" else str.lower
            values = tuple(
                String(fold(v.value), v.position) for v in values if isinstance(v, String)
            )
        return Comparison(target, op, values)
    if op in _PATTERN_OPS:
        raise parser.error(
            f"{op.value} compares text and {target.key} is {_describe_type(kind)}; "
            "use =, !=, <, <=, >, >= or IN",
            op_position,
        )
    converted = []
    for value in values:
        if isinstance(value, Number):
            if not math.isfinite(value.value):
                raise parser.error(
                    f"{target.key} takes a finite number, not {value.text}", value.position
                )
            converted.append(value)
            continue
        converted.append(_convert_attribute_string(parser, target.key, kind, value))
    # the columns are 64-bit integers (experiment_id 32-bit): a literal beyond them is a typo
    # the database would reject with an overflow
    limit = _INT32_MAX if kind is AttributeType.INTEGER else _INT64_MAX
    for number in converted:
        if abs(number.value) > limit:
            raise parser.error(
                f"{target.key} {number.text} is out of range (at most {limit:,} in size)",
                number.position,
            )
    return Comparison(target, op, tuple(converted))


def _convert_attribute_string(
    parser: _Parser, name: str, kind: AttributeType, value: String
) -> Number:
    text = value.value.strip()
    if kind is AttributeType.TIME:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise parser.error(
                f"{name} takes milliseconds since the epoch or an ISO date such as "
                f"'2026-11-01' or '2026-11-01T12:00:00Z', not {_quote(value.value)}",
                value.position,
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        millis = (moment - _EPOCH) // timedelta(milliseconds=1)
        return Number(float(millis), str(millis), value.position)
    if kind is AttributeType.DURATION:
        parts = _DURATION_PART.findall(text)
        if not parts or _DURATION_PART.sub("", text).strip():
            raise parser.error(
                "duration takes milliseconds or a string with a unit such as '250ms', '90s', "
                f"'5m', '2h', '1d' or '1h30m', not {_quote(value.value)}",
                value.position,
            )
        millis_f = sum(float(amount) * _DURATION_MS[unit.lower()] for amount, unit in parts)
        return Number(millis_f, _plain(millis_f), value.position)
    try:
        number = int(text)
    except ValueError:
        raise parser.error(
            f"{name} is an integer; compare it with a number such as 1, not {_quote(value.value)}",
            value.position,
        ) from None
    return Number(float(number), str(number), value.position)


def _plain(number: float) -> str:
    return str(int(number)) if number.is_integer() else repr(number)


def _describe_type(kind: AttributeType) -> str:
    return {
        AttributeType.TIME: "a time",
        AttributeType.DURATION: "a duration",
        AttributeType.INTEGER: "an integer",
        AttributeType.TEXT: "text",
    }[kind]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
