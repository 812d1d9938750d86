"""Validation rules: the ``rules.yaml`` a user writes, and the rules inferred from a reference.

A reference profile (a dataset version's, or a reference file profiled on the fly) gives the
inferred rules; the rules file adds rules, overrides inferred ones of the same kind, tunes the
tolerances and turns inference off per kind or per column::

    tolerances:
      range: 0.1      # widen the reference's [min, max] by 10% of its span on each side
      nulls: 0.05     # null fraction may exceed the reference's by 0.05 (when it had nulls)
      rows: 0.5       # row count within 50% .. 150% of the reference's
    infer:            # every kind on by default
      columns: true   # every reference column present, no unexpected ones
      types: true
      nullable: true
      ranges: true
      categories: true   # allowed values: at most max_categories, each seen twice on average
      max_categories: 20
      rows: true
    table:
      rows: {min: 1000, max: 5000000}
      allow_extra_columns: false
    columns:
      age: {type: integer, nullable: false, min: 0, max: 120}
      sex: {allowed: [F, M]}
      email: {regex: '^[^@]+@[^@]+$', unique: true}
      notes: {infer: false}      # no inferred rule for this column

:func:`load_rules` reports a malformed file with its line; :func:`plan_rules` merges everything
into the list of :class:`Rule` the validator applies.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keel.data.profile_models import TableProfile
from keel.errors import InvalidInput

__all__ = [
    "FAMILIES",
    "ColumnRules",
    "Rule",
    "RulesFile",
    "family_accepts",
    "load_rules",
    "parse_rules",
    "plan_rules",
    "type_family",
]

#: the type names a rule may use (an Arrow type name is read as its family)
FAMILIES = ("integer", "float", "number", "string", "boolean", "datetime", "date")
RuleKind = Literal[
    "columns", "rows", "present", "type", "not_null", "null_fraction", "min", "max",
    "allowed", "regex", "unique",
]  # fmt: skip
Scalar = str | int | float | bool


def type_family(type_name: str) -> str:
    """The family of an Arrow type name: ``int32`` -> integer, ``large_string`` -> string.

    Example:
        >>> type_family("timestamp[us, tz=UTC]")
        'datetime'
    """
    name = type_name.strip().lower()
    if name in FAMILIES or name == "null":
        return name
    if re.fullmatch(r"u?int\d*", name):
        return "integer"
    if name in ("float", "double", "halffloat", "float16", "float32", "float64"):
        return "float"
    if name.startswith("decimal"):
        return "float"
    if name in ("string", "large_string", "utf8", "large_utf8", "string_view", "str"):
        return "string"
    if name in ("bool", "boolean"):
        return "boolean"
    if name.startswith("timestamp"):
        return "datetime"
    if name.startswith("date"):
        return "date"
    return name


def family_accepts(expected: str, actual: str) -> bool:
    """Whether a column of type family ``actual`` satisfies a rule asking for ``expected``.

    Args:
        expected: the family a rule asks for (``number`` takes integers and floats).
        actual: the column's family (``null``, a column of only nulls, fits any).

    Returns:
        True when it fits; integers fit ``float`` too.

    Example:
        >>> family_accepts("float", "integer"), family_accepts("integer", "float")
        (True, False)
    """
    if actual in (expected, "null"):  # a batch with only nulls fits any type
        return True
    if expected == "number":
        return actual in ("integer", "float")
    return expected == "float" and actual == "integer"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Tolerances(_Strict):
    """How far a new batch may stray from the reference before an inferred rule fails."""

    range: float = Field(default=0.1, ge=0, description="fraction of the reference's span")
    nulls: float = Field(default=0.05, ge=0, le=1, description="added null fraction")
    rows: float = Field(default=0.5, ge=0, description="fraction of the reference's rows")


class Inference(_Strict):
    """Which kinds of rules are inferred from the reference (all by default)."""

    columns: bool = True
    types: bool = True
    nullable: bool = True
    ranges: bool = True
    categories: bool = True
    max_categories: int = Field(default=20, ge=1)
    rows: bool = True


class RowBounds(_Strict):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)


class TableRules(_Strict):
    rows: RowBounds | None = None
    allow_extra_columns: bool | None = None


class ColumnRules(_Strict):
    """What a user asks of one column; unset fields keep the inferred rule."""

    type: str | None = None
    required: bool | None = None
    nullable: bool | None = None
    max_null_fraction: float | None = Field(default=None, ge=0, le=1)
    min: float | str | None = None
    max: float | str | None = None
    allowed: list[Scalar] | None = None
    regex: str | None = None
    unique: bool | None = None
    infer: bool = Field(default=True, description="False: no inferred rule for this column")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None and type_family(value) not in FAMILIES:
            raise ValueError(f"unknown type {value!r}; use one of {', '.join(FAMILIES)}")
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a valid regular expression: {error}") from None
        return value


class RulesFile(_Strict):
    """The whole rules file."""

    tolerances: Tolerances = Field(default_factory=Tolerances)
    infer: Inference = Field(default_factory=Inference)
    table: TableRules = Field(default_factory=TableRules)
    columns: dict[str, ColumnRules] = Field(default_factory=dict)


class Rule(BaseModel):
    """One check the validator applies, inferred or written."""

    model_config = ConfigDict(frozen=True)

    kind: RuleKind
    column: str | None = None
    expected: str = Field(description="what passes, as the report prints it")
    source: Literal["inferred", "rules"]
    value: Any = Field(default=None, description="the bound, family, pattern or values")


def load_rules(path: str | os.PathLike[str]) -> RulesFile:
    """Read a rules YAML file.

    Args:
        path: the file.

    Returns:
        The parsed rules.

    Raises:
        InvalidInput: the file is missing, not YAML, or a field is unknown or has a bad value;
            the message names the file, the line and the field.

    Example:
        >>> load_rules("rules.yaml").columns["age"].min
        0.0
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise InvalidInput(
            f"cannot read the rules file {os.fspath(path)}: {error.strerror}", path=str(path)
        ) from None
    return parse_rules(text, source=os.fspath(path))


