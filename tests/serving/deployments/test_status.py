"""Deployment status from real prediction logs (keel.serving.predlog writes Parquet files; status
reads them back): per-arm requests, rows, errors and latency percentiles, and shadow agreement
on real model outputs (within a tolerance for floats, exact for classes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keel.db import now_ms
from keel.errors import InvalidInput, NotFound
from keel.serving.deployments import api
from keel.serving.deployments.status import FLUSH_NOTE, parse_since, status
from keel.serving.predlog import open_log
from keel.settings import Settings
from tests.serving.deployments.conftest import Registered


def _log_churn(registered: Registered, settings: Settings) -> dict[str, object]:
    """40 requests of 5 rows: 30 to diabetes/1, 10 to diabetes/2 (one failing), every one
    shadowed by diabetes/3; plus 5 requests three hours old that a 1h window leaves out."""
    now = now_ms()
    log = open_log(settings, "churn")
    expected: dict[str, list[float]] = {"diabetes/1": [], "diabetes/2": [], "diabetes/3": []}
    primary_out, shadow_out = [], []
    for i in range(40):
        rows = registered.X.iloc[i * 5 : i * 5 + 5]
        version = 1 if i < 30 else 2
        failed = i == 39
        out = None if failed else registered.predict(version, rows)
        log.log(
            request_id=f"r{i}",
            time_ms=now - 60_000 + i,
            arm=f"diabetes/{version}",
            model="diabetes",
            version=version,
            role="primary",
            inputs=rows,
            outputs=out,
            latency_ms=float(i + 1),
            error="boom" if failed else None,
        )
        expected[f"diabetes/{version}"].append(float(i + 1))
        shadow = registered.predict(3, rows)
        log.log(
            request_id=f"r{i}",
            time_ms=now - 60_000 + i,
            arm="diabetes/3",
            model="diabetes",
            version=3,
            role="shadow",
            inputs=rows,
            outputs=shadow,
            latency_ms=0.5 * (i + 1),
        )
        expected["diabetes/3"].append(0.5 * (i + 1))
        if out is not None:
            primary_out.append(out)
            shadow_out.append(shadow)
    for i in range(5):  # three hours ago
        rows = registered.X.iloc[:2]
        log.log(
            request_id=f"old{i}",
            time_ms=now - 3 * 3_600_000,
            arm="diabetes/1",
            model="diabetes",
            version=1,
            role="primary",
            inputs=rows,
            outputs=registered.predict(1, rows),
            latency_ms=1000.0,
        )
    log.close()
    return {
        "latency": expected,
        "primary": np.concatenate(primary_out),
        "shadow": np.concatenate(shadow_out),
    }


def test_status_counts_each_arm_and_compares_the_shadow(
    registered: Registered, settings: Settings
) -> None:
    api.create(
        "churn",
        "diabetes@champion",
        canaries={"diabetes@challenger": 25},
        shadows=["diabetes/3"],
        settings=settings,
    )
    logged = _log_churn(registered, settings)
    found = status("churn", tolerance=0.05, settings=settings)
    assert (found.deployment, found.revision, found.tolerance) == ("churn", 1, 0.05)
    assert found.note == FLUSH_NOTE and "flushed every few seconds" in found.note
    arms = {a.arm: a for a in found.arms}
    assert [a.arm for a in found.arms] == ["diabetes/1", "diabetes/2", "diabetes/3"]
    one, two, three = arms["diabetes/1"], arms["diabetes/2"], arms["diabetes/3"]
    latency = logged["latency"]
    assert isinstance(latency, dict)
    assert (one.role, one.ref, one.weight) == ("primary", "diabetes@champion", 75.0)
    assert (one.requests, one.rows, one.errors) == (30, 150, 0)  # the old five are left out
    assert one.p50_ms == pytest.approx(np.percentile(latency["diabetes/1"], 50))
    assert one.p99_ms == pytest.approx(np.percentile(latency["diabetes/1"], 99))
    assert (two.requests, two.rows, two.errors) == (10, 50, 1)
    assert two.p99_ms == pytest.approx(np.percentile(latency["diabetes/2"], 99))
    assert (three.role, three.ref, three.weight) == ("shadow", "diabetes/3", None)
    assert (three.requests, three.rows, three.errors) == (40, 200, 0)
    assert three.p50_ms == pytest.approx(np.percentile(latency["diabetes/3"], 50))

    # agreement on the 195 rows whose primary answered: the models' own outputs compared
    primary, shadow = logged["primary"], logged["shadow"]
    assert isinstance(primary, np.ndarray) and isinstance(shadow, np.ndarray)
    assert three.compared == 195
    expected = np.isclose(shadow, primary, rtol=0.05, atol=0).mean()
    assert 0 < expected < 1  # the three Ridge models really differ
    assert three.agreement == pytest.approx(expected)
    assert three.mean_abs_diff == pytest.approx(np.abs(shadow - primary).mean())
    assert one.agreement is None and one.compared == 0

    wider = status("churn", since_ms=parse_since("4h"), tolerance=0.05, settings=settings)
    assert {a.arm: a.requests for a in wider.arms}["diabetes/1"] == 35


def test_status_compares_classes_exactly_and_lists_arms_without_traffic(
    registered: Registered, settings: Settings
) -> None:
    api.create("iris", "diabetes/1", shadows=["diabetes/2"], settings=settings)
    log = open_log(settings, "iris")
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    classes = {"primary": ["setosa", "versicolor", "virginica", "setosa"]}
    classes["shadow"] = ["setosa", "virginica", "virginica", "setosa"]
    now = now_ms()
    for role, arm in (("primary", "diabetes/1"), ("shadow", "diabetes/2")):
        log.log(
            request_id="q1",
            time_ms=now,
            arm=arm,
            model="diabetes",
            version=int(arm[-1]),
            role=role,
            inputs=frame,
            outputs=classes[role],
            latency_ms=2.0,
        )
    log.close()
    api.add_shadow("iris", "diabetes/3", settings=settings)
    found = status("iris", settings=settings)
    shadow = {a.arm: a for a in found.arms}
    assert shadow["diabetes/2"].agreement == 0.75 and shadow["diabetes/2"].compared == 4
    assert shadow["diabetes/2"].mean_abs_diff is None
    idle = shadow["diabetes/3"]
    assert (idle.role, idle.requests, idle.ref, idle.agreement) == ("shadow", 0, "diabetes/3", None)


def test_status_of_logs_without_a_deployment_and_of_nothing(
    registered: Registered, settings: Settings
) -> None:
    log = open_log(settings, "plain")
    rows = registered.X.head(3)
    log.log(
        request_id="a",
        time_ms=now_ms(),
        arm="diabetes/1",
        model="diabetes",
        version=1,
        role="primary",
        inputs=rows,
        outputs=registered.predict(1, rows),
        latency_ms=1.5,
    )
    log.close()
    found = status("plain", settings=settings)
    assert found.revision is None
    assert [(a.arm, a.requests, a.rows, a.ref) for a in found.arms] == [("diabetes/1", 1, 3, None)]
    with pytest.raises(NotFound, match="no deployment named 'nothing', and nothing logged"):
        status("nothing", settings=settings)
    with pytest.raises(InvalidInput, match="tolerance"):
        status("plain", tolerance=2, settings=settings)


def test_parse_since() -> None:
    assert parse_since("90m", now=10_000_000) == 10_000_000 - 5_400_000
    assert parse_since("2d", now=200_000_000) == 200_000_000 - 172_800_000
    assert parse_since("2026-01-01T00:00:00+00:00") == 1_767_225_600_000
    for bad in ("yesterday", "1y", ""):
        with pytest.raises(InvalidInput, match="--since takes a duration"):
            parse_since(bad)
    for out_of_range in ("99999999999d", "9" * 400 + "w", "1969-12-31T00:00:00+00:00"):
        with pytest.raises(InvalidInput, match=r"before 1970|--since takes a duration"):
            parse_since(out_of_range)
    with pytest.raises(InvalidInput, match="in the future"):
        parse_since("2999-01-01T00:00:00+00:00")
