"""The run-search grammar: what parses into what, precedence, and errors that point at it."""

from __future__ import annotations

import math

import pytest

from keel.errors import InvalidQuery
from keel.tracking.search import (
    And,
    Comparison,
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


def metric(key: str, op: Op, *values: str) -> Comparison:
    """``metric("a", Op.LT, "1")`` is what ``metrics.a < 1`` parses into."""
    return Comparison(Field(Kind.METRIC, key), op, tuple(Number(float(v), v) for v in values))


def param(key: str, op: Op, *values: str) -> Comparison:
    return Comparison(Field(Kind.PARAM, key), op, tuple(String(v) for v in values))


A = metric("a", Op.LT, "1")
B = metric("b", Op.LT, "2")
C = metric("c", Op.LT, "3")


@pytest.mark.parametrize("blank", ["", "   ", "\n\t", None])
def test_a_blank_filter_is_no_filter(blank: str | None) -> None:
    assert parse_filter(blank) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.a < 1 and metrics.b < 2", And((A, B))),
        ("metrics.a < 1 or metrics.b < 2 and metrics.c < 3", Or((A, And((B, C))))),
        ("metrics.a < 1 and metrics.b < 2 or metrics.c < 3", Or((And((A, B)), C))),
        ("(metrics.a < 1 or metrics.b < 2) and metrics.c < 3", And((Or((A, B)), C))),
        ("not metrics.a < 1 and metrics.b < 2", And((Not(A), B))),
        ("not (metrics.a < 1 and metrics.b < 2)", Not(And((A, B)))),
        ("NOT NOT metrics.a < 1", Not(Not(A))),
        ("metrics.a < 1 OR metrics.b < 2 OR metrics.c < 3", Or((A, B, C))),
        ("(metrics.a < 1 or metrics.b < 2) or metrics.c < 3", Or((A, B, C))),
        ("metrics.a < 1 AnD (metrics.b < 2 aNd metrics.c < 3)", And((A, B, C))),
        ("((metrics.a < 1))", A),
    ],
)
def test_precedence_not_over_and_over_or(text: str, expected: object) -> None:
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.rmse<1", Field(Kind.METRIC, "rmse")),
        ("metric.rmse < 1", Field(Kind.METRIC, "rmse")),
        ("METRICS.rmse < 1", Field(Kind.METRIC, "rmse")),
        ("metrics.val.loss < 1", Field(Kind.METRIC, "val.loss")),
        ("metrics.train/loss-2:x < 1", Field(Kind.METRIC, "train/loss-2:x")),
        ("metrics.`my metric` < 1", Field(Kind.METRIC, "my metric")),
        ('metrics."2019-04-02 error rate" < 1', Field(Kind.METRIC, "2019-04-02 error rate")),
        ("metrics.`odd``name` < 1", Field(Kind.METRIC, "odd`name")),
        ("params.model = 'x'", Field(Kind.PARAM, "model")),
        ("param.model = 'x'", Field(Kind.PARAM, "model")),
        ("parameter.model = 'x'", Field(Kind.PARAM, "model")),
        ("parameters.model = 'x'", Field(Kind.PARAM, "model")),
        ("params.\"a b\" = 'x'", Field(Kind.PARAM, "a b")),
        ("tags.mlflow.runName = 'x'", Field(Kind.TAG, "mlflow.runName")),
        ("tag.team = 'x'", Field(Kind.TAG, "team")),
        ("attributes.status = 'x'", Field(Kind.ATTRIBUTE, "status")),
        ("attribute.status = 'x'", Field(Kind.ATTRIBUTE, "status")),
        ("attr.status = 'x'", Field(Kind.ATTRIBUTE, "status")),
        ("run.status = 'x'", Field(Kind.ATTRIBUTE, "status")),
        ("status = 'x'", Field(Kind.ATTRIBUTE, "status")),
        ("attributes.user_id = 'x'", Field(Kind.ATTRIBUTE, "user")),
        ("attributes.`Run Name` = 'x'", Field(Kind.ATTRIBUTE, "run_name")),
        ("attributes.created > 5", Field(Kind.ATTRIBUTE, "start_time")),
        ("Duration > 5", Field(Kind.ATTRIBUTE, "duration")),
    ],
)
def test_fields_and_prefix_spellings(text: str, expected: Field) -> None:
    parsed = parse_filter(text)
    assert isinstance(parsed, Comparison)
    assert parsed.field == expected


