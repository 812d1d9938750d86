"""The tracking store on SQLite and PostgreSQL (via the Client, with the store's own rules)."""

from __future__ import annotations

import math

import pytest

from keel.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from keel.tracking.api import Client
from keel.tracking.models import LifecycleStage, RunStatus
from keel.tracking.store import MetricPoint


def make_run(client: Client, experiment: str = "exp", **kwargs):  # type: ignore[no-untyped-def]
    experiment_id = client.get_or_create_experiment(experiment).experiment_id
    return client.create_run(experiment_id, **kwargs)


def test_experiment_lifecycle(client: Client) -> None:
    created = client.create_experiment("churn", tags={"team": "ml"})
    assert created.name == "churn" and created.tags == {"team": "ml"}
    with pytest.raises(AlreadyExists, match="churn"):
        client.create_experiment("churn")
    renamed = client.rename_experiment(created.experiment_id, "churn-2026")
    assert renamed.name == "churn-2026"
    assert client.get_experiment_by_name("churn") is None
    run = client.create_run(created.experiment_id)
    client.delete_experiment(created.experiment_id)
    assert [e.name for e in client.list_experiments()] == []
    assert [e.name for e in client.list_experiments(lifecycle="deleted")] == ["churn-2026"]
    assert client.get_run(run.run_id).lifecycle_stage is LifecycleStage.DELETED
    with pytest.raises(InvalidInput, match="deleted"):
        client.create_run(created.experiment_id)
    client.restore_experiment(created.experiment_id)
    assert client.get_run(run.run_id).lifecycle_stage is LifecycleStage.ACTIVE
    with pytest.raises(NotFound):
        client.rename_experiment(9999, "x")


def test_run_round_trip(client: Client) -> None:
    run = make_run(client, run_name="baseline", tags={"stage": "dev"})
    assert run.status is RunStatus.RUNNING and run.run_name == "baseline"
    client.log_params(run.run_id, {"alpha": 0.5, "model": "ridge"})
    client.set_tags(run.run_id, {"stage": "prod", "owner": "ana"})
    client.log_metric(run.run_id, "rmse", 3.5, step=1)
    client.log_metric(run.run_id, "rmse", 2.5, step=2)
    client.end_run(run.run_id)
    got = client.get_run(run.run_id)
    assert got.params == {"alpha": "0.5", "model": "ridge"}
    assert got.tags["stage"] == "prod" and got.tags["owner"] == "ana"
    assert got.metrics == {"rmse": 2.5}
    assert got.status is RunStatus.FINISHED
    assert got.end_time is not None and got.end_time >= got.start_time


def test_generated_run_names_are_readable(client: Client) -> None:
    run = make_run(client)
    adjective, noun, number = run.run_name.split("-")
    assert adjective.isalpha() and noun.isalpha() and number.isdigit()


def test_params_are_immutable(client: Client) -> None:
    run = make_run(client)
    client.log_param(run.run_id, "lr", 0.1)
    client.log_param(run.run_id, "lr", "0.1")  # the same value again is fine
    with pytest.raises(Conflict) as info:
        client.log_param(run.run_id, "lr", 0.2)
    assert "'0.1'" in str(info.value) and "'0.2'" in str(info.value)
    assert client.get_run(run.run_id).params == {"lr": "0.1"}


def test_bad_keys_and_values_are_rejected(client: Client) -> None:
    run = make_run(client)
    with pytest.raises(InvalidInput, match="limit is 250"):
        client.log_param(run.run_id, "k" * 251, 1)
    with pytest.raises(InvalidInput, match="non-empty"):
        client.set_tag(run.run_id, "", "x")
    with pytest.raises(InvalidInput, match="must be a number"):
        client.log_metric(run.run_id, "rmse", "high")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="limit is 6000"):
        client.log_param(run.run_id, "blob", "x" * 6001)
    with pytest.raises(NotFound):
        client.log_param("0" * 32, "k", 1)


def test_metric_history_keeps_every_point(client: Client) -> None:
    run = make_run(client)
    for step in range(50):
        client.log_metric(run.run_id, "loss", 1 / (step + 1), step=step, timestamp=1000 + step)
    client.log_metric(run.run_id, "loss", 0.5, step=10, timestamp=5000)  # same step, later
    history = client.get_metric_history(run.run_id, "loss")
    assert len(history) == 51
    assert [p.step for p in history] == sorted(p.step for p in history)
    assert history[0].value == 1.0 and history[0].timestamp == 1000
    assert client.get_run(run.run_id).metrics["loss"] == pytest.approx(1 / 50)
    assert client.get_metric_history(run.run_id, "nope") == []
    with pytest.raises(NotFound):
        client.get_metric_history("f" * 32, "loss")


def test_latest_metric_is_the_highest_step_not_the_last_written(client: Client) -> None:
    run = make_run(client)
    client.log_metric(run.run_id, "acc", 0.9, step=10)
    client.flush()
    client.log_metric(run.run_id, "acc", 0.1, step=3)  # a late, older point
    assert client.get_run(run.run_id).metrics["acc"] == 0.9
    assert len(client.get_metric_history(run.run_id, "acc")) == 2


