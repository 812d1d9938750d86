"""The scoring app on a plan of several arms: weighted and sticky routing, shadows that get a
copy of traffic (logged, never returned, never slowing or failing the answer), the prediction
log written at shutdown, and ``/metadata`` and ``/metrics`` per arm. Real models logged and
registered in a tmp home; a real PredictionLog in a tmp folder."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import keel
import keel.models
from keel.models import api
from keel.models.loading import Predictor, load_version
from keel.serving import create_scoring_app
from keel.serving.plan import Arm, ServingPlan, bucket_of
from keel.serving.predlog import PredictionLog, read_predictions
from keel.serving.sources import PredictorSource
from tests.models.training import diabetes
from tests.serving.test_app import running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Slow(keel.models.PythonModel):
    """A shadow that takes 1 s a call and answers the row's age."""

    def predict(self, context: Any, model_input: Any) -> Any:
        time.sleep(1.0)
        return model_input["age"].to_numpy()


class Broken(keel.models.PythonModel):
    """A shadow that fails on anything but the 3-row example it was logged with."""

    def predict(self, context: Any, model_input: Any) -> Any:
        if len(model_input) != 3:
            raise RuntimeError("the shadow is broken")
        return model_input["age"].to_numpy()


def _register(model: Any, name: str = "diabetes") -> tuple[Predictor, Any]:
    X, _ = diabetes()
    with keel.start_run():
        logged = keel.models.log_model(model, input_example=X.head(3))
    version = api.register(logged.uri, name)
    return load_version(version), version


