"""DeploymentSource on real registered models: the plan of the current revision, polls that
notice a new revision or a moved alias and reload only what changed, and the spec a worker
process rebuilds it from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from keel.errors import InvalidInput, NotFound
from keel.models import api as registry
from keel.serving.deployments import api
from keel.serving.deployments.source import DeploymentSource, source_from_spec
from keel.serving.plan import ServingPlan
from keel.settings import Settings
from tests.serving.deployments.conftest import Registered

_OPEN: list[Any] = []


def _opened(source: Any) -> Any:
    """``source``, closed when the test ends (each holds database engines: left open, a session
    of tests exhausts PostgreSQL's connections)."""
    _OPEN.append(source)
    return source


@pytest.fixture(autouse=True)
def _close_sources() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _by_label(plan: ServingPlan) -> dict[str, object]:
    return {arm.label: arm for arm in plan.arms}


def test_load_builds_the_plan_of_the_current_revision(
    registered: Registered, settings: Settings
) -> None:
    api.create(
        "churn",
        "diabetes@champion",
        canaries={"diabetes@challenger": 25},
        shadows=["diabetes/3"],
        settings=settings,
    )
    source = _opened(DeploymentSource("churn", interval=0.5, settings=settings))
    plan = source.load()
    assert (plan.deployment, plan.revision) == ("churn", 1)
    assert [(a.ref, a.label, a.weight, a.shadow) for a in plan.arms] == [
        ("diabetes@champion", "diabetes/1", 75.0, False),
        ("diabetes@challenger", "diabetes/2", 25.0, False),
        ("diabetes/3", "diabetes/3", 0.0, True),
    ]
    rows = registered.X.head(30)
    for arm in plan.arms:
        assert arm.model_version is not None
        np.testing.assert_allclose(
            arm.predictor.predict(rows), registered.predict(arm.model_version, rows)
        )
    assert plan.details["resolved"] == {
        "diabetes@champion": 1,
        "diabetes@challenger": 2,
        "diabetes/3": 3,
    }
    # sticky and weighted: the same key always lands on the same arm, 2,000 keys near 75/25
    chosen = Counter(plan.choose(f"user-{n}").label for n in range(2000))
    assert abs(chosen["diabetes/1"] / 2000 - 0.75) < 0.04
    assert all(plan.choose("user-7") is plan.choose("user-7") for _ in range(20))
    assert source.spec() == {"kind": "deployment", "name": "churn", "interval": 0.5}


def test_poll_notices_a_new_revision_and_reuses_what_is_loaded(
    registered: Registered, settings: Settings
) -> None:
    api.create(
        "churn", "diabetes@champion", canaries={"diabetes@challenger": 10}, settings=settings
    )
    source = _opened(DeploymentSource("churn", settings=settings))
    plan = source.load()
    assert source.poll(plan) is None

    api.set_traffic("churn", {"diabetes@challenger": 50}, settings=settings)
    moved = source.poll(plan)
    assert moved is not None and moved.revision == 2
    assert [a.weight for a in moved.arms] == [50.0, 50.0]
    before, after = _by_label(plan), _by_label(moved)
    assert after["diabetes/1"].predictor is before["diabetes/1"].predictor  # type: ignore[attr-defined]
    assert after["diabetes/2"].predictor is before["diabetes/2"].predictor  # type: ignore[attr-defined]
    assert source.poll(moved) is None

    promoted = api.promote("churn", settings=settings).deployment
    last = source.poll(moved)
    assert last is not None and last.revision == promoted.revision == 3
    assert [(a.label, a.weight) for a in last.arms] == [("diabetes/2", 100.0)]


def test_poll_notices_an_alias_that_moved(registered: Registered, settings: Settings) -> None:
    api.create(
        "churn", "diabetes@champion", canaries={"diabetes@challenger": 10}, settings=settings
    )
    source = _opened(DeploymentSource("churn", settings=settings))
    plan = source.load()
    registry.set_alias("diabetes", "challenger", 3, settings=settings)
    moved = source.poll(plan)
    assert moved is not None and moved.revision == plan.revision == 1
    assert [(a.ref, a.label) for a in moved.arms] == [
        ("diabetes@champion", "diabetes/1"),
        ("diabetes@challenger", "diabetes/3"),
    ]
    assert moved.arms[0].predictor is plan.arms[0].predictor
    rows = registered.X.tail(12)
    np.testing.assert_allclose(moved.arms[1].predictor.predict(rows), registered.predict(3, rows))
    assert source.poll(moved) is None


def test_poll_raises_when_the_deployment_cannot_be_served(
    registered: Registered, settings: Settings
) -> None:
    api.create("churn", "diabetes@challenger", settings=settings)
    source = _opened(DeploymentSource("churn", settings=settings))
    plan = source.load()
    registry.delete_alias("diabetes", "challenger", settings=settings)
    with pytest.raises(NotFound, match="no alias 'challenger'"):
        source.poll(plan)
    api.delete("churn", settings=settings)
    with pytest.raises(NotFound, match="no deployment named 'churn'"):
        source.poll(plan)
    with pytest.raises(NotFound, match="no deployment named 'other'"):
        _opened(DeploymentSource("other", settings=settings)).load()


def test_a_spec_rebuilds_the_source_and_bad_ones_are_refused() -> None:
    rebuilt = _opened(source_from_spec({"kind": "deployment", "name": "churn", "interval": 2.0}))
    assert (rebuilt.name, rebuilt.interval, rebuilt.settings) == ("churn", 2.0, None)
    for spec in ({"kind": "model", "uri": "models:/x/1"}, {"kind": "deployment"}, None):
        with pytest.raises(InvalidInput, match="not a deployment source"):
            source_from_spec(spec)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="invalid deployment name"):
        DeploymentSource("a/b")
    with pytest.raises(InvalidInput, match="poll interval"):
        DeploymentSource("churn", interval=0)