@pytest.mark.parametrize(
    ("text", "op", "values"),
    [
        ("metrics.x = 1", Op.EQ, [1.0]),
        ("metrics.x != 1", Op.NE, [1.0]),
        ("metrics.x <> 1", Op.NE, [1.0]),
        ("metrics.x < -1.5", Op.LT, [-1.5]),
        ("metrics.x <= +2", Op.LE, [2.0]),
        ("metrics.x > 1e-3", Op.GT, [0.001]),
        ("metrics.x >= .5", Op.GE, [0.5]),
        ("metrics.x = 5.", Op.EQ, [5.0]),
        ("metrics.x = 2E+3", Op.EQ, [2000.0]),
        ("metrics.x = inf", Op.EQ, [math.inf]),
        ("metrics.x = -inf", Op.EQ, [-math.inf]),
        ("metrics.x = +Infinity", Op.EQ, [math.inf]),
        ("metrics.x = -INFINITY", Op.EQ, [-math.inf]),
        ("metrics.x in (1, 2,3)", Op.IN, [1.0, 2.0, 3.0]),
        ("metrics.x NOT IN (1)", Op.NOT_IN, [1.0]),
        ("metrics.x is null", Op.IS_NULL, []),
        ("metrics.x IS NOT NULL", Op.IS_NOT_NULL, []),
    ],
)
def test_operators_and_numbers(text: str, op: Op, values: list[float]) -> None:
    parsed = parse_filter(text)
    assert isinstance(parsed, Comparison)
    assert parsed.op is op
    assert [v.value for v in parsed.values if isinstance(v, Number)] == values


@pytest.mark.parametrize("spelling", ["NaN", "nan", "NAN", "-nan"])
def test_nan(spelling: str) -> None:
    parsed = parse_filter(f"metrics.x = {spelling}")
    assert isinstance(parsed, Comparison) and isinstance(parsed.values[0], Number)
    assert parsed.values[0].is_nan


@pytest.mark.parametrize(
    ("text", "op", "value"),
    [
        ("params.m = 'tree'", Op.EQ, "tree"),
        ('params.m = "tree"', Op.EQ, "tree"),
        ("params.m = 'it''s'", Op.EQ, "it's"),
        ("params.m = 'it\\'s'", Op.EQ, "it's"),
        ('params.m = "say ""hi"""', Op.EQ, 'say "hi"'),
        ("params.m = 'back\\\\slash'", Op.EQ, "back\\slash"),
        ("params.m = ''", Op.EQ, ""),
        ("params.m = 'AND or NOT'", Op.EQ, "AND or NOT"),
        ("params.m like 'a\\_b%'", Op.LIKE, "a\\_b%"),
        ("params.m ILIKE '%X%'", Op.ILIKE, "%X%"),
        ("params.m not like 'a%'", Op.NOT_LIKE, "a%"),
        ("params.m NOT ILIKE 'a%'", Op.NOT_ILIKE, "a%"),
    ],
)
def test_strings_and_patterns(text: str, op: Op, value: str) -> None:
    assert parse_filter(text) == param("m", op, value)


def test_in_lists() -> None:
    assert parse_filter("params.m IN ('a', \"b\")") == param("m", Op.IN, "a", "b")
    assert parse_filter("params.m not in ('a')") == param("m", Op.NOT_IN, "a")
    numeric = parse_filter("params.depth IN (3, 5)")
    assert isinstance(numeric, Comparison) and numeric.is_numeric
    assert [v.value for v in numeric.values] == [3.0, 5.0]


