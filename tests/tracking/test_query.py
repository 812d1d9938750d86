"""Run search compiled to SQL and executed on real SQLite and PostgreSQL databases.

Every test seeds the same ten runs (below) and checks which runs a search returns, in which
order, as a user reading the filter would expect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from keel.db import ensure_schema, make_engine
from keel.db.schema import experiments, latest_metrics, params, runs, tags
from keel.errors import InvalidInput, InvalidQuery
from keel.tracking.query import build_search
from tests.tracking.test_search_grammar import MLFLOW_FILTERS, MLFLOW_ORDER_BY

T0 = 1_793_491_200_000  # 2026-11-01T00:00:00Z in milliseconds
HOUR = 3_600_000

# run: (name, status, user, start hour, duration ms or None while running, lifecycle, experiment)
RUNS: dict[str, tuple[str, str, str, int, int | None, str, int]] = {
    "run01": ("ridge", "FINISHED", "alice", 0, 90_000, "active", 1),
    "run02": ("lasso", "FINISHED", "bob", 1, 300_000, "active", 1),
    "run03": ("a_b", "FAILED", "alice", 2, 1_000, "active", 1),
    "run04": ("axb", "RUNNING", "carol", 3, None, "active", 1),
    "run05": ("50% off", "FINISHED", "bob", 4, 2 * HOUR, "active", 1),
    "run06": ("old", "FINISHED", "alice", 5, 60_000, "deleted", 1),
    "run07": ("other", "FINISHED", "alice", 6, 60_000, "active", 2),
    "run08": ("Big", "KILLED", "dave", 7, 250, "active", 1),
    "run09": ("tie", "FINISHED", "erin", 8, 90_000, "active", 1),
    "run10": ("plain*[x]?", "FINISHED", "erin", 9, 24 * HOUR, "active", 1),
}
METRICS = {
    "rmse": {
        "run01": 0.5,
        "run02": 1.5,
        "run03": math.nan,
        "run04": math.inf,
        "run06": 0.1,
        "run07": 0.2,
        "run08": -math.inf,
        "run09": 0.5,
        "run10": 1.0,
    },
    "acc": {"run01": 0.9, "run02": 0.7},
    "val.loss": {"run01": 0.3},
    "my metric": {"run02": 2.0},
}
PARAMS = {
    "model": {
        "run01": "tree",
        "run02": "linear",
        "run03": "forest",
        "run04": "tree",
        "run05": "Tree",
        "run06": "tree",
        "run07": "tree",
        "run08": "linear",
    },
    "lr": {
        "run01": "0.01",
        "run02": "0.1",
        "run03": "1e-3",
        "run04": "auto",
        "run05": "nan",
        "run08": "0.10",
        "run09": " 2 ",
        "run10": "-5",
    },
    "depth": {"run01": "3", "run02": "5", "run03": "deep", "run08": "3.0"},
    "a b": {"run09": "x"},
}
TAGS = {
    "team": {"run01": "red", "run02": "blue", "run03": "Red", "run08": "blue"},
    "mlflow.runName": {"run01": "ridge"},
    "note": {"run05": "it's 50%"},
}
ACTIVE = ["run01", "run02", "run03", "run04", "run05", "run07", "run08", "run09", "run10"]


def seed(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(experiments),
            [
                {
                    "experiment_id": i,
                    "name": f"exp{i}",
                    "lifecycle_stage": "active",
                    "created_at": T0,
                    "updated_at": T0,
                }
                for i in (1, 2)
            ],
        )
        conn.execute(
            insert(runs),
            [
                {
                    "run_id": run_id,
                    "experiment_id": experiment,
                    "run_name": name,
                    "status": status,
                    "user_name": user,
                    "start_time": T0 + hour * HOUR,
                    "end_time": None if duration is None else T0 + hour * HOUR + duration,
                    "lifecycle_stage": lifecycle,
                    "host": "test",
                }
                for run_id, (name, status, user, hour, duration, lifecycle, experiment) in (
                    RUNS.items()
                )
            ],
        )
        conn.execute(
            insert(latest_metrics),
            [
                {
                    "run_id": run_id,
                    "key": key,
                    "value": None if math.isnan(value) else value,
                    "is_nan": math.isnan(value),
                    "step": 0,
                    "timestamp": T0,
                }
                for key, values in METRICS.items()
                for run_id, value in values.items()
            ],
        )
        for table, data in ((params, PARAMS), (tags, TAGS)):
            conn.execute(
                insert(table),
                [
                    {"run_id": run_id, "key": key, "value": value}
                    for key, values in data.items()
                    for run_id, value in values.items()
                ],
            )


@pytest.fixture
def db(engine: Engine) -> Engine:
    seed(engine)
    return engine


def search(
    engine: Engine,
    filter_string: str = "",
    order_by: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[str]:
    kwargs.setdefault("limit", 1000)
    stmt = build_search(
        filter_string=filter_string, order_by=order_by, dialect=engine.dialect.name, **kwargs
    )
    with engine.connect() as conn:
        return [str(run_id) for run_id in conn.execute(stmt).scalars()]


def found(engine: Engine, filter_string: str, **kwargs: Any) -> set[str]:
    ids = search(engine, filter_string, **kwargs)
    assert len(ids) == len(set(ids)), f"duplicate rows: {ids}"
    return set(ids)


def runs_(*numbers: int) -> set[str]:
    return {f"run{n:02d}" for n in numbers}


def everything_but(*numbers: int) -> set[str]:
    return set(ACTIVE) - runs_(*numbers)


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        ("", set(ACTIVE)),
        ("   ", set(ACTIVE)),
        ("metrics.rmse < 1", runs_(1, 7, 8, 9)),
        ("metrics.rmse <= 1", runs_(1, 7, 8, 9, 10)),
        ("metrics.rmse > 1", runs_(2, 4)),
        ("metrics.rmse >= 1.5", runs_(2, 4)),
        ("metrics.rmse = 0.5", runs_(1, 9)),
        ("metric.rmse = 5e-1", runs_(1, 9)),
        # != matches NaN (IEEE) but never a run without the metric
        ("metrics.rmse != 0.5", runs_(2, 3, 4, 7, 8, 10)),
        ("metrics.rmse <> 0.5", runs_(2, 3, 4, 7, 8, 10)),
        ("metrics.rmse = inf", runs_(4)),
        ("metrics.rmse = Infinity", runs_(4)),
        ("metrics.rmse > 1e300", runs_(4)),
        ("metrics.rmse = -inf", runs_(8)),
        ("metrics.rmse < -1e300", runs_(8)),
        ("metrics.rmse = NaN", runs_(3)),
        ("metrics.rmse = nan", runs_(3)),
        ("metrics.rmse != NaN", runs_(1, 2, 4, 7, 8, 9, 10)),
        ("metrics.rmse < NaN", set()),
        ("metrics.rmse >= NaN", set()),
        ("metrics.rmse IN (0.5, 1)", runs_(1, 9, 10)),
        ("metrics.rmse IN (0.5, NaN)", runs_(1, 3, 9)),
        ("metrics.rmse NOT IN (0.5, 1)", runs_(2, 3, 4, 7, 8)),
        ("metrics.rmse NOT IN (0.5, NaN)", runs_(2, 4, 7, 8, 10)),
        ("metrics.rmse IS NULL", runs_(5)),
        ("metrics.rmse IS NOT NULL", everything_but(5)),
        ("metrics.acc > 0.8", runs_(1)),
        ("metrics.val.loss < 1", runs_(1)),
        ("metrics.`my metric` = 2", runs_(2)),
        ('metrics."my metric" = 2', runs_(2)),
        ("metrics.unknown_key > 0", set()),
    ],
)
def test_metric_filters(db: Engine, filter_string: str, expected: set[str]) -> None:
    assert found(db, filter_string) == expected


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        ("params.model = 'tree'", runs_(1, 4, 7)),
        ('params.model = "tree"', runs_(1, 4, 7)),
        ("parameters.model = 'tree'", runs_(1, 4, 7)),
        ("params.model != 'tree'", runs_(2, 3, 5, 8)),
        ("params.model LIKE 't%'", runs_(1, 4, 7)),
        ("params.model LIKE 'T%'", runs_(5)),
        ("params.model ILIKE 't%'", runs_(1, 4, 5, 7)),
        ("params.model NOT LIKE 't%'", runs_(2, 3, 5, 8)),
        ("params.model NOT ILIKE 'T%'", runs_(2, 3, 8)),
        ("params.model LIKE '%e%'", runs_(1, 2, 3, 4, 5, 7, 8)),
        ("params.model IN ('tree', 'forest')", runs_(1, 3, 4, 7)),
        ("params.model NOT IN ('tree', 'forest')", runs_(2, 5, 8)),
        # text compares in byte order on both databases: 'Tree' < 'forest' < 'm'
        ("params.model < 'm'", runs_(2, 3, 5, 8)),
        ("params.model IS NULL", runs_(9, 10)),
        # a number compares numerically; text that is not a number never matches
        ("params.lr > 0.005", runs_(1, 2, 8, 9)),
        ("params.lr = 0.1", runs_(2, 8)),
        ("params.lr = 0.001", runs_(3)),
        ("params.lr < 0", runs_(10)),
        ("params.lr != 0.1", runs_(1, 3, 9, 10)),
        ("params.depth IN (3, 5)", runs_(1, 2, 8)),
        ("params.depth NOT IN (3)", runs_(2)),
        ("params.depth != 3", runs_(2)),
        ("NOT params.lr > 0.005", everything_but(1, 2, 8, 9)),
        ("params.lr = 'auto'", runs_(4)),
        ("params.lr = '0.1'", runs_(2)),
        ("params.`a b` = 'x'", runs_(9)),
        ("params.\"a b\" = 'x'", runs_(9)),
        ("tags.team = 'red'", runs_(1)),
        ("tags.team ILIKE 'red'", runs_(1, 3)),
        ("tags.team IS NULL", runs_(4, 5, 7, 9, 10)),
        ("tags.team IS NOT NULL", runs_(1, 2, 3, 8)),
        ("tags.mlflow.runName = 'ridge'", runs_(1)),
        ("tags.note = 'it''s 50%'", runs_(5)),
        ("tags.note = 'it\\'s 50%'", runs_(5)),
        ("tags.note LIKE '%50\\%'", runs_(5)),
        ("tags.note LIKE '%5\\%'", set()),
    ],
)
def test_param_and_tag_filters(db: Engine, filter_string: str, expected: set[str]) -> None:
    assert found(db, filter_string) == expected


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        ("attributes.status = 'FINISHED'", runs_(1, 2, 5, 7, 9, 10)),
        ("status = 'finished'", runs_(1, 2, 5, 7, 9, 10)),
        ("status != 'FINISHED'", runs_(3, 4, 8)),
        ("status IN ('failed', 'Killed')", runs_(3, 8)),
        ("status LIKE 'fin%'", runs_(1, 2, 5, 7, 9, 10)),
        ("run_name = 'Big'", runs_(8)),
        ("run_name LIKE 'big'", set()),
        ("run_name ILIKE 'big'", runs_(8)),
        ("run_name LIKE 'a_b'", runs_(3, 4)),
        ("run_name LIKE 'a\\_b'", runs_(3)),
        ("run_name LIKE '50\\%%'", runs_(5)),
        ("run_name LIKE 'plain*[x]?'", runs_(10)),
        ("run_name LIKE 'plain_[x]_'", runs_(10)),
        ("run_name LIKE 'plainx%'", set()),
        ("attributes.`Run Name` IN ('ridge', 'lasso')", runs_(1, 2)),
        ("user = 'alice'", runs_(1, 3, 7)),
        ("attributes.user_id = 'alice'", runs_(1, 3, 7)),
        ("run_id IN ('run01', 'run02', 'run06')", runs_(1, 2)),
        ("start_time >= '2026-11-01T08:00:00Z'", runs_(9, 10)),
        ("start_time < '2026-11-01T01:00:00'", runs_(1)),
        (f"attributes.start_time >= {T0 + 8 * HOUR}", runs_(9, 10)),
        (f"created >= {T0 + 8 * HOUR}", runs_(9, 10)),
        ("start_time >= '2026-11-02'", set()),
        ("end_time IS NULL", runs_(4)),
        ("end_time IS NOT NULL", everything_but(4)),
        (f"end_time > {T0 + 9 * HOUR}", runs_(10)),
        ("NOT end_time > '2026-11-01T09:00:00Z'", everything_but(10)),
        ("duration > '2m'", runs_(2, 5, 10)),
        ("duration < 1000", runs_(8)),
        ("duration <= '1s'", runs_(3, 8)),
        ("duration = '90s'", runs_(1, 9)),
        ("duration = '1m30s'", runs_(1, 9)),
        ("duration >= '1d'", runs_(10)),
        ("duration IS NULL", runs_(4)),
        ("NOT duration > '2m'", runs_(1, 3, 4, 7, 8, 9)),
        ("experiment_id = 2", runs_(7)),
        ("experiment_id = '2'", runs_(7)),
        ("experiment_id IN (1)", everything_but(7)),
        ("lifecycle_stage = 'active'", set(ACTIVE)),
    ],
)
def test_attribute_filters(db: Engine, filter_string: str, expected: set[str]) -> None:
    assert found(db, filter_string) == expected


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        # AND binds tighter than OR, NOT tighter than AND
        ("params.model = 'linear' or params.model = 'forest' and metrics.rmse < 1", runs_(2, 8)),
        ("(params.model = 'linear' or params.model = 'forest') and metrics.rmse < 1", runs_(8)),
        ("not params.model = 'tree' and metrics.rmse < 1", runs_(8, 9)),
        ("not (params.model = 'tree' and metrics.rmse < 1)", everything_but(1, 7)),
        ("NOT NOT metrics.rmse < 1", runs_(1, 7, 8, 9)),
        # NOT is over the whole test: runs without the metric match
        ("NOT (metrics.rmse < 1)", runs_(2, 3, 4, 5, 10)),
        ("metrics.rmse < 1 or tags.team = 'blue'", runs_(1, 2, 7, 8, 9)),
        ("metrics.rmse < 1 OR NOT tags.team IS NULL", runs_(1, 2, 3, 7, 8, 9)),
        ('params.model = "tree" and metrics.rmse <= 0.5', runs_(1, 7)),
        ("metrics.rmse > 0 AND metrics.rmse < 1 AND metrics.rmse != 0.2", runs_(1, 9)),
        ("status = 'FINISHED' and (duration < '1m' or duration > '1h')", runs_(5, 10)),
        ("params.model = 'x''; DROP TABLE runs; --'", set()),
    ],
)
def test_boolean_filters(db: Engine, filter_string: str, expected: set[str]) -> None:
    assert found(db, filter_string) == expected
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(runs)).scalar() == len(RUNS)


def test_lifecycle_and_experiments(db: Engine) -> None:
    assert found(db, "", lifecycle="deleted") == runs_(6)
    assert found(db, "", lifecycle="all") == set(RUNS)
    assert found(db, "run_id = 'run06'", lifecycle="all") == runs_(6)
    assert found(db, "lifecycle_stage = 'DELETED'", lifecycle="all") == runs_(6)
    assert found(db, "", experiment_ids=[2]) == runs_(7)
    assert found(db, "", experiment_ids=[1, 2]) == set(ACTIVE)
    assert found(db, "", experiment_ids=[]) == set()
    assert found(db, "params.model = 'tree'", experiment_ids=[1], lifecycle="all") == runs_(1, 4, 6)


def ordered(*numbers: int) -> list[str]:
    return [f"run{n:02d}" for n in numbers]


@pytest.mark.parametrize(
    ("filter_string", "order_by", "expected"),
    [
        # default: newest first
        ("", None, ordered(10, 9, 8, 7, 5, 4, 3, 2, 1)),
        ("", ["start_time"], ordered(1, 2, 3, 4, 5, 7, 8, 9, 10)),
        ("", ["attributes.start_time DESC"], ordered(10, 9, 8, 7, 5, 4, 3, 2, 1)),
        # numbers, then NaN, then runs without the metric; ties by run_id
        ("", ["metrics.rmse"], ordered(8, 7, 1, 9, 10, 2, 4, 3, 5)),
        ("", ["metrics.rmse DESC"], ordered(4, 2, 10, 1, 9, 7, 8, 3, 5)),
        ("metrics.rmse < 2", ["metrics.rmse"], ordered(8, 7, 1, 9, 10, 2)),
        ("metrics.rmse < 2", ["metrics.rmse DESC"], ordered(2, 10, 1, 9, 7, 8)),
        ("metrics.rmse != 0", ["metrics.rmse DESC"], ordered(4, 2, 10, 1, 9, 7, 8, 3)),
        ("metrics.rmse IS NOT NULL", ["metrics.rmse"], ordered(8, 7, 1, 9, 10, 2, 4, 3)),
        ("params.model = 'tree'", ["metrics.rmse desc"], ordered(4, 1, 7)),
        ("metrics.rmse < 1 and params.model = 'tree'", ["metrics.rmse"], ordered(7, 1)),
        # text in byte order, runs without the param last either way
        ("", ["params.model"], ordered(5, 3, 2, 8, 1, 4, 7, 9, 10)),
        ("", ["params.model DESC"], ordered(1, 4, 7, 2, 8, 3, 5, 9, 10)),
        ("params.model != 'x'", ["params.model DESC"], ordered(1, 4, 7, 2, 8, 3, 5)),
        ("", ["tags.team"], ordered(3, 2, 8, 1, 4, 5, 7, 9, 10)),
        ("", ["params.model", "metrics.rmse DESC"], ordered(5, 3, 2, 8, 4, 1, 7, 10, 9)),
        ("", ["params.model, metrics.rmse DESC"], ordered(5, 3, 2, 8, 4, 1, 7, 10, 9)),
        # running runs have no duration: last either way
        ("", ["duration DESC"], ordered(10, 5, 2, 1, 9, 7, 3, 8, 4)),
        ("", ["duration"], ordered(8, 3, 7, 1, 9, 2, 5, 10, 4)),
        ("", ["end_time DESC"], ordered(10, 9, 8, 7, 5, 3, 2, 1, 4)),
        ("", ["status", "run_name DESC"], ordered(3, 9, 1, 10, 7, 2, 5, 8, 4)),
        ("", ["run_id DESC"], ordered(10, 9, 8, 7, 5, 4, 3, 2, 1)),
        ("", ["user", "start_time DESC"], ordered(7, 3, 1, 5, 2, 4, 8, 10, 9)),
    ],
)
def test_order_by(
    db: Engine, filter_string: str, order_by: list[str] | None, expected: list[str]
) -> None:
    assert search(db, filter_string, order_by) == expected


@pytest.mark.parametrize("order_by", [None, ["metrics.rmse"], ["params.model DESC"]])
def test_pages_are_stable_and_complete(db: Engine, order_by: list[str] | None) -> None:
    everything = search(db, "", order_by)
    pages = [search(db, "", order_by, limit=2, offset=offset) for offset in range(0, 10, 2)]
    assert [run_id for page in pages for run_id in page] == everything
    assert search(db, "", order_by, limit=0) == []


def test_the_select_has_one_column_the_run_id() -> None:
    stmt = build_search(filter_string="metrics.rmse < 1", limit=5, dialect="sqlite")
    assert [c.name for c in stmt.selected_columns] == ["run_id"]


def test_sqlite_walks_the_metric_index_for_a_filtered_top_k(tmp_path: Path) -> None:
    # The top 100 by rmse come straight out of the (key, value, run_id) index: no sort, and
    # the scan stops after a page however many runs match (benchmarks/search_plan.py).
    db = make_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    ensure_schema(db)
    seed(db)
    stmt = build_search(
        filter_string="metrics.rmse < 1 and params.model = 'tree'",
        order_by=["metrics.rmse"],
        experiment_ids=[1],
        limit=100,
        dialect="sqlite",
    )
    compiled = stmt.compile(db, compile_kwargs={"render_postcompile": True})
    values = tuple(compiled.params[name] for name in compiled.positiontup or ())
    with db.connect() as conn:
        plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", values)]
    assert any("ix_latest_metrics_key_value (key=? AND value<?)" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    db.dispose()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"filter_string": "metrics.rmse <"}, InvalidQuery),
        ({"filter_string": "metrics.rmse < 'abc'"}, InvalidQuery),
        ({"order_by": ["metrics.rmse sideways"]}, InvalidQuery),
        ({"order_by": ["stauts"]}, InvalidQuery),
        ({"lifecycle": "gone"}, InvalidInput),
        ({"limit": -1}, InvalidInput),
        ({"offset": -5}, InvalidInput),
    ],
)
def test_bad_requests_raise_before_touching_the_database(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    kwargs.setdefault("limit", 10)
    with pytest.raises(error):
        build_search(dialect="sqlite", **kwargs)


def test_mlflow_style_searches_run(db: Engine) -> None:
    for filter_string in MLFLOW_FILTERS:
        search(db, filter_string, MLFLOW_ORDER_BY)
    assert found(db, "attributes.`Run Name` IN ('ridge', 'tie')") == runs_(1, 9)