def parse_rules(text: str, *, source: str = "rules") -> RulesFile:
    """Parse the text of a rules file.

    Args:
        text: the YAML text.
        source: how errors name it (the file's path).

    Returns:
        The parsed rules.

    Raises:
        InvalidInput: not YAML, not a mapping, an unknown field or a bad value, with the line.

    Example:
        >>> parse_rules("columns: {age: {min: 0}}").columns["age"].min
        0.0
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "not YAML"
        raise InvalidInput(f"{source}{where}: {problem}", path=source) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise InvalidInput(f"{source}, line 1: a rules file is a YAML mapping", path=source)
    try:
        return RulesFile.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        loc = [p for p in first["loc"] if not str(p).startswith(("function-after", "str"))]
        line = _line_of(node, loc)
        field = ".".join(str(p) for p in loc) or "rules"
        where = f", line {line}" if line else ""
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidInput(f"{source}{where}: {field}: {message}", path=source, line=line) from None


def _line_of(node: Any, loc: list[Any]) -> int | None:
    """The 1-based line of the YAML node at path ``loc`` (or of its deepest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == str(part)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def plan_rules(reference: TableProfile | None, rules: RulesFile | None = None) -> list[Rule]:
    """Every rule to apply: inferred from ``reference`` (when given), merged with ``rules``.

    A written rule replaces the inferred rule of the same kind on the same column.

    Args:
        reference: the reference profile, or None to apply only the written rules.
        rules: the rules file, or None for the inferred rules with default tolerances.

    Returns:
        The rules, table rules first, then column by column in the reference's order.

    Example:
        >>> [r.expected for r in plan_rules(profile_table("train.csv"))][:2]
        ['221 .. 663 rows', 'no columns beyond the known ones']
    """
    rules = rules or RulesFile()
    planned: dict[tuple[str | None, str], Rule] = {}
    if reference is not None:
        for rule in _inferred(reference, rules):
            planned[(rule.column, rule.kind)] = rule
    for rule in _written(rules):
        planned[(rule.column, rule.kind)] = rule
    for (column, kind), rule in list(planned.items()):
        # a written `nullable: true` drops the inferred not-null and null-fraction rules
        spec = rules.columns.get(column or "")
        nullable = spec is not None and spec.nullable is True
        if nullable and kind in ("not_null", "null_fraction") and rule.source == "inferred":
            del planned[(column, kind)]
    extra = rules.table.allow_extra_columns
    known = [c.name for c in reference.columns] if reference is not None else []
    known += [n for n in rules.columns if n not in known]
    if extra is True:
        planned.pop((None, "columns"), None)
    elif extra is False or (None, "columns") in planned:
        planned[(None, "columns")] = Rule(
            kind="columns",
            expected="no columns beyond the known ones",
            source="rules" if extra is False else "inferred",
            value=known,
        )
    return list(planned.values())


def _inferred(reference: TableProfile, rules: RulesFile) -> list[Rule]:
    infer, tol = rules.infer, rules.tolerances
    found: list[Rule] = []
    if infer.rows and reference.rows > 0:
        low = math.floor(reference.rows * (1 - tol.rows)) if tol.rows < 1 else 0
        high = math.ceil(reference.rows * (1 + tol.rows))
        found.append(
            Rule(kind="rows", expected=f"{low:,} .. {high:,} rows", source="inferred",
                 value=(low, high))
        )  # fmt: skip
    if infer.columns:
        found.append(Rule(kind="columns", expected="", source="inferred"))  # see plan_rules
    for column in reference.columns:
        spec = rules.columns.get(column.name)
        if spec is not None and not spec.infer:
            continue
        name = column.name
        if infer.columns:
            found.append(Rule(kind="present", column=name, expected="present", source="inferred"))
        family = type_family(column.type)
        if infer.types and family in FAMILIES:
            found.append(
                Rule(kind="type", column=name, expected=family, source="inferred", value=family)
            )
        if infer.nullable and column.count > 0:
            if column.nulls == 0:
                found.append(
                    Rule(kind="not_null", column=name, expected="no nulls", source="inferred")
                )
            elif column.null_fraction + tol.nulls < 1:
                limit = column.null_fraction + tol.nulls
                found.append(
                    Rule(kind="null_fraction", column=name, expected=f"<= {limit:.1%} nulls",
                         source="inferred", value=limit)
                )  # fmt: skip
        if infer.ranges and column.kind == "numeric" and isinstance(column.min, float):
            assert isinstance(column.max, float)
            span = column.max - column.min
            margin = tol.range * (span if span > 0 else max(abs(column.min), 1.0))
            bottom: float = column.min - margin
            top: float = column.max + margin
            if family == "integer":
                bottom, top = math.floor(bottom), math.ceil(top)
            found.append(
                Rule(kind="min", column=name, expected=f">= {bottom:g}", source="inferred",
                     value=bottom)
            )  # fmt: skip
            found.append(
                Rule(kind="max", column=name, expected=f"<= {top:g}", source="inferred",
                     value=top)
            )  # fmt: skip
        complete = column.distinct_exact and column.top_exact and len(column.top) == column.distinct
        if (
            infer.categories
            and column.kind == "categorical"
            and complete
            and 0 < column.distinct <= infer.max_categories
            and column.distinct * 2 <= column.count - column.nulls  # values repeat: not an id
        ):
            values = sorted(c.value for c in column.top)
            found.append(
                Rule(kind="allowed", column=name, expected=f"one of {_list(values)}",
                     source="inferred", value=values)
            )  # fmt: skip
    return found


def _written(rules: RulesFile) -> list[Rule]:
    found: list[Rule] = []
    rows = rules.table.rows
    if rows is not None and (rows.min is not None or rows.max is not None):
        low, high = rows.min or 0, rows.max
        text = f"{low:,} .. {high:,} rows" if high is not None else f">= {low:,} rows"
        found.append(Rule(kind="rows", expected=text, source="rules", value=(low, high)))
    for name, spec in rules.columns.items():
        if spec.required is not False:
            found.append(Rule(kind="present", column=name, expected="present", source="rules"))
        if spec.type is not None:
            family = type_family(spec.type)
            found.append(
                Rule(kind="type", column=name, expected=family, source="rules", value=family)
            )
        if spec.nullable is False:
            found.append(Rule(kind="not_null", column=name, expected="no nulls", source="rules"))
        if spec.max_null_fraction is not None:
            limit = spec.max_null_fraction
            found.append(
                Rule(kind="null_fraction", column=name, expected=f"<= {limit:.1%} nulls",
                     source="rules", value=limit)
            )  # fmt: skip
        for kind, bound, sign in (("min", spec.min, ">="), ("max", spec.max, "<=")):
            if bound is not None:
                found.append(
                    Rule(kind=kind, column=name, expected=f"{sign} {bound}", source="rules",  # type: ignore[arg-type]
                         value=bound)
                )  # fmt: skip
        if spec.allowed is not None:
            found.append(
                Rule(kind="allowed", column=name, expected=f"one of {_list(spec.allowed)}",
                     source="rules", value=list(spec.allowed))
            )  # fmt: skip
        if spec.regex is not None:
            found.append(
                Rule(kind="regex", column=name, expected=f"matches {spec.regex}", source="rules",
                     value=spec.regex)
            )  # fmt: skip
        if spec.unique:
            found.append(Rule(kind="unique", column=name, expected="unique", source="rules"))
    return found


def _list(values: list[Any], limit: int = 8) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")