def test_nan_and_infinity_are_stored(client: Client) -> None:
    run = make_run(client)
    client.log_metrics(run.run_id, {"nan": math.nan, "pinf": math.inf, "ninf": -math.inf}, step=0)
    got = client.get_run(run.run_id).metrics
    assert math.isnan(got["nan"]) and got["pinf"] == math.inf and got["ninf"] == -math.inf
    history = client.get_metric_history(run.run_id, "nan")
    assert len(history) == 1 and math.isnan(history[0].value)


def test_metrics_for_missing_run_are_refused_without_losing_others(client: Client) -> None:
    run = make_run(client)
    with pytest.raises(NotFound, match="f" * 32):
        client.store.log_metric_points(
            [MetricPoint(run.run_id, "a", 1.0, 0, 1), MetricPoint("f" * 32, "a", 1.0, 0, 1)]
        )
    client.store.log_metric_points([MetricPoint(run.run_id, "a", 1.0, 0, 1)])
    assert client.get_run(run.run_id).metrics == {"a": 1.0}


def test_delete_and_restore_runs(client: Client) -> None:
    keep = make_run(client)
    gone = make_run(client)
    assert client.delete_runs([gone.run_id]) == 1
    active = client.search_all("")
    assert [r.run_id for r in active] == [keep.run_id]
    assert [r.run_id for r in client.search_all("", lifecycle="deleted")] == [gone.run_id]
    with pytest.raises(InvalidInput, match="restore"):
        client.log_param(gone.run_id, "x", 1)
    client.restore_runs([gone.run_id])
    assert {r.run_id for r in client.search_all("")} == {keep.run_id, gone.run_id}


def test_run_id_prefixes(client: Client) -> None:
    run = make_run(client)
    assert client.resolve_run_id(run.run_id[:6]) == run.run_id
    with pytest.raises(InvalidInput, match="not a run id"):
        client.resolve_run_id("zz%")
    with pytest.raises(NotFound):
        client.resolve_run_id("0" * 32 if not run.run_id.startswith("0") else "f" * 32)


def test_search_pages_with_tokens(client: Client) -> None:
    experiment_id = client.get_or_create_experiment("paging").experiment_id
    ids = []
    for i in range(7):
        run = client.create_run(experiment_id)
        client.log_metric(run.run_id, "score", float(i))
        ids.append(run.run_id)
    seen = []
    token = None
    while True:
        page = client.search_runs(
            "", order_by=["metrics.score DESC"], max_results=3, page_token=token
        )
        seen.extend(r.run_id for r in page.runs)
        token = page.next_page_token
        if token is None:
            break
    assert seen == list(reversed(ids))
    first = client.search_runs("", max_results=3)
    with pytest.raises(InvalidInput, match="different query"):
        client.search_runs("metrics.score > 1", max_results=3, page_token=first.next_page_token)
    with pytest.raises(InvalidInput, match="not one Keel issued"):
        client.search_runs("", page_token="garbage!")


def test_metric_curves_bucket_the_history_in_sql(client: Client) -> None:
    run = make_run(client)
    for step in range(100):
        client.log_metric(run.run_id, "acc", float(step), step=step)
    client.log_metric(run.run_id, "flat", 2.0)
    client.log_metric(run.run_id, "nan", math.nan)
    curves = client.metric_curves(run.run_id, buckets=10)
    acc = curves["acc"]
    assert (acc.count, acc.low, acc.high, acc.first_step, acc.last_step) == (100, 0.0, 99.0, 0, 99)
    assert acc.means == [4.5 + 10 * i for i in range(10)]
    assert curves["flat"].count == 1 and curves["flat"].means == [2.0]
    assert curves["nan"].count == 1 and curves["nan"].means == []


def test_log_batch_takes_many_steps_params_and_tags(client: Client) -> None:
    from keel.tracking.models import Metric

    run = make_run(client)
    client.log_batch(
        run.run_id,
        metrics=[("loss", 1.0 / (s + 1), s, 1000 + s) for s in range(500)]
        + [Metric(key="acc", value=0.9, step=3, timestamp=5)],
        params={"lr": 0.1},
        tags={"phase": "train"},
    )
    got = client.get_run(run.run_id)
    assert got.params == {"lr": "0.1"} and got.tags["phase"] == "train"
    assert got.metrics == {"loss": 1.0 / 500, "acc": 0.9}
    assert len(client.get_metric_history(run.run_id, "loss")) == 500
    with pytest.raises(InvalidInput, match="must be a number"):
        client.log_batch(run.run_id, metrics=[("loss", "x", 0, 0)])  # type: ignore[list-item]


def test_rename_run(client: Client) -> None:
    run = make_run(client, run_name="first")
    assert client.rename_run(run.run_id, "second").run_name == "second"
    assert client.search_all("run_name = 'second'")[0].run_id == run.run_id
    with pytest.raises(InvalidInput, match="non-empty"):
        client.rename_run(run.run_id, " ")
    with pytest.raises(NotFound):
        client.rename_run("0" * 32, "x")


def test_metric_curves_survive_huge_step_ranges(client: Client) -> None:
    run = make_run(client)
    client.log_metric(run.run_id, "far", 1.0, step=0)
    client.log_metric(run.run_id, "far", 3.0, step=2**62)
    curve = client.metric_curves(run.run_id)["far"]
    assert curve.count == 2 and curve.means == [1.0, 3.0]


def test_impossible_experiment_lookups_are_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        client.get_experiment(10**20)
    assert client.get_experiment_by_name("a\x00b") is None