def test_attribute_values_are_normalised() -> None:
    def value(text: str) -> object:
        parsed = parse_filter(text)
        assert isinstance(parsed, Comparison)
        return parsed.values[0].value

    assert value("status = 'finished'") == "FINISHED"
    assert value("lifecycle_stage = 'Deleted'") == "deleted"
    assert value("start_time > '2026-11-01'") == 1_793_491_200_000
    assert value("start_time > '2026-11-01T12:00:00Z'") == 1_793_491_200_000 + 12 * 3_600_000
    assert value("end_time < '2026-11-01T12:00:00+02:00'") == 1_793_491_200_000 + 10 * 3_600_000
    assert value("start_time > 1793491200000") == 1_793_491_200_000
    assert value("duration > '250ms'") == 250
    assert value("duration > '90s'") == 90_000
    assert value("duration > '5m'") == 300_000
    assert value("duration > '2h'") == 7_200_000
    assert value("duration > '1d'") == 86_400_000
    assert value("duration > '1h 30m'") == 5_400_000
    assert value("duration > '1.5s'") == 1_500
    assert value("duration > 1000") == 1000
    assert value("experiment_id = '3'") == 3


def test_order_by() -> None:
    rmse = Field(Kind.METRIC, "rmse")
    assert parse_order_by(None) == ()
    assert parse_order_by([]) == ()
    assert parse_order_by(["", "  "]) == ()
    assert parse_order_by(["metrics.rmse"]) == (OrderKey(rmse),)
    assert parse_order_by(["metrics.rmse ASC"]) == (OrderKey(rmse),)
    assert parse_order_by(["metrics.rmse desc"]) == (OrderKey(rmse, descending=True),)
    assert parse_order_by(["params.model ASC", "attributes.start_time DESC"]) == (
        OrderKey(Field(Kind.PARAM, "model")),
        OrderKey(Field(Kind.ATTRIBUTE, "start_time"), descending=True),
    )
    assert parse_order_by(["start_time, duration DESC"]) == (
        OrderKey(Field(Kind.ATTRIBUTE, "start_time")),
        OrderKey(Field(Kind.ATTRIBUTE, "duration"), descending=True),
    )
    assert parse_order_by(["metrics.`my metric` DESC"]) == (
        OrderKey(Field(Kind.METRIC, "my metric"), descending=True),
    )


def caret(marked: str) -> tuple[str, int]:
    """``"metrics.x < ^'a'"`` -> the query without the caret, and where the caret was."""
    position = marked.index("^")
    return marked[:position] + marked[position + 1 :], position


