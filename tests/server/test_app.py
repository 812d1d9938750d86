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
