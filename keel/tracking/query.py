"""Compile a run search (filter + order_by, see :mod:`keel.tracking.search`) into one SELECT.

The result selects ``runs.run_id`` only, filtered, ordered and paged in SQL; nothing is filtered
in Python. The shape is chosen for the indexes of migration 0002:

- A top-level AND term on the key the search orders by (``metrics.rmse < 1`` ordered by
  ``metrics.rmse``) becomes an inner join of that key's row, with the test on the joined row. The
  rows then come out of the ``(key, value, run_id)`` index already sorted, and LIMIT stops the
  walk after one page: no sort, no scan of the other runs.
- Every other test on a metric, param or tag is a subquery that is TRUE or FALSE, never NULL,
  so ``NOT (metrics.x < 1)`` matches the runs that lack ``x`` (SQL NOT over the whole test). On
  SQLite it is an uncorrelated ``run_id IN (SELECT ...)``, read once from the ``(key, value)``
  index; on PostgreSQL a correlated ``EXISTS``, which the planner turns into a semi-join.
- An order key the filter does not guarantee is a LEFT JOIN, so runs without it sort last.

Numeric tests on params and tags (``params.lr > 0.001``) read the text as a number only when it
is one, on both dialects, so ``'tree'`` never matches and never raises.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    REAL,
    ColumnElement,
    Numeric,
    Select,
    Table,
    and_,
    case,
    cast,
    false,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql.expression import UnaryExpression

from keel.db.schema import latest_metrics, params, runs, tags
from keel.errors import InvalidInput
from keel.tracking.search import (
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
    parse_filter,
    parse_order_by,
)

__all__ = ["DIALECTS", "LIFECYCLES", "build_search"]

DIALECTS = ("sqlite", "postgresql")
LIFECYCLES = ("active", "deleted", "all")

_DEFAULT_ORDER = (OrderKey(Field(Kind.ATTRIBUTE, "start_time"), descending=True),)
_TABLES: dict[Kind, Table] = {Kind.METRIC: latest_metrics, Kind.PARAM: params, Kind.TAG: tags}
_COMPARE: dict[Op, Callable[[Any, Any], Any]] = {
    Op.EQ: operator.eq,
    Op.NE: operator.ne,
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
}
# What counts as a number in a param or tag: SQLite's own numeric-text grammar (the text that
# NUMERIC affinity converts), with at most 4 exponent digits so PostgreSQL's NUMERIC never
# overflows. The same rule is written once per dialect in _Compiler.numeric_text.
_PG_NUMBER = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,4})?\s*$"
_SQLITE_LONG_EXPONENT = "*[eE]*[0-9][0-9][0-9][0-9][0-9]*"


def build_search(
    *,
    filter_string: str = "",
    order_by: Sequence[str] | None = None,
    experiment_ids: Sequence[int] | None = None,
    lifecycle: str = "active",
    limit: int,
    offset: int = 0,
    dialect: str,
) -> Select[tuple[str]]:
    """Build the SELECT of the run ids matching a search, in order, one page of them.

    Args:
        filter_string: a filter such as ``"metrics.rmse < 1 and params.model = 'tree'"``;
            empty means every run.
        order_by: clauses such as ``["metrics.rmse DESC", "start_time"]``; missing values sort
            last either way, and ``run_id`` always breaks ties. Default: newest first.
        experiment_ids: the experiments to search; None means all of them.
        lifecycle: ``"active"``, ``"deleted"`` or ``"all"`` runs.
        limit: the page size.
        offset: how many matching runs to skip.
        dialect: ``"sqlite"`` or ``"postgresql"``: the SQL differs a little.

    Returns:
        A ``Select`` of one column, ``runs.run_id``.

    Raises:
        InvalidQuery: the filter or an order_by clause is malformed.
        InvalidInput: lifecycle, limit or offset is out of range.

    Example:
        >>> stmt = build_search(filter_string="params.model = 'tree'",
        ...                     order_by=["metrics.rmse"], limit=10, dialect="sqlite")
        >>> run_ids = conn.execute(stmt).scalars().all()  # doctest: +SKIP
    """
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, not {dialect!r}")
    if lifecycle not in LIFECYCLES:
        raise InvalidInput(
            f"lifecycle must be one of {', '.join(LIFECYCLES)}, not {lifecycle!r}",
            lifecycle=lifecycle,
        )
    if limit < 0 or offset < 0:
        raise InvalidInput(
            f"limit and offset must not be negative (got {limit} and {offset})",
            limit=limit,
            offset=offset,
        )
    expr = parse_filter(filter_string)
    keys = parse_order_by(order_by) or _DEFAULT_ORDER
    compiler = _Compiler(postgres=dialect == "postgresql")
    stmt = compiler.select(expr, keys)
    if experiment_ids is not None:
        stmt = stmt.where(runs.c.experiment_id.in_([int(e) for e in experiment_ids]))
    if lifecycle != "all":
        stmt = stmt.where(runs.c.lifecycle_stage == lifecycle)
    return stmt.limit(limit).offset(offset)


class _Compiler:
    def __init__(self, *, postgres: bool) -> None:
        self.postgres = postgres

    def select(self, expr: Expr | None, keys: Sequence[OrderKey]) -> Select[tuple[str]]:
        terms: list[Expr] = (
            list(expr.operands) if isinstance(expr, And) else [expr] if expr is not None else []
        )
        # A top-level test on a key we order by, which a run must have to match, moves onto
        # that key's joined row: the join becomes inner and can walk the (key, value) index.
        ordered = {k.field for k in keys if k.field.kind is not Kind.ATTRIBUTE}
        anchors: dict[Field, list[Comparison]] = {}
        where: list[ColumnElement[bool]] = []
        for term in terms:
            if isinstance(term, Comparison) and term.field in ordered and term.op is not Op.IS_NULL:
                anchors.setdefault(term.field, []).append(term)
            else:
                where.append(self.predicate(term))

        source: Any = runs
        joined: dict[Field, Any] = {}
        for key in keys:
            target = key.field
            if target in joined or target.kind is Kind.ATTRIBUTE:
                continue
            row = _TABLES[target.kind].alias()
            on = and_(row.c.run_id == runs.c.run_id, row.c.key == target.key)
            source = source.join(row, on, isouter=target not in anchors)
            joined[target] = row
            for test in anchors.get(target, ()):
                tested = self.row_test(test, row)
                if tested is not None:
                    where.append(tested)

        order: list[UnaryExpression[Any]] = []
        for key in keys:
            order.extend(self.order_terms(key, joined.get(key.field), anchors.get(key.field)))
        if keys[-1].field != Field(Kind.ATTRIBUTE, "run_id"):
            # The tiebreaker; the first key's own row when inner-joined, so that a walk of its
            # (key, value, run_id) index yields the final order with no sort at all.
            first = keys[0].field
            tiebreak = joined[first].c.run_id if first in anchors else runs.c.run_id
            order.append(tiebreak.asc())
        return select(runs.c.run_id).select_from(source).where(*where).order_by(*order)

    # --- filters ----------------------------------------------------------------------------

    def predicate(self, expr: Expr) -> ColumnElement[bool]:
        """A test that is TRUE or FALSE for every run (never NULL), so NOT inverts it exactly."""
        if isinstance(expr, And):
            return and_(*(self.predicate(e) for e in expr.operands))
        if isinstance(expr, Or):
            return or_(*(self.predicate(e) for e in expr.operands))
        if isinstance(expr, Not):
            return not_(self.predicate(expr.operand))
        if expr.field.kind is Kind.ATTRIBUTE:
            return self.attribute_test(expr)
        row = _TABLES[expr.field.kind].alias()
        tested = None if expr.op is Op.IS_NULL else self.row_test(expr, row)
        conditions = [row.c.key == expr.field.key] + ([tested] if tested is not None else [])
        if self.postgres:
            # A correlated EXISTS: a semi-join at the top level, one primary-key probe per run
            # under OR / NOT (an IN there is a hashed subplan only while it fits work_mem).
            found = (
                select(row.c.run_id)
                .where(row.c.run_id == runs.c.run_id, *conditions)
                .exists()
                .correlate(runs)
            )
            return ~found if expr.op is Op.IS_NULL else found
        # SQLite: an uncorrelated IN, read once from the (key, value) index into a temporary
        # b-tree and probed in memory. A correlated probe of the table per run wins when most
        # runs pass (3 ms against 12 ms for the benchmark at 100k runs) but costs about 10 times
        # more when few pass and the walk goes on; SQLite keeps no statistics to tell which.
        matching = select(row.c.run_id).where(*conditions)
        if expr.op is Op.IS_NULL:
            return runs.c.run_id.not_in(matching)
        return runs.c.run_id.in_(matching)

    def row_test(self, test: Comparison, row: Any) -> ColumnElement[bool] | None:
        """The test on one (run_id, key, value) row of the key; None when having it is enough."""
        if test.op is Op.IS_NOT_NULL:
            return None
        if test.field.kind is Kind.METRIC:
            return self.metric_test(test, row)
        if test.is_numeric:
            return _compare(self.numeric_text(row.c.value), test.op, self.numbers(test))
        return self.text_test(row.c.value, test.op, _strings(test))

    def metric_test(self, test: Comparison, row: Any) -> ColumnElement[bool]:
        # NaN is stored as value NULL, is_nan true: no numeric test matches it, and per IEEE
        # every != (and NOT IN) does.
        value, is_nan = row.c.value, row.c.is_nan
        numbers = [v.value for v in test.values if isinstance(v, Number) and not v.is_nan]
        has_nan = len(numbers) < len(test.values)
        if test.op is Op.IN:
            return or_(value.in_(numbers) if numbers else false(), is_nan if has_nan else false())
        if test.op is Op.NOT_IN:
            if has_nan:
                return and_(not_(is_nan), value.not_in(numbers) if numbers else true())
            return or_(is_nan, value.not_in(numbers))
        if has_nan:
            return {Op.EQ: is_nan, Op.NE: not_(is_nan)}.get(test.op, false())
        if test.op is Op.NE:
            return or_(is_nan, value != numbers[0])
        return _COMPARE[test.op](value, numbers[0])

    def attribute_test(self, test: Comparison) -> ColumnElement[bool]:
        name = test.field.key
        column = _attribute_column(name)
        if test.op is Op.IS_NULL:
            return column.is_(None)
        if test.op is Op.IS_NOT_NULL:
            return column.is_not(None)
        if ATTRIBUTES[name] is AttributeType.TEXT:
            return self.text_test(column, test.op, _strings(test))
        numbers = [_integral(v.value) for v in test.values if isinstance(v, Number)]
        tested = _compare(column, test.op, numbers)
        if name in ("end_time", "duration"):  # NULL while running: FALSE, not NULL, for NOT
            tested = and_(runs.c.end_time.is_not(None), tested)
        return tested

    def text_test(self, column: Any, op: Op, values: list[str]) -> ColumnElement[bool]:
        if op in (Op.LIKE, Op.NOT_LIKE):
            matched = self.like(column, values[0])
            return not_(matched) if op is Op.NOT_LIKE else matched
        if op in (Op.ILIKE, Op.NOT_ILIKE):
            matched = column.ilike(values[0], escape="\\")
            return not_(matched) if op is Op.NOT_ILIKE else matched
        if op in (Op.LT, Op.LE, Op.GT, Op.GE):
            column = self.collated(column)
        return _compare(column, op, values)

    def like(self, column: Any, pattern: str) -> ColumnElement[bool]:
        """Case-sensitive LIKE; SQLite's LIKE ignores case, so it gets the equivalent GLOB."""
        if self.postgres:
            return column.like(pattern, escape="\\")
        return column.op("GLOB", is_comparison=True)(_like_to_glob(pattern))

    def numeric_text(self, column: Any) -> ColumnElement[Any]:
        """The number a text column holds, or NULL when it holds something else."""
        if self.postgres:
            return case((column.op("~", is_comparison=True)(_PG_NUMBER), cast(column, Numeric)))
        # Comparing a REAL with TEXT applies NUMERIC affinity to the text: equal exactly when
        # the text is a well-formed number (CAST alone would turn 'tree' into 0).
        as_real = cast(column, REAL)
        return case(
            (
                and_(
                    as_real == column,
                    not_(column.op("GLOB", is_comparison=True)(_SQLITE_LONG_EXPONENT)),
                ),
                as_real,
            )
        )

    def numbers(self, test: Comparison) -> list[Any]:
        """Literals for numeric_text: exact decimals on PostgreSQL, floats on SQLite."""
        values = [v for v in test.values if isinstance(v, Number)]
        if self.postgres:
            return [Decimal(v.text) for v in values]
        return [v.value for v in values]

    def collated(self, column: Any) -> Any:
        """Text in byte order on PostgreSQL too, so both dialects sort and compare the same."""
        return column.collate("C") if self.postgres else column

    # --- order ------------------------------------------------------------------------------

    def order_terms(
        self, key: OrderKey, row: Any, anchors: list[Comparison] | None
    ) -> list[UnaryExpression[Any]]:
        def direction(expression: Any) -> UnaryExpression[Any]:
            return expression.desc() if key.descending else expression.asc()

        if key.field.kind is Kind.ATTRIBUTE:
            name = key.field.key
            column = _attribute_column(name)
            if ATTRIBUTES[name] is AttributeType.TEXT and name != "run_id":
                column = self.collated(column)
            if name in ("end_time", "duration"):
                return [direction(column).nulls_last()]
            return [direction(column)]
        if key.field.kind is not Kind.METRIC:
            value = direction(self.collated(row.c.value))
            return [value] if anchors else [value.nulls_last()]
        if anchors and any(_excludes_nan(test) for test in anchors):
            return [direction(row.c.value)]  # the index order itself
        if anchors:  # NaN (value NULL) after every number
            return [direction(row.c.value).nulls_last()]
        # numbers, then NaN (is_nan true), then runs without the metric (no row: is_nan NULL)
        return [direction(row.c.value).nulls_last(), row.c.is_nan.desc().nulls_last()]