@pytest.mark.parametrize(
    ("marked", "message"),
    [
        (
            "metrics.rmse ^1",
            "expected a comparison operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, IS) "
            "after 'metrics.rmse', found '1'",
        ),
        ("metrics.rmse^", "expected a comparison operator"),
        ("metrics.rmse < ^", "expected a value (a number or a quoted string) after '<'"),
        ("metrics.rmse < ^'abc'", "metrics are numeric; compare metrics.rmse with a number"),
        ("metrics.rmse ^LIKE 'a%'", "metrics are numeric, so LIKE does not apply"),
        ("metrics.rmse IN (1, ^'a')", "an IN list mixes numbers and strings"),
        ("^(metrics.rmse < 1", "unclosed parenthesis opened here"),
        ("((metrics.rmse < 1) and ^(metrics.x < 2 ", "unclosed parenthesis opened here"),
        ("metrics.rmse < 1^)", "unexpected ')' with no matching '('"),
        ("(metrics.a < 1 ^metrics.b < 2)", "expected AND, OR or ')'"),
        ("metrics.a < 1 ^metrics.b < 2", "expected AND, OR or the end of the filter"),
        ("metrics.a < 1 and ^", "expected a comparison such as metrics.rmse < 1 after AND"),
        ("metrics.a < 1 or ^)", "expected a comparison such as metrics.rmse < 1 after OR"),
        ("^and metrics.a < 1", "expected a comparison such as metrics.rmse < 1"),
        ("(^)", "empty parentheses"),
        ("^stauts = 'x'", "unknown field 'stauts'"),
        ("attributes.^stauts = 'x'", "unknown attribute 'stauts'; known: duration, end_time"),
        ("attributes.^artifact_uri = 'x'", "unknown attribute 'artifact_uri'"),
        ("^metric_s.x < 1", "unknown field prefix 'metric_s'; use metrics., params., tags."),
        ("^datasets.name = 'x'", "unknown field prefix 'datasets'"),
        ("metrics.^ < 1", "expected a key after metrics."),
        ("metrics.^`` < 1", "expected a key after metrics."),
        ("params.m = ^'open", "unterminated string starting here"),
        ("metrics.^`open < 1", "unterminated key starting here"),
        ("params.m = ^1d", "invalid number '1d'"),
        ("params.m = ^1.2.3", "invalid number '1.2.3'"),
        ("metrics.x ^== 1", "use = to test equality, not =="),
        ("metrics.x = 1 ^& metrics.y = 2", "unexpected character '&'"),
        ("params.m = ^`x`", "backticks quote a key right after its prefix"),
        ("metrics.x = ^NULL", "use IS NULL or IS NOT NULL"),
        ("metrics.x IS ^3", "expected NULL or NOT NULL after IS"),
        ("metrics.x NOT ^3", "expected LIKE, ILIKE or IN after NOT"),
        ("metrics.x IN ^1", "expected '(' after IN"),
        ("metrics.x IN (^)", "an IN list needs at least one value"),
        ("metrics.x IN ^(1, 2", "unclosed parenthesis opened here"),
        ("metrics.x IN (1 ^2)", "expected ',' or ')' in the IN list"),
        ("params.m LIKE ^3", "LIKE needs a quoted pattern such as '%tree%', not 3"),
        ("params.m LIKE ^'a\\\\\\'", "unterminated string"),
        ("params.m LIKE ^'ab\\'", "unterminated string"),
        ("params.m LIKE ^'ab\\\\'", "cannot end with a lone backslash"),
        ("params.lr > ^NaN", "params compare numerically only with finite numbers"),
        ("tags.x < ^inf", "tags compare numerically only with finite numbers"),
        ("status = ^3", "status is text; compare it with a quoted string, not 3"),
        ("start_time ^LIKE '2026%'", "LIKE compares text and start_time is a time"),
        ("start_time > ^'yesterday'", "start_time takes milliseconds since the epoch or an ISO"),
        ("end_time > ^inf", "end_time takes a finite number, not inf"),
        ("duration > ^'5 minutes'", "duration takes milliseconds or a string with a unit"),
        ("duration > ^'m'", "duration takes milliseconds or a string with a unit"),
        ("experiment_id = ^'one'", "experiment_id is an integer"),
    ],
)
def test_errors_say_what_is_wrong_and_point_at_it(marked: str, message: str) -> None:
    query, position = caret(marked)
    with pytest.raises(InvalidQuery) as raised:
        parse_filter(query)
    error = raised.value
    assert message in error.reason
    assert error.context == {"query": query, "position": position}
    assert str(error).endswith(f"  {query}\n  {' ' * position}^")


def test_unknown_names_get_a_suggestion() -> None:
    with pytest.raises(InvalidQuery, match=r"did you mean 'status'\?"):
        parse_filter("stauts = 'x'")
    with pytest.raises(InvalidQuery, match=r"did you mean 'metrics'\?"):
        parse_filter("metric_s.x < 1")