@pytest.fixture
def arms(home: Path) -> dict[str, tuple[Predictor, Any]]:
    """diabetes v1 a forest, v2 a linear model, v3 a slow shadow, v4 a broken shadow."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LinearRegression

    X, y = diabetes()
    return {
        "forest": _register(RandomForestRegressor(n_estimators=5, random_state=0).fit(X, y)),
        "linear": _register(LinearRegression().fit(X, y)),
        "slow": _register(Slow()),
        "broken": _register(Broken()),
    }


def _plan(arms: dict[str, tuple[Predictor, Any]], *shadows: str, canary: float = 30) -> Any:
    def arm(key: str, weight: float, shadow: bool = False) -> Arm:
        predictor, version = arms[key]
        ref = f"diabetes/{version.version}"
        return Arm(ref=ref, predictor=predictor, version=version, weight=weight, shadow=shadow)

    return ServingPlan(
        deployment="diabetes",
        arms=(
            arm("forest", 100 - canary),
            arm("linear", canary),
            *(arm(name, 0, shadow=True) for name in shadows),
        ),
        revision=4,
    )


def _app(arms: dict[str, tuple[Predictor, Any]], plan: ServingPlan, **options: Any) -> Any:
    return create_scoring_app(PredictorSource(*arms["forest"]), plan=plan, **options)


def _body(rows: pd.DataFrame) -> dict[str, Any]:
    return {"columns": rows.to_dict(orient="list")}


async def test_traffic_splits_by_weight_and_a_key_sticks(arms: dict[str, Any]) -> None:
    app = _app(arms, _plan(arms))
    X, _ = diabetes()
    rows = X.head(2)
    own = {
        "diabetes/1": arms["forest"][0].raw.predict(rows),
        "diabetes/2": arms["linear"][0].raw.predict(rows),
    }
    async with running(app) as client:
        answers = await asyncio.gather(
            *(client.post("/predict", json=_body(rows)) for _ in range(400))
        )
        counts = {"diabetes/1": 0, "diabetes/2": 0}
        for answer in answers:
            label = answer.headers["X-Keel-Model"]
            counts[label] += 1
            np.testing.assert_allclose(answer.json()["predictions"], own[label])
        assert 80 <= counts["diabetes/2"] <= 160, counts  # 30% of 400, binomial sd ~9
        for key in ("alice", "bob", "carol", "dave"):
            seen = set()
            for _ in range(10):
                answer = await client.post(
                    "/predict", json=_body(rows), headers={"X-Keel-Key": key}
                )
                seen.add(answer.headers["X-Keel-Model"])
            assert len(seen) == 1, (key, seen)
        meta = (await client.get("/metadata")).json()
    assert (meta["deployment"], meta["revision"]) == ("diabetes", 4)
    assert [(a["label"], a["weight"], a["shadow"]) for a in meta["arms"]] == [
        ("diabetes/1", 70.0, False),
        ("diabetes/2", 30.0, False),
    ]
    assert meta["arms"][1]["model_class"].endswith("LinearRegression")


async def test_shadows_are_logged_never_returned_and_never_slow_the_answer(
    arms: dict[str, Any], tmp_path: Path
) -> None:
    log = PredictionLog(str(tmp_path / "log"), "diabetes", flush_seconds=3600)
    app = _app(arms, _plan(arms, "slow", "broken", canary=0.0001), prediction_log=log)
    X, _ = diabetes()
    ids = []
    async with running(app) as client:
        for index in range(5):
            rows = X.iloc[index * 2 : index * 2 + 2]
            started = time.perf_counter()
            answer = await client.post(
                "/predict", json=_body(rows), headers={"X-Keel-Key": "sticky-forest"}
            )
            took = time.perf_counter() - started
            assert answer.status_code == 200, answer.text
            assert took < 0.8  # the slow shadow takes 1 s per call (a bound a loaded CI keeps)
            assert answer.headers["X-Keel-Model"] == "diabetes/1"
            np.testing.assert_allclose(
                answer.json()["predictions"], arms["forest"][0].raw.predict(rows)
            )
            ids.append(answer.json()["request_id"])
    metrics = app.state.service.metrics.exposition().decode()  # after the drain
    # the lifespan's end waited for the shadows, then closed (flushed) the log
    logged = read_predictions(str(tmp_path / "log"), "diabetes")
    assert log.closed
    primary = logged[logged["role"] == "primary"]
    assert sorted(set(primary["request_id"])) == sorted(ids)
    assert len(primary) == 10 and set(primary["arm"]) == {"diabetes/1"}
    slow = logged[logged["arm"] == "diabetes/3"].sort_values(["request_id", "row"])
    assert len(slow) == 10 and set(slow["role"]) == {"shadow"} and slow["error"].isna().all()
    ages = primary.sort_values(["request_id", "row"])["input.age"].to_numpy()
    np.testing.assert_allclose(slow["output"].to_numpy(dtype=float), ages)
    broken = logged[logged["arm"] == "diabetes/4"]
    assert len(broken) == 10 and broken["error"].str.contains("the shadow is broken").all()
    assert (
        'keel_shadow_requests_total{arm="diabetes/3",deployment="diabetes",outcome="scored"} 5.0'
        in metrics
    )
    assert (
        'keel_shadow_requests_total{arm="diabetes/4",deployment="diabetes",outcome="failed"} 5.0'
        in metrics
    )


async def test_shadows_beyond_the_bound_are_skipped_and_counted(arms: dict[str, Any]) -> None:
    app = _app(arms, _plan(arms, "slow", canary=0.0001), max_shadow_tasks=2)
    X, _ = diabetes()
    async with running(app) as client:
        answers = await asyncio.gather(
            *(client.post("/predict", json=_body(X.head(1))) for _ in range(6))
        )
        assert all(answer.status_code == 200 for answer in answers)
    metrics = app.state.service.metrics.exposition().decode()  # after the drain
    assert 'outcome="skipped"} 4.0' in metrics
    assert 'outcome="scored"} 2.0' in metrics


async def test_refused_requests_are_logged_and_counted_per_arm(
    arms: dict[str, Any], tmp_path: Path
) -> None:
    log = PredictionLog(str(tmp_path / "log"), "diabetes", flush_seconds=3600)
    app = _app(arms, _plan(arms, canary=0.0001), prediction_log=log)
    X, _ = diabetes()
    async with running(app) as client:
        missing = X.head(2).drop(columns=["bmi"])
        answer = await client.post("/predict", json=_body(missing), headers={"X-Request-Id": "r1"})
        assert answer.status_code == 422
        assert (await client.post("/predict", content=b"{")).status_code == 422
        assert (await client.post("/predict", json=_body(X.head(1)))).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert 'keel_requests_total{arm="diabetes/1",code="4xx",deployment="diabetes"} 2.0' in metrics
    assert 'keel_requests_total{arm="diabetes/1",code="2xx",deployment="diabetes"} 1.0' in metrics
    assert 'error="schema_mismatch"} 1.0' in metrics and 'error="invalid_input"} 1.0' in metrics
    logged = read_predictions(str(tmp_path / "log"), "diabetes")
    refused = logged[logged["request_id"] == "r1"]
    assert len(refused) == 2 and refused["error"].str.startswith("schema_mismatch").all()
    assert logged["error"].notna().sum() == 3  # the unparsable body: one row, no inputs


async def test_feedback_is_mounted_with_a_prediction_log(
    arms: dict[str, Any], tmp_path: Path
) -> None:
    from keel.serving.predlog import read_feedback

    log = PredictionLog(str(tmp_path / "log"), "diabetes", flush_seconds=3600)
    app = _app(arms, _plan(arms, canary=0.0001), prediction_log=log)
    X, _ = diabetes()
    async with running(app) as client:
        answer = await client.post("/predict", json=_body(X.head(1)))
        request_id = answer.json()["request_id"]
        labels = {"labels": [{"request_id": request_id, "row": 0, "label": 151.0}]}
        accepted = await client.post("/feedback", json=labels)
        assert accepted.status_code == 200, accepted.text
    feedback = read_feedback(str(tmp_path / "log"), "diabetes")
    assert feedback["request_id"].tolist() == [request_id]
    assert feedback["label"].tolist() == [151.0]


async def test_a_model_that_fails_is_a_500_and_one_that_refuses_a_422(
    arms: dict[str, Any],
) -> None:
    broken, broken_version = arms["broken"]
    linear, linear_version = arms["linear"]
    plan = ServingPlan(
        deployment="diabetes",
        arms=(
            Arm(ref="diabetes/4", predictor=broken, version=broken_version, weight=50),
            Arm(ref="diabetes/2", predictor=linear, version=linear_version, weight=50),
        ),
    )
    app = _app(arms, plan)
    X, _ = diabetes()
    body = _body(X.head(2))
    body["columns"]["age"][0] = None  # NaN: the signature lets it through, LinearRegression not
    keys = {"diabetes/4": None, "diabetes/2": None}
    for index in range(200):  # a sticky key for each arm
        label = "diabetes/4" if bucket_of(f"k{index}") < 5000 else "diabetes/2"
        keys[label] = keys[label] or f"k{index}"
    async with running(app) as client:
        failed = await client.post(
            "/predict", json=body, headers={"X-Keel-Key": keys["diabetes/4"]}
        )
        refused = await client.post(
            "/predict", json=body, headers={"X-Keel-Key": keys["diabetes/2"]}
        )
        metrics = (await client.get("/metrics")).text
    assert failed.status_code == 500
    assert failed.json()["error"] == "internal"
    assert "RuntimeError: the shadow is broken" in failed.json()["message"]
    assert failed.json()["request_id"] == failed.headers["X-Request-Id"]
    assert refused.status_code == 422
    assert refused.json()["message"].startswith("the model refused the input")
    assert 'arm="diabetes/4",deployment="diabetes",error="internal"} 1.0' in metrics
    assert 'arm="diabetes/2",deployment="diabetes",error="model_refused"} 1.0' in metrics
    assert 'keel_requests_total{arm="diabetes/4",code="5xx",deployment="diabetes"} 1.0' in metrics


async def test_a_shadow_retired_while_its_request_ran_is_skipped_not_failed(
    arms: dict[str, Any],
) -> None:
    def arm(key: str, weight: float, shadow: bool = False) -> Arm:
        predictor, version = arms[key]
        ref = f"diabetes/{version.version}"
        return Arm(ref=ref, predictor=predictor, version=version, weight=weight, shadow=shadow)

    with_shadow = ServingPlan("diabetes", (arm("slow", 100), arm("linear", 0, shadow=True)))
    without = ServingPlan("diabetes", (arm("slow", 100),), revision=5)
    app = _app(arms, with_shadow)
    X, _ = diabetes()
    async with running(app) as client:
        asked = asyncio.create_task(client.post("/predict", json=_body(X.head(1))))
        await asyncio.sleep(0.3)  # the request read the plan with the shadow; the slow arm runs
        app.state.service.swap(without)  # the shadow's batcher retires now
        answer = await asked
        assert answer.status_code == 200, answer.text
    metrics = app.state.service.metrics.exposition().decode()
    assert 'arm="diabetes/2",deployment="diabetes",outcome="skipped"} 1.0' in metrics
    assert 'outcome="failed"' not in metrics