def _compare(column: Any, op: Op, values: list[Any]) -> ColumnElement[bool]:
    """``column <op> values[0]``, or ``column [NOT] IN values``."""
    if op is Op.IN:
        return column.in_(values)
    if op is Op.NOT_IN:
        return column.not_in(values)
    return _COMPARE[op](column, values[0])


def _attribute_column(name: str) -> Any:
    if name == "duration":
        return runs.c.end_time - runs.c.start_time
    if name == "user":
        return runs.c.user_name
    return runs.c[name]


def _excludes_nan(test: Comparison) -> bool:
    return test.op in (Op.EQ, Op.LT, Op.LE, Op.GT, Op.GE, Op.IN) and not any(
        isinstance(v, Number) and v.is_nan for v in test.values
    )


def _strings(test: Comparison) -> list[str]:
    return [v.value for v in test.values if isinstance(v, String)]


def _integral(value: float) -> int | float:
    """Integers bind as integers so an index on a BIGINT column stays usable on PostgreSQL."""
    return int(value) if value.is_integer() else value


def _like_to_glob(pattern: str) -> str:
    """Translate a LIKE pattern (``%``, ``_``, backslash escapes) to the equivalent GLOB."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            c = pattern[i]
            out.append(f"[{c}]" if c in "*?[" else c)
        elif c == "%":
            out.append("*")
        elif c == "_":
            out.append("?")
        else:
            out.append(f"[{c}]" if c in "*?[" else c)
        i += 1
    return "".join(out)
