"""The run-search syntax tree: fields, operators, literals and the boolean nodes that
:mod:`keel.tracking.search` parses into and :mod:`keel.tracking.query` compiles to SQL.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import Enum, StrEnum

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_ALIASES",
    "INT32_MAX",
    "INT64_MAX",
    "LIST_OPS",
    "NULL_OPS",
    "OPERATORS_HELP",
    "PATTERN_OPS",
    "PREFIXES",
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
]


class Kind(StrEnum):
    """What a field names: a metric, a param, a tag or an attribute of the run itself."""

    METRIC = "metrics"
    PARAM = "params"
    TAG = "tags"
    ATTRIBUTE = "attributes"


class AttributeType(Enum):
    TEXT = "text"
    TIME = "time"
    DURATION = "duration"
    INTEGER = "integer"


#: The searchable run attributes and their types.
ATTRIBUTES: dict[str, AttributeType] = {
    "run_id": AttributeType.TEXT,
    "run_name": AttributeType.TEXT,
    "status": AttributeType.TEXT,
    "user": AttributeType.TEXT,
    "start_time": AttributeType.TIME,
    "end_time": AttributeType.TIME,
    "duration": AttributeType.DURATION,
    "experiment_id": AttributeType.INTEGER,
    "lifecycle_stage": AttributeType.TEXT,
}
ATTRIBUTE_ALIASES = {"user_id": "user", "created": "start_time"}  # MLflow spellings
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

PREFIXES = {
    "metric": Kind.METRIC,
    "metrics": Kind.METRIC,
    "param": Kind.PARAM,
    "params": Kind.PARAM,
    "parameter": Kind.PARAM,
    "parameters": Kind.PARAM,
    "tag": Kind.TAG,
    "tags": Kind.TAG,
    "attribute": Kind.ATTRIBUTE,
    "attributes": Kind.ATTRIBUTE,
    "attr": Kind.ATTRIBUTE,
    "run": Kind.ATTRIBUTE,
}


class Op(StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    LIKE = "LIKE"
    ILIKE = "ILIKE"
    NOT_LIKE = "NOT LIKE"
    NOT_ILIKE = "NOT ILIKE"
    IN = "IN"
    NOT_IN = "NOT IN"
    IS_NULL = "IS NULL"
    IS_NOT_NULL = "IS NOT NULL"


PATTERN_OPS = frozenset({Op.LIKE, Op.ILIKE, Op.NOT_LIKE, Op.NOT_ILIKE})
LIST_OPS = frozenset({Op.IN, Op.NOT_IN})
NULL_OPS = frozenset({Op.IS_NULL, Op.IS_NOT_NULL})
OPERATORS_HELP = "(=, !=, <, <=, >, >=, LIKE, ILIKE, IN, IS)"


@dataclass(frozen=True)
class Field:
    """``metrics.rmse`` is ``Field(Kind.METRIC, "rmse")``; attribute keys are canonical names."""

    kind: Kind
    key: str
    position: int = field(default=0, compare=False, repr=False)

    def __str__(self) -> str:
        if self.kind is Kind.ATTRIBUTE:
            return self.key
        plain = re.fullmatch(r"[^\W\d][\w\-/.:]*", self.key) is not None
        return f"{self.kind.value}.{self.key if plain else '`' + self.key + '`'}"


@dataclass(frozen=True)
class Number:
    """A numeric literal; ``text`` is the exact decimal spelling (for exact comparisons)."""

    value: float
    text: str
    position: int = field(default=0, compare=False, repr=False)

    @property
    def is_nan(self) -> bool:
        return math.isnan(self.value)


@dataclass(frozen=True)
class String:
    value: str
    position: int = field(default=0, compare=False, repr=False)


Value = Number | String


@dataclass(frozen=True)
class Comparison:
    """One test on one field; ``values`` has one item, the IN list, or none for IS [NOT] NULL."""

    field: Field
    op: Op
    values: tuple[Value, ...] = ()

    @property
    def is_numeric(self) -> bool:
        """True when the literal(s) are numbers: params and tags then compare numerically."""
        return bool(self.values) and isinstance(self.values[0], Number)


@dataclass(frozen=True)
class And:
    operands: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    operand: Expr


Expr = Comparison | And | Or | Not


@dataclass(frozen=True)
class OrderKey:
    field: Field
    descending: bool = False