@pytest.mark.parametrize(
    ("marked", "message"),
    [
        ("metrics.rmse ^sideways", "expected ASC, DESC, ',' or the end of the clause"),
        ("^DESC", "expected a field to order by"),
        ("metrics.rmse DESC,^", "expected a field to order by"),
        ("^stauts", "unknown field 'stauts'"),
        ("metrics.rmse ^< 1", "expected ASC, DESC"),
    ],
)
def test_order_by_errors(marked: str, message: str) -> None:
    clause, position = caret(marked)
    with pytest.raises(InvalidQuery) as raised:
        parse_order_by(["start_time", clause])
    assert message in raised.value.reason
    assert raised.value.context == {"query": clause, "position": position}


# Filters and order_by clauses written as MLflow's documentation writes them.
MLFLOW_FILTERS = [
    "metrics.accuracy > 0.92",
    'params.model = "LogisticRegression" and params.lambda = "0.001" and metrics.error <= 0.05',
    'attributes.status = "FAILED"',
    "attributes.created > 1670628787527",
    "attributes.Created > 1670628787527",
    "attributes.start_time > 1670628787527 and attributes.end_time < 1670628787999",
    "metrics.`f1 score` > 0.5",
    "tags.`mlflow.user` = 'john@mlflow.com'",
    "tags.`model` LIKE 'sklearn%'",
    "tags.`type` ILIKE '%Logistic%'",
    "attributes.`run_name` IN ('alpha', 'beta', 'gamma')",
    'attributes.`run name` ILIKE "%alpha%"',
    'attributes.`Run Name` ILIKE "%alpha%"',
    "attributes.run_id IN ('a1', 'b2')",
    "attributes.run_id NOT IN ('a1')",
    "params.\"model-type\" = 'x'",
    'metrics."2019-04-02 error rate" < 1',
    "tags.mlflow.source.type = 'NOTEBOOK'",
    "params.alpha != '0.3'",
]
MLFLOW_ORDER_BY = [
    "metrics.rmse",
    "metrics.`f1 score` DESC",
    "params.alpha ASC",
    "tags.`mlflow.runName` DESC",
    "attributes.start_time DESC",
    "attributes.end_time",
    "attributes.run_name",
    "attributes.status",
]


@pytest.mark.parametrize("text", MLFLOW_FILTERS)
def test_mlflow_filters_parse(text: str) -> None:
    assert parse_filter(text) is not None


@pytest.mark.parametrize("clause", MLFLOW_ORDER_BY)
def test_mlflow_order_by_parses(clause: str) -> None:
    assert len(parse_order_by([clause])) == 1


@pytest.mark.parametrize(
    ("text", "caret"),
    [
        ("start_time > 100000000000000000000000", 13),
        ("duration < '200000000000000d'", 11),
        ("attributes.experiment_id = 99999999999", 27),
    ],
)
def test_integer_attributes_reject_out_of_range_literals(text: str, caret: int) -> None:
    with pytest.raises(InvalidQuery, match="out of range") as info:
        parse_filter(text)
    assert info.value.context["position"] == caret


def test_filters_too_big_or_too_deep_to_plan_are_refused() -> None:
    many = " and ".join(f"metrics.m{i} > 0" for i in range(101))
    with pytest.raises(InvalidQuery, match="more than 100 comparisons"):
        parse_filter(many)
    parse_filter(" and ".join(f"metrics.m{i} > 0" for i in range(100)))
    with pytest.raises(InvalidQuery, match="more than 100 deep"):
        parse_filter("(" * 1500 + "metrics.x > 0" + ")" * 1500)
    with pytest.raises(InvalidQuery, match="more than 100 deep"):
        parse_filter("NOT " * 3000 + "metrics.x > 0")
    with pytest.raises(InvalidQuery, match="NUL") as info:
        parse_filter("params.a = 'x\x00'")
    assert info.value.context["position"] == 13


@pytest.mark.parametrize("literal", ["1e-99999", "1e999", "0." + "1" * 60])
def test_numbers_beyond_a_double_are_refused(literal: str) -> None:
    with pytest.raises(InvalidQuery, match="out of range"):
        parse_filter(f"params.p > {literal}")
