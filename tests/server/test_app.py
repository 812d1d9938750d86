"""The app factory: health, readiness, and errors as JSON (in process over ASGI)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from keel.server import create_app
from keel.settings import Settings


@pytest.fixture
def http(settings: Settings) -> Iterator[httpx.Client]:
    from fastapi.testclient import TestClient

    with TestClient(create_app(settings)) as client:
        yield client


def test_health_and_ready(http: httpx.Client) -> None:
    assert http.get("/health").json()["status"] == "ok"
    assert http.get("/ready").json() == {"status": "ready"}


def test_unknown_route_is_json_404(http: httpx.Client) -> None:
    response = http.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_openapi_is_served(http: httpx.Client) -> None:
    spec = http.get("/api/v1/openapi.json").json()
    assert spec["info"]["title"] == "Keel" and "/health" in spec["paths"]


def test_ready_reports_a_dead_database(home, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    app = create_app(Settings())
    with TestClient(app) as client:
        app.state.client.engine.dispose()
        (home / "keel.db").unlink()
        (home / "keel.db").mkdir()  # the database path is now a folder: SQLite cannot open it
        response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["error"] == "storage_error"


def test_openapi_documents_400_not_422(http: httpx.Client) -> None:
    spec = http.get("/api/v1/openapi.json").json()
    codes = {
        code for ops in spec["paths"].values() for op in ops.values() for code in op["responses"]
    }
    assert "422" not in codes and "400" in codes
    assert "HTTPValidationError" not in spec.get("components", {}).get("schemas", {})
    bad = http.post("/api/v1/experiments", json={"name": 5})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_input"


def test_server_marks_silent_remote_runs_lost_and_a_heartbeat_revives_them(
    home,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    import time

    from fastapi.testclient import TestClient

    settings = Settings(lost_run_timeout=0.4)
    with TestClient(create_app(settings)) as http:
        experiment = http.post("/api/v1/experiments", json={"name": "remote"}).json()
        run = http.post(
            "/api/v1/runs",
            json={"experiment_id": experiment["experiment_id"], "host": "laptop", "user": "ana"},
        ).json()
        deadline = time.monotonic() + 5
        status = "RUNNING"
        while status == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.1)
            status = http.get(f"/api/v1/runs/{run['run_id']}").json()["status"]
        assert status == "LOST"  # no heartbeat for longer than the timeout
        assert http.post(f"/api/v1/runs/{run['run_id']}/heartbeat").status_code < 300
        revived = http.get(f"/api/v1/runs/{run['run_id']}").json()
        assert revived["status"] == "RUNNING" and revived["end_time"] is None
